"""Streaming XSD validation of E2B(R3) files against a schema the user supplies.

libxml2 validates while ``iterparse`` reads, so memory stays flat; elements are freed as soon as
they are complete. The same hardening as loading applies: no DTD, no entities, no network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from py_load_eudravigilance.errors import E2BError
from py_load_eudravigilance.parsing.reader import HARDENED, refuse_doctype


@dataclass
class ValidationResult:
    file_name: str
    error: str | None = None  # the first violation: libxml2 stops validating at it

    @property
    def valid(self) -> bool:
        return self.error is None


def load_schema(xsd_path: Path) -> etree.XMLSchema:
    """The schema, with its includes/imports resolved from local files only."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        return etree.XMLSchema(etree.parse(str(xsd_path), parser))
    except (etree.XMLSyntaxError, etree.XMLSchemaParseError) as exc:
        raise E2BError(f"not a usable XML schema: {exc}", file=str(xsd_path)) from None


def validate_file(path: Path, schema: etree.XMLSchema, file_name: str | None = None) -> ValidationResult:
    name = file_name or path.name
    result = ValidationResult(name)
    try:
        with path.open("rb") as source:
            checked_prolog = root_closed = False
            for _, element in etree.iterparse(source, events=("end",), schema=schema, **HARDENED):
                if not checked_prolog:
                    refuse_doctype(element, name)
                    checked_prolog = True
                root_closed = element.getparent() is None
                element.clear(keep_tail=True)
                while element.getprevious() is not None:
                    del element.getparent()[0]
        if not root_closed:
            # With a schema, libxml2 may stop at a truncated file's end without raising: the root never closed
            result.error = "the file ends before its root element does (truncated, or not XML)"
    except etree.XMLSyntaxError as exc:
        line = f"line {exc.lineno}: " if exc.lineno else ""
        result.error = f"{line}{exc.msg}"
    except E2BError as exc:
        result.error = exc.reason
    return result
