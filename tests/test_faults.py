"""Faults on real parts: a connection terminated mid-file, a killed process, a vanished S3 object, secrets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url

from loaders.registry import get_loader
from py_load_eudravigilance.fixtures.generator import CaseSpec, CorpusSpec, build_batch, build_message, write_corpus
from py_load_eudravigilance.pipeline import run_load
from py_load_eudravigilance.schema import CASE_TABLE_NAMES
from tests.support.db import query, snapshot


def case_rows(dsn: str) -> int:
    return sum(query(dsn, f'SELECT COUNT(*) FROM "{table}"')[0][0] for table in CASE_TABLE_NAMES)


def test_connection_terminated_mid_merge_leaves_nothing_half_written(postgres_dsn: str, tmp_path: Path) -> None:
    paths = write_corpus(tmp_path / "in", CorpusSpec(files=1, cases_per_file=30, seed=21, follow_up_fraction=0.0))
    loader = get_loader(postgres_dsn)
    admin = create_engine(postgres_dsn, isolation_level="AUTOCOMMIT")
    terminated = []

    @event.listens_for(loader.engine, "before_cursor_execute")
    def kill_backend(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        # The server drops the connection after the case tables and the audit log were copied in, before the commit
        if statement.startswith("DELETE FROM etl_quarantine") and not terminated:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            with admin.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            terminated.append(pid)

    summary = run_load(paths[0], loader, workers=1)

    assert terminated and [name for name, _ in summary.failures] == [paths[0].name]
    assert case_rows(postgres_dsn) == 0  # the transaction died with the connection
    assert query(postgres_dsn, "SELECT status FROM etl_file_history") == [("failed",)]
    event.remove(loader.engine, "before_cursor_execute", kill_backend)

    again = run_load(paths[0], postgres_dsn, workers=1)
    assert not again.failures
    assert query(postgres_dsn, "SELECT status FROM etl_file_history") == [("completed",)]
    assert query(postgres_dsn, "SELECT COUNT(*) FROM icsr_master") == [(30,)]
    admin.dispose()


def test_process_killed_mid_load_leaves_no_partial_file_and_a_rerun_completes(postgres_dsn: str, tmp_path: Path) -> None:
    big = tmp_path / "in" / "big.xml"
    big.parent.mkdir()
    big.write_text(build_batch([build_message(CaseSpec(f"KILL-{n:05d}", padding_paragraphs=5)) for n in range(3000)]))
    code = "import sys; from py_load_eudravigilance.pipeline import run_load; run_load(sys.argv[1], sys.argv[2], workers=1)"
    process = subprocess.Popen([sys.executable, "-c", code, str(big), postgres_dsn], start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if query(postgres_dsn, "SELECT status FROM etl_file_history") == [("running",)]:
                break
        except Exception:  # noqa: BLE001 - the schema may not exist yet
            pass
        time.sleep(0.02)
    assert process.poll() is None, "the load finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()

    assert case_rows(postgres_dsn) == 0
    assert query(postgres_dsn, "SELECT status FROM etl_file_history") == [("running",)]  # interrupted, and it says so

    summary = run_load(big, postgres_dsn, workers=1)
    assert not summary.failures
    assert query(postgres_dsn, "SELECT status, messages_total FROM etl_file_history") == [("completed", 3000)]


def test_an_object_vanishing_between_listing_and_reading_fails_only_that_file(s3_bucket, sqlite_dsn: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client, bucket = s3_bucket
    for name in ("a.xml", "gone.xml", "c.xml"):
        client.put_object(Bucket=bucket, Key=f"in/{name}", Body=build_batch([build_message(CaseSpec(f"S3-{name}"))]).encode())
    client.delete_object(Bucket=bucket, Key="in/gone.xml")  # listed by the sensor a moment ago, gone now

    summary = run_load(f"s3://{bucket}/in/", sqlite_dsn, workers=2, keys=["a.xml", "gone.xml", "c.xml"])

    assert [name for name, _ in summary.failures] == ["gone.xml"]
    assert "404" in summary.failures[0][1] or "Not Found" in summary.failures[0][1]
    assert sorted(r[0] for r in query(sqlite_dsn, "SELECT safetyreportid FROM icsr_master")) == ["S3-a.xml", "S3-c.xml"]


def test_passwords_never_reach_output_history_or_dagster_metadata(postgres_dsn: str, tmp_path: Path, dagster_instance) -> None:  # type: ignore[no-untyped-def]
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from eudravig_assets.definitions import build_definitions
    from eudravig_assets.partitions import icsr_files
    from eudravig_assets.resources import EudravigDatabase, EudravigSource

    secret = "Sup3rS3cretPassw0rd"
    dsn = make_url(postgres_dsn).set(password=secret).render_as_string(hide_password=False)  # trust auth accepts it
    paths = write_corpus(tmp_path / "in", CorpusSpec(files=1, cases_per_file=3))
    (tmp_path / "in" / "broken.xml").write_text("<MCCI_IN200100UV01")

    cli = subprocess.run(
        [sys.executable, "-m", "py_load_eudravigilance.cli", "run", str(tmp_path / "in"), "--dsn", dsn],
        capture_output=True,
        text=True,
        timeout=300,
    )
    unreachable = subprocess.run(
        [sys.executable, "-m", "py_load_eudravigilance.cli", "status", "--dsn", dsn.replace("127.0.0.1", "127.0.0.1:1")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    keys = [paths[0].name, "broken.xml"]
    dagster_instance.add_dynamic_partitions(icsr_files.name, keys)
    defs = build_definitions(EudravigDatabase(dsn=dsn), EudravigSource(source_uri=str(tmp_path / "in")))
    result = defs.resolve_job_def("load_icsr_files").execute_in_process(
        instance=dagster_instance,
        tags={ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]},
        raise_on_error=False,
    )

    # broken.xml fails (the CLI exits 1, the run fails after loading the other file): the errors name it, not the password
    assert cli.returncode == 1 and unreachable.returncode == 1 and not result.success
    seen = [cli.stdout, cli.stderr, unreachable.stdout, unreachable.stderr]
    seen += [str(record) for record in dagster_instance.all_logs(result.run_id)]
    seen += [str(row) for row in query(postgres_dsn, "SELECT * FROM etl_file_history")]
    assert not [text_ for text_ in seen if secret in text_]
    assert "***" in cli.stdout  # the DSN is shown masked
    assert snapshot(postgres_dsn)["icsr_master"]


@pytest.fixture(autouse=True)
def _no_stray_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PY_LOAD_EUDRAVIGILANCE_"):
            monkeypatch.delenv(name)


def test_concurrent_processes_over_overlapping_versions_end_as_a_sequential_load(postgres_dsn: str, tmp_path: Path) -> None:
    paths = write_corpus(tmp_path / "corpus", CorpusSpec(files=6, cases_per_file=20, seed=31, follow_up_fraction=0.6))
    # Each process loads an overlapping subset, in its own order: versions of the same cases race
    subsets = [paths[0:4], paths[2:6][::-1], paths[1:5], paths[::-1]]
    code = (
        "import sys; from pathlib import Path; from py_load_eudravigilance.pipeline import run_load\n"
        "s = run_load(Path(sys.argv[1]), sys.argv[2], workers=1, keys=sys.argv[3:]); sys.exit(1 if s.failures else 0)"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", code, str(paths[0].parent), postgres_dsn, *[p.name for p in subset]]) for subset in subsets
    ]
    assert [p.wait(timeout=300) for p in processes] == [0, 0, 0, 0]  # no deadlock or serialization failure surfaced

    concurrent_state = snapshot(postgres_dsn)
    assert not run_load(paths[0].parent, postgres_dsn, mode="full", workers=1).failures  # one process, one file after another
    assert snapshot(postgres_dsn) == concurrent_state


def test_schema_names_from_configuration_are_quoted_identifiers(postgres_dsn: str, tmp_path: Path) -> None:
    hostile = 'pv"; DROP TABLE icsr_master; --'
    engine = create_engine(postgres_dsn)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE icsr_master (canary int)"))  # in public: must survive
        conn.execute(text(f'CREATE SCHEMA "{hostile.replace(chr(34), chr(34) * 2)}"'))
    config = tmp_path / "config.yaml"
    config.write_text(f"database:\n  dsn: {postgres_dsn}\n  schema: '{hostile}'\n")
    paths = write_corpus(tmp_path / "in", CorpusSpec(files=1, cases_per_file=4, follow_up_fraction=0.0))

    result = subprocess.run(
        [sys.executable, "-m", "py_load_eudravigilance.cli", "run", str(paths[0]), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM public.icsr_master")).scalar() == 0  # the canary table is intact
        quoted = engine.dialect.identifier_preparer.quote_identifier(hostile)
        assert conn.execute(text(f"SELECT COUNT(*) FROM {quoted}.icsr_master")).scalar() == 4
    engine.dispose()
