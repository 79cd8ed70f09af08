"""The README's commands work as written: each line of its command-line blocks is run in a shell."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def commands_with_exit_codes(title: str) -> list[tuple[str, int]]:
    """Each command of the section's ``sh`` blocks, and the exit code its comment announces (``# exit code 2: ...``), else 0."""
    found = []
    for block in re.findall(r"```sh\n(.*?)```", section(title), flags=re.S):
        for raw in block.splitlines():
            if not raw.strip() or raw.startswith("#"):
                continue
            line, _, comment = raw.partition("  #")
            announced = re.match(r"\s*exit code (\d+)", comment)
            found.append((line.strip(), int(announced[1]) if announced else 0))
    return found


def commands(title: str) -> list[str]:
    return [line for line, _ in commands_with_exit_codes(title)]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory laid out like the checkout: .venv (this interpreter's) and examples/."""
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    return tmp_path


def run_shell(line: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PY_LOAD_EUDRAVIGILANCE_")}
    return subprocess.run(["bash", "-c", line], cwd=cwd, env={**environment, **(env or {})}, capture_output=True, text=True, timeout=600)


def test_every_command_line_example_runs(workdir: Path) -> None:
    lines = commands_with_exit_codes("Command line")
    assert len(lines) >= 8
    for line, expected in lines:
        if line.startswith("sqlite3 ") and shutil.which("sqlite3") is None:
            continue  # the SQLite shell is the system's, not the project's
        result = run_shell(line, workdir)
        assert result.returncode == expected, f"{line}\n{result.stdout}\n{result.stderr}"
    status = run_shell(".venv/bin/eudravigloader status --dsn sqlite:///eudravig.db", workdir)
    assert status.stdout.count("completed") == 3
    # The walkthrough of examples/ shows what its prose says (tests/test_examples.py checks the details)
    examples = run_shell(".venv/bin/eudravigloader status --dsn sqlite:///examples.db", workdir)
    assert examples.stdout.count("completed") == 4 and "partial   " in examples.stdout and "05-rejected-message.xml" in examples.stdout


def test_postgresql_example_runs_against_a_real_server(workdir: Path, postgres_dsn: str) -> None:
    run_shell(next(line for line in commands("Command line") if " generate " in line), workdir)  # the generated files
    script = "\n".join(commands("Pointing it at PostgreSQL"))
    assert script.startswith("export PY_LOAD_EUDRAVIGILANCE_DATABASE__DSN=postgresql+psycopg2://")
    # The README names the machine's `test` database; the test points the same lines at a fresh one
    script = re.sub(r"(DATABASE__DSN=)\S+", rf"\g<1>{postgres_dsn}", script)
    result = run_shell(script, workdir)
    assert result.returncode == 0, result.stderr
    assert "3 completed" in result.stdout


def test_configuration_table_names_real_settings() -> None:
    from py_load_eudravigilance.settings import Settings

    table = section("Configuration")
    for name in re.findall(r"^\| `([a-z_.]+)` \|", table, flags=re.M):
        head, _, tail = name.partition(".")
        fields = Settings.model_fields if not tail else Settings.model_fields[head].annotation.model_fields  # type: ignore[union-attr]
        aliases = {f.alias or key for key, f in fields.items()}
        assert (tail or head) in aliases, name
