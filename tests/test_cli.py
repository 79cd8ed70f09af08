"""The eudravigloader commands, run as a user runs them (a real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from py_load_eudravigilance.fixtures.generator import CaseSpec, build_batch, build_message

CLI = [sys.executable, "-m", "py_load_eudravigilance.cli"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)


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


def test_run_init_status_and_validate_on_sqlite(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    bad = build_message(CaseSpec("BAD", most_recent_info="not-a-date"))
    (source / "b.xml").write_text(build_batch([build_message(CaseSpec("OK-1")), bad]))
    dsn = f"sqlite:///{tmp_path / 'cli.db'}"
    assert run_cli("init-db", "--dsn", dsn).returncode == 0
    loaded = run_cli("run", str(source), "--dsn", dsn, "--mode", "delta", "--workers", "2")
    assert loaded.returncode == 2, loaded.stdout + loaded.stderr  # loaded, with a rejected message
    assert "1 inserted" in loaded.stdout and "messages rejected: 1" in loaded.stdout
    again = run_cli("run", "--dsn", dsn, env={"PY_LOAD_EUDRAVIGILANCE_SOURCE_URI": str(source)})
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
