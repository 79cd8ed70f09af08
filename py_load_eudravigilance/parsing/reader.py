"""Streaming, hardened reader of E2B(R3) files.

Accepts ``MCCI_IN200100UV01`` batches and single ``PORR_IN049016UV`` messages, pretty-printed or
on one line. Messages are yielded one at a time and freed once the caller is done with them, so
memory stays flat however large the file. Every other element where a message belongs (another
namespace, a misspelled name, anything between the messages, a message inside a message) is yielded
too, with why it is not a message, and freed the same way. DTDs and entities are refused, nothing is fetched.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from lxml import etree

from py_load_eudravigilance.errors import HostileXMLError, MalformedXMLError, NotE2BError
from py_load_eudravigilance.mapping.dictionary import HL7_NS

# Nothing resolved, loaded or fetched; text nodes capped (libxml2's default 10 MB limit)
HARDENED = {"resolve_entities": False, "load_dtd": False, "no_network": True, "huge_tree": False}
# What a message keeps of its file: elements, attributes and their text; comments, processing instructions and the
# indentation between elements (whitespace-only text beside child elements: E2B has no mixed content) are dropped while
# parsing, so that neither the mapper nor the audit payload walks them (the indentation alone was ~10% of parsing)
KEPT_CONTENT = {"remove_comments": True, "remove_pis": True, "remove_blank_text": True}
# libxml2 caps text nodes but not attribute values: no run of markup-free bytes may exceed this
MAX_RUN_WITHOUT_MARKUP = 10_000_000
READ_CHUNK = 1 << 16
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
BATCH_TAG = f"{{{HL7_NS}}}MCCI_IN200100UV01"
MESSAGE_TAG = f"{{{HL7_NS}}}PORR_IN049016UV"
# The batch wrapper's own elements (N.1 and the HL7 transmission wrapper): every other child of a batch
# stands where a message belongs, so it is either a message or rejected as one
HEADER_TAGS = frozenset(
    f"{{{HL7_NS}}}{name}"
    for name in (
        "realmCode typeId templateId id creationTime securityText versionCode interactionId profileId processingCode"
        " processingModeCode acceptAckCode responseModeCode name batchComment transmissionQuantity batchTotalNumber"
        " attentionLine receiver respondTo sender"
    ).split()
)
# Header elements kept for the N.1 row; more than this many cannot be a header and count as strays (memory stays flat)
MAX_HEADER_ELEMENTS = 64
# An unfinished element that is not a message keeps at most this many finished children per level
PRUNE_CHILDREN = 1024
# Reasons worked out once per tag of the elements that are not messages (a hostile file may use endless tags)
MAX_CACHED_PROBLEMS = 64


class BatchReader:
    """Iterate over the elements at the message positions of one file; afterwards ``root`` holds the batch header.

    A message position is the root of a single-message file or any child of a batch that is not a header
    element. Each is yielded once, in document order, then freed: whatever sits between the messages, memory
    holds only the header, the current element and one chunk of read-ahead.
    """

    def __init__(self, source: IO[bytes], file_name: str) -> None:
        self.source = source
        self.file_name = file_name
        self.root: etree._Element | None = None
        self.is_batch = False
        self._headers = 0  # header children kept at the front of the root
        self._ended: set[etree._Element] = set()  # messages at a message position whose end tag was read
        self._nested: set[etree._Element] = set()  # elements at a message position holding a PORR_IN049016UV
        self._pruned: set[etree._Element] = set()  # stray elements whose finished content was dropped
        self._stray_problems: dict[str, str] = {}  # tag -> why an element of that tag is not a message

    def messages(self) -> Iterator[tuple[int, etree._Element]]:
        """Yield ``(position, message)`` for the E2B(R3) messages only (see :meth:`entries` for the others)."""
        for position, element, problem in self.entries():
            if problem is None:
                yield position, element

    def entries(self) -> Iterator[tuple[int, etree._Element, str | None]]:
        """Yield ``(position, element, problem)`` for every element at a message position: ``problem`` is None for
        a message, else why the element is not one. An element is cleared when the caller resumes."""
        parser = _spare_parser()
        position = 0
        held = b""
        try:
            while True:
                chunk = self.source.read(READ_CHUNK)
                if chunk:
                    chunk, held = held + chunk, b""
                    if chunk.endswith(b"<"):
                        # libxml2 tells a whitespace-only value from indentation by the byte after the '<' that ends
                        # it ('</': a value, kept); fed a chunk ending at '<', it would drop the value as indentation
                        chunk, held = chunk[:-1], b"<"
                    parser.feed(chunk)
                else:
                    if held:
                        parser.feed(held)
                    root = parser.close()
                    if self.root is None:
                        found = etree.QName(root).localname if root is not None else "nothing"
                        raise NotE2BError(
                            f"not an E2B(R3) file: root element is {found}, expected MCCI_IN200100UV01 or PORR_IN049016UV",
                            file=self.file_name,
                        )
                for event, element in parser.read_events():
                    if self.root is None:
                        self._check_prolog(element)
                    if event == "end" and element.tag == MESSAGE_TAG:
                        self._message_ended(element)
                for entry in self._finished(final=not chunk):
                    position += 1
                    yield position, *entry
                if not chunk:
                    _PARSERS.spare = parser  # closed cleanly: the next file of this thread may parse with it
                    return
        except (OSError, EOFError) as exc:  # a damaged gzip stream
            raise MalformedXMLError(f"unreadable compressed data: {exc}", file=self.file_name, position=position + 1) from None
        except etree.XMLSyntaxError as exc:
            if self.root is None:  # the root's start tag may have been read before the error: a DOCTYPE says why
                for _event, element in parser.read_events():
                    refuse_doctype(element, self.file_name)
                    break
            if "ntity" in str(exc) or "DOCTYPE" in str(exc):
                raise HostileXMLError(f"refused XML feature: {exc.msg}", file=self.file_name) from None
            raise MalformedXMLError(f"not well-formed XML: {exc.msg}", file=self.file_name, position=position + 1) from None

    def _message_ended(self, message: etree._Element) -> None:
        """A message at a message position is complete; one inside another marks the outer one."""
        outermost = message
        if self.is_batch:
            while (parent := outermost.getparent()) is not None and parent is not self.root:
                outermost = parent
        else:
            outermost = self.root  # type: ignore[assignment]
        if outermost is message:
            self._ended.add(message)
        else:
            self._nested.add(outermost)

    def _finished(self, final: bool) -> Iterator[tuple[etree._Element, str | None]]:
        """The elements at message positions that are complete, each with its problem, freed after the caller's turn."""
        root = self.root
        if root is None:
            return
        if not self.is_batch:
            if final:
                yield root, self._problem(root)
            return
        try:
            element: etree._Element | None = root[self._headers]
        except IndexError:
            return
        while element is not None:
            following, tag = element.getnext(), element.tag
            if tag in HEADER_TAGS and self._headers < MAX_HEADER_ELEMENTS:
                self._headers += 1  # kept (its content may still be arriving) for the N.1 row
                element = following
                continue
            if following is None and not final and element not in self._ended:
                self._prune(element)  # perhaps unfinished: wait for its end, holding only what is still open
                return
            if tag == MESSAGE_TAG:
                yield element, self._problem(element)
                self._ended.discard(element)
                self._nested.discard(element)
            elif element in self._pruned:
                yield element, self._problem(element)
                self._pruned.discard(element)
            else:  # strays come by the million in a hostile file: their reason is worked out once per tag
                problem = self._stray_problems.get(tag)
                if problem is None:
                    problem = self._problem(element)
                    if len(self._stray_problems) < MAX_CACHED_PROBLEMS:
                        self._stray_problems[tag] = problem
                yield element, problem
            element.clear()
            root.remove(element)
            element = following

    def _prune(self, stray: etree._Element) -> None:
        """Drop the finished content of an unfinished element that is not a message, where it grows beyond
        PRUNE_CHILDREN at a level: a stray can be of any size, its quarantined copy is then only its outline."""
        if stray.tag == MESSAGE_TAG:
            return
        node = stray
        while len(node):
            *done, last = node
            if len(done) >= PRUNE_CHILDREN:
                self._pruned.add(stray)
                for child in done:
                    node.remove(child)
            node = last

    def _problem(self, element: etree._Element) -> str | None:
        """None for an E2B(R3) message, else why the element at a message position is not one."""
        if element.tag == MESSAGE_TAG:
            if element in self._nested:
                return "a PORR_IN049016UV message holds another PORR_IN049016UV: one message per message position"
            return None
        name = etree.QName(element)
        where = f"namespace {name.namespace}" if name.namespace else "no namespace"
        dropped = " (its content was too large to keep)" if element in self._pruned else ""
        if name.localname == "PORR_IN049016UV":
            return f"a PORR_IN049016UV in {where}, not {HL7_NS}: not an E2B(R3) message{dropped}"
        return f"element {name.localname} ({where}) where a PORR_IN049016UV message belongs: not an E2B(R3) message{dropped}"

    def _check_prolog(self, element: etree._Element) -> None:
        refuse_doctype(element, self.file_name)
        self.root = element.getroottree().getroot()
        self.is_batch = self.root.tag == BATCH_TAG
        if self.root.tag not in (BATCH_TAG, MESSAGE_TAG):
            raise NotE2BError(f"not an E2B(R3) file: root element is {etree.QName(self.root).localname}", file=self.file_name)


class _Parsers(threading.local):
    spare: etree.XMLPullParser | None = None


# A parser closed after a whole document is reused for the next file: a new one costs ~0.1 ms more on its first
# document (libxml2 sets up its context), which is a third of the parse of a single-case file
_PARSERS = _Parsers()


def _spare_parser() -> etree.XMLPullParser:
    """This thread's spare parser, or a new one: a reader holds it alone until it gives it back after a clean close (one
    that failed or was left unfinished is dropped)."""
    parser, _PARSERS.spare = _PARSERS.spare, None
    if parser is None:
        parser = etree.XMLPullParser(events=("start", "end"), tag=(BATCH_TAG, MESSAGE_TAG), **KEPT_CONTENT, **HARDENED)
    return parser


def refuse_doctype(element: etree._Element, file_name: str) -> None:
    """Raise if the document being parsed declared a DOCTYPE (the door to DTDs and entities)."""
    docinfo = element.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise HostileXMLError("DOCTYPE declarations are refused (no DTDs, no entities)", file=file_name)


class _GuardedSource:
    """A byte stream that refuses any run longer than MAX_RUN_WITHOUT_MARKUP without a '<'.

    Such a run is a text node or attribute value beyond the limit: refused as soon as it is
    read, before it can fill memory.
    """

    def __init__(self, raw: IO[bytes], file_name: str) -> None:
        self.raw = raw
        self.file_name = file_name
        self.run = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.raw.read(size if size and size > 0 else READ_CHUNK)
        last = chunk.rfind(b"<")
        self.run = self.run + len(chunk) if last == -1 else len(chunk) - last - 1
        if self.run > MAX_RUN_WITHOUT_MARKUP:
            raise HostileXMLError(f"a text node or attribute value is longer than {MAX_RUN_WITHOUT_MARKUP:,} bytes", file=self.file_name)
        return chunk


@contextmanager
def open_source(path: Path, file_name: str) -> Iterator[IO[bytes]]:
    """The file's XML bytes, guarded; gzip files are decompressed as they stream, zip archives refused."""
    with path.open("rb") as raw:
        magic = raw.read(4)
        raw.seek(0)
        if magic.startswith(ZIP_MAGIC):
            raise NotE2BError("a zip archive, not an XML file: extract its files and load those", file=file_name)
        if magic.startswith(GZIP_MAGIC):
            with gzip.GzipFile(fileobj=raw) as unzipped:
                yield _GuardedSource(unzipped, file_name)  # type: ignore[misc]
            return
        yield _GuardedSource(raw, file_name)  # type: ignore[misc]
