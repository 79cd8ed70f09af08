"""The second adversarial round (issue 26): nothing wrong, nothing lost, on both dialects and both mappers."""

from __future__ import annotations

import errno
import gzip
import os
import random
import signal
import string
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, text

from loaders.registry import get_loader
from loaders.upkeep import refresh_drug_event_statistics
from py_load_eudravigilance.cli import run_report
from py_load_eudravigilance.fixtures.generator import (
    CaseSpec,
    CorpusSpec,
    DrugSpec,
    ReactionSpec,
    build_batch,
    build_message,
    write_corpus,
)
from py_load_eudravigilance.meddra import MeddraReleaseError, read_release
from py_load_eudravigilance.pipeline import redact_dsn, run_load
from py_load_eudravigilance.settings import load_settings
from tests.support.db import query
from tests.support.meddra import write_release
from tests.test_cli import run_cli

GOOD_1, GOOD_2 = build_message(CaseSpec("GOOD-1")), build_message(CaseSpec("GOOD-2"))


def peak_mb_of(code: str, *args: str) -> tuple[list[str], int]:
    """Run ``code`` in a fresh interpreter; its output lines and its peak resident memory in MB."""
    # VmHWM, not ru_maxrss: the latter inherits the high-water mark of the forking test process
    code += "\nprint(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) // 1024)"
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True).stdout.splitlines()
    return out[:-1], int(out[-1])


# Item 3 and the nested message of item 10: every element at a message position is loaded or quarantined


def odd_message_positions() -> tuple[str, dict[int, str]]:
    """A batch with messages and, between them, elements that are not E2B(R3) messages: position -> reason."""
    foreign = build_message(CaseSpec("FOREIGN-1")).replace("<PORR_IN049016UV>", '<PORR_IN049016UV xmlns="urn:example:other">', 1)
    misspelled = build_message(CaseSpec("TYPO-1")).replace("PORR_IN049016UV", "PORR_IN049016UW")
    nested = build_message(CaseSpec("OUTER-1")).replace("</PORR_IN049016UV>", build_message(CaseSpec("INNER-1")) + "</PORR_IN049016UV>")
    unprefixed = build_message(CaseSpec("NONS-1")).replace("<PORR_IN049016UV>", '<PORR_IN049016UV xmlns="">', 1)
    batch = build_batch([GOOD_1, foreign, misspelled, nested, "<x/>", unprefixed, GOOD_2])
    expected = {
        2: "a PORR_IN049016UV in namespace urn:example:other",
        3: "element PORR_IN049016UW",
        4: "holds another PORR_IN049016UV",
        5: "element x",
        6: "a PORR_IN049016UV in no namespace",
    }
    return batch, expected


@pytest.mark.parametrize("mapper", ["python", "compiled"])
def test_every_element_at_a_message_position_is_loaded_or_quarantined(
    dsn: str, tmp_path: Path, mapper: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PY_LOAD_EUDRAVIGILANCE_MAPPER", mapper)
    batch, expected = odd_message_positions()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "odd.xml").write_text(batch)

    summary = run_load(tmp_path / "in", dsn, workers=1, mapper=mapper)

    assert summary.exit_code == 2  # partial: the file loaded, with rejected elements
    assert summary.mapper == mapper and f"mapped by the {mapper} mapper" in run_report(summary)[0]
    assert query(dsn, "SELECT safetyreportid FROM icsr_master ORDER BY 1") == [("GOOD-1",), ("GOOD-2",)]
    assert query(dsn, "SELECT status, messages_total, messages_rejected FROM etl_file_history") == [("partial", 7, 5)]
    rows = query(dsn, "SELECT message_position, reason, raw_xml FROM etl_quarantine ORDER BY message_position")
    assert [row[0] for row in rows] == list(expected)
    for (position, reason, raw_xml), (_, wanted) in zip(rows, expected.items(), strict=True):
        assert wanted in reason and "odd.xml" in reason and f"message #{position}" in reason
        assert raw_xml  # kept, to be corrected and sent again
    assert "INNER-1" in rows[2][2]  # the nested message is in its outer message's quarantined copy


def test_a_nested_message_in_a_single_message_file_is_not_a_second_case(tmp_path: Path, sqlite_dsn: str) -> None:
    outer = build_message(CaseSpec("OUTER-1")).replace("</PORR_IN049016UV>", build_message(CaseSpec("INNER-1")) + "</PORR_IN049016UV>")
    hl7 = 'xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    outer = outer.replace("<PORR_IN049016UV>", f"<PORR_IN049016UV {hl7}>", 1)
    path = tmp_path / "single.xml"
    path.write_text(outer)

    summary = run_load(path, sqlite_dsn, workers=1)

    assert summary.exit_code == 1  # its only message was rejected
    assert query(sqlite_dsn, "SELECT COUNT(*) FROM icsr_master") == [(0,)]
    (reason,) = query(sqlite_dsn, "SELECT reason FROM etl_quarantine")[0]
    assert "holds another PORR_IN049016UV" in reason


# Item 5: memory stays flat whatever sits between messages


def test_memory_stays_flat_whatever_sits_between_messages(tmp_path: Path) -> None:
    siblings = 2_000_000
    (tmp_path / "siblings.xml").write_text(build_batch([GOOD_1, "<x/>" * siblings, GOOD_2]))
    # one stray wrapping as many children, compressed: a few kilobytes on disk
    wrapped = build_batch([GOOD_1, "<wrapper><y>" + "<x/>" * siblings + "</y></wrapper>", GOOD_2]).encode()
    (tmp_path / "wrapped.xml.gz").write_bytes(gzip.compress(wrapped))
    code = (
        "import sys; from pathlib import Path; from py_load_eudravigilance.staging import stage_file\n"
        "for name in ('siblings.xml', 'wrapped.xml.gz'):\n"
        "    f = stage_file(Path(sys.argv[1]) / name, Path(sys.argv[1]) / 'stage' / name).files[0]\n"
        "    print(f.messages_total, f.messages_rejected, f.row_counts.get('icsr_master'), f.error)"
    )
    out, peak_mb = peak_mb_of(code, str(tmp_path))
    assert out == [f"{siblings + 2} {siblings} 2 None", "3 1 2 None"]  # each stray counted as a rejected message
    assert peak_mb < 150  # the strays were 8 MB of markup, 100+ MB as a tree: never all held


def test_strays_beyond_the_first_thousand_are_counted_in_one_quarantine_row(tmp_path: Path, sqlite_dsn: str) -> None:
    path = tmp_path / "strays.xml"
    path.write_text(build_batch([GOOD_1, "<x/>" * 1500, GOOD_2]))

    run_load(path, sqlite_dsn, workers=1)

    assert query(sqlite_dsn, "SELECT messages_total, messages_rejected FROM etl_file_history") == [(1502, 1500)]
    assert query(sqlite_dsn, "SELECT COUNT(*) FROM etl_quarantine WHERE message_position IS NOT NULL") == [(1000,)]
    (summary,) = query(sqlite_dsn, "SELECT reason FROM etl_quarantine WHERE message_position IS NULL")[0]
    assert "500 more elements" in summary


# Item 4: the documented mapper switch is not a setting and does not break them


@pytest.mark.parametrize("value", ["python", "compiled", "auto"])
def test_the_mapper_variable_does_not_break_the_settings(value: str) -> None:
    settings = load_settings(environ={"PY_LOAD_EUDRAVIGILANCE_MAPPER": value, "PY_LOAD_EUDRAVIGILANCE_WORKERS": "2"})
    assert settings.workers == 2


def test_the_cli_runs_with_the_python_mapper_chosen(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.xml").write_text(build_batch([GOOD_1]))
    env = {**os.environ, "PY_LOAD_EUDRAVIGILANCE_MAPPER": "python"}
    command = [sys.executable, "-m", "py_load_eudravigilance.cli", "run", str(tmp_path / "in"), "--dsn", f"sqlite:///{tmp_path / 'm.db'}"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


# Item 7: killing the CLI leaves no process behind


def children_of(pid: int) -> set[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def wait_until(condition, seconds: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
    """Poll ``condition`` until it holds or the deadline passes."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_kill_9_of_the_cli_leaves_no_worker_behind(tmp_path: Path) -> None:
    write_corpus(tmp_path / "in", CorpusSpec(files=8, cases_per_file=400, seed=5))
    command = [sys.executable, "-m", "py_load_eudravigilance.cli", "run", str(tmp_path / "in"), "--workers", "2"]
    cli = subprocess.Popen([*command, "--dsn", f"sqlite:///{tmp_path / 'k.db'}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    try:
        assert wait_until(lambda: len(children_of(cli.pid)) >= 2), "the workers never started"
        workers = children_of(cli.pid)
        os.kill(cli.pid, signal.SIGKILL)
        cli.wait(timeout=60)
        assert wait_until(lambda: not any(alive(pid) for pid in workers), seconds=30), "workers outlived the CLI"
    finally:
        if cli.poll() is None:
            cli.kill()
        for pid in workers:  # a failed test leaves no orphans either
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


# Item 2: a value the database cannot index rejects its message, never the file


def incompressible(length: int) -> str:
    """Text PostgreSQL cannot compress into a btree entry."""
    rng = random.Random(length)
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(length))


@pytest.mark.parametrize("mapper", ["python", "compiled"])
def test_a_value_too_long_to_index_rejects_its_message_not_the_file(
    dsn: str, tmp_path: Path, mapper: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PY_LOAD_EUDRAVIGILANCE_MAPPER", mapper)
    long = incompressible(4000)
    cases = [
        CaseSpec("OK-1"),
        CaseSpec("LONG-PRODUCT", drugs=[DrugSpec(name=long)]),
        CaseSpec("LONG-SUBSTANCE", drugs=[DrugSpec(substance=long)]),
        CaseSpec("LONG-CODE", reactions=[ReactionSpec(meddra_code=long)]),
        CaseSpec("LONG-ID", reactions=[ReactionSpec(xml_id=long)]),
        CaseSpec("\U0001f642" * 300),  # 300 characters, 1,200 bytes: a key too wide beside another in a signal key
        CaseSpec("OK-2", drugs=[DrugSpec(name="\u85ac" * 250)]),  # E2B(R3)'s longest G.k.2.2 in 3-byte characters loads
    ]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "long.xml").write_text(build_batch([build_message(case) for case in cases]))

    for _ in range(2):  # a rerun ends the same: nothing makes the file fail
        summary = run_load(tmp_path / "in", dsn, workers=1, mode="full", mapper=mapper)
        assert summary.exit_code == 2, summary
        assert query(dsn, "SELECT safetyreportid FROM icsr_master ORDER BY 1") == [("OK-1",), ("OK-2",)]
        rejected = query(dsn, "SELECT message_position, element, reason FROM etl_quarantine ORDER BY message_position")
        assert [(position, element) for position, element, _ in rejected] == [
            (2, "G.k.2.2"),
            (3, "G.k.2.3.r.1"),
            (4, "E.i.2.1b"),
            (5, "E.i (id)"),
            (6, "C.1.1"),
        ]
        assert all("long.xml" in reason and "bytes" in reason for _, _, reason in rejected)
    refresh_drug_event_statistics(get_loader(dsn).engine, rebuild=True)  # the signal keys made of the loaded names hold too


# Item 6: the history is true after any fault, and concurrent runs of a file agree on its counters


def test_a_full_staging_disk_leaves_every_file_failed_with_the_reason_never_running(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from py_load_eudravigilance import staging

    (tmp_path / "in").mkdir()
    # big.xml fills a first part (loaded while parsed, where the loader can) before the disk is full; small.xml none
    (tmp_path / "in" / "big.xml").write_text(build_batch([build_message(CaseSpec(f"BIG-{n}")) for n in range(600)]))
    (tmp_path / "in" / "small.xml").write_text(build_batch([GOOD_1]))
    write = staging._BatchWriter.flush

    def disk_full(self: staging._BatchWriter) -> None:  # the workers are forked: they inherit this
        if self.parts >= 1 or (self.file is not None and self.file[0] == "small.xml"):
            raise OSError(errno.ENOSPC, "No space left on device")
        write(self)

    monkeypatch.setattr(staging._BatchWriter, "flush", disk_full)
    summary = run_load(tmp_path / "in", dsn, workers=1)

    assert summary.exit_code == 1 and sorted(name for name, _ in summary.failures) == ["big.xml", "small.xml"]
    history = dict(query(dsn, "SELECT file_name, status FROM etl_file_history"))
    assert history == {"big.xml": "failed", "small.xml": "failed"}
    assert all("No space left on device" in error for (error,) in query(dsn, "SELECT error FROM etl_file_history"))
    assert query(dsn, "SELECT COUNT(*) FROM icsr_master") == [(0,)]

    monkeypatch.setattr(staging._BatchWriter, "flush", write)
    assert run_load(tmp_path / "in", dsn, workers=1).exit_code == 0  # room again: both load
    assert query(dsn, "SELECT status, COUNT(*) FROM etl_file_history GROUP BY status") == [("completed", 2)]


def test_two_runs_of_a_file_at_once_agree_on_its_counters(postgres_dsn: str, tmp_path: Path) -> None:
    path = tmp_path / "shared.xml"
    path.write_text(build_batch([build_message(CaseSpec(f"SHARED-{n}")) for n in range(40)]))
    loader = get_loader(postgres_dsn)
    loader.create_all_tables()
    admin = create_engine(postgres_dsn, isolation_level="AUTOCOMMIT")
    code = (
        "import sys; from py_load_eudravigilance.pipeline import run_load\n"
        "o = run_load(sys.argv[1], sys.argv[2], workers=1).outcomes\n"
        "print(*[(x.status, x.cases_inserted, x.cases_skipped_older) for x in o])"
    )
    second: list[subprocess.Popen[str]] = []

    def history_started() -> object:
        with admin.connect() as conn:
            return conn.execute(text("SELECT started_at FROM etl_file_history")).scalar()

    @event.listens_for(loader.engine, "before_cursor_execute")
    def start_the_second_run(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        # The first run has copied the cases, uncommitted; the second run starts and marks the file running too
        if statement.startswith("DELETE FROM etl_quarantine") and not second:
            first_mark = history_started()
            second.append(subprocess.Popen([sys.executable, "-c", code, str(path), postgres_dsn], stdout=subprocess.PIPE, text=True))
            assert wait_until(lambda: history_started() != first_mark), "the second run never marked the file running"

    first = run_load(path, loader, workers=1).outcomes
    output, _ = second[0].communicate(timeout=300)
    event.remove(loader.engine, "before_cursor_execute", start_the_second_run)
    admin.dispose()

    assert [(o.status, o.cases_inserted, o.cases_skipped_older) for o in first] == [("completed", 40, 0)]
    assert output.strip() == "('completed', 40, 0)"  # the second run tells the same story
    assert query(postgres_dsn, "SELECT status, cases_inserted, cases_skipped_older FROM etl_file_history") == [("completed", 40, 0)]
    assert query(postgres_dsn, "SELECT COUNT(*), SUM(version_count) FROM icsr_master") == [(40, 40)]


# Item 10: the smaller ones


def damaged_releases(root: Path) -> dict[str, tuple[Path, str]]:
    """name -> (release folder, what the error must say)."""

    def release(name: str, change) -> Path:  # type: ignore[no-untyped-def]
        folder = write_release(root / name, "26.1") / "MedAscii"
        change(folder)
        return folder.parent

    def append(file: str, data: bytes):  # type: ignore[no-untyped-def]
        return lambda folder: (folder / file).write_bytes((folder / file).read_bytes() + data)

    duplicate = append("llt.asc", b"10019211$Headache again$10019211$$$$$$$Y$\n")
    nul = append("pt.asc", b"10000001$Bad\x00term$$10029205$$$$$$$\n")
    cp1252 = append("llt.asc", "10000002$Ca\u00efd \u2013 term$10019211$$$$$$$Y$\n".encode("cp1252"))
    return {
        "duplicate": (release("duplicate", duplicate), "llt.asc line 10: 10019211 again (first on line 1)"),
        "nul": (release("nul", nul), "pt.asc line 9: a NUL byte"),
        "cp1252": (release("cp1252", cp1252), "llt.asc line 10: byte 0xef is not UTF-8"),
        "empty": (release("empty", lambda folder: (folder / "llt.asc").write_bytes(b"")), "llt.asc: no terms"),
    }


def test_damaged_meddra_releases_are_refused_naming_file_and_line(tmp_path: Path) -> None:
    for name, (folder, message) in damaged_releases(tmp_path).items():
        with pytest.raises(MeddraReleaseError) as raised:
            read_release(folder)
        assert message in str(raised.value), name


def test_a_meddra_release_in_another_encoding_loads_with_its_letters(tmp_path: Path, sqlite_dsn: str) -> None:
    folder, _ = damaged_releases(tmp_path)["cp1252"]
    release = read_release(folder, encoding="cp1252")
    assert {"llt_code": "10000002", "llt_name": "Ca\u00efd \u2013 term"}.items() <= release.rows["meddra_llt"][-1].items()


def test_the_cli_refuses_a_damaged_meddra_release_on_postgresql_without_a_traceback(tmp_path: Path, postgres_dsn: str) -> None:
    folder, message = damaged_releases(tmp_path)["duplicate"]
    result = run_cli("meddra", "load", str(folder), "--dsn", postgres_dsn)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("top", ["-1", "0", str(10**30), "many"])
def test_signals_top_must_be_a_sensible_count(tmp_path: Path, top: str) -> None:
    result = run_cli("signals", "--top", top, "--dsn", f"sqlite:///{tmp_path / 's.db'}")
    assert result.returncode == 2 and "--top" in result.stderr and "Traceback" not in result.stderr


def test_a_password_holding_an_at_sign_never_shows(tmp_path: Path) -> None:
    secret_tail = "tAiL-0f-s3cret"
    dsn = f"postgresql+psycopg2://pv:pa@{secret_tail}@127.0.0.1:1/none"
    assert redact_dsn(dsn) == "postgresql+psycopg2://pv:***@127.0.0.1:1/none"
    result = run_cli("run", str(tmp_path), "--dsn", dsn)
    assert result.returncode == 1 and "%40" in result.stderr  # told how to write it
    assert secret_tail not in result.stdout + result.stderr


def test_a_symlinked_source_file_is_not_copied_to_quarantine_and_copies_are_private(tmp_path: Path, sqlite_dsn: str) -> None:
    secret = tmp_path / "elsewhere" / "id_rsa"
    secret.parent.mkdir()
    secret.write_text("-----BEGIN PRIVATE KEY-----")
    incoming, quarantine = tmp_path / "in", tmp_path / "quarantine"
    incoming.mkdir()
    (incoming / "linked.xml").symlink_to(secret)
    (incoming / "broken.xml").write_text("<MCCI_IN200100UV01")

    run_load(incoming, sqlite_dsn, workers=1, quarantine=quarantine)

    assert not (quarantine / "linked.xml").exists()
    assert "not copied" in (quarantine / "linked.xml.reason.txt").read_text()
    for path in quarantine.iterdir():
        assert path.stat().st_mode & 0o077 == 0, path  # readable by the owner only


def test_a_line_feed_in_a_file_name_cannot_forge_report_lines(tmp_path: Path) -> None:
    incoming = tmp_path / "in"
    incoming.mkdir()
    (incoming / "a\nfailed: forged.xml").write_text("<MCCI_IN200100UV01")
    result = run_cli("run", str(incoming), "--dsn", f"sqlite:///{tmp_path / 'n.db'}")
    assert result.returncode == 1
    assert not any(line.startswith("failed: forged.xml") for line in result.stdout.splitlines())
    assert "failed: a\\nfailed: forged.xml: " in result.stdout
    status = run_cli("status", "--dsn", f"sqlite:///{tmp_path / 'n.db'}")
    assert len(status.stdout.splitlines()) == 1 and "a\\nfailed: forged.xml" in status.stdout


def test_a_second_sqlite_load_waits_for_the_first_then_loads(tmp_path: Path) -> None:
    import sqlite3

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.xml").write_text(build_batch([GOOD_1]))
    database = tmp_path / "w.db"
    get_loader(f"sqlite:///{database}").create_all_tables()
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another load, writing
    code = (
        "import sys; import loaders.sqlite as s; s.BUSY_TIMEOUT_MS = 50\n"  # a long load, as the second sees it
        "from py_load_eudravigilance.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    command = [sys.executable, "-c", code, "run", str(tmp_path / "in"), "--dsn", f"sqlite:///{database}"]
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert second.stderr is not None
        assert "another load holds the SQLite database" in second.stderr.readline()
    finally:
        holder.execute("COMMIT")
        holder.close()
    output, _ = second.communicate(timeout=120)
    assert second.returncode == 0 and "1 completed" in output


def test_the_queries_the_demo_suggests_run_on_a_loaded_database(dsn: str, tmp_path: Path) -> None:
    from eudravig_assets.demo import SUGGESTED_QUERIES

    write_corpus(tmp_path / "corpus", CorpusSpec(files=1, cases_per_file=6, seed=2))
    assert not run_load(tmp_path / "corpus", dsn).failures
    refresh_drug_event_statistics(get_loader(dsn).engine)
    with create_engine(dsn).connect() as conn:
        for suggested in SUGGESTED_QUERIES:
            assert conn.execute(text(suggested)).all(), suggested


def test_the_demo_shows_how_to_look_at_the_database_without_its_password() -> None:
    from eudravig_assets.demo import database_client

    assert database_client("sqlite:///eudravig.db") == "sqlite3 eudravig.db"
    shown = database_client("postgresql+psycopg2://pv:Secr3tPw@db.example.org/pv")
    assert "Secr3tPw" not in shown and "pv:***@db.example.org/pv" in shown
