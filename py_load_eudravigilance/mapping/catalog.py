"""The column catalog: every table and column, derived from the data dictionary specs.

A :class:`Field` may produce several columns (a date keeps its original text, its UTC instant
and its precision); this module spells them out once, for the schema, the mapper and the docs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from py_load_eudravigilance.mapping.dictionary import BATCH_HEADER, ICSR_MASTER, iter_tables
from py_load_eudravigilance.mapping.spec import Field, Kind, TableSpec

CASE_KEY = "safetyreportid"
# Companion columns of an attachment (ED) field; the main column holds the decoded bytes
ATTACHMENT_SUFFIXES = {
    "_media_type": "media type",
    "_file_name": "file name (reference)",
    "_compression": "compression as sent",
    "_representation": "B64 when decoded from base64, TXT for plain text, or marked invalid and kept as sent",
}


# Columns analysts filter and join by, beyond every MedDRA code column (schema.py indexes them). Child tables need
# none for the case: their primary key leads with the case key and the positions of their parents
ANALYST_INDEXED = {
    # source_file_sha256: the checks of a run find the cases its files brought without scanning the table
    "icsr_master": ("most_recent_info_date_utc", "source_file_sha256"),
    "drugs": ("medicinal_product",),
    "drug_substances": ("substance_name",),
}
# A text value the database indexes (above, and the signal statistics' keys made of them) or joins by (XML ids)
# must fit one PostgreSQL btree entry: 2,704 bytes, a case key (C.1.1, at most MAX_CASE_ID_BYTES) included. A longer
# one rejects its message, naming the element, on every dialect: E2B(R3) allows 250 characters for G.k.2.2 and
# G.k.2.3.r.1, 8 digits for a MedDRA code, so only a broken or hostile file meets the limit.
MAX_INDEXED_BYTES = 1000
MAX_CASE_ID_BYTES = 1000


def indexed_text(table: str, column: str) -> bool:
    """Whether the text of ``table.column`` is indexed or a join key, and so bounded by MAX_INDEXED_BYTES."""
    return column.endswith(("_meddra_code", "_xml_id")) or column in ANALYST_INDEXED.get(table, ())


class ColumnType(str, Enum):
    TEXT = "text"
    TIMESTAMP = "timestamp"  # UTC instant
    BOOLEAN = "boolean"
    FLOAT = "float"
    INTEGER = "integer"
    BINARY = "binary"


@dataclass(frozen=True)
class Column:
    table: str
    name: str
    element: str
    description: str
    type: ColumnType
    primary_key: bool = False


_KIND_TYPES = {
    Kind.TEXT: ColumnType.TEXT,
    Kind.CODE: ColumnType.TEXT,
    Kind.DATE: ColumnType.TEXT,
    Kind.BOOL: ColumnType.BOOLEAN,
    Kind.NUMBER: ColumnType.FLOAT,
    Kind.INTEGER: ColumnType.INTEGER,
    Kind.ATTACHMENT: ColumnType.BINARY,
}


def field_columns(table: str, spec: Field) -> list[Column]:
    """The columns one field fills; the first one is the column the element maps to."""
    main = Column(table, spec.column, spec.element, spec.name, _KIND_TYPES[spec.kind])
    columns = [main]
    if spec.kind is Kind.DATE:
        columns.append(Column(table, f"{spec.column}_utc", spec.element, f"{spec.name} (UTC instant)", ColumnType.TIMESTAMP))
        columns.append(Column(table, f"{spec.column}_precision", spec.element, f"{spec.name} (precision: year..second)", ColumnType.TEXT))
    if spec.kind is Kind.ATTACHMENT:
        for suffix, label in ATTACHMENT_SUFFIXES.items():
            columns.append(Column(table, f"{spec.column}{suffix}", spec.element, f"{spec.name} ({label})", ColumnType.TEXT))
    if spec.code_system:
        columns.append(Column(table, f"{spec.column}_code_system", spec.element, f"{spec.name} (code system OID)", ColumnType.TEXT))
    if spec.null_flavor:
        columns.append(Column(table, f"{spec.column}_null_flavor", spec.element, f"{spec.name} (HL7 nullFlavor)", ColumnType.TEXT))
    return columns


def key_columns(table: TableSpec, ancestors: tuple[TableSpec, ...]) -> list[Column]:
    """Case key plus the positions of every repeat on the way down (1-based, document order)."""
    if table is ICSR_MASTER or table is BATCH_HEADER:
        return []
    keys = [Column(table.name, CASE_KEY, "C.1.1", "Case key: sender's safety report unique identifier", ColumnType.TEXT, True)]
    for level in (*ancestors, table):
        if level.position_column:
            keys.append(
                Column(
                    table.name,
                    level.position_column,
                    level.element,
                    f"Position in repeat {level.element} (1-based)",
                    ColumnType.INTEGER,
                    True,
                )
            )
    return keys


# Columns the loaders maintain on the master table (versioning, lineage, nullification)
MASTER_TECHNICAL = (
    ("is_nullified", ColumnType.BOOLEAN, "True once a nullification (C.1.11.1 = 1) is the newest version"),
    ("version_count", ColumnType.INTEGER, "Number of versions of the case received (its messages in the audit log)"),
    ("source_file_name", ColumnType.TEXT, "File the current version came from"),
    ("source_file_sha256", ColumnType.TEXT, "SHA-256 of that file"),
    ("message_position", ColumnType.INTEGER, "Position of the message in that file (1-based)"),
    ("loaded_at", ColumnType.TIMESTAMP, "When the current version was loaded (UTC)"),
)


def table_columns(table: TableSpec, ancestors: tuple[TableSpec, ...] = ()) -> list[Column]:
    columns = key_columns(table, ancestors)
    for spec in table.fields:
        columns.extend(field_columns(table.name, spec))
    if table is ICSR_MASTER:
        columns[0] = replace(columns[0], primary_key=True)  # C.1.1 is the master's first field
        columns.extend(Column(table.name, name, "", text, kind) for name, kind, text in MASTER_TECHNICAL)
    if table is BATCH_HEADER:
        columns.insert(0, Column(table.name, "file_sha256", "", "SHA-256 of the batch file", ColumnType.TEXT, True))
        columns.insert(1, Column(table.name, "file_name", "", "Name of the batch file", ColumnType.TEXT))
    return columns


def case_table_columns() -> dict[str, list[Column]]:
    """Columns of every case table, parents before children."""
    return {table.name: table_columns(table, ancestors) for table, ancestors in iter_tables()}


def all_columns() -> list[Column]:
    """Every column of every normalized table (case tables and the batch header)."""
    columns = [column for table in case_table_columns().values() for column in table]
    return columns + table_columns(BATCH_HEADER)


def element_columns() -> dict[str, tuple[str, str]]:
    """Element number -> (table, column) holding its value."""
    mapping: dict[str, tuple[str, str]] = {}
    for table, _ in [*iter_tables(), (BATCH_HEADER, ())]:
        for spec in table.fields:
            mapping.setdefault(spec.element, (table.name, spec.column))
    return mapping
