"""A database an earlier release made gains what this release added: columns, and views whose columns changed."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect, text

from loaders.registry import get_loader
from py_load_eudravigilance.fixtures.generator import CaseSpec
from py_load_eudravigilance.pipeline import run_load
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
