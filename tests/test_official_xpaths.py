"""Acceptance: the official XPath of every element finds its value in the mapped column.

Runs on the FDA example instances in ../shared (CI has them) after a real load into SQLite; the
dictionary coverage check needs only the element list.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from py_load_eudravigilance.mapping.catalog import element_columns
from py_load_eudravigilance.pipeline import run_load
from tests.conftest import SHARED_E2B
from tests.support.official_xpaths import evaluate, ich_element_numbers, load_elements, matches, strip_namespaces

ELEMENTS_CSV = SHARED_E2B / "icsr_data_elements.csv"
EXAMPLES = sorted((SHARED_E2B / "fda-examples").glob("*.xml"))
needs_shared = pytest.mark.skipif(not ELEMENTS_CSV.exists(), reason="../shared/e2b is not beside this checkout")


@needs_shared
def test_every_ich_element_of_sections_c_to_h_is_in_the_dictionary() -> None:
    missing = sorted(ich_element_numbers(ELEMENTS_CSV) - set(element_columns()))
    assert not missing, f"elements without a column: {missing}"


@needs_shared
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_official_xpath_values_are_found_in_their_columns(example: Path, tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'x.db'}"
    summary = run_load(example, dsn, "full", workers=1)
    assert not summary.failures
    engine = create_engine(dsn)
    columns = element_columns()
    elements = load_elements(ELEMENTS_CSV)
    # Elements whose official XPath is identical (MPID and PhPID) cannot be told apart by it
    same_path: dict[str, list[str]] = {}
    for element in elements:
        same_path.setdefault(element.xpath, []).append(element.number)
    tree = strip_namespaces(example)
    found, missed = 0, []
    with engine.connect() as conn:
        for element in elements:
            values = evaluate(tree, element)
            if not values:
                continue
            targets = {columns[n] for n in same_path[element.xpath] if n in columns}
            stored = [v for table, column in targets for v in conn.execute(text(f'SELECT "{column}" FROM "{table}"')).scalars()]
            for value in values:
                if any(matches(value, s) for s in stored):
                    found += 1
                else:
                    missed.append(f"{element.number}={value[:40]!r}")
    total = found + len(missed)
    assert total > 20, "the official XPaths found almost nothing: the test itself is broken"
    assert found / total >= 0.99, f"{len(missed)} of {total} values not found: {missed}"


def test_matches_is_strict_about_values() -> None:
    assert matches("10019211", "10019211") and not matches("10019211", "10019212")
    assert matches("true", True) and not matches("true", False)
    assert matches("48.2", 48.2) and not matches("48.2", 48.0)
    assert not matches("x", None)
