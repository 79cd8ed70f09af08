"""What a staged batch is on disk: one file of binary COPY rows per table, and an index of its messages.

A worker stages a group of source files (or its share of one large file, or one part of it) into a
directory. Rows are PostgreSQL binary COPY tuples (``copybinary.py``) carrying exactly the target
table's columns, so a loader can bulk-load them straight into the target. The index (``messages.idx``) names each loaded message's case
version and where its rows start in every case table and the audit log: a loader sends the rows
of the versions that win, and only those, without reading a row.
"""

from __future__ import annotations

import pickle
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NamedTuple

from py_load_eudravigilance.mapping import catalog
from py_load_eudravigilance.mapping.dictionary import BATCH_HEADER
from py_load_eudravigilance.schema import AUDIT_TABLE, CASE_TABLE_NAMES, QUARANTINE_TABLE
from py_load_eudravigilance.staging.copybinary import HEADER, TRAILER

BATCHES = BATCH_HEADER.name
# The bookkeeping tables a staging core writes rows of (the file history is the loader's own)
STAGED_BOOKKEEPING = (catalog.AUDIT_LOG, catalog.QUARANTINE)


def staged_layout() -> dict[str, tuple[tuple[str, str], ...]]:
    """Each staged table's columns in row order, with the binary form each takes (``copybinary.FAMILIES``, as the
    column's SQL type needs it): the target's own columns, minus those the database fills."""
    layout = {
        table: tuple((c.name, c.type.value) for c in table_columns if c.name not in catalog.LOAD_STAMPS)
        for table, table_columns in catalog.case_table_columns().items()
    }
    for bookkeeping in STAGED_BOOKKEEPING:
        layout[bookkeeping.name] = tuple((c.name, c.type.value) for c in bookkeeping.staged_columns())
    layout[BATCHES] = tuple((c.name, c.type.value) for c in catalog.table_columns(BATCH_HEADER))
    return layout


_LAYOUT = staged_layout()
STAGED_COLUMNS = {table: tuple(name for name, _ in columns) for table, columns in _LAYOUT.items()}
STAGED_FAMILIES = {table: tuple(family for _, family in columns) for table, columns in _LAYOUT.items()}
# Tables whose rows the index locates per message; the others are the file's own bookkeeping
INDEXED_TABLES = (*CASE_TABLE_NAMES, AUDIT_TABLE)
STAGED_TABLES = (*INDEXED_TABLES, QUARANTINE_TABLE, BATCHES)
INDEX_FILE = "messages.idx"
# A part is written under a hidden name and renamed when complete: whoever lists parts sees only whole ones
PART_PREFIX = "part-"


def table_file(directory: Path, table: str) -> Path:
    return directory / f"{table}.copy"


class MessageKey(NamedTuple):
    """One loaded message: the case version it carries. Timestamps are ISO 8601 UTC text."""

    ordinal: int  # which file of the staged group
    position: int  # the message's place in its file (1-based)
    case_id: str
    most_recent_info_utc: str
    message_creation_utc: str | None
    is_nullification: bool


@dataclass
class StagedMessages:
    """The index of a staged batch: its files, its loaded messages, and where each one's rows are."""

    files: list[tuple[str, str]] = field(default_factory=list)  # (name, SHA-256) by ordinal
    keys: list[MessageKey] = field(default_factory=list)
    # Offsets of message i's first row in each indexed table: row i of a (messages + 1) x tables matrix
    bounds: array = field(default_factory=lambda: array("q", [0] * len(INDEXED_TABLES)))
    # Offset of each message's version_count field (staged NULL) in icsr_master: the loader writes the count there
    version_count_at: array = field(default_factory=lambda: array("q"))

    def span(self, message: int, table: int) -> tuple[int, int]:
        """Byte range of message ``message``'s rows in indexed table number ``table``."""
        width = len(INDEXED_TABLES)
        return self.bounds[message * width + table], self.bounds[(message + 1) * width + table]

    def pieces(self, spans: list[tuple[int, int]], table: int) -> list[Piece]:
        """Byte ranges of indexed table number ``table`` holding the rows of the messages in ``spans`` (first, last + 1)."""
        width = len(INDEXED_TABLES)
        found = [(self.bounds[first * width + table], self.bounds[end * width + table]) for first, end in spans]
        return [piece for piece in found if piece[1] > piece[0]]  # type: ignore[misc]

    def size(self, table: int) -> int:
        return self.bounds[len(self.keys) * len(INDEXED_TABLES) + table]

    def save(self, directory: Path) -> None:
        with (directory / INDEX_FILE).open("wb") as handle:
            pickle.dump((self.files, self.keys, self.bounds, self.version_count_at), handle, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def load(cls, directory: Path) -> StagedMessages:
        with (directory / INDEX_FILE).open("rb") as handle:
            files, keys, bounds, version_count_at = pickle.load(handle)  # noqa: S301 - written by this package's own workers
        return cls(files, [MessageKey(*key) for key in keys], bounds, version_count_at)


@dataclass
class StagedFile:
    """What staging one source file produced (its rows are in its group's batches)."""

    file_name: str
    file_sha256: str
    ordinal: int = 0
    row_counts: dict[str, int] = field(default_factory=dict)
    messages_total: int = 0
    messages_rejected: int = 0
    error: str | None = None
    parse_seconds: float = 0.0
    rejections: list[tuple[int | None, str | None, str | None, str]] = field(default_factory=list)  # the first few
    unmapped_values: int = 0  # values of the staged messages no column holds
    unmapped_paths: list[str] = field(default_factory=list)  # their first distinct paths
    file_size_bytes: int | None = None  # of the bytes hashed (None: not known)


@dataclass
class StagedGroup:
    """One or more files staged together into ``directory``: a batch there, or parts under it (see :func:`published_parts`)."""

    directory: Path
    files: list[StagedFile] = field(default_factory=list)

    def batches(self) -> list[Path]:
        parts = published_parts(self.directory)
        return parts or ([self.directory] if (self.directory / INDEX_FILE).exists() else [])


def published_parts(directory: Path) -> list[Path]:
    """The complete parts staged so far under ``directory``, in the order they were written."""
    return sorted(directory.glob(f"{PART_PREFIX}*")) if directory.exists() else []


Piece = tuple[int, int] | bytes  # a byte range of the file, or bytes to put in its place


class ByteRanges:
    """A read-only stream of some byte ranges of a file (and bytes given in between), for a bulk load that takes a file object."""

    def __init__(self, handle: IO[bytes], pieces: list[Piece]) -> None:
        self.handle, self.pieces, self.index = handle, pieces, 0
        self.remaining = 0
        self.literal = b""
        self._next_piece()

    def _next_piece(self) -> None:
        while self.index < len(self.pieces):
            piece = self.pieces[self.index]
            self.index += 1
            if isinstance(piece, bytes):
                if piece:
                    self.literal = piece
                    return
                continue
            start, end = piece
            if end > start:
                self.handle.seek(start)
                self.remaining = end - start
                return
        self.remaining = 0

    def read(self, size: int = -1) -> bytes:
        chunks = []
        wanted = size if size is not None and size >= 0 else float("inf")
        while (self.remaining or self.literal) and wanted > 0:
            if self.literal:
                chunk, self.literal = self.literal, b""
            else:
                chunk = self.handle.read(int(min(self.remaining, wanted)))
                if not chunk:
                    raise OSError(f"staged file {self.handle.name} ended early")
                self.remaining -= len(chunk)
            chunks.append(chunk)
            wanted -= len(chunk)
            if not self.remaining and not self.literal:
                self._next_piece()
        return b"".join(chunks)


class CopyStream:
    """A whole binary COPY stream (header, the staged tuples of ``body``, trailer), for a driver's copy call."""

    def __init__(self, body: IO[bytes] | ByteRanges) -> None:
        self.parts: list[bytes | IO[bytes] | ByteRanges] = [HEADER, body, TRAILER]

    def read(self, size: int = -1) -> bytes:
        while self.parts:
            part = self.parts[0]
            if isinstance(part, bytes):
                self.parts.pop(0)
                if part:
                    return part
                continue
            chunk = part.read(size)
            if chunk:
                return chunk
            self.parts.pop(0)
        return b""


def runs(numbers: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs of sorted message numbers, as (first, last + 1): each run's rows are one byte range."""
    found: list[tuple[int, int]] = []
    for number in numbers:
        if found and found[-1][1] == number:
            found[-1] = (found[-1][0], number + 1)
        else:
            found.append((number, number + 1))
    return found
