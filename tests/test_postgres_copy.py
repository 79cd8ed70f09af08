"""On PostgreSQL the data moves by COPY, never by per-row INSERT ... VALUES (seen in the server log)."""

from __future__ import annotations

import glob
import re
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from py_load_eudravigilance.fixtures.generator import CaseSpec, CorpusSpec, write_corpus
from py_load_eudravigilance.pipeline import run_load
from py_load_eudravigilance.schema import CASE_TABLE_NAMES
from tests.conftest import SHARED_E2B

SERVER_LOGS = sorted(glob.glob("/var/log/postgresql/postgresql-*-main.log"))


def test_load_uses_copy_and_no_row_inserts(postgres_dsn: str, tmp_path: Path) -> None:
    if not SERVER_LOGS or not Path(SERVER_LOGS[-1]).is_file():
        pytest.skip("the PostgreSQL server log is not readable on this machine")
    log_path = Path(SERVER_LOGS[-1])
    database = make_url(postgres_dsn).database
    engine = create_engine(postgres_dsn, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"ALTER DATABASE \"{database}\" SET log_statement = 'all'"))
    engine.dispose()
    examples = SHARED_E2B / "fda-examples"
    source = examples if examples.is_dir() else write_corpus(tmp_path / "corpus", CorpusSpec(files=2, cases_per_file=5))[0].parent
    offset = log_path.stat().st_size
    summary = run_load(source, postgres_dsn, "full", workers=1)
    assert not summary.failures
    time.sleep(0.5)  # let the server flush its log
    with log_path.open(encoding="utf-8", errors="replace") as handle:
        handle.seek(offset)
        statements = [line for line in handle if f"@{database} " in line and "statement:" in line]
    copies = [s for s in statements if re.search(r"statement: COPY ", s)]
    case_tables = "|".join(CASE_TABLE_NAMES)
    row_inserts = [s for s in statements if re.search(rf"INSERT INTO \"?({case_tables})\"? .*VALUES", s)]
    assert copies, "no COPY statement reached the server"
    assert any(re.search(r'COPY "?reactions"? \(', c) for c in copies)  # straight into the table, no staging table
    assert not row_inserts, row_inserts[:3]


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
