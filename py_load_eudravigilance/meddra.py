"""MedDRA, as users bring it: the MSSO ASCII release files and the ``meddra_*`` tables that hold them.

MedDRA is licensed, so the project ships none of it. ``eudravigloader meddra load DIR`` reads a
release's ``$``-separated files (``llt.asc``, ``pt.asc``, ``hlt.asc``, ``hlgt.asc``, ``soc.asc``,
``mdhier.asc`` and, for the version, ``meddra_release.asc``) into these tables, each row keyed by
its ``meddra_version`` so that releases sit side by side. Reactions name the version they were
coded with (E.i.2.1a), and the analyst views join on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Boolean, Column, DateTime, Integer, MetaData, Table, Text

RELEASES_TABLE = "meddra_releases"
LLT_TABLE = "meddra_llt"
PT_TABLE = "meddra_pt"
HIERARCHY_TABLE = "meddra_hierarchy"
VERSION = "meddra_version"


@dataclass(frozen=True)
class TermFile:
    """One ASCII file of a release: its table and which ``$``-separated field fills each column."""

    file_name: str
    table: str
    fields: dict[str, int]
    primary_key: tuple[str, ...]


TERM_FILES = (
    TermFile("soc.asc", "meddra_soc", {"soc_code": 0, "soc_name": 1, "soc_abbrev": 2}, ("soc_code",)),
    TermFile("hlgt.asc", "meddra_hlgt", {"hlgt_code": 0, "hlgt_name": 1}, ("hlgt_code",)),
    TermFile("hlt.asc", "meddra_hlt", {"hlt_code": 0, "hlt_name": 1}, ("hlt_code",)),
    TermFile("pt.asc", PT_TABLE, {"pt_code": 0, "pt_name": 1, "primary_soc_code": 3}, ("pt_code",)),
    TermFile("llt.asc", LLT_TABLE, {"llt_code": 0, "llt_name": 1, "pt_code": 2, "llt_currency": 9}, ("llt_code",)),
    # Every path from a PT up to a SOC (a PT sits under several); the flag marks its primary SOC path
    TermFile(
        "mdhier.asc",
        HIERARCHY_TABLE,
        {
            "pt_code": 0,
            "hlt_code": 1,
            "hlgt_code": 2,
            "soc_code": 3,
            "pt_name": 4,
            "hlt_name": 5,
            "hlgt_name": 6,
            "soc_name": 7,
            "soc_abbrev": 8,
            "primary_soc": 11,
        },
        ("pt_code", "hlt_code", "hlgt_code", "soc_code"),
    ),
)
RELEASE_FILE = "meddra_release.asc"


class MeddraReleaseError(ValueError):
    """A MedDRA release directory that cannot be read; the message names the file and line."""


def add_tables(metadata: MetaData) -> None:
    """The ``meddra_*`` tables: one per release file, and the releases loaded."""
    Table(
        RELEASES_TABLE,
        metadata,
        Column(VERSION, Text, primary_key=True),
        Column("language", Text),
        Column("terms_loaded", Integer, comment="Lowest level terms in the release"),
        Column("loaded_at", DateTime(timezone=True)),
        comment="MedDRA releases loaded by `eudravigloader meddra load`",
    )
    for term_file in TERM_FILES:
        Table(
            term_file.table,
            metadata,
            Column(VERSION, Text, primary_key=True),
            *(
                Column(name, Boolean if name == "primary_soc" else Text, primary_key=name in term_file.primary_key)
                for name in term_file.fields
            ),
            comment=f"MedDRA {term_file.file_name} of each release loaded (user-supplied, licensed by MSSO)",
        )


@dataclass(frozen=True)
class Release:
    """A release directory, read: its version, language and the rows of every table."""

    version: str
    language: str | None
    rows: dict[str, list[dict[str, object]]]


def _find(directory: Path, file_name: str) -> Path | None:
    """The release file, in DIR or its ``MedAscii`` folder, whatever the case of its name."""
    for folder in (directory, *(p for p in directory.iterdir() if p.is_dir())):
        for candidate in folder.iterdir():
            if candidate.name.lower() == file_name:
                return candidate
    return None


def _records(path: Path, encoding: str | None = None) -> Iterator[tuple[int, list[str]]]:
    """The ``$``-separated fields of each non-blank line, with its number. UTF-8 (MedDRA's encoding) unless ``encoding``
    says otherwise: bytes that are not UTF-8 stop the read, never become wrong letters (cp1252, Shift-JIS...)."""
    data = path.read_bytes()
    try:
        text = data.decode(encoding or "utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        hint = f"it is not {encoding}" if encoding else "give --encoding (e.g. latin-1, cp1252, shift_jis) for a release in another one"
        raise MeddraReleaseError(f"{path.name} line {line}: byte 0x{data[exc.start]:02x} is not {encoding or 'UTF-8'}; {hint}") from None
    except LookupError:
        raise MeddraReleaseError(f"unknown encoding {encoding!r}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if "\x00" in line:  # no database text holds it (PostgreSQL refuses it)
            raise MeddraReleaseError(f"{path.name} line {number}: a NUL byte; the file is damaged")
        if line.strip():
            yield number, line.rstrip("\r\n").split("$")


def read_release(directory: Path, version: str | None = None, encoding: str | None = None) -> Release:
    """Read a MedDRA ASCII release; ``version`` overrides ``meddra_release.asc`` (required without it); ``encoding``
    reads files that are not UTF-8."""
    if not directory.is_dir():
        raise MeddraReleaseError(f"{directory}: not a directory holding a MedDRA ASCII release")
    language = None
    release_file = _find(directory, RELEASE_FILE)
    if release_file is not None:
        first = next(_records(release_file, encoding), None)
        if first is not None:
            version = version or first[1][0].strip()
            language = first[1][1].strip() if len(first[1]) > 1 else None
    if not version:
        raise MeddraReleaseError(f"{directory}: no {RELEASE_FILE} to read the MedDRA version from; give --version")
    rows: dict[str, list[dict[str, object]]] = {}
    for term_file in TERM_FILES:
        path = _find(directory, term_file.file_name)
        if path is None:
            raise MeddraReleaseError(f"{directory}: {term_file.file_name} is missing from the MedDRA release")
        needed = max(term_file.fields.values()) + 1
        table_rows = []
        first_seen: dict[tuple[object, ...], int] = {}
        for number, fields in _records(path, encoding):
            if len(fields) < needed:
                raise MeddraReleaseError(f"{path.name} line {number}: {len(fields)} $-separated fields, expected at least {needed}")
            row: dict[str, object] = {VERSION: version}
            for name, index in term_file.fields.items():
                value = fields[index].strip()
                row[name] = (value == "Y") if name == "primary_soc" else (value or None)
            key = tuple(row[name] for name in term_file.primary_key)
            if not all(key):
                raise MeddraReleaseError(f"{path.name} line {number}: empty code")
            if key in first_seen:
                codes = "$".join(str(code) for code in key)
                raise MeddraReleaseError(f"{path.name} line {number}: {codes} again (first on line {first_seen[key]}); the file is damaged")
            first_seen[key] = number
            table_rows.append(row)
        if not table_rows:
            raise MeddraReleaseError(f"{path.name}: no terms; the release is incomplete")
        rows[term_file.table] = table_rows
    return Release(version, language, rows)
