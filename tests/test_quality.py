"""The data-quality checks, evaluated in the database over a run's rows, and the exact row counts the loads keep."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pandera.pandas as pa
import pytest
from sqlalchemy import create_engine, text

from loaders.readback import TableReader
from py_load_eudravigilance.fixtures.generator import CaseSpec, ReactionSpec
from py_load_eudravigilance.pipeline import run_load
from py_load_eudravigilance.quality import CheckScope, cases_listed, check_table, parsed_rows, rejected_messages, rules, table_schema
from py_load_eudravigilance.schema import CASE_TABLE_NAMES, COUNTED_TABLE_NAMES
from tests.support.db import query

Result = TypeVar("Result")
SEXES = ["1", "2", "1", "2", "9", "1", "7"]  # 9 and 7 are not E2B D.5 codes


def checked(reader: TableReader, check: Callable[..., Result], *args: Any, **options: Any) -> Result:
    """A check of the quality module run on a connection of its own."""
    with reader.engine.connect() as conn:
        return check(conn, reader.table, *args, **options)


def scope_of(dsn: str, *names: str) -> CheckScope:
    """The checks' scope of a run that loaded these files."""
    by_name = dict(query(dsn, "SELECT file_name, file_sha256 FROM etl_file_history"))
    return CheckScope.of_files(by_name[name] for name in names)


def test_every_pandera_rule_has_its_sql_form() -> None:
    for table in (*CASE_TABLE_NAMES, "message_batches"):
        declared = sum(len(column.checks) + (not column.nullable) for column in table_schema(table).columns.values())
        assert len(rules(table)) == declared, table  # a rule without SQL would raise, never vanish


def test_the_sql_rules_find_the_rows_pandera_finds(dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    path = write_batch("cases.xml", *(CaseSpec(f"CASE-{n}", sex=sex) for n, sex in enumerate(SEXES)))
    assert run_load(path, dsn).exit_code == 0
    reader = TableReader(create_engine(dsn))

    found = checked(reader, check_table, "patient_characteristics", CheckScope.everything())

    frame = reader.read_frame("patient_characteristics")
    with pytest.raises(pa.errors.SchemaErrors) as errors:
        table_schema("patient_characteristics").validate(frame, lazy=True)
    failing = errors.value.failure_cases
    expected = sorted(frame.loc[failing["index"].dropna().astype(int), "safetyreportid"])
    assert (found.rows_checked, found.rows_failing, found.failure_count) == (7, 2, len(failing))
    assert sorted(example["safetyreportid"] for example in found.examples) == expected == ["CASE-4", "CASE-6"]
    assert {example["value"] for example in found.examples} == {"9", "7"}
    assert found.rule_failures == {"sex: D.5 code list": 2}


def test_a_runs_checks_see_only_its_rows_and_still_fail_on_a_broken_one(dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    broken = write_batch("broken.xml", CaseSpec("BAD-1", sex="7", reactions=[ReactionSpec("10019211", "Headache")]))
    clean = write_batch("clean.xml", CaseSpec("GOOD-1", sex="1"), CaseSpec("GOOD-2", sex="2"))
    assert run_load(broken, dsn).exit_code == 0 and run_load(clean, dsn).exit_code == 0
    reader = TableReader(create_engine(dsn))
    of_clean, of_broken = scope_of(dsn, "clean.xml"), scope_of(dsn, "broken.xml")

    assert checked(reader, check_table, "patient_characteristics", of_clean).rows_failing == 0
    assert checked(reader, check_table, "patient_characteristics", of_clean).rows_checked == 2
    assert checked(reader, check_table, "patient_characteristics", of_broken).rows_failing == 1

    with reader.engine.begin() as conn:  # a case of the clean run loses its master row: its reactions are orphans
        conn.execute(text("DELETE FROM icsr_master WHERE safetyreportid = 'GOOD-2'"))
    reactions_clean = checked(reader, check_table, "reactions", of_clean)
    assert reactions_clean.orphans == query(dsn, "SELECT COUNT(*) FROM reactions WHERE safetyreportid = 'GOOD-2'")[0][0] > 0
    assert checked(reader, check_table, "reactions", of_broken).orphans == 0
    # The parser's count of the clean run's current versions no longer matches what the tables hold
    parsed = checked(reader, parsed_rows, of_clean)
    master = checked(reader, check_table, "icsr_master", of_clean, with_rules=False)
    assert (parsed["icsr_master"], master.rows_current) == (1, 1)  # GOOD-2's master row is gone from both sides
    reactions = checked(reader, check_table, "reactions", of_clean, with_rules=False)
    assert reactions.rows_current == parsed["reactions"] and reactions.rows_checked > reactions.rows_current


def test_rejected_messages_are_listed_for_the_run_that_brought_them(dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    partial = write_batch("partial.xml", CaseSpec("OK-1"), CaseSpec("X" * 600))  # C.1.1 longer than the loader accepts
    other = write_batch("other.xml", CaseSpec("OK-2"))
    assert run_load(partial, dsn).exit_code == 2 and run_load(other, dsn).exit_code == 0
    reader = TableReader(create_engine(dsn))

    count, listed = checked(reader, rejected_messages, scope_of(dsn, "partial.xml"))
    assert count == 1 and [(row["file_name"], row["message_position"]) for row in listed] == [("partial.xml", 2)]
    assert listed[0]["reason"]
    assert checked(reader, rejected_messages, scope_of(dsn, "other.xml")) == (0, [])


def test_the_loads_keep_every_tables_row_count_exact(dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    headache, nausea = ReactionSpec("10019211", "Headache"), ReactionSpec("10028813", "Nausea")
    first = write_batch("first.xml", CaseSpec("CASE-1", reactions=[headache, nausea]), CaseSpec("CASE-2"), CaseSpec("X" * 600))
    follow_up = write_batch(
        "follow.xml",
        CaseSpec("CASE-1", reactions=[headache], most_recent_info="20240301"),  # a follow-up drops a reaction
        CaseSpec("CASE-2", nullification=True, most_recent_info="20240301"),
    )
    reader = TableReader(create_engine(dsn))

    def assert_exact() -> None:
        counted = reader.row_counts(list(COUNTED_TABLE_NAMES))
        actual = {name: query(dsn, f'SELECT COUNT(*) FROM "{name}"')[0][0] for name in COUNTED_TABLE_NAMES}
        assert counted == actual

    run_load(first, dsn)
    assert_exact()
    run_load(follow_up, dsn)
    assert_exact()
    run_load(first.parent, dsn, mode="full")
    assert_exact()
    with reader.engine.begin() as conn:  # a database an earlier release loaded has no counts: they are made once
        conn.execute(text("DELETE FROM etl_table_row_counts"))
    run_load(first.parent, dsn)
    assert_exact()
    assert reader.row_counts(["reactions"])["reactions"] > 0


def test_a_file_partitioned_reader_gets_the_rows_of_the_cases_its_files_made_current(dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    first = write_batch("first.xml", CaseSpec("F-1", reactions=[ReactionSpec("10019211", "Headache")]), CaseSpec("F-2"))
    later = write_batch("later.xml", CaseSpec("L-1"), CaseSpec("F-2", most_recent_info="20250101"))  # F-2 followed up
    assert run_load(first, dsn).exit_code == 0 and run_load(later, dsn).exit_code == 0
    reader = TableReader(create_engine(dsn))

    assert sorted(reader.read_frame("icsr_master", ["first.xml"])["safetyreportid"]) == ["F-1"]
    assert sorted(reader.read_frame("icsr_master", ["later.xml"])["safetyreportid"]) == ["F-2", "L-1"]
    reactions = reader.read_frame("reactions", ["first.xml"], columns=["safetyreportid", "reaction_meddra_code"])
    assert reactions.to_dict("records") == [{"safetyreportid": "F-1", "reaction_meddra_code": "10019211"}]


def test_a_runs_cases_listed_once_give_every_check_the_same_answer(dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    first = write_batch("first.xml", CaseSpec("A-1", sex="7"), CaseSpec("A-2"))
    later = write_batch("later.xml", CaseSpec("B-1"), CaseSpec("A-1", most_recent_info="20250101", sex="1"))
    assert run_load(first, dsn).exit_code == 0 and run_load(later, dsn).exit_code == 0
    reader = TableReader(create_engine(dsn))
    with reader.engine.begin() as conn:
        for scope in (scope_of(dsn, "first.xml"), scope_of(dsn, "later.xml"), CheckScope.everything()):
            tables = ("icsr_master", "patient_characteristics", "reactions")
            direct = {name: check_table(conn, reader.table, name, scope) for name in tables}
            with cases_listed(conn, reader.table, scope) as listed:
                assert listed.cases is not None or scope.file_hashes is None
                assert {name: check_table(conn, reader.table, name, listed) for name in direct} == direct


def test_a_check_query_that_fails_reports_its_own_error_and_leaves_the_connection_usable(dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    path = write_batch("first.xml", CaseSpec("E-1"))
    assert run_load(path, dsn).exit_code == 0
    reader = TableReader(create_engine(dsn, pool_size=1, max_overflow=0))  # the next check gets the same connection
    scope = scope_of(dsn, "first.xml")
    with pytest.raises(Exception, match="no_such_column") as raised, reader.engine.begin() as conn:
        with cases_listed(conn, reader.table, scope):
            conn.execute(text("SELECT no_such_column FROM icsr_master"))
    assert "InFailedSqlTransaction" not in type(raised.value.orig).__name__
    with reader.engine.begin() as conn, cases_listed(conn, reader.table, scope) as listed:
        assert check_table(conn, reader.table, "icsr_master", listed).rows_checked == 1
