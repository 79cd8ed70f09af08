"""Map one ``PORR_IN049016UV`` message element to normalized rows and an audit document.

The table specs are compiled once into XPath evaluators; mapping a message walks the table tree,
selecting each table's rows relative to its parent row and reading every field from there.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lxml import etree

from py_load_eudravigilance.errors import MappingError
from py_load_eudravigilance.mapping.catalog import ATTACHMENT_SUFFIXES, CASE_KEY
from py_load_eudravigilance.mapping.dictionary import BATCH_HEADER, ICSR_MASTER, NAMESPACES, hl7_xpath
from py_load_eudravigilance.mapping.spec import Field, Kind, TableSpec
from py_load_eudravigilance.mapping.values import InvalidValueError, parse_bool, parse_int, parse_number, parse_ts

Row = dict[str, Any]
Variables = dict[str, str]

NULLIFICATION_CODE = "1"
INVALID_BASE64 = "B64-invalid-kept-as-sent"  # C.1.11.1: 1 = nullification, 2 = amendment


@dataclass
class MappedCase:
    """One case version as read from one message, ready to load."""

    safetyreportid: str
    message_position: int
    most_recent_info_utc: datetime
    message_creation_utc: datetime | None
    is_nullification: bool
    rows: dict[str, list[Row]]
    audit: dict[str, Any] = field(default_factory=dict)


def _split_path(path: str) -> tuple[str, str | None]:
    """``a/b/@c`` -> (``a/b``, ``c``); ``@c`` -> (``.``, ``c``); ``a/b`` -> (``a/b``, None)."""
    head, sep, attribute = path.rpartition("@")
    if sep and "/" not in attribute and "[" not in attribute and "]" not in attribute:
        node_path = head.rstrip("/") or "."
        return node_path, attribute
    return path, None


def _text_of(node: etree._Element) -> str:
    return "".join(node.itertext()).strip()


class CompiledField:
    """A field's XPath, compiled once, and the conversion of what it selects."""

    def __init__(self, spec: Field) -> None:
        self.spec = spec
        self.variable = spec.path[1:] if spec.path.startswith("$") else None
        node_path, self.attribute = _split_path(spec.path)
        self.xpath = etree.XPath(hl7_xpath(node_path), namespaces=NAMESPACES)

    def read(self, node: etree._Element, variables: Variables, row: Row) -> None:
        spec = self.spec
        if spec.compute is not None:
            row[spec.column] = spec.compute(node)
            return
        if self.variable is not None:
            row[spec.column] = variables.get(self.variable)
            return
        selected = [n for n in self.xpath(node, **variables) if isinstance(n, etree._Element)]
        first = selected[0] if selected else None
        if spec.null_flavor:
            row[f"{spec.column}_null_flavor"] = first.get("nullFlavor") if first is not None else None
        if spec.code_system:
            row[f"{spec.column}_code_system"] = first.get("codeSystem") if first is not None else None
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
        self._convert(raw, row)

    def _convert(self, raw: str | None, row: Row) -> None:
        spec = self.spec
        column = spec.column
        try:
            if spec.kind is Kind.DATE:
                row[column] = raw
                parsed = parse_ts(raw) if raw else None
                row[f"{column}_utc"] = parsed.utc if parsed else None
                row[f"{column}_precision"] = parsed.precision if parsed else None
            elif raw is None:
                row[column] = None
            elif spec.kind is Kind.BOOL:
                row[column] = parse_bool(raw)
            elif spec.kind is Kind.NUMBER:
                row[column] = parse_number(raw)
            elif spec.kind is Kind.INTEGER:
                row[column] = parse_int(raw)
            else:
                row[column] = raw
        except InvalidValueError as exc:
            raise MappingError(str(exc), element=spec.element) from None

    def _read_attachment(self, node: etree._Element | None, row: Row) -> None:
        column = self.spec.column
        if node is None:
            row.update({f"{column}{suffix}": None for suffix in ("", *ATTACHMENT_SUFFIXES)})
            return
        reference = node.find(f"{{{NAMESPACES['h']}}}reference")
        content = "".join(node.itertext())
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
    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self.rows = etree.XPath(hl7_xpath(spec.rows), namespaces=NAMESPACES)
        self.row_values = etree.XPath(hl7_xpath(spec.row_values), namespaces=NAMESPACES) if spec.row_values else None
        self.bind = {name: etree.XPath(hl7_xpath(path), namespaces=NAMESPACES) for name, path in spec.bind.items()}
        self.fields = [CompiledField(f) for f in spec.fields]
        self.children = [CompiledTable(child) for child in spec.children]

    def contexts(self, parent: etree._Element, variables: Variables) -> list[tuple[etree._Element, Variables]]:
        """The row contexts under ``parent``: a node and the XPath variables in scope."""
        if self.row_values is not None and self.spec.row_variable:
            seen: dict[str, None] = {}
            for value in self.row_values(parent, **variables):
                seen.setdefault(str(value), None)
            return [(parent, {**variables, self.spec.row_variable: value}) for value in seen]
        nodes = [n for n in self.rows(parent, **variables) if isinstance(n, etree._Element)]
        if self.spec.position_column is None:
            nodes = nodes[:1]
        contexts = []
        for node in nodes:
            scope = dict(variables)
            for name, xpath in self.bind.items():
                scope[name] = str(xpath(node, **variables))
            contexts.append((node, scope))
        return contexts

    def map_into(self, parent: etree._Element, variables: Variables, keys: Row, out: dict[str, list[Row]]) -> None:
        rows = out.setdefault(self.spec.name, [])
        for position, (node, scope) in enumerate(self.contexts(parent, variables), start=1):
            row: Row = dict(keys)
            if self.spec.position_column:
                row[self.spec.position_column] = position
            for compiled in self.fields:
                compiled.read(node, scope, row)
            rows.append(row)
            child_keys = {k: row[k] for k in (*keys, self.spec.position_column) if k}
            for child in self.children:
                child.map_into(node, scope, child_keys, out)


_XSI_PREFIX = "{" + NAMESPACES["xsi"] + "}"


def element_to_json(element: etree._Element) -> dict[str, Any]:
    """Lossless JSON form of an element: tag, attributes, text and children in order.

    Runs for every element of every message, so it sticks to plain string operations.
    """
    tag = element.tag
    document: dict[str, Any] = {"tag": tag[tag.rfind("}") + 1 :]}
    attributes = element.attrib
    if attributes:
        document["attributes"] = {_attribute_name(k): v for k, v in attributes.items()}
    text = element.text
    if text and (text := text.strip()):
        document["text"] = text
    children = [element_to_json(child) for child in element if isinstance(child.tag, str)]
    if children:
        document["children"] = children
    return document


def _attribute_name(qualified: str) -> str:
    if qualified[0] != "{":
        return qualified
    if qualified.startswith(_XSI_PREFIX):
        return "xsi:" + qualified[len(_XSI_PREFIX) :]
    return qualified[qualified.rfind("}") + 1 :]


class CaseMapper:
    """Maps messages to :class:`MappedCase` objects; compile once, use for many messages."""

    def __init__(self) -> None:
        self.master = CompiledTable(ICSR_MASTER)
        self.batch = CompiledTable(BATCH_HEADER)

    def map_message(self, message: etree._Element, position: int) -> MappedCase:
        out: dict[str, list[Row]] = {}
        self.master.map_into(message, {}, {}, out)
        master = out["icsr_master"][0]
        case_id = master.get(CASE_KEY)
        if not case_id:
            raise MappingError("the message has no safety report identifier", element="C.1.1")
        if master.get("most_recent_info_date_utc") is None:
            raise MappingError("the message has no date of most recent information", element="C.1.5", case_id=case_id)
        self._key_children(out, case_id)
        return MappedCase(
            safetyreportid=case_id,
            message_position=position,
            most_recent_info_utc=master["most_recent_info_date_utc"],
            message_creation_utc=master.get("message_creation_time_utc"),
            is_nullification=master.get("nullification_amendment") == NULLIFICATION_CODE,
            rows=out,
            audit=element_to_json(message),
        )

    @staticmethod
    def _key_children(out: dict[str, list[Row]], case_id: str) -> None:
        for name, rows in out.items():
            if name != "icsr_master":
                for row in rows:
                    row[CASE_KEY] = case_id

    def map_batch_header(self, root: etree._Element) -> Row:
        out: dict[str, list[Row]] = {}
        self.batch.map_into(root, {}, {}, out)
        return out["message_batches"][0]


MapperFactory = Callable[[], CaseMapper]
