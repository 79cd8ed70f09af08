"""Map one ``PORR_IN049016UV`` message element to normalized rows and an audit document.

The table specs are compiled once: each table's field paths into one trie of steps (``paths.py``),
the few paths beyond that subset into lxml XPath. Mapping a message walks the table tree, selecting
each table's rows relative to its parent row and all of a row's fields in one walk from there.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lxml import etree

from py_load_eudravigilance.errors import MappingError
from py_load_eudravigilance.mapping.catalog import (
    ATTACHMENT_SUFFIXES,
    CASE_KEY,
    MAX_CASE_ID_BYTES,
    MAX_INDEXED_BYTES,
    field_columns,
    indexed_text,
)
from py_load_eudravigilance.mapping.dictionary import BATCH_HEADER, ICSR_MASTER, NAMESPACES, hl7_xpath
from py_load_eudravigilance.mapping.paths import (
    KeyedPath,
    KeyMemo,
    PathTrie,
    Selection,
    StepPath,
    UnsupportedPath,
    Variables,
    keyed_path,
    parse_expression,
    parse_path,
    string_value,
    variable_name,
)
from py_load_eudravigilance.mapping.spec import Field, Kind, TableSpec
from py_load_eudravigilance.mapping.values import InvalidValueError, collapse_token, parse_bool, parse_int, parse_number, parse_ts

Row = dict[str, Any]

NULLIFICATION_CODE = "1"  # C.1.11.1: 1 = nullification, 2 = amendment


@dataclass(frozen=True)
class Required:
    """A value no message is staged without: the element its rejection names, and why."""

    element: str
    reason: str


# Both cores reject a message by these (the compiled one receives them as data)
NO_CASE_ID = Required("C.1.1", "the message has no safety report identifier")
NO_MOST_RECENT = Required("C.1.5", "the message has no date of most recent information")
# C.1.1 is at most 100 characters in E2B(R3); 500 leaves room for odd senders, and MAX_CASE_ID_BYTES keeps it
# under PostgreSQL's btree limit in every index it is part of (signal keys pair it with an indexed text)
MAX_CASE_ID_LENGTH = 500
INVALID_BASE64 = "B64-invalid-kept-as-sent"
_PARSERS: dict[Kind, Callable[[str], object]] = {Kind.BOOL: parse_bool, Kind.NUMBER: parse_number, Kind.INTEGER: parse_int}


@dataclass
class MappedCase:
    """One case version as read from one message, ready to load."""

    safetyreportid: str
    message_position: int
    most_recent_info_utc: datetime
    message_creation_utc: datetime | None
    is_nullification: bool
    rows: dict[str, list[Row]]


def _split_path(path: str) -> tuple[str, str | None]:
    """``a/b/@c`` -> (``a/b``, ``c``); ``@c`` -> (``.``, ``c``); ``a/b`` -> (``a/b``, None)."""
    head, sep, attribute = path.rpartition("@")
    if sep and "/" not in attribute and "[" not in attribute and "]" not in attribute:
        node_path = head.rstrip("/") or "."
        return node_path, attribute
    return path, None


def _text_of(node: etree._Element) -> str:
    return string_value(node).strip()


class CompiledField:
    """A field's path, compiled once (a slot of its table's trie, or an lxml XPath beyond the trie's subset),
    and the conversion of what it selects."""

    def __init__(self, spec: Field, trie: PathTrie, max_bytes: int = 0, memo: KeyMemo | None = None) -> None:
        self.spec = spec
        self.keyed: KeyedPath | None = None  # a join on a variable, looked up in ``memo`` (see paths.keyed_path)
        self.memo: KeyMemo = memo if memo is not None else {}
        self.max_bytes = max_bytes  # 0: unbounded; else the most UTF-8 bytes its value may have (an indexed text)
        self.variable = variable_name(spec.path)
        self.slot: int | None = None
        self.xpath: etree.XPath | None = None
        self.attribute: str | None = None
        # Read for every field of every row: the columns and the conversion are looked up once, here
        column = spec.column
        self.null_flavor_column = f"{column}_null_flavor" if spec.null_flavor else None
        self.code_system_column = f"{column}_code_system" if spec.code_system else None
        self.date_columns = (f"{column}_utc", f"{column}_precision") if spec.kind is Kind.DATE else None
        self.parse = _PARSERS.get(spec.kind)
        self.is_code = spec.kind is Kind.CODE
        if spec.compute is not None or self.variable is not None:
            return
        try:
            path = parse_path(spec.path)
            self.slot, self.attribute = trie.add(path), path.attribute
        except UnsupportedPath:
            node_path, self.attribute = _split_path(spec.path)
            self.xpath = etree.XPath(hl7_xpath(node_path), namespaces=NAMESPACES)
            self.keyed = _keyed_or_none(node_path)

    def read(self, node: etree._Element, variables: Variables, row: Row, selected: list[etree._Element] | None = None) -> None:
        """Fill the field's columns of ``row``; ``selected``: what the table's trie selected for it."""
        spec = self.spec
        if spec.compute is not None:
            row[spec.column] = spec.compute(node)
            return
        if self.variable is not None:
            row[spec.column] = variables.get(self.variable)
            return
        if selected is None and self.keyed is not None:
            selected = self.keyed.select(node, variables, self.memo)
        if selected is None:
            assert self.xpath is not None
            selected = [n for n in self.xpath(node, **variables) if isinstance(n, etree._Element)]
        first = selected[0] if selected else None
        if self.null_flavor_column:
            row[self.null_flavor_column] = first.get("nullFlavor") if first is not None else None
        if self.code_system_column:
            row[self.code_system_column] = first.get("codeSystem") if first is not None else None
        if spec.kind is Kind.ATTACHMENT:
            self._read_attachment(first, row)
            return
        if spec.join_all and self.attribute is None:
            texts = [_text_of(n) for n in selected]
            raw: str | None = "\n".join(t for t in texts if t) or None
        elif first is None:
            raw = None
        elif self.attribute is not None:
            raw = first.get(self.attribute) or None
        else:
            raw = _text_of(first) or None
        if raw is not None and spec.strip_prefix and raw.startswith(spec.strip_prefix):
            raw = raw[len(spec.strip_prefix) :]
        self.convert(raw, row)

    def convert(self, raw: str | None, row: Row) -> None:
        column = self.spec.column
        if self.max_bytes and raw is not None and len(raw) * 4 > self.max_bytes and (size := len(raw.encode())) > self.max_bytes:
            raise MappingError(
                f"the value has {size:,} bytes, more than the {self.max_bytes:,} an indexed column holds", element=self.spec.element
            )
        try:
            if self.date_columns is not None:
                row[column] = raw
                parsed = parse_ts(raw) if raw else None
                utc_column, precision_column = self.date_columns
                row[utc_column] = parsed.utc if parsed else None
                row[precision_column] = parsed.precision if parsed else None
            elif raw is None or self.parse is None:
                row[column] = collapse_token(raw) or None if raw is not None and self.is_code else raw
            else:
                row[column] = self.parse(raw)
        except InvalidValueError as exc:
            raise MappingError(str(exc), element=self.spec.element) from None

    def _read_attachment(self, node: etree._Element | None, row: Row) -> None:
        column = self.spec.column
        if node is None:
            row.update({f"{column}{suffix}": None for suffix in ("", *ATTACHMENT_SUFFIXES)})
            return
        reference = node.find(f"{{{NAMESPACES['h']}}}reference")
        content = string_value(node)
        compression = node.get("compression")
        data: bytes | None
        representation = node.get("representation", "TXT")
        data: bytes | None = content.strip().encode("utf-8") or None
        if representation == "B64":
            try:
                data = base64.b64decode("".join(content.split()), validate=True)
                if compression == "DF":
                    data = zlib.decompress(data, -zlib.MAX_WBITS)
            except (binascii.Error, ValueError, zlib.error):
                # Senders do send broken base64; keep the text as sent rather than lose the case
                representation = INVALID_BASE64
        row[column] = data
        row[f"{column}_media_type"] = node.get("mediaType")
        row[f"{column}_file_name"] = reference.get("value") if reference is not None else None
        row[f"{column}_compression"] = compression
        row[f"{column}_representation"] = representation


class CompiledTable:
    """A table spec ready to map: its fields' paths and its child tables' row paths in one trie."""

    def __init__(self, spec: TableSpec, parent_trie: PathTrie | None = None, memo: KeyMemo | None = None) -> None:
        self.spec = spec
        self.memo: KeyMemo = memo if memo is not None else {}  # the keyed paths' indexes, shared by the whole tree of tables
        row_path = _step_path_or_none(spec.rows) if not spec.row_values else None
        # Rows come from the parent's walk where the path allows; the rest from lxml's XPath
        self.row_slot = parent_trie.add(row_path) if row_path is not None and parent_trie is not None else None
        self.rows = etree.XPath(hl7_xpath(spec.rows), namespaces=NAMESPACES)
        self.row_values = etree.XPath(hl7_xpath(spec.row_values), namespaces=NAMESPACES) if spec.row_values else None
        # The union's paths one by one: libxml2 merges the node sets of a union in time quadratic in their size
        self.value_parts = [etree.XPath(hl7_xpath(part), namespaces=NAMESPACES) for part in _union_parts(spec.row_values or "")]
        self.bind = {name: etree.XPath(hl7_xpath(path), namespaces=NAMESPACES) for name, path in spec.bind.items()}
        self.rows_keyed = _keyed_or_none(spec.rows) if not spec.row_values else None
        self.bind_keyed = {name: _keyed_or_none(path) for name, path in spec.bind.items()}
        self.trie = PathTrie()
        fields = [
            CompiledField(f, self.trie, MAX_INDEXED_BYTES if indexed_text(spec.name, f.column) else 0, self.memo) for f in spec.fields
        ]
        self.by_slot = {f.slot: f for f in fields if f.slot is not None}
        self.unslotted = [f for f in fields if f.slot is None]
        # Rows start with every field column empty: a field its trie selected nothing for is skipped
        self.blank_row: Row = {c.name: None for f in spec.fields for c in field_columns(spec.name, f)}
        self.children = [CompiledTable(child, self.trie, self.memo) for child in spec.children]

    def contexts(self, parent: etree._Element, variables: Variables, found: Selection) -> list[tuple[etree._Element, Variables]]:
        """The row contexts under ``parent`` (whose walk selected ``found``): a node and the XPath variables in scope."""
        if self.row_values is not None and self.spec.row_variable:
            seen: dict[str, None] = {}
            for value in self._union_values(parent, variables):
                seen.setdefault(str(value), None)
            return [(parent, {**variables, self.spec.row_variable: value}) for value in seen]
        keyed = self.rows_keyed.select(parent, variables, self.memo) if self.rows_keyed is not None else None
        if self.row_slot is not None:
            nodes = found.get(self.row_slot, [])
        elif keyed is not None:
            nodes = keyed
        else:
            nodes = [n for n in self.rows(parent, **variables) if isinstance(n, etree._Element)]
        if self.spec.position_column is None:
            nodes = nodes[:1]
        if not self.bind:
            return [(node, variables) for node in nodes]
        contexts = []
        for node in nodes:
            scope = dict(variables)
            for name, xpath in self.bind.items():
                keyed = self.bind_keyed[name]
                value = keyed.select(node, scope, self.memo) if keyed is not None else None
                if value is None:
                    value = xpath(node, **scope)
                scope[name] = value if isinstance(value, list) else str(value)
            contexts.append((node, scope))
        return contexts

    def _union_values(self, parent: etree._Element, variables: Variables) -> list[Any]:
        """The attribute values the row-values union selects, in document order of their elements (stable: a
        union's own order for one element, as the compiled mapper orders them)."""
        parts = [found for xpath in self.value_parts if (found := xpath(parent, **variables))]
        values = [value for part in parts for value in part]
        if all(_precedes(earlier[-1].getparent(), later[0].getparent()) for earlier, later in zip(parts, parts[1:], strict=False)):
            return values  # each part is in document order, and each ends before the next begins
        root = parent.getroottree().getroot()
        entry = self.memo.get((0, id(root)))
        if entry is None:  # each element's rank in the document, once per message (the memo is cleared after it)
            entry = self.memo[(0, id(root))] = (root, {element: rank for rank, element in enumerate(root.iter())})
        ranks = entry[1]
        return [values[i] for i in sorted(range(len(values)), key=lambda i: (ranks[values[i].getparent()], i))]

    def map_into(self, parent: etree._Element, variables: Variables, keys: Row, out: dict[str, list[Row]], found: Selection) -> None:
        rows = out.setdefault(self.spec.name, [])
        by_slot = self.by_slot
        for position, (node, scope) in enumerate(self.contexts(parent, variables, found), start=1):
            row: Row = {**self.blank_row, **keys}
            if self.spec.position_column:
                row[self.spec.position_column] = position
            selection = self.trie.select(node, scope)
            for slot, selected in selection.items():
                compiled = by_slot.get(slot)
                if compiled is not None:  # the other slots hold child tables' rows
                    compiled.read(node, scope, row, selected)
            for compiled in self.unslotted:
                compiled.read(node, scope, row)
            rows.append(row)
            child_keys = {k: row[k] for k in (*keys, self.spec.position_column) if k}
            for child in self.children:
                child.map_into(node, scope, child_keys, out, selection)


def _precedes(a: etree._Element, b: etree._Element) -> bool:
    """Whether ``a`` comes before ``b`` in document order (an element before its descendants)."""
    down_a, down_b = [*a.iterancestors()][::-1] + [a], [*b.iterancestors()][::-1] + [b]
    for x, y in zip(down_a, down_b, strict=False):
        if x is not y:  # where the paths part: the earlier sibling comes first
            siblings = x.getparent()
            return siblings is not None and siblings.index(x) < siblings.index(y)
    return len(down_a) < len(down_b)


def _union_parts(text: str) -> list[str]:
    """The paths of a union ``a | b | c`` (a ``|`` inside brackets, parentheses or quotes is not a separator)."""
    parts, depth, quote, start = [], 0, "", 0
    for position, character in enumerate(text):
        if quote:
            quote = "" if character == quote else quote
        elif character in "'\"":
            quote = character
        elif character in "[(":
            depth += 1
        elif character in "])":
            depth -= 1
        elif character == "|" and depth == 0:
            parts.append(text[start:position].strip())
            start = position + 1
    return [*parts, text[start:].strip()] if text.strip() else []


def _keyed_or_none(path: str) -> KeyedPath | None:
    try:
        return keyed_path(parse_expression(path))
    except UnsupportedPath:
        return None


def _step_path_or_none(path: str) -> StepPath | None:
    """``path`` parsed for a trie, or None beyond a trie's subset (and for keyed paths, which are looked up)."""
    try:
        parsed = parse_path(path)
    except UnsupportedPath:
        return None
    return parsed if keyed_path(parsed) is None else None


def check_case_id(case_id: str) -> None:
    """Raise unless the C.1.1 of a message can be the key of its case in every index (both mappers' rule)."""
    if len(case_id) > MAX_CASE_ID_LENGTH:
        raise MappingError(f"the safety report identifier has {len(case_id):,} characters, more than {MAX_CASE_ID_LENGTH}", element="C.1.1")
    if len(case_id) * 4 > MAX_CASE_ID_BYTES and (size := len(case_id.encode())) > MAX_CASE_ID_BYTES:
        raise MappingError(f"the safety report identifier has {size:,} bytes of UTF-8, more than {MAX_CASE_ID_BYTES:,}", element="C.1.1")


class CaseMapper:
    """Maps messages to :class:`MappedCase` objects; compile once, use for many messages."""

    def __init__(self) -> None:
        self.master = CompiledTable(ICSR_MASTER)
        self.batch = CompiledTable(BATCH_HEADER)

    def map_message(self, message: etree._Element, position: int) -> MappedCase:
        out: dict[str, list[Row]] = {}
        try:
            self.master.map_into(message, {}, {}, out, {})
        finally:
            self.master.memo.clear()  # its indexes hold this message's elements
        master = out["icsr_master"][0]
        case_id = master.get(CASE_KEY)
        if not case_id:
            raise MappingError(NO_CASE_ID.reason, element=NO_CASE_ID.element)
        check_case_id(case_id)
        if master.get("most_recent_info_date_utc") is None:
            raise MappingError(NO_MOST_RECENT.reason, element=NO_MOST_RECENT.element, case_id=case_id)
        self._key_children(out, case_id)
        return MappedCase(
            safetyreportid=case_id,
            message_position=position,
            most_recent_info_utc=master["most_recent_info_date_utc"],
            message_creation_utc=master.get("message_creation_time_utc"),
            is_nullification=master.get("nullification_amendment") == NULLIFICATION_CODE,
            rows=out,
        )

    @staticmethod
    def _key_children(out: dict[str, list[Row]], case_id: str) -> None:
        for name, rows in out.items():
            if name != "icsr_master":
                for row in rows:
                    row[CASE_KEY] = case_id

    def map_batch_header(self, root: etree._Element) -> Row:
        out: dict[str, list[Row]] = {}
        self.batch.map_into(root, {}, {}, out, {})
        return out["message_batches"][0]


MapperFactory = Callable[[], CaseMapper]
