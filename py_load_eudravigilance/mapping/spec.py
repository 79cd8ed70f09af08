"""Building blocks of the data dictionary: what a table and a field are.

A :class:`TableSpec` selects its rows (one repeat of an E2B group each) with an XPath relative to
its parent's row; each :class:`Field` reads one data element relative to that row. The database
schema, the mapper and the published data dictionary are all derived from these objects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from lxml import etree


class Kind(str, Enum):
    """How a field's text becomes typed columns."""

    TEXT = "text"  # free text or identifier
    CODE = "code"  # coded value (kept as text: codes are identifiers, not numbers)
    DATE = "date"  # HL7 TS: original text + UTC instant + precision
    BOOL = "bool"
    NUMBER = "number"
    INTEGER = "integer"
    ATTACHMENT = "attachment"  # ED, possibly base64: decoded bytes + media type + file name


@dataclass(frozen=True)
class Field:
    """One E2B data element (or technical key) and the XPath that reads it.

    ``path`` is relative to the row node; a trailing ``/@attr`` reads an attribute of the node
    it selects, otherwise the node's text is read. ``null_flavor`` adds a visible
    ``<column>_null_flavor`` column carrying HL7 nullFlavor codes (NI, MSK, UNK, ASKU, ...).
    ``code_system`` adds ``<column>_code_system`` for codes whose system varies.
    """

    column: str
    element: str
    name: str
    path: str
    kind: Kind = Kind.TEXT
    null_flavor: bool = False
    code_system: bool = False
    strip_prefix: str | None = None
    join_all: bool = False  # several occurrences (e.g. address lines) joined by newlines
    compute: Callable[[etree._Element], object] | None = None


@dataclass(frozen=True)
class TableSpec:
    """A normalized table: one row per occurrence of ``rows`` under the parent row."""

    name: str
    element: str
    description: str
    rows: str
    fields: tuple[Field, ...]
    position_column: str | None = None  # None: at most one row per parent (no repeat)
    children: tuple[TableSpec, ...] = ()
    # XPath variables bound from each row node, in order, visible to the row's fields and descendants:
    # a string, or a node set when the XPath selects nodes (paths then start from ``$name``)
    bind: dict[str, str] = field(default_factory=dict)
    # Variables that enumerate the rows instead of nodes (e.g. reaction ids of a drug)
    row_values: str | None = None
    row_variable: str | None = None
