"""Hostile and broken input: refused with a clear error naming the file, quarantined, nothing else lost."""

from __future__ import annotations

import gzip
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from py_load_eudravigilance.fixtures.generator import CaseSpec, build_batch, build_message
from py_load_eudravigilance.pipeline import run_load
from py_load_eudravigilance.sources import parse_location, quarantine_file
from py_load_eudravigilance.staging import stage_file
from tests.support.db import query

HL7 = 'xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
GOOD = build_message(CaseSpec("GOOD-1"))


class ConnectionCounter:
    """A TCP listener on loopback that counts who connects (nothing ever should)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while self.running:
            try:
                conn, _ = self.server.accept()
                self.connections += 1
                conn.close()
            except OSError:
                continue

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.server.close()


@pytest.fixture
def listener():  # type: ignore[no-untyped-def]
    counter = ConnectionCounter()
    yield counter
    counter.close()


def mcci(body: str, prolog: str = "") -> bytes:
    return f"{prolog}<MCCI_IN200100UV01 {HL7}>{body}</MCCI_IN200100UV01>".encode()


def hostile_documents(port: int) -> dict[str, tuple[bytes, str]]:
    """name -> (file content, what the error must say)."""
    doctype = "DOCTYPE declarations are refused"
    laughs = '<!ENTITY a "ha">' + "".join(f'<!ENTITY {c} "{("&" + p + ";") * 10}">' for p, c in zip("abcdefgh", "bcdefghi", strict=True))
    return {
        "xxe-file": (mcci("&e;", '<!DOCTYPE r [<!ENTITY e SYSTEM "file:///etc/passwd">]>'), doctype),
        "xxe-network": (mcci("&e;", f'<!DOCTYPE r [<!ENTITY e SYSTEM "http://127.0.0.1:{port}/x">]>'), doctype),
        "external-dtd": (mcci("", f'<!DOCTYPE MCCI_IN200100UV01 SYSTEM "http://127.0.0.1:{port}/e2b.dtd">'), doctype),
        "billion-laughs": (mcci("&i;", f"<!DOCTYPE r [{laughs}]>"), doctype),
        "quadratic-blowup": (mcci("&x;" * 50_000, f'<!DOCTYPE r [<!ENTITY x "{"x" * 50_000}">]>'), doctype),
        "deep-nesting": (
            build_batch([GOOD.replace("<text>", "<text>" + "<x>" * 100_000 + "</x>" * 100_000, 1)]).encode(),
            "Excessive depth",
        ),
        "huge-text": (build_batch([GOOD.replace("<text>", "<text>" + "a" * 12_000_000, 1)]).encode(), "longer than"),
        "huge-attribute": (build_batch([GOOD.replace("<text>", '<text><y a="' + "a" * 12_000_000 + '"/>', 1)]).encode(), "longer than"),
    }


@pytest.mark.parametrize("name", list(hostile_documents(0)))
def test_hostile_xml_is_refused_without_expanding_or_fetching_anything(name: str, tmp_path: Path, listener: ConnectionCounter) -> None:
    content, expected = hostile_documents(listener.port)[name]
    path = tmp_path / f"{name}.xml"
    path.write_bytes(content)

    staged = stage_file(path, tmp_path / "stage").files[0]

    assert staged.error and expected in staged.error and staged.file_name == f"{name}.xml"  # the outcome names the file
    assert staged.messages_total == 0 or name.startswith(("deep", "huge"))
    staged_text = "".join(p.read_text() for p in (tmp_path / "stage").glob("*.csv"))
    assert "root:" not in staged_text and "haha" not in staged_text  # no entity was ever expanded
    assert listener.connections == 0


def test_hostile_file_memory_stays_bounded(tmp_path: Path) -> None:
    """Billion laughs and a 200 MB attribute in a fresh process: refused, peak memory far below their size."""
    laughs = '<!ENTITY a "ha">' + "".join(f'<!ENTITY {c} "{("&" + p + ";") * 10}">' for p, c in zip("abcdefgh", "bcdefghi", strict=True))
    (tmp_path / "laughs.xml").write_text(f"<!DOCTYPE r [{laughs}]><MCCI_IN200100UV01 {HL7}>&i;</MCCI_IN200100UV01>")
    with (tmp_path / "attribute.xml").open("w") as out:
        out.write(f'<MCCI_IN200100UV01 {HL7}><PORR_IN049016UV><x a="')
        for _ in range(200):
            out.write("a" * 1_000_000)
        out.write('"/></PORR_IN049016UV></MCCI_IN200100UV01>')
    code = (
        "import sys; from pathlib import Path; from py_load_eudravigilance.staging import stage_file\n"
        "for name in ('laughs.xml', 'attribute.xml'):\n"
        "    print(stage_file(Path(sys.argv[1]) / name, Path(sys.argv[1]) / 'stage').files[0].error)\n"
        # VmHWM, not ru_maxrss: the latter inherits the high-water mark of the forking test process
        "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) // 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True).stdout.splitlines()
    assert "DOCTYPE declarations are refused" in out[0] and "longer than" in out[1]
    assert int(out[-1]) < 250  # MB: the 200 MB attribute was never held


def broken_files() -> dict[str, tuple[bytes, str]]:
    batch = build_batch([GOOD, build_message(CaseSpec("GOOD-2"))])
    return {
        "empty.xml": (b"", "not well-formed XML"),
        "random.xml": (bytes(range(256)) * 40, "not well-formed XML"),
        "truncated.xml": (batch[:-900].encode(), "not well-formed XML"),
        "lying-encoding.xml": (
            build_batch([build_message(CaseSpec("ENC", narrative="café"))]).encode("latin-1"),
            "Invalid bytes in character encoding",
        ),
        "utf16-declared.xml": (batch.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode(), "not well-formed XML"),
        "not-e2b.xml": (b'<?xml version="1.0"?><invoice><total>3</total></invoice>', "not an E2B(R3) file: root element is invoice"),
        "archive.xml": (b"PK\x03\x04" + bytes(200), "a zip archive"),
        "missing-id.xml": (build_batch([build_message(CaseSpec("NOID")).replace('extension="NOID" ', "", 1)]).encode(), "element C.1.1"),
    }


def test_broken_files_are_quarantined_with_their_reason_and_valid_cases_still_load(tmp_path: Path, sqlite_dsn: str) -> None:
    incoming, quarantine = tmp_path / "incoming", tmp_path / "quarantine"
    incoming.mkdir()
    files = broken_files()
    for name, (content, _) in files.items():
        (incoming / name).write_bytes(content)
    (incoming / "good.xml.gz").write_bytes(gzip.compress(build_batch([build_message(CaseSpec("GZIPPED-1"))]).encode()))
    (incoming / "good.xml").write_text(build_batch([build_message(CaseSpec("PLAIN-1"))]))

    summary = run_load(incoming, sqlite_dsn, workers=2, quarantine=quarantine)

    # Every broken file is reported failed (or partial), with its reason; the good files completed
    assert {name for name, _ in summary.failures} <= set(files) and summary.exit_code == 1
    loaded = {row[0] for row in query(sqlite_dsn, "SELECT safetyreportid FROM icsr_master")}
    assert {"GZIPPED-1", "PLAIN-1", "GOOD-1"} <= loaded  # GOOD-1 precedes the truncation
    assert "NOID" not in loaded
    reasons = {row[0]: row[1] for row in query(sqlite_dsn, "SELECT file_name, reason FROM etl_quarantine")}
    for name, (content, expected) in files.items():
        assert name in reasons and expected in reasons[name] and name in reasons[name], name
        if name != "missing-id.xml":  # a rejected message is quarantined in the table, its file loads
            assert expected in (quarantine / f"{name}.reason.txt").read_text()
            assert (quarantine / name).read_bytes() == content
    statuses = dict(query(sqlite_dsn, "SELECT file_name, status FROM etl_file_history"))
    assert statuses["truncated.xml"] == "partial" and statuses["empty.xml"] == "failed" and statuses["good.xml.gz"] == "completed"


def test_cli_reports_broken_files_in_one_line_each_without_tracebacks(tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for name, (content, _) in broken_files().items():
        (incoming / name).write_bytes(content)
    result = subprocess.run(
        [sys.executable, "-m", "py_load_eudravigilance.cli", "run", str(incoming), "--dsn", f"sqlite:///{tmp_path / 'x.db'}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1  # files failed
    assert "Traceback" not in result.stdout + result.stderr
    assert "failed: random.xml: " in result.stdout and "file random.xml" not in result.stdout  # named once


@pytest.mark.parametrize("key", ["../../outside.xml", "a/../../../outside.xml", "/etc/outside.xml", "..\\..\\outside.xml"])
def test_quarantine_keys_cannot_escape_the_quarantine_folder(tmp_path: Path, key: str) -> None:
    root = tmp_path / "quarantine" / "deep"
    source = tmp_path / "bad.xml"
    source.write_text("<bad")
    written = Path(quarantine_file(parse_location(str(root)), key, source, "reason"))
    assert root.resolve() in written.parents
    assert not (tmp_path / "outside.xml").exists() and not (tmp_path / "quarantine" / "outside.xml").exists()


def test_a_failing_quarantine_location_does_not_stop_the_load(tmp_path: Path, sqlite_dsn: str) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "broken.xml").write_bytes(b"<MCCI_IN200100UV01")
    (incoming / "good.xml").write_text(build_batch([GOOD]))
    not_a_folder = tmp_path / "quarantine"
    not_a_folder.write_text("a file where the quarantine folder should be")

    summary = run_load(incoming, sqlite_dsn, workers=1, quarantine=not_a_folder)

    assert [name for name, _ in summary.failures] == ["broken.xml"]  # failed for its own reason, not the quarantine's
    assert query(sqlite_dsn, "SELECT safetyreportid FROM icsr_master") == [("GOOD-1",)]
    (error,) = query(sqlite_dsn, "SELECT error FROM etl_file_history WHERE file_name = 'broken.xml'")[0]
    assert "copy to quarantine failed" in error
