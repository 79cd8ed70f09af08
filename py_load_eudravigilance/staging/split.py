"""Split one batch file into byte ranges of whole messages, so that several workers parse it at once.

A scan of the raw bytes (``bytes.find`` over a sliding window, no parse) finds where the
``PORR_IN049016UV`` messages start and end. Each shard then parses a document made of the file's
bytes before the first message (declaration, root start tag with its namespace declarations, batch
header), its own run of messages, and the bytes after the last message (trailing header, root end
tag): every shard sees the same context, so its messages stage exactly as in the whole file, at the
same positions (each shard knows how many messages come before its range).

The scan answers only when a split is certainly right: plain UTF-8 (or ASCII) XML without a DOCTYPE,
message start and end tags alternating (no nesting, no empty element), and nothing but blanks,
comments and processing instructions between two messages. A tag's text inside a comment, a CDATA
section or a processing instruction is no tag; ``<`` cannot occur in attribute values or text of
well-formed XML, so what remains is markup. Whatever the scan may still misjudge (a malformed file,
an element the reader counts but the scan does not) shows in some shard as a parse error or as a
count of messages other than the scan's: the shard raises :class:`SplitFailed` and the file is
loaded again in one piece, never with wrong positions.

The scan costs about 6% of one bare lxml parse of the same file (2026-12-01, 140 MB of generated
messages and 133 MB of the FDA examples, which hold a comment every 300 bytes); each shard scans
and hashes the whole file, then parses only its range.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from py_load_eudravigilance.parsing.reader import _GuardedSource

MESSAGE_NAME = b"PORR_IN049016UV"
# How much the scan reads at a time (its memory: the window is at most a chunk plus a little)
SCAN_CHUNK = 1 << 22
# The longest namespace prefix the scan recognizes in a tag (a longer one is not found, which only means no split)
MAX_PREFIX = 64
# A file's first bytes, which hold its XML declaration
PROLOG_BYTES = 1024
# Encodings in which every byte below 0x80 is that ASCII character, and no multi-byte sequence contains one
BYTE_SAFE_ENCODINGS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
UNSAFE_MAGIC = (b"\x1f\x8b", b"PK\x03\x04", b"\xfe\xff", b"\xff\xfe", b"\x00\x00\xfe\xff")
UTF8_BOM = b"\xef\xbb\xbf"

_TAG_OPENING = re.compile(rb"(/?)(?:[A-Za-z_][A-Za-z0-9_.\-]*:)?\Z")
_BEFORE_NAME = frozenset(b"</:")  # the bytes a tag's name can follow: '<', '</' or a prefix's ':'
_AFTER_NAME = {False: frozenset(b" \t\r\n/>"), True: frozenset(b" \t\r\n>")}  # after a start tag's name, an end tag's
# What may stand between two messages: blanks, comments and PIs (each alternative starts differently: no backtracking)
_GAP = re.compile(rb"(?:[ \t\r\n]|<!--(?:[^-]|-[^-])*-->|<\?(?:[^?]|\?(?!>))*\?>)*\Z")
_END_TAG_REST = re.compile(rb"[ \t\r\n]*>")
# Bytes the scan wants after a name it found: the byte after it
_LOOKAHEAD = len(MESSAGE_NAME) + 1
# Bytes between two messages the scan keeps to check; more, and the file is not split
MAX_GAP = 1 << 20
_ENCODING = re.compile(rb"""\sencoding\s*=\s*["']([A-Za-z0-9._\-]+)["']""")


class SplitFailed(RuntimeError):
    """A shard of a split file did not read what the scan promised: the file must be loaded in one piece."""


class _Unsplittable(Exception):
    """Raised inside the scan: this file is not split."""


@dataclass(frozen=True)
class Piece:
    """The messages ``before + 1`` to ``before + messages`` of a file, at bytes ``start`` to ``end``."""

    start: int
    end: int
    before: int
    messages: int


@dataclass(frozen=True)
class Layout:
    """A file's split: its bytes before the first message (``head_end``), after the last (``tail_start``), and its pieces."""

    size: int
    head_end: int
    tail_start: int
    pieces: tuple[Piece, ...]

    def spans(self, piece: Piece) -> list[tuple[int, int]]:
        """The byte ranges of the document a shard parses: head, its messages, tail."""
        return [(0, self.head_end), (piece.start, piece.end), (self.tail_start, self.size)]


def may_split(path: Path) -> bool:
    """Whether the file's first bytes allow a split: plain XML in UTF-8 or ASCII (a cheap look, not the scan)."""
    try:
        with path.open("rb") as handle:
            return _byte_safe_prolog(handle.read(PROLOG_BYTES))
    except OSError:
        return False  # staging it reports why


def _byte_safe_prolog(start: bytes) -> bool:
    if start.startswith(UNSAFE_MAGIC):
        return False
    start = start.removeprefix(UTF8_BOM)
    if not start.startswith(b"<") or b"\x00" in start[:4] or b"<!DOCTYPE" in start:
        return False  # (a DOCTYPE further on fails every shard as it fails the whole file: refused)
    if start.startswith(b"<?xml") and start[5:6].isspace():
        end = start.find(b"?>")
        if end == -1:
            return False
        declared = _ENCODING.search(start[:end])
        return declared is None or declared.group(1).decode().lower() in BYTE_SAFE_ENCODINGS
    return True


def layout_of(path: Path, shards: int, chunk: int = SCAN_CHUNK) -> Layout | None:
    """The file cut into ``shards`` pieces of about equal size, each starting at a message; None when it cannot be split."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        if not _byte_safe_prolog(handle.read(PROLOG_BYTES)):
            return None
        handle.seek(0)
        targets = [size * number // shards for number in range(1, shards)]
        try:
            return _Scan(handle, chunk).layout(size, targets)
        except _Unsplittable:
            return None


class _Construct:
    """Comments, CDATA sections or processing instructions: whether an offset lies inside one of them.

    Judged from the last opener before the offset (found by its rarest byte, at memory speed) and whether
    its terminator follows before the offset. An opener seen inside another construct's text may make a
    real tag look inside (the scan then finds no split, or a shard's count disagrees); a tag inside one
    is always seen inside, since a construct's text cannot hold its own terminator.
    """

    def __init__(self, opener: bytes, marker: int, terminator: bytes) -> None:
        self.opener, self.terminator = opener, terminator
        self.marker, self.marker_at = opener[marker : marker + 1], marker  # the byte searched for, its index
        self.open_at = -1  # the last opener's offset while it is not terminated
        self.checked = 0  # openers ending before this offset were accounted for

    def inside(self, scan: _Scan, offset: int) -> bool:
        """Whether ``offset`` lies inside a construct of this kind (every offset asked about comes after the last)."""
        if offset <= self.checked:
            return self.open_at != -1
        data, base, size = scan.data, scan.base, len(self.opener)
        low = max(0, self.checked - size - base)
        found = offset - base
        if self.open_at == -1 and data.find(self.marker, low, found) == -1:
            self.checked = offset  # no opener since the last look (the usual case: a quick memchr)
            return False
        while (found := data.rfind(self.marker, low, found)) != -1:
            start = found - self.marker_at
            if start >= 0 and self.checked < base + start + size <= offset and data.startswith(self.opener, start):
                self.open_at = base + start
                break
        if self.open_at != -1:
            after = max(self.open_at + size, self.checked - len(self.terminator) + 1)
            if data.find(self.terminator, after - base, offset - base) != -1:
                self.open_at = -1
        self.checked = offset
        return self.open_at != -1


class _Scan:
    """One pass over a file's bytes, finding its message start and end tags outside comments, CDATA and PIs.

    Only the message name is searched for, with ``bytes.find``; comments, CDATA sections and processing
    instructions are told apart by looking back from each tag, so that their number costs next to nothing.
    """

    def __init__(self, handle: IO[bytes], chunk: int) -> None:
        self.handle, self.chunk = handle, max(chunk, 16 * MAX_PREFIX)
        self.data = b""
        self.base = 0  # the file offset of data[0]
        self.eof = False
        self.constructs = (_Construct(b"<!--", 1, b"-->"), _Construct(b"<![CDATA[", 2, b"]]>"), _Construct(b"<?", 1, b"?>"))

    @property
    def end(self) -> int:
        return self.base + len(self.data)

    def _read(self, keep_from: int) -> bool:
        """Append a chunk, dropping the bytes before ``keep_from`` (less a margin for the openers looked back at);
        False at the end of the file."""
        if self.eof:
            return False
        keep_from = max(self.base, min(keep_from, self.end))
        for construct in self.constructs:
            construct.inside(self, keep_from)  # account for the bytes about to go
        keep_from = max(self.base, keep_from - MAX_PREFIX)
        chunk = self.handle.read(self.chunk)
        self.eof = not chunk
        self.data = self.data[keep_from - self.base :] + chunk
        self.base = keep_from
        return bool(chunk)

    def _ensure(self, upto: int) -> None:
        """Read on (dropping nothing) until the window reaches ``upto`` or the end of the file."""
        while self.end < upto and not self.eof:
            chunk = self.handle.read(self.chunk)
            self.eof = not chunk
            self.data += chunk

    def _inside_construct(self, offset: int) -> bool:
        return any([construct.inside(self, offset) for construct in self.constructs])  # every one kept up to date

    def layout(self, size: int, targets: list[int]) -> Layout:
        first = last_end = -1
        inside = False
        count = 0
        cuts: list[tuple[int, int]] = []  # (offset, messages before) of the first message at or after each target
        pos = 0
        gap: int | None = None  # after a message: where the bytes begin that must be blank up to the next one
        gap_too_long = False
        while True:
            data, base = self.data, self.base
            found = data.find(MESSAGE_NAME, pos - base)
            if found == -1 or base + found + _LOOKAHEAD > self.end:
                if self.eof:
                    if found == -1:
                        break
                else:
                    if found == -1:
                        pos = max(pos, self.end - len(MESSAGE_NAME))  # searched up to there
                    keep = pos
                    if gap is not None and not gap_too_long:
                        gap_too_long = self.end - gap > MAX_GAP
                        keep = keep if gap_too_long else min(keep, gap)
                    self._read(keep)
                    continue
            pos = base + found + len(MESSAGE_NAME)
            if found == 0 or data[found - 1] not in _BEFORE_NAME:
                continue  # the name in text or an attribute value
            opening = data.rfind(b"<", max(0, found - MAX_PREFIX), found)
            tag = _TAG_OPENING.match(data, opening + 1, found) if opening != -1 else None
            follows = data[found + len(MESSAGE_NAME) : found + len(MESSAGE_NAME) + 1]
            if tag is None or not follows:
                continue  # the name in text or an attribute value
            closing = tag.group(1) == b"/"
            if follows[0] not in _AFTER_NAME[closing]:
                continue  # a longer name
            start = base + opening
            if self._inside_construct(start):
                continue
            if closing:
                if not inside:
                    raise _Unsplittable
                self._ensure(pos + MAX_PREFIX)
                rest = _END_TAG_REST.match(self.data, pos - self.base)
                if rest is None:
                    raise _Unsplittable
                inside, pos = False, self.base + rest.end()
                last_end = gap = pos
                gap_too_long = False
            else:
                if inside:
                    raise _Unsplittable  # nested, or the one before was an empty element
                if gap is not None and (gap_too_long or not _GAP.match(data, gap - base, opening)):
                    raise _Unsplittable  # something other than blanks, comments and PIs between two messages
                gap = None
                if first == -1:
                    first = start
                while len(cuts) < len(targets) and targets[len(cuts)] <= start:
                    cuts.append((start, count))
                inside = True
                count += 1
        if inside or count < 2:
            raise _Unsplittable
        bounds = [(first, 0), *cuts]
        bounds += [(last_end, count)] * (len(targets) + 2 - len(bounds))  # targets past the last message: empty pieces
        pieces = tuple(Piece(start, end, before, after - before) for (start, before), (end, after) in zip(bounds, bounds[1:], strict=False))
        return Layout(size, first, last_end, pieces)


class PieceStream:
    """A file-like view of a shard's document: the listed byte ranges of one file, one after the other."""

    def __init__(self, handle: IO[bytes], spans: list[tuple[int, int]]) -> None:
        self.handle = handle
        self.spans = [(start, end) for start, end in spans if end > start]
        self.left = 0  # bytes left in the current span

    def read(self, size: int = -1) -> bytes:
        while self.left == 0:
            if not self.spans:
                return b""
            start, end = self.spans.pop(0)
            self.handle.seek(start)
            self.left = end - start
        wanted = self.left if size is None or size < 0 else min(size, self.left)
        chunk = self.handle.read(wanted)
        if not chunk:
            raise SplitFailed("the file became shorter while it was read")
        self.left -= len(chunk)
        return chunk


@contextmanager
def open_piece(path: Path, file_name: str, layout: Layout, piece: Piece) -> Iterator[IO[bytes]]:
    """The document a shard parses, streamed from the file and guarded as the reader guards a whole file."""
    with path.open("rb") as handle:
        yield _GuardedSource(PieceStream(handle, layout.spans(piece)), file_name)  # type: ignore[misc]
