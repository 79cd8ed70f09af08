"""On PostgreSQL the data moves by COPY, never by per-row INSERT ... VALUES (seen by a spy on the driver's cursors)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg2.extensions
from sqlalchemy import create_engine, text

from loaders.postgresql import PostgresLoader
from py_load_eudravigilance.fixtures.generator import CaseSpec, CorpusSpec, write_corpus
from py_load_eudravigilance.pipeline import run_load
from py_load_eudravigilance.schema import CASE_TABLE_NAMES
from tests.conftest import SHARED_E2B


class SpyCursor(psycopg2.extensions.cursor):
    """A psycopg2 cursor that records every statement it sends, COPY included (SQLAlchemy's events do not see COPY)."""

    sent: list[str] = []

    def execute(self, query: Any, vars: Any = None) -> Any:  # noqa: A002 - psycopg2's own parameter name
        SpyCursor.sent.append(query.decode() if isinstance(query, bytes) else str(query))
        return super().execute(query, vars)

    def executemany(self, query: Any, vars_list: Any) -> Any:
        SpyCursor.sent.append(f"executemany: {query}")
        return super().executemany(query, vars_list)

    def copy_expert(self, sql: Any, file: Any, size: int = 8192) -> Any:
        SpyCursor.sent.append(str(sql))
        return super().copy_expert(sql, file, size)


def test_load_uses_copy_and_no_row_inserts(postgres_dsn: str, tmp_path: Path) -> None:
    examples = SHARED_E2B / "fda-examples"
    source = examples if examples.is_dir() else write_corpus(tmp_path / "corpus", CorpusSpec(files=2, cases_per_file=5))[0].parent
    engine = create_engine(postgres_dsn, connect_args={"cursor_factory": SpyCursor})
    SpyCursor.sent.clear()

    summary = run_load(source, PostgresLoader(engine), "full", workers=1)

    assert not summary.failures and summary.totals()["cases_inserted"] > 0
    copies = [s for s in SpyCursor.sent if s.startswith("COPY ")]
    case_tables = "|".join(CASE_TABLE_NAMES)
    row_inserts = [s for s in SpyCursor.sent if re.search(rf"INSERT INTO \"?({case_tables})\"?[ (]", s)]
    assert any(re.match(r'COPY "?reactions"? \(', c) for c in copies)  # straight into the table, no staging table
    assert any(re.match(r'COPY "?icsr_audit_log"? \(', c) for c in copies)
    assert not row_inserts, row_inserts[:3]
    assert not [s for s in SpyCursor.sent if s.startswith("executemany: INSERT")]


def test_a_plain_postgresql_dsn_uses_the_installed_psycopg2_driver(postgres_dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    # SQLAlchemy 2.1 reads postgresql:// as psycopg 3, which this project does not install
    plain = postgres_dsn.replace("postgresql+psycopg2://", "postgresql://")
    assert plain.startswith("postgresql://")
    summary = run_load(write_batch("plain.xml", CaseSpec("PLAIN-1")), plain, "delta")
    assert not summary.failures and summary.totals()["cases_inserted"] == 1


def test_the_documented_xpath_query_reads_the_audit_payload(postgres_dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    """The worked query of docs/schema.md runs as written: the payload is XML PostgreSQL can query."""
    schema_doc = (Path(__file__).resolve().parents[1] / "docs" / "schema.md").read_text(encoding="utf-8")
    (sql,) = [block for block in re.findall(r"```sql\n(.*?)```", schema_doc, re.S) if "payload::xml" in block]
    path = write_batch("one.xml", CaseSpec("US-FDA-0001"), CaseSpec("US-FDA-0001", most_recent_info="20240120"))
    assert not run_load(path, postgres_dsn, workers=1).failures
    engine = create_engine(postgres_dsn)
    with engine.connect() as conn:
        rows = conn.execute(text(sql)).all()
    engine.dispose()
    assert [(row.file_name, row.message_position) for row in rows] == [("one.xml", 1), ("one.xml", 2)]
    assert all(row.message_id and row.sender_organisation for row in rows)
