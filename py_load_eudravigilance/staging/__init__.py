"""Turn E2B(R3) files into staged batches: binary COPY rows per table, and an index of the messages.

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
from py_load_eudravigilance.mapping.unmapped import REPORTED_PATHS, counter_for
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
from py_load_eudravigilance.staging.split import SplitFailed, layout_of, open_piece

__all__ = [
    "STAGED_COLUMNS",
    "STAGED_TABLES",
    "MessageKey",
    "Share",
    "ShardsDisagree",
    "SplitFailed",
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
# Elements at message positions that are not messages, quarantined one by one up to this many per file (or shard)
MAX_QUARANTINED_STRAYS = 1000


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

    def flush_if_full(self) -> None:
        if self.core.buffered() >= FLUSH_BYTES:
            self.flush()

    def message_done(self) -> None:
        self.messages_in_part += 1
        self.flush_if_full()
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
    """Shard ``index`` of ``count`` of one file; shard 0 also keeps the batch header and any file-level error.

    Where :mod:`.split` can cut the file into byte ranges of whole messages, each shard parses only
    its range (with the file's header around it). Otherwise, with the Python mapper, each parses the
    whole file and maps the messages at positions index+1, index+1+count, ...; with the compiled
    one, whose cost is mostly parsing, shard 0 stages the whole file.
    """

    index: int
    count: int

    def owns(self, position: int) -> bool:
        return (position - 1) % self.count == self.index

    def __str__(self) -> str:
        return f"shard {self.index + 1} of {self.count}"


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
    strays = 0
    unmapped = counter_for(core.name)
    layout = layout_of(path, share.count) if share is not None else None
    if share is not None and layout is None and core.name != "python":
        # Not cut: the compiled mapper's cost is mostly parsing, which every shard would repeat; shard 0 takes it all
        if share.index > 0:
            return staged
        share = None
    piece = layout.pieces[share.index] if layout is not None and share is not None else None
    try:
        opened = open_piece(path, name, layout, piece) if layout is not None and piece is not None else open_source(path, name)
        with opened as source:
            reader = BatchReader(source, name)
            for position, message, problem in reader.entries():
                if piece is not None:
                    if position > piece.messages:
                        raise SplitFailed(f"{name}: {share} read more than the {piece.messages} messages of its range")
                    position += piece.before
                elif share is not None and not share.owns(position):
                    continue
                staged.messages_total += 1
                if problem is not None:  # an element where a message belongs: rejected like a message
                    strays += 1
                    if strays > MAX_QUARANTINED_STRAYS:  # counted, not stored one by one (memory stays flat)
                        staged.messages_rejected += 1
                        continue
                try:
                    if problem is not None:
                        raise MappingError(problem, element=etree.QName(message).localname)
                    core.stage_message(message, position)
                    _add_unmapped(staged, *unmapped(message))
                except MappingError as exc:
                    exc.file, exc.position = name, position
                    exc.case_id = exc.case_id or _case_id_of(message)
                    _quarantine(core, staged, exc, etree.tostring(message, encoding="unicode", with_tail=False))
                    out.flush_if_full()
                    continue
                out.message_done()
            if strays > MAX_QUARANTINED_STRAYS:
                more = strays - MAX_QUARANTINED_STRAYS
                summary = f"{more:,} more elements where messages belong were not E2B(R3) messages (rejected, not stored one by one)"
                _quarantine(core, staged, E2BError(summary, file=name), None)
            if piece is not None and staged.messages_total != piece.messages:
                raise SplitFailed(f"{name}: {share} read {staged.messages_total} of the {piece.messages} messages of its range")
            if reader.is_batch and reader.root is not None and first_shard:
                core.stage_batch_header(reader.root)
    except E2BError as exc:
        if piece is not None:  # perhaps from the cut itself: only the whole file tells
            raise SplitFailed(f"{name}: {share} could not read its range ({exc})") from exc
        if first_shard:
            exc.file = name
            staged.error = exc.described(with_file=False)  # the file's outcome names the file
            _quarantine(core, staged, exc, None)
    except SplitFailed:
        raise
    except Exception as exc:
        if piece is None:
            raise
        raise SplitFailed(f"{name}: {share} failed in its range ({type(exc).__name__}: {exc}); the whole file tells") from exc
    staged.parse_seconds = time.perf_counter() - started
    return staged


def _add_unmapped(staged: StagedFile, values: int, paths: list[str]) -> None:
    """Count a staged message's unmapped values into its file's account, which lists the first distinct paths."""
    staged.unmapped_values += values
    listed = staged.unmapped_paths
    for path in paths:
        if len(listed) >= REPORTED_PATHS:
            break
        if path not in listed:
            listed.append(path)


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
        _add_unmapped(target, part.unmapped_values, part.unmapped_paths)
    # In the order staging the file in one piece lists them
    target.row_counts = {table: target.row_counts[table] for table in STAGED_TABLES if table in target.row_counts}
    return target
