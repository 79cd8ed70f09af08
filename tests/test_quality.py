"""The data-dictionary rules (pandera) applied to a table read back in parts, as the Dagster check does."""

from __future__ import annotations

from sqlalchemy import create_engine

from loaders.readback import TableReader
from py_load_eudravigilance.fixtures.generator import CaseSpec
from py_load_eudravigilance.pipeline import run_load
from py_load_eudravigilance.quality import validate_frames


def test_failures_in_any_part_are_counted_and_reported_with_their_row(sqlite_dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    sexes = ["1", "2", "1", "2", "9", "1", "7"]  # 9 and 7 are not E2B D.5 codes
    path = write_batch("cases.xml", *(CaseSpec(f"CASE-{n}", sex=sex) for n, sex in enumerate(sexes)))
    assert not run_load(path, sqlite_dsn).failures
    reader = TableReader(create_engine(sqlite_dsn))

    result = validate_frames("patient_characteristics", reader.iter_frames("patient_characteristics", [path.name], 1, 2))

    assert not result.passed and (result.rows_checked, result.rows_failing, result.failure_count) == (7, 2, 2)
    assert sorted(zip(result.cases["index"], result.cases["failure_case"], strict=True)) == [(4, "9"), (6, "7")]
    reactions = validate_frames("reactions", reader.iter_frames("reactions", [path.name], 1, 2))
    assert reactions.passed and (reactions.rows_checked, reactions.rows_failing) == (7, 0)
