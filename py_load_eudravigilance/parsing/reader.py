"""Streaming, hardened reader of E2B(R3) files.

Accepts ``MCCI_IN200100UV01`` batches and single ``PORR_IN049016UV`` messages, pretty-printed or
on one line. Messages are yielded one at a time and freed once the caller is done with them, so
memory stays flat however large the file. DTDs and entities are refused, nothing is fetched.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from lxml import etree

from py_load_eudravigilance.errors import HostileXMLError, MalformedXMLError, NotE2BError
from py_load_eudravigilance.mapping.dictionary import HL7_NS

# Nothing resolved, loaded or fetched; text nodes capped (libxml2's default 10 MB limit)
HARDENED = {"resolve_entities": False, "load_dtd": False, "no_network": True, "huge_tree": False}
# libxml2 caps text nodes but not attribute values: no run of markup-free bytes may exceed this
MAX_RUN_WITHOUT_MARKUP = 10_000_000
READ_CHUNK = 1 << 16
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
BATCH_TAG = f"{{{HL7_NS}}}MCCI_IN200100UV01"
MESSAGE_TAG = f"{{{HL7_NS}}}PORR_IN049016UV"


class BatchReader:
    """Iterate over the messages of one file; afterwards ``root`` holds the batch header."""

    def __init__(self, source: IO[bytes], file_name: str) -> None:
        self.source = source
        self.file_name = file_name
        self.root: etree._Element | None = None
        self.is_batch = False

    def messages(self) -> Iterator[tuple[int, etree._Element]]:
        """Yield ``(position, message)``; a message is cleared when the caller resumes."""
        context = etree.iterparse(
            self.source,
            events=("start", "end"),
            tag=(BATCH_TAG, MESSAGE_TAG),
            remove_comments=True,
            remove_pis=True,
            **HARDENED,
        )
        position = 0
        try:
            for event, element in context:
                if self.root is None:
                    self._check_prolog(element)
                if event != "end" or element.tag != MESSAGE_TAG:
                    continue
                position += 1
                yield position, element
                parent = element.getparent()
                element.clear()
                if parent is not None:
                    parent.remove(element)
        except (OSError, EOFError) as exc:  # a damaged gzip stream
            raise MalformedXMLError(f"unreadable compressed data: {exc}", file=self.file_name, position=position + 1) from None
        except etree.XMLSyntaxError as exc:
            if "ntity" in str(exc) or "DOCTYPE" in str(exc):
                raise HostileXMLError(f"refused XML feature: {exc.msg}", file=self.file_name) from None
            raise MalformedXMLError(f"not well-formed XML: {exc.msg}", file=self.file_name, position=position + 1) from None
        if self.root is None:
            root = getattr(context, "root", None)
            found = etree.QName(root).localname if root is not None else "nothing"
            raise NotE2BError(
                f"not an E2B(R3) file: root element is {found}, expected MCCI_IN200100UV01 or PORR_IN049016UV",
                file=self.file_name,
            )

    def _check_prolog(self, element: etree._Element) -> None:
        refuse_doctype(element, self.file_name)
        self.root = element.getroottree().getroot()
        self.is_batch = self.root.tag == BATCH_TAG
        if self.root.tag not in (BATCH_TAG, MESSAGE_TAG):
            raise NotE2BError(f"not an E2B(R3) file: root element is {etree.QName(self.root).localname}", file=self.file_name)


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
