"""Turn E2B(R3) files into staged batches: COPY text rows per table, and an index of the messages.

Staging streams: each message is mapped and buffered before the next is parsed, and buffers are
written out as they fill, so memory does not grow with the file. Functions take paths and return
plain data, so the CLI and the Dagster assets run them in worker processes. The rows come from a
staging core: the compiled one when it is built, else the Python reference (see :mod:`.cores`).
"""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Protocol

from lxml import etree

from py_load_eudravigilance.errors import E2BError, MappingError
from py_load_eudravigilance.mapping.catalog import CASE_KEY
from py_load_eudravigilance.parsing.reader import BatchReader, open_source
from py_load_eudravigilance.schema import MESSAGE_POSITION, QUARANTINE_TABLE
from py_load_eudravigilance.staging.layout import (
    PART_PREFIX,
    STAGED_COLUMNS,
    STAGED_TABLES,
    MessageKey,
    StagedFile,
    StagedGroup,
    StagedMessages,
    published_parts,
    table_file,
)

__all__ = [
    "STAGED_COLUMNS",
    "STAGED_TABLES",
    "MessageKey",
    "Share",
    "ShardsDisagree",
    "StagedFile",
    "StagedGroup",
    "StagedMessages",
    "StagingCore",
    "add_up_shards",
    "published_parts",
    "sha256_of",
    "stage_file",
    "stage_files",
    "utc_now",
]

HASH_CHUNK = 1 << 20
# Buffered rows are written to the batch's files past this size
FLUSH_BYTES = 4 << 20
# Rejected messages a file's account lists (reports show them; etl_quarantine holds every one)
REPORTED_REJECTIONS = 5


class StagingCore(Protocol):
    """Maps messages into staged rows (see :class:`~py_load_eudravigilance.staging.reference.ReferenceCore`)."""

    name: str
    index: StagedMessages
    row_counts: dict[str, int]

    def begin_part(self) -> None: ...
    def begin_file(self, name: str, sha256: str) -> None: ...
    def stage_message(self, message: etree._Element, position: int) -> None: ...
    def stage_batch_header(self, root: etree._Element) -> None: ...
    def append(self, table: str, row: dict[str, Any]) -> None: ...
    def buffered(self) -> int: ...
    def take(self) -> dict[str, bytes]: ...


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class _BatchWriter:
    """Writes a core's rows into ``directory`` as one batch, or as parts of ``part_messages`` messages under it,
    published as they fill, so a loader can bulk-load the first parts of a large file while the rest is parsed."""

    def __init__(self, directory: Path, core: StagingCore, part_messages: int | None = None) -> None:
        self.directory, self.core, self.part_messages = directory, core, part_messages
        self.parts = 0
        self.messages_in_part = 0
        self.handles: dict[str, IO[bytes]] = {}
        self.file: tuple[str, str] | None = None
        self._begin()

    def _current(self, hidden: bool = True) -> Path:
        if not self.part_messages:
            return self.directory
        return self.directory / f"{'.' if hidden else ''}{PART_PREFIX}{self.parts:06d}"

    def _begin(self) -> None:
        self._current().mkdir(parents=True, exist_ok=True)
        self.core.begin_part()
        if self.file is not None:  # a part that starts inside a file
            self.core.begin_file(*self.file)

    def begin_file(self, name: str, sha256: str) -> None:
        self.file = (name, sha256)
        self.core.begin_file(name, sha256)

    def flush(self) -> None:
        for table, data in self.core.take().items():
            handle = self.handles.get(table)
            if handle is None:
                handle = self.handles[table] = table_file(self._current(), table).open("wb")
            handle.write(data)

    def message_done(self) -> None:
        self.messages_in_part += 1
        if self.core.buffered() >= FLUSH_BYTES:
            self.flush()
        if self.part_messages and self.messages_in_part >= self.part_messages:
            self._publish()
            self._begin()

    def _finish(self) -> None:
        self.flush()
        for handle in self.handles.values():
            handle.close()
        self.handles = {}
        self.core.index.save(self._current())

    def _publish(self) -> None:
        self._finish()
        self._current().rename(self._current(hidden=False))
        self.parts += 1
        self.messages_in_part = 0

    def close(self) -> None:
        """The last batch is written; in parts, it is published when it holds anything (an empty one is dropped)."""
        if not self.part_messages:
            self._finish()
        elif self.messages_in_part or self.core.buffered() or self.handles:  # rows, or a batch header or file error
            self._publish()
        else:
            self.flush()
            shutil.rmtree(self._current())


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
    core: StagingCore | None = None,
    share: Share | None = None,
    part_messages: int | None = None,
) -> StagedGroup:
    """Parse and map each ``(path, name, sha256)`` (or its ``share``) into one batch under ``directory``
    (or, with ``part_messages``, into parts published as they fill)."""
    from py_load_eudravigilance.staging.cores import create_core

    directory.mkdir(parents=True, exist_ok=True)
    group = StagedGroup(directory)
    core = core or create_core()
    out = _BatchWriter(directory, core, part_messages)
    try:
        for ordinal, (path, name, digest) in enumerate(files):
            before = dict(core.row_counts)
            staged = _stage_into(out, path, StagedFile(name, digest, ordinal), share)
            staged.row_counts = {
                table: count - before.get(table, 0) for table, count in core.row_counts.items() if count > before.get(table, 0)
            }
            group.files.append(staged)
    finally:
        out.close()
    return group


def stage_file(
    path: Path, directory: Path, display_name: str | None = None, core: StagingCore | None = None, file_sha256: str | None = None
) -> StagedGroup:
    """Stage one file; ``file_sha256`` saves reading the file twice when the caller already hashed it."""
    return stage_files([(path, display_name or path.name, file_sha256 or sha256_of(path))], directory, core)


def _stage_into(out: _BatchWriter, path: Path, staged: StagedFile, share: Share | None = None) -> StagedFile:
    """Stream one file's messages into the writer: each message is staged before the next is parsed."""
    started = time.perf_counter()
    name, core = staged.file_name, out.core
    first_shard = share is None or share.index == 0
    out.begin_file(name, staged.file_sha256)
    try:
        with open_source(path, name) as source:
            reader = BatchReader(source, name)
            for position, message in reader.messages():
                if share is not None and not share.owns(position):
                    continue
                staged.messages_total += 1
                try:
                    core.stage_message(message, position)
                except MappingError as exc:
                    exc.file, exc.position = name, position
                    exc.case_id = exc.case_id or _case_id_of(message)
                    _quarantine(core, staged, exc, etree.tostring(message, encoding="unicode", with_tail=False))
                    continue
                out.message_done()
            if reader.is_batch and reader.root is not None and first_shard:
                core.stage_batch_header(reader.root)
    except E2BError as exc:
        if first_shard:
            exc.file = name
            staged.error = str(exc)
            _quarantine(core, staged, exc, None)
    staged.parse_seconds = time.perf_counter() - started
    return staged


def _case_id_of(message: etree._Element) -> str | None:
    ids = message.xpath(
        "h:controlActProcess/h:subject/h:investigationEvent/h:id[@root='2.16.840.1.113883.3.989.2.1.3.1']/@extension",
        namespaces={"h": "urn:hl7-org:v3"},
    )
    return str(ids[0]) if ids else None


def _quarantine(core: StagingCore, staged: StagedFile, error: E2BError, raw_xml: str | None) -> None:
    if error.position is not None and raw_xml is not None:
        staged.messages_rejected += 1
        if len(staged.rejections) < REPORTED_REJECTIONS:
            staged.rejections.append((error.position, error.case_id, error.element, error.reason))
    core.append(
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
        target.rejections = sorted(target.rejections + part.rejections, key=lambda r: r[0] or 0)[:REPORTED_REJECTIONS]
    return target
