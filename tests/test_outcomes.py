"""Outcomes users can trust: nothing lost or half-written, one meaning of each file status, clear reports.

Each test crafts the input an adversary or an unlucky sender would send, loads it on both dialects
where a database is involved, and checks what the database, the history and the command line say.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from py_load_eudravigilance import pipeline
from py_load_eudravigilance.fixtures.generator import CaseSpec, CorpusSpec, ReactionSpec, build_batch, build_message, write_corpus
from py_load_eudravigilance.pipeline import remove_abandoned_staging, run_load
from py_load_eudravigilance.planning import PlanLimits
from tests.support.db import query, snapshot
from tests.test_cli import run_cli

CR = "@CR@"  # placeholder for a carriage return kept exactly: written as a character reference


def message(case: CaseSpec) -> str:
    return build_message(case).replace(CR, "&#13;")


def write(directory: Path, name: str, *messages: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(build_batch(list(messages)), encoding="utf-8")
    return path


# A case id, a text and a file name holding what could end or break a COPY: tab, LF, CR, backslash, "\." lines
CASE_ID = "ID\\.\r\nX\t\\N\\"
NARRATIVE = f"first\\.{CR}\nsecond\\.\nthird\ttab\\N back\\slash {CR}\\.{CR}end"
FILE_NAME = "odd\tname\\.\x01\\N.xml"


def test_no_value_can_end_or_break_a_bulk_load(dsn: str, tmp_path: Path) -> None:
    path = write(tmp_path / "in", FILE_NAME, message(CaseSpec(CASE_ID, narrative=NARRATIVE)), message(CaseSpec("PLAIN-1")))
    summary = run_load(path.parent, dsn, workers=1)
    assert summary.exit_code == 0 and not summary.failures, summary.outcomes

    narrative = NARRATIVE.replace(CR, "\r")
    assert query(dsn, "SELECT safetyreportid, source_file_name FROM icsr_master ORDER BY 1") == [
        (CASE_ID, FILE_NAME),
        ("PLAIN-1", FILE_NAME),
    ]
    assert query(dsn, "SELECT safetyreportid, case_narrative FROM case_summary_narrative ORDER BY 1")[0] == (CASE_ID, narrative)
    assert query(dsn, "SELECT file_name, status FROM etl_file_history") == [(FILE_NAME, "completed")]
    assert query(dsn, "SELECT safetyreportid, file_name FROM icsr_audit_log ORDER BY 1") == [(CASE_ID, FILE_NAME), ("PLAIN-1", FILE_NAME)]
    assert query(dsn, "SELECT COUNT(*) FROM reactions") == [(2,)]  # the child rows of both cases, keyed by the odd id too


def test_a_message_the_database_could_not_store_is_rejected_and_the_others_load(dsn: str, tmp_path: Path) -> None:
    before_year_one = message(CaseSpec("EARLY-1", most_recent_info="00010101000000+0100"))
    too_long = message(CaseSpec("L" * 3000))
    huge_number = message(CaseSpec("BIG-1")).replace('<priorityNumber value="1"/>', '<priorityNumber value="99999999999"/>', 1)
    path = write(
        tmp_path / "in", "mixed.xml", message(CaseSpec("GOOD-1")), before_year_one, too_long, huge_number, message(CaseSpec("GOOD-2"))
    )

    summary = run_load(path, dsn, workers=1)

    assert summary.exit_code == 2 and [o.status for o in summary.outcomes] == ["partial"]
    assert query(dsn, "SELECT safetyreportid FROM icsr_master ORDER BY 1") == [("GOOD-1",), ("GOOD-2",)]
    rejected = query(dsn, "SELECT message_position, element, reason FROM etl_quarantine ORDER BY 1")
    assert [(position, element) for position, element, _ in rejected] == [(2, "C.1.5"), (3, "C.1.1"), (4, "C.2.r.5")]
    assert "years 1 to 9999" in rejected[0][2] and "3,000 characters" in rejected[1][2] and "32-bit" in rejected[2][2]
    assert query(dsn, "SELECT status, messages_total, messages_rejected FROM etl_file_history") == [("partial", 5, 3)]


def test_a_file_name_that_is_not_utf8_loads_with_a_readable_name(dsn: str, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9.xml")
    (folder / name).write_text(build_batch([message(CaseSpec("LATIN-1"))]), encoding="utf-8")
    summary = run_load(folder, dsn, workers=1)
    assert not summary.failures and summary.exit_code == 0
    assert query(dsn, "SELECT file_name, status FROM etl_file_history") == [("caf\\xe9.xml", "completed")]
    assert query(dsn, "SELECT safetyreportid FROM icsr_master") == [("LATIN-1",)]


def test_a_newer_version_does_not_bring_a_nullified_case_back(dsn: str, tmp_path: Path) -> None:
    original = message(CaseSpec("NULL-1", most_recent_info="20240101"))
    nullified = message(CaseSpec("NULL-1", most_recent_info="20240201", nullification=True))
    nullified = nullified.replace(
        'code="1" codeSystem="2.16.840.1.113883.3.989.2.1.1.5"', 'code=" 1 " codeSystem="2.16.840.1.113883.3.989.2.1.1.5"'
    )
    later = message(CaseSpec("NULL-1", most_recent_info="20240301", reactions=[ReactionSpec("10028813", "Nausea")]))
    for number, text in enumerate((original, nullified, later)):
        assert not run_load(write(tmp_path / "in", f"{number}.xml", text), dsn, workers=1).failures

    assert query(dsn, "SELECT is_nullified, nullification_amendment, most_recent_info_date, version_count FROM icsr_master") in (
        [(True, "1", "20240201", 3)],
        [(1, "1", "20240201", 3)],
    )
    assert query(dsn, "SELECT reaction_meddra_code FROM reactions") == [("10019211",)]
    assert query(dsn, "SELECT file_name, versions_after_nullification, cases_skipped_older FROM etl_file_history ORDER BY 1") == [
        ("0.xml", 0, 0),
        ("1.xml", 0, 0),
        ("2.xml", 1, 0),
    ]


def test_counters_and_tie_winners_do_not_depend_on_workers_or_load_order(dsn: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, CorpusSpec(files=4, cases_per_file=20, seed=9, follow_up_fraction=0.6, nullification_fraction=0.1))
    tie = "20240301120000+0000"
    write(corpus, "tie-a.xml", message(CaseSpec("TIE-1", most_recent_info="20240301", message_created=tie, narrative="from a")))
    write(corpus, "tie-b.xml", message(CaseSpec("TIE-1", most_recent_info="20240301", message_created=tie, narrative="from b")))

    def counters(workers: int) -> list[tuple]:
        summary = run_load(corpus, dsn, mode="full", workers=workers)
        assert not summary.failures
        return [(o.file_name, o.cases_inserted, o.cases_updated, o.cases_skipped_older, o.cases_nullified) for o in summary.outcomes]

    one, three = counters(1), counters(3)
    state = snapshot(dsn)
    assert one == three
    assert snapshot(dsn) == state
    assert query(dsn, "SELECT case_narrative FROM case_summary_narrative WHERE safetyreportid = 'TIE-1'") == [("from a",)]
    # The later file loaded first, in a run of its own: the tie still goes to the file whose name sorts first
    run_load(corpus / "tie-b.xml", dsn, mode="full", workers=1)
    run_load(corpus / "tie-a.xml", dsn, workers=1)
    assert query(dsn, "SELECT case_narrative FROM case_summary_narrative WHERE safetyreportid = 'TIE-1'") == [("from a",)]


def test_concurrent_runs_of_one_file_report_no_false_failure(dsn: str, tmp_path: Path) -> None:
    path = write(tmp_path / "in", "same.xml", *[message(CaseSpec(f"SAME-{n}")) for n in range(20)])
    with ThreadPoolExecutor(max_workers=4) as pool:
        summaries = list(pool.map(lambda _: run_load(path, dsn, workers=1), range(4)))
    assert [s.failures for s in summaries] == [[]] * 4
    assert query(dsn, "SELECT COUNT(*) FROM icsr_master") == [(20,)] and query(dsn, "SELECT COUNT(*) FROM icsr_audit_log") == [(20,)]
    assert query(dsn, "SELECT status FROM etl_file_history") == [("completed",)]


def test_a_full_reload_of_another_folder_leaves_no_stale_history(sqlite_dsn: str, tmp_path: Path) -> None:
    first = write(tmp_path / "first", "first.xml", message(CaseSpec("FIRST-1")))
    second = write(tmp_path / "second", "second.xml", message(CaseSpec("SECOND-1")))
    assert not run_load(first.parent, sqlite_dsn, workers=1).failures
    assert not run_load(second.parent, sqlite_dsn, mode="full", workers=1).failures
    assert query(sqlite_dsn, "SELECT file_name FROM etl_file_history") == [("second.xml",)]
    again = run_load(first.parent, sqlite_dsn, workers=1)  # its rows are gone: a delta run loads it again
    assert again.files_skipped == 0 and query(sqlite_dsn, "SELECT COUNT(*) FROM icsr_master") == [(2,)]


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork", reason="patches the workers it forks")
def test_a_killed_worker_fails_its_file_clearly_and_the_others_load(
    sqlite_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "in"
    for name in ("a.xml", "doomed.xml", "c.xml"):
        write(folder, name, message(CaseSpec(f"{name}-1")))
    stage_files = pipeline.stage_files

    def killed_on_doomed(files, *args, **kwargs):  # type: ignore[no-untyped-def]
        if any(name == "doomed.xml" for _, name, _ in files):
            os.kill(os.getpid(), 9)  # as the OS kills a worker that ran out of memory
        return stage_files(files, *args, **kwargs)

    monkeypatch.setattr(pipeline, "stage_files", killed_on_doomed)
    summary = run_load(folder, sqlite_dsn, workers=2, limits=PlanLimits(group_max_files=1))  # one file per task

    assert summary.failures == [("doomed.xml", pipeline.WORKER_DIED)]
    assert query(sqlite_dsn, "SELECT safetyreportid FROM icsr_master ORDER BY 1") == [("a.xml-1",), ("c.xml-1",)]
    # The history holds every file the run tried: the one whose worker died too, failed with the reason
    history = {name: (status, error) for name, status, error in query(sqlite_dsn, "SELECT file_name, status, error FROM etl_file_history")}
    assert history == {"a.xml": ("completed", None), "c.xml": ("completed", None), "doomed.xml": ("failed", pipeline.WORKER_DIED)}


def test_a_killed_run_leaves_no_staging_folder_behind(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    abandoned = Path(tempfile.gettempdir()) / f"{pipeline.STAGING_PREFIX}{gone.stdout.strip()}-x"
    (abandoned / "0-0").mkdir(parents=True)
    mine = Path(tempfile.gettempdir()) / f"{pipeline.STAGING_PREFIX}{os.getpid()}-alive"
    mine.mkdir()
    try:
        assert abandoned in remove_abandoned_staging()
        assert not abandoned.exists() and mine.exists()  # a live run's folder stays
    finally:
        mine.rmdir()


def test_the_command_line_lists_rejected_messages_and_counts_a_failed_file_as_failed(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    bad = [message(CaseSpec(f"BAD-{n}", most_recent_info="2024-01-15")) for n in range(7)]
    write(folder, "b-mixed.xml", message(CaseSpec("OK-1")), *bad)
    (folder / "a-garbage.xml").write_text("this is not XML", encoding="utf-8")
    result = run_cli("run", str(folder), "--dsn", f"sqlite:///{tmp_path / 'x.db'}", "--workers", "1")

    assert result.returncode == 1, result.stdout + result.stderr  # a file failed
    assert "files: 2 found, 0 skipped (already loaded), 0 completed, 1 partial, 1 failed" in result.stdout
    assert "failed: a-garbage.xml: message #1: not well-formed XML" in result.stdout  # the file named once
    assert "partial: b-mixed.xml: 7 of 8 messages rejected" in result.stdout
    assert "  rejected: message #2, case BAD-0, element C.1.5: not an HL7 date/time (TS): '2024-01-15'" in result.stdout
    assert "  ... and 2 more (every one is in etl_quarantine)" in result.stdout
    assert "Traceback" not in result.stderr

    status = run_cli("status", "--dsn", f"sqlite:///{tmp_path / 'x.db'}")
    assert status.returncode == 0 and "failed" in status.stdout and "partial" in status.stdout
    assert re.search(r"partial\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+\d+\.\ds\s+b-mixed\.xml", status.stdout), status.stdout  # when, how long


def test_validate_calls_a_truncated_file_invalid(tmp_path: Path) -> None:
    whole = write(tmp_path / "in", "whole.xml", message(CaseSpec("V-1")), message(CaseSpec("V-2")))
    (whole.parent / "truncated.xml").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    schema = Path(__file__).resolve().parents[1] / "examples" / "e2b-envelope.xsd"
    result = run_cli("validate", "--schema", str(schema), str(whole.parent))
    assert result.returncode == 1
    assert "valid: whole.xml" in result.stdout and "invalid: truncated.xml" in result.stdout


def test_version_closed_pipes_and_secrets_in_the_command_line(tmp_path: Path) -> None:
    assert run_cli("--version").stdout.startswith("eudravigloader ")
    closed = subprocess.run(
        f"{sys.executable} -m py_load_eudravigilance.cli dictionary --format markdown | head -n 1",
        shell=True,
        capture_output=True,
        text=True,
    )
    assert closed.stdout.count("\n") == 1 and "Traceback" not in closed.stderr and "BrokenPipe" not in closed.stderr

    secret = "Qz9-top-secret"
    dsn = f"sqlite:///{tmp_path / 'x.db'}?password={secret}&sslpassword={secret}"
    for command in (("init-db",), ("run", str(tmp_path))):
        result = run_cli(*command, "--dsn", dsn)
        assert secret not in result.stdout + result.stderr, command
    config = tmp_path / "config.yaml"
    config.write_text(f"database:\n  dsn: postgresql://pv:{secret}@db.example/pv: broken\n", encoding="utf-8")
    broken = run_cli("status", "--config", str(config))
    assert broken.returncode == 1 and "not valid YAML at line 2" in broken.stderr and secret not in broken.stderr


def test_s3_problems_are_one_line_errors(s3_bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    _, bucket = s3_bucket
    database = f"sqlite:///{tmp_path / 'x.db'}"
    missing = run_cli("run", f"s3://{bucket}-missing/in/", "--dsn", database)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "S3" in missing.stderr and "NoSuchBucket" in missing.stderr
    unreachable = run_cli("run", f"s3://{bucket}/in/", "--dsn", database, env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert unreachable.returncode == 1 and unreachable.stderr.count("\n") == 1 and "S3" in unreachable.stderr
