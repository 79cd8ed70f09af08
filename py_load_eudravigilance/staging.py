"""Turn one E2B(R3) file into staged CSV files, one per table, ready for a loader's bulk path.

Staging streams: each message is mapped and written out before the next is parsed, so memory does
not grow with the file. The function is pure and picklable-friendly (paths in, paths out), so the
CLI and the Dagster assets can run it in worker processes.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from lxml import etree

from py_load_eudravigilance.errors import E2BError, MappingError
from py_load_eudravigilance.mapping import catalog
from py_load_eudravigilance.mapping.catalog import CASE_KEY
from py_load_eudravigilance.mapping.dictionary import BATCH_HEADER
from py_load_eudravigilance.mapping.mapper import CaseMapper, MappedCase
from py_load_eudravigilance.parsing.reader import BatchReader, open_source
from py_load_eudravigilance.schema import AUDIT_TABLE, MESSAGE_POSITION, QUARANTINE_TABLE

AUDIT_COLUMNS = (
    CASE_KEY,
    "file_sha256",
    "file_name",
    MESSAGE_POSITION,
    "most_recent_info_date_utc",
    "message_creation_time_utc",
    "is_nullification",
    "row_counts",
    "payload",  # last: _TableWriters.write_audit writes it past the csv module
)
QUARANTINE_COLUMNS = ("file_sha256", "file_name", MESSAGE_POSITION, CASE_KEY, "element", "reason", "raw_xml")
# Staged only, never stored: which file of a staged group a case row came from. With the message
# position it names one case version, so many small files merge in one transaction.
FILE_ORDINAL = "file_ordinal"
HASH_CHUNK = 1 << 20


def staged_columns() -> dict[str, list[str]]:
    """Columns of each staged CSV file; case tables also carry the message position."""
    columns: dict[str, list[str]] = {}
    for table, table_columns in catalog.case_table_columns().items():
        names = [c.name for c in table_columns if c.name != "loaded_at"]
        if MESSAGE_POSITION not in names:
            names.append(MESSAGE_POSITION)
        columns[table] = [*names, FILE_ORDINAL]
    columns[BATCH_HEADER.name] = [c.name for c in catalog.table_columns(BATCH_HEADER)]
    columns[AUDIT_TABLE] = list(AUDIT_COLUMNS)
    columns[QUARANTINE_TABLE] = list(QUARANTINE_COLUMNS)
    return columns


STAGED_COLUMNS = staged_columns()


def csv_value(value: Any) -> Any:
    """A value as written to a staged CSV (empty field = NULL)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return value


@dataclass
class StagedFile:
    """What staging one file produced (its rows are in the group's CSV files)."""

    file_name: str
    file_sha256: str
    ordinal: int = 0
    row_counts: dict[str, int] = field(default_factory=dict)
    messages_total: int = 0
    messages_rejected: int = 0
    error: str | None = None
    parse_seconds: float = 0.0


@dataclass
class StagedGroup:
    """One or more files staged together; ``directory`` holds ``<table>.csv`` per table, or, when
    staged in parts, subdirectories that do (see :func:`published_parts`)."""

    directory: Path
    files: list[StagedFile] = field(default_factory=list)

    def open_buffers(self, stack: ExitStack) -> dict[str, IO[str]]:
        return open_table_files(self.directory, stack)


def open_table_files(directory: Path, stack: ExitStack) -> dict[str, IO[str]]:
    """The staged CSV of each table in ``directory``, open for reading until ``stack`` closes."""
    return {
        table: stack.enter_context((directory / f"{table}.csv").open(newline="", encoding="utf-8"))
        for table in STAGED_COLUMNS
        if (directory / f"{table}.csv").exists()
    }


# A part is written under a hidden name and renamed when complete: whoever lists parts sees only whole ones
PART_PREFIX = "part-"


def published_parts(directory: Path) -> list[Path]:
    """The complete parts staged so far under ``directory``, in the order they were written."""
    return sorted(directory.glob(f"{PART_PREFIX}*")) if directory.exists() else []


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# Written by the csv module as they are (an empty string and None both become an empty field)
_WRITTEN_AS_IS = frozenset({str, int, float, type(None)})


class _TableWriters:
    """One CSV writer per table, into ``directory``, or into parts of ``part_messages`` messages each
    under it, so a loader can bulk-load the first parts of a large file while the rest is parsed."""

    def __init__(self, directory: Path, part_messages: int | None = None) -> None:
        self.directory, self.part_messages = directory, part_messages
        self.counts = dict.fromkeys(STAGED_COLUMNS, 0)
        self.ordinal = 0
        self.parts = 0
        self.messages_in_part = 0
        self.handles: list[IO[str]] = []
        self._open(self._part_directory(hidden=True) if part_messages else directory)

    def _part_directory(self, hidden: bool) -> Path:
        return self.directory / f"{'.' if hidden else ''}{PART_PREFIX}{self.parts:06d}"

    def _open(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.writers = {}
        for table, columns in STAGED_COLUMNS.items():
            handle = (directory / f"{table}.csv").open("w", newline="", encoding="utf-8")
            self.handles.append(handle)
            self.writers[table] = (csv.writer(handle), columns)
            if table == AUDIT_TABLE:
                self.audit_handle, self.audit_head = handle, csv.writer(handle, lineterminator="")

    def _close_handles(self) -> None:
        for handle in self.handles:
            handle.close()
        self.handles = []

    def message_done(self) -> None:
        """After each message: a full part is published and the next one begun."""
        self.messages_in_part += 1
        if self.part_messages and self.messages_in_part >= self.part_messages:
            self._publish()
            self._open(self._part_directory(hidden=True))

    def _publish(self) -> None:
        self._close_handles()
        self._part_directory(hidden=True).rename(self._part_directory(hidden=False))
        self.parts += 1
        self.messages_in_part = 0

    def close(self) -> None:
        """Close the files; the last part is published when it holds anything (an empty one is dropped)."""
        if not self.part_messages:
            self._close_handles()
        elif any(handle.tell() for handle in self.handles):  # rows, or a batch header or file error at the end
            self._publish()
        else:
            self._close_handles()
            shutil.rmtree(self._part_directory(hidden=True))

    def values(self, table: str, row: dict[str, Any]) -> list[Any]:
        row[FILE_ORDINAL] = self.ordinal
        self.counts[table] += 1
        # Most values are already as the CSV wants them; only the rest go through csv_value
        return [v if v.__class__ in _WRITTEN_AS_IS else csv_value(v) for v in map(row.get, self.writers[table][1])]

    def write(self, table: str, row: dict[str, Any]) -> None:
        self.writers[table][0].writerow(self.values(table, row))

    def write_audit(self, row: dict[str, Any]) -> None:
        """The audit payload (last column) is long and full of quotes: str.replace quotes it several
        times faster than the csv module, which looks at every character."""
        values = self.values(AUDIT_TABLE, row)
        payload = values.pop()
        self.audit_head.writerow(values)
        self.audit_handle.write(',"' + payload.replace('"', '""') + '"\r\n')


def _case_rows(case: MappedCase, file_name: str, file_sha256: str) -> Iterator[tuple[str, dict[str, Any]]]:
    master = case.rows["icsr_master"][0]
    master.update(is_nullified=case.is_nullification, source_file_name=file_name, source_file_sha256=file_sha256)
    for table, rows in case.rows.items():
        for row in rows:
            row[MESSAGE_POSITION] = case.message_position
            yield table, row


@dataclass(frozen=True)
class Share:
    """Shard ``index`` of ``count``: the messages at positions index+1, index+1+count, ... of a file.

    Parsing is cheap next to mapping, so each worker parses the whole file and maps its share;
    shard 0 also keeps the batch header and any file-level error.
    """

    index: int
    count: int

    def owns(self, position: int) -> bool:
        return (position - 1) % self.count == self.index


def stage_files(
    files: list[tuple[Path, str, str]],
    directory: Path,
    mapper: CaseMapper | None = None,
    share: Share | None = None,
    part_messages: int | None = None,
) -> StagedGroup:
    """Parse and map each ``(path, name, sha256)`` (or its ``share``) into one set of CSV files under ``directory``
    (or, with ``part_messages``, into parts published as they fill)."""
    directory.mkdir(parents=True, exist_ok=True)
    group = StagedGroup(directory)
    mapper = mapper or CaseMapper()
    out = _TableWriters(directory, part_messages)
    try:
        for ordinal, (path, name, digest) in enumerate(files):
            out.ordinal = ordinal
            before = dict(out.counts)
            staged = _stage_into(out, path, StagedFile(name, digest, ordinal), mapper, share)
            staged.row_counts = {table: count - before[table] for table, count in out.counts.items() if count > before[table]}
            group.files.append(staged)
    finally:
        out.close()
    return group


def stage_file(
    path: Path, directory: Path, display_name: str | None = None, mapper: CaseMapper | None = None, file_sha256: str | None = None
) -> StagedGroup:
    """Stage one file; ``file_sha256`` saves reading the file twice when the caller already hashed it."""
    return stage_files([(path, display_name or path.name, file_sha256 or sha256_of(path))], directory, mapper)


def _stage_into(out: _TableWriters, path: Path, staged: StagedFile, mapper: CaseMapper, share: Share | None = None) -> StagedFile:
    """Stream one file's messages into the writers: each message is written before the next is parsed."""
    started = time.perf_counter()
    name = staged.file_name
    first_shard = share is None or share.index == 0
    try:
        with open_source(path, name) as source:
            reader = BatchReader(source, name)
            for position, message in reader.messages():
                if share is not None and not share.owns(position):
                    continue
                staged.messages_total += 1
                try:
                    case = mapper.map_message(message, position)
                except MappingError as exc:
                    exc.file, exc.position = name, position
                    exc.case_id = exc.case_id or _case_id_of(message)
                    _quarantine(out, staged, exc, etree.tostring(message, encoding="unicode"))
                    continue
                for table, row in _case_rows(case, name, staged.file_sha256):
                    out.write(table, row)
                out.write_audit(_audit_row(case, name, staged.file_sha256))
                out.message_done()
            if reader.is_batch and reader.root is not None and first_shard:
                header = mapper.map_batch_header(reader.root)
                header.update(file_sha256=staged.file_sha256, file_name=name)
                out.write(BATCH_HEADER.name, header)
    except E2BError as exc:
        if first_shard:
            exc.file = name
            staged.error = str(exc)
            _quarantine(out, staged, exc, None)
    staged.parse_seconds = time.perf_counter() - started
    return staged


def _case_id_of(message: etree._Element) -> str | None:
    ids = message.xpath(
        "h:controlActProcess/h:subject/h:investigationEvent/h:id[@root='2.16.840.1.113883.3.989.2.1.3.1']/@extension",
        namespaces={"h": "urn:hl7-org:v3"},
    )
    return str(ids[0]) if ids else None


def _quarantine(out: _TableWriters, staged: StagedFile, error: E2BError, raw_xml: str | None) -> None:
    if error.position is not None and raw_xml is not None:
        staged.messages_rejected += 1
    out.write(
        QUARANTINE_TABLE,
        {
            "file_sha256": staged.file_sha256,
            "file_name": staged.file_name,
            MESSAGE_POSITION: error.position if raw_xml is not None else None,
            CASE_KEY: error.case_id,
            "element": error.element,
            "reason": str(error),
            "raw_xml": raw_xml,
        },
    )


def _audit_row(case: MappedCase, file_name: str, file_sha256: str) -> dict[str, Any]:
    return {
        CASE_KEY: case.safetyreportid,
        "file_sha256": file_sha256,
        "file_name": file_name,
        MESSAGE_POSITION: case.message_position,
        "most_recent_info_date_utc": case.most_recent_info_utc,
        "message_creation_time_utc": case.message_creation_utc,
        "is_nullification": case.is_nullification,
        "row_counts": {table: len(rows) for table, rows in case.rows.items() if rows},
        "payload": case.audit_json,
    }


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def merge_shards(shards: list[StagedGroup]) -> StagedGroup:
    """Append the CSVs of shards 1..n of one file to shard 0's and add up their counts (shard 0 as it is
    when every shard found the file loaded before)."""
    merged = shards[0]
    if add_up_shards(shards) is None:
        return merged
    for shard in shards[1:]:
        (part,) = shard.files
        for table in part.row_counts:
            with (shard.directory / f"{table}.csv").open("rb") as source, (merged.directory / f"{table}.csv").open("ab") as sink:
                shutil.copyfileobj(source, sink)
    return merged


class ShardsDisagree(RuntimeError):
    """The shards of one file read different bytes (an object replaced while its shards downloaded it)."""


def add_up_shards(shards: list[StagedGroup]) -> StagedFile | None:
    """Shard 0's account of the file, with the other shards' rows and messages added to it; None when
    every shard found the file's content loaded before."""
    files = [file for shard in shards for file in shard.files]
    if not files:
        return None
    digests = sorted({file.file_sha256 for file in files})
    if len(files) != len(shards) or len(digests) != 1:
        # Each shard reads its own copy (S3: its own download): two versions of a file never load as one.
        # A shard without the file saw content that had loaded before.
        raise ShardsDisagree(f"{files[0].file_name} changed while it was being read (SHA-256 {', '.join(digests)}); load it again")
    (target,) = shards[0].files
    for shard in shards[1:]:
        (part,) = shard.files
        for table, count in part.row_counts.items():
            target.row_counts[table] = target.row_counts.get(table, 0) + count
        target.messages_total += part.messages_total
        target.messages_rejected += part.messages_rejected
        target.parse_seconds = max(target.parse_seconds, part.parse_seconds)
    return target
