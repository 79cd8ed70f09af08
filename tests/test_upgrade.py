"""A database an earlier release made gains what this release added: columns, and views whose query changed."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect, text

from loaders.registry import get_loader
from py_load_eudravigilance.fixtures.generator import CaseSpec
from py_load_eudravigilance.pipeline import run_load
from py_load_eudravigilance.schema import VIEW_DEFINITIONS_TABLE
from tests.support.db import query


def test_columns_and_views_added_since_an_earlier_release_are_added_on_the_next_load(dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    first = write_batch("first.xml", CaseSpec("OLD-1"))
    assert run_load(first, dsn).exit_code == 0
    engine = create_engine(dsn)
    with engine.begin() as conn:  # as the previous release left it: without this release's columns and view columns
        conn.execute(text("DROP VIEW cases"))
        conn.execute(text("CREATE VIEW cases AS SELECT safetyreportid FROM icsr_master"))
        conn.execute(text("ALTER TABLE etl_file_history DROP COLUMN unmapped_values"))
        conn.execute(text("ALTER TABLE drugs DROP COLUMN eu_invented_name"))

    second = write_batch("second.xml", CaseSpec("NEW-1"))
    assert run_load(second, dsn).exit_code == 0

    assert get_loader(dsn).schema_report().ok
    columns = {column["name"] for column in inspect(engine).get_columns("cases")}
    assert {"safetyreportid", "sex"} <= columns
    assert query(dsn, "SELECT COUNT(*) FROM cases") == [(2,)]
    history = dict(query(dsn, "SELECT file_name, unmapped_values FROM etl_file_history"))
    assert history["first.xml"] is None and history["second.xml"] == 0  # the old row keeps what it knew
    engine.dispose()


@pytest.mark.parametrize("earlier", ["before definitions were recorded", "with another recorded definition"])
def test_a_view_whose_query_changed_with_the_same_columns_is_made_again_on_the_next_load(dsn: str, write_batch, earlier: str) -> None:  # type: ignore[no-untyped-def]
    assert run_load(write_batch("first.xml", CaseSpec("OLD-1")), dsn).exit_code == 0
    engine = create_engine(dsn)
    with engine.begin() as conn:  # an earlier release's view: the same columns, read from another query (a frozen copy)
        conn.execute(text("CREATE TABLE frozen_pairs AS SELECT * FROM case_drug_reactions"))
        conn.execute(text("DROP VIEW case_drug_reactions"))
        conn.execute(text("CREATE VIEW case_drug_reactions AS SELECT * FROM frozen_pairs"))
        if earlier == "before definitions were recorded":
            conn.execute(text(f"DROP TABLE {VIEW_DEFINITIONS_TABLE}"))
        else:
            conn.execute(text(f"UPDATE {VIEW_DEFINITIONS_TABLE} SET definition_sha256 = 'earlier' WHERE view_name = 'case_drug_reactions'"))
    engine.dispose()
    report = get_loader(dsn).schema_report()
    assert "case_drug_reactions" in report.outdated_views and not report.ok

    assert run_load(write_batch("second.xml", CaseSpec("NEW-1")), dsn).exit_code == 0

    assert get_loader(dsn).schema_report().ok
    assert query(dsn, "SELECT safetyreportid FROM case_drug_reactions ORDER BY safetyreportid") == [("NEW-1",), ("OLD-1",)]
