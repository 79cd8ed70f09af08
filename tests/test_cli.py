"""The eudravigloader commands, run as a user runs them: their output and exit code, in-process through
``main(argv)``; in a process of their own where the process is what is tested (start-up, imports, environment)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from py_load_eudravigilance.cli import build_parser, main
from py_load_eudravigilance.fixtures.generator import CaseSpec, CorpusSpec, build_batch, build_message, write_corpus
from py_load_eudravigilance.mapping.values import parse_ts

CLI = [sys.executable, "-m", "py_load_eudravigilance.cli"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command's exit code, standard output and standard error, as the ``eudravigloader`` script gives them.

    It runs in this process (a new interpreter per command would pay start-up and imports each time),
    unless ``env`` is given: then in a process of its own with that environment, as a shell starts it
    (some clients, like boto3's, are made once per process and would keep an earlier environment).
    """
    if env is not None:
        return subprocess.run([*CLI, *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=300)
    out, err = io.StringIO(), io.StringIO()
    handlers = list(logging.root.handlers)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse: --version, --help and usage errors
            code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
        finally:
            # main() logs to the stderr of its call; the next call, like a new process, gets its own
            logging.root.handlers[:] = handlers
    return subprocess.CompletedProcess(["eudravigloader", *args], code, out.getvalue(), err.getvalue())


def modules_after(*argv: str, cwd: Path | None = None) -> set[str]:
    """The modules a fresh interpreter has imported once ``eudravigloader ARGV`` has run."""
    code = (
        "import contextlib, io, sys\n"
        "from py_load_eudravigilance.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    main({list(argv)!r})\n"
        "print(' '.join(sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=300, check=True)
    return set(result.stdout.split())


def test_dictionary_json_lists_every_column_with_its_element() -> None:
    result = run_cli("dictionary", "--format", "json")
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    by_element: dict[str, dict[str, str]] = {}
    for entry in entries:
        by_element.setdefault(entry["element"], entry)
    assert {"table", "column", "element", "name"} <= set(entries[0])
    assert by_element["E.i.2.1b"]["table"] == "reactions" and by_element["E.i.2.1b"]["column"] == "reaction_meddra_code"
    assert by_element["C.1.1"]["table"] == "icsr_master"


def test_dictionary_markdown_renders_tables() -> None:
    result = run_cli("dictionary", "--format", "markdown")
    assert "### `drug_reaction_assessments`" in result.stdout and "| G.k.9.i.2.r.3 |" in result.stdout


def test_run_init_status_and_validate_on_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "in"
    source.mkdir()
    bad = build_message(CaseSpec("BAD", most_recent_info="not-a-date"))
    (source / "b.xml").write_text(build_batch([build_message(CaseSpec("OK-1")), bad]))
    dsn = f"sqlite:///{tmp_path / 'cli.db'}"
    assert run_cli("init-db", "--dsn", dsn).returncode == 0
    loaded = run_cli("run", str(source), "--dsn", dsn, "--mode", "delta", "--workers", "2")
    assert loaded.returncode == 2, loaded.stdout + loaded.stderr  # loaded, with a rejected message
    assert "1 inserted" in loaded.stdout and "messages rejected: 1" in loaded.stdout
    monkeypatch.setenv("PY_LOAD_EUDRAVIGILANCE_SOURCE_URI", str(source))  # read when the command runs
    again = run_cli("run", "--dsn", dsn)
    assert again.returncode == 0 and "1 skipped (already loaded)" in again.stdout
    status = run_cli("status", "--dsn", dsn)
    assert "partial" in status.stdout and "b.xml" in status.stdout and "rejected=1" in status.stdout
    assert run_cli("validate-db-schema", "--dsn", dsn).stdout.strip().endswith("schema is valid")


def test_dsn_from_environment_and_password_never_printed(tmp_path: Path) -> None:
    secret = "s3cr3t-Pa55"
    result = run_cli(
        "run", str(tmp_path), env={"PY_LOAD_EUDRAVIGILANCE_DATABASE__DSN": f"postgresql+psycopg2://pv:{secret}@127.0.0.1:1/none"}
    )
    assert result.returncode == 1
    assert secret not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "error:" in result.stderr


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("run", str(tmp_path / "nowhere"), "--dsn", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.returncode == 1 and "source not found" in result.stderr and "Traceback" not in result.stderr


def test_published_data_dictionary_is_up_to_date() -> None:
    generated = run_cli("dictionary", "--format", "markdown").stdout
    published = (Path(__file__).resolve().parents[1] / "docs" / "data-dictionary.md").read_text(encoding="utf-8")
    assert generated in published, "docs/data-dictionary.md is stale: regenerate it with eudravigloader dictionary"


def test_validate_reports_each_file_against_the_schema(tmp_path: Path, write_batch) -> None:  # type: ignore[no-untyped-def]
    good = write_batch("good.xml", CaseSpec("V-1"))
    (good.parent / "other.xml").write_text('<?xml version="1.0"?><report xmlns="urn:example"/>', encoding="utf-8")
    schema = Path(__file__).resolve().parents[1] / "examples" / "e2b-envelope.xsd"

    result = run_cli("validate", "--schema", str(schema), str(good.parent))

    assert result.returncode == 1
    assert "valid: good.xml" in result.stdout
    assert "invalid: other.xml: " in result.stdout and "report" in result.stdout
    assert "1 valid, 1 invalid" in result.stdout


def test_invalid_configuration_is_one_clear_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("mode: sometimes\n")
    result = run_cli("run", "somewhere", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: invalid settings") and "mode" in result.stderr
    assert "Traceback" not in result.stderr


# Modules a command must not need before it runs: data frames, the ORM's schema, settings validation, Dagster
HEAVY_MODULES = {"pandas", "pandera", "dagster", "sqlalchemy", "pydantic", "py_load_eudravigilance.schema"}


def test_version_and_help_start_without_importing_pandas_or_the_schema() -> None:
    for argv in (("--version",), ("--help",)):
        assert not HEAVY_MODULES & modules_after(*argv), argv
    result = subprocess.run([*CLI, "--version"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.startswith("eudravigloader ")


def test_a_load_imports_neither_pandas_pandera_nor_dagster(tmp_path: Path, write_batch) -> None:  # type: ignore[no-untyped-def]
    source = write_batch("a.xml", CaseSpec("LIGHT-1")).parent
    loaded = modules_after("run", str(source), "--dsn", f"sqlite:///{tmp_path / 'x.db'}", "--workers", "1")
    assert "py_load_eudravigilance.pipeline" in loaded  # it did load
    assert not {"pandas", "pandera", "dagster"} & loaded


def test_commands_that_read_create_no_database(tmp_path: Path) -> None:
    mistyped = tmp_path / "mistyped.db"
    for command in (("status",), ("signals",), ("validate-db-schema",)):
        result = run_cli(*command, "--dsn", f"sqlite:///{mistyped}")
        assert result.returncode == 1, command
        assert result.stderr == f"error: no database at {mistyped}: run `eudravigloader init-db --dsn sqlite:///{mistyped}` first\n"
    run = run_cli("run", str(tmp_path / "no-such-folder"), "--dsn", f"sqlite:///{mistyped}")
    assert run.returncode == 1 and run.stderr == f"error: source not found: {tmp_path / 'no-such-folder'}\n"
    assert not mistyped.exists()

    empty = tmp_path / "empty.db"
    empty.touch()  # as an earlier version of `status` left it
    for command in (("status",), ("signals",)):
        result = run_cli(*command, "--dsn", f"sqlite:///{empty}")
        assert result.returncode == 1 and result.stderr.count("\n") == 1, command
        assert f"has no eudravigloader tables: run `eudravigloader init-db --dsn sqlite:///{empty}` first" in result.stderr
    assert empty.stat().st_size == 0


def test_commands_that_read_leave_an_uninitialised_postgresql_database_empty(postgres_dsn: str) -> None:
    from tests.support.db import query

    for command in (("status",), ("signals",)):
        result = run_cli(*command, "--dsn", postgres_dsn)
        assert result.returncode == 1 and "Traceback" not in result.stderr, command
        fix = f"run `eudravigloader init-db --dsn {postgres_dsn}` first"
        assert result.stderr == f"error: {postgres_dsn} has no eudravigloader tables: {fix}\n"
    assert query(postgres_dsn, "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'") == [(0,)]


def test_a_failed_file_is_named_once(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "garbage.xml").write_text("not XML at all", encoding="utf-8")
    dsn = f"sqlite:///{tmp_path / 'x.db'}"

    result = run_cli("run", str(folder), "--dsn", dsn)
    status = run_cli("status", "--dsn", dsn)

    failed = [line for line in result.stdout.splitlines() if line.startswith("failed:")]
    assert failed == [line for line in failed if line.count("garbage.xml") == 1] and len(failed) == 1, result.stdout
    assert re.match(r"failed: garbage\.xml: message #1: not well-formed XML", failed[0])
    assert status.stdout.count("garbage.xml") == 1, status.stdout


def test_generate_writes_valid_dates_for_any_number_of_files(tmp_path: Path) -> None:
    """File n of a corpus does not depend on how many files follow it, so 200 files cover files=1..200."""
    from py_load_eudravigilance.staging import stage_file

    result = run_cli("generate", str(tmp_path / "out"), "--files", "200", "--cases", "2")
    assert result.returncode == 0 and "wrote 200 files" in result.stdout, result.stderr

    latest: dict[str, str] = {}
    paths = sorted((tmp_path / "out").glob("*.xml"))
    for path in paths:
        text = path.read_text(encoding="utf-8")
        for stamp in re.findall(r'<(?:creationTime|effectiveTime|low|high) value="([^"]+)"', text):
            parse_ts(stamp)  # raises on 20240133 or the like
        for message in text.split("<PORR_IN049016UV>")[1:]:
            case_id = re.search(r'<id extension="([^"]+)" root="2\.16\.840\.1\.113883\.3\.989\.2\.1\.3\.2"/>', message)[1]  # type: ignore[index]
            recent = re.search(r'<availabilityTime value="([^"]+)"/>', message)[1]  # type: ignore[index]
            assert parse_ts(recent) and recent > latest.get(case_id, ""), (path.name, case_id)  # each version newer
            latest[case_id] = recent
    last = stage_file(paths[-1], tmp_path / "stage").files[0]
    assert last.messages_total == 2 and last.messages_rejected == 0 and last.error is None
    assert len(write_corpus(tmp_path / "one", CorpusSpec(files=1, cases_per_file=1))) == 1


def undocumented_options(parser: argparse.ArgumentParser, path: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                missing += undocumented_options(command, f"{path} {name}")
        elif not action.help:
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_option_of_every_command_says_what_it_does() -> None:
    assert undocumented_options(build_parser(), "eudravigloader") == []
    assert "active substance" in run_cli("signals", "--help").stdout


@pytest.mark.parametrize("argv", [("generate", "out", "--files", "0"), ("generate", "out", "--cases", "-1")])
def test_generate_refuses_nothing_to_write(argv: tuple[str, ...], tmp_path: Path) -> None:
    result = run_cli(*argv[:1], str(tmp_path / argv[1]), *argv[2:])
    assert result.returncode == 2 and "must be at least 1" in result.stderr
    assert not (tmp_path / argv[1]).exists()
