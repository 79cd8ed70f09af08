"""The column catalog: every table and column, derived from the data dictionary specs, and the loaders' own
bookkeeping columns (the master's tail, the audit log, the file history, the quarantine), declared here once.

A :class:`Field` may produce several columns (a date keeps its original text, its UTC instant
and its precision); this module spells them out once, for the schema, the mapper and the docs.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    # Bookkeeping columns only (no dictionary field has them)
    JSON = "json"
    BIGINT = "bigint"  # not staged: it has no binary COPY family


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


# -- The loaders' own columns: the master's tail and the bookkeeping tables --------------------------------------------
# Declared once here; schema.py builds their SQLAlchemy tables, staging/layout.py their staged columns, and both
# staging cores write the staged ones in this order: the Python core by name, the compiled one from the fact codes
# staging/compiled.py hands it.

MESSAGE_POSITION = "message_position"


class Fact(str, Enum):
    """What a staging core knows of the message it stages and writes into a staged bookkeeping column."""

    CASE_ID = "case_id"  # C.1.1
    FILE_SHA256 = "file_sha256"
    FILE_NAME = "file_name"
    POSITION = "position"  # the message's place in its file (1-based)
    MOST_RECENT_INFO = "most_recent_info"  # C.1.5, the UTC instant
    CREATION_TIME = "creation_time"  # C.1.2, the UTC instant (NULL when absent)
    IS_NULLIFICATION = "is_nullification"  # C.1.11.1 is a nullification
    VERSION_COUNT = "version_count"  # staged NULL: the loader writes the count there (the index has the offset)
    ROW_COUNTS = "row_counts"  # rows per case table the message produced, as JSON
    PAYLOAD = "payload"  # the message's XML as received (reference.audit_payload)


@dataclass(frozen=True)
class BookkeepingColumn:
    """A column the loaders fill, not the data dictionary. A staged one carries, in a staged audit log or master row,
    the message ``fact`` that fills it; the database fills the others (``identity``: numbers the rows; ``load_stamp``:
    stamps when the row was loaded)."""

    name: str
    type: ColumnType
    comment: str | None = None
    nullable: bool = True
    primary_key: bool = False
    fact: Fact | None = None
    identity: bool = False
    load_stamp: bool = False

    @property
    def staged(self) -> bool:
        return not (self.identity or self.load_stamp)


@dataclass(frozen=True)
class BookkeepingTable:
    name: str
    comment: str
    columns: tuple[BookkeepingColumn, ...]

    def staged_columns(self) -> tuple[BookkeepingColumn, ...]:
        """The columns a staged row carries, in row order."""
        return tuple(c for c in self.columns if c.staged)


# The columns the loaders maintain on the master table (versioning, lineage, nullification), after its fields
MASTER_TAIL = (
    BookkeepingColumn(
        "is_nullified", ColumnType.BOOLEAN, "True once a nullification (C.1.11.1 = 1) is the newest version", fact=Fact.IS_NULLIFICATION
    ),
    BookkeepingColumn(
        "version_count",
        ColumnType.INTEGER,
        "Number of versions of the case received (its messages in the audit log)",
        fact=Fact.VERSION_COUNT,
    ),
    BookkeepingColumn("source_file_name", ColumnType.TEXT, "File the current version came from", fact=Fact.FILE_NAME),
    BookkeepingColumn("source_file_sha256", ColumnType.TEXT, "SHA-256 of that file", fact=Fact.FILE_SHA256),
    BookkeepingColumn(MESSAGE_POSITION, ColumnType.INTEGER, "Position of the message in that file (1-based)", fact=Fact.POSITION),
    BookkeepingColumn("loaded_at", ColumnType.TIMESTAMP, "When the current version was loaded (UTC)", load_stamp=True),
)

AUDIT_LOG = BookkeepingTable(
    "icsr_audit_log",
    "Every received version of every case, append-only",
    (
        BookkeepingColumn("audit_id", ColumnType.INTEGER, primary_key=True, identity=True),
        BookkeepingColumn(CASE_KEY, ColumnType.TEXT, nullable=False, fact=Fact.CASE_ID),
        BookkeepingColumn("file_sha256", ColumnType.TEXT, nullable=False, fact=Fact.FILE_SHA256),
        BookkeepingColumn("file_name", ColumnType.TEXT, nullable=False, fact=Fact.FILE_NAME),
        BookkeepingColumn(MESSAGE_POSITION, ColumnType.INTEGER, nullable=False, fact=Fact.POSITION),
        BookkeepingColumn("most_recent_info_date_utc", ColumnType.TIMESTAMP, nullable=False, fact=Fact.MOST_RECENT_INFO),
        BookkeepingColumn("message_creation_time_utc", ColumnType.TIMESTAMP, fact=Fact.CREATION_TIME),
        BookkeepingColumn("is_nullification", ColumnType.BOOLEAN, nullable=False, fact=Fact.IS_NULLIFICATION),
        BookkeepingColumn("row_counts", ColumnType.JSON, "Rows per table the parser produced for this version", fact=Fact.ROW_COUNTS),
        BookkeepingColumn("loaded_at", ColumnType.TIMESTAMP, nullable=False, load_stamp=True),
        BookkeepingColumn(
            "payload",
            ColumnType.TEXT,
            "The message's XML as received: every element, attribute and text node, namespaces declared",
            nullable=False,
            fact=Fact.PAYLOAD,
        ),
    ),
)

# Written by the loader's own statements, not staged
FILE_HISTORY = BookkeepingTable(
    "etl_file_history",
    "One row per source file: what happened to it",
    (
        BookkeepingColumn("file_sha256", ColumnType.TEXT, primary_key=True),
        BookkeepingColumn("file_name", ColumnType.TEXT, nullable=False),
        BookkeepingColumn(
            "file_size_bytes",
            ColumnType.BIGINT,
            "The file's size: a run asks for the loaded hashes of its files' sizes only (equal content, equal size)",
        ),
        BookkeepingColumn(
            "status",
            ColumnType.TEXT,
            "running (still running, or interrupted); completed; partial (some messages loaded, others rejected "
            "or cut off by a file-level error); failed (nothing loaded)",
            nullable=False,
        ),
        BookkeepingColumn("load_mode", ColumnType.TEXT, nullable=False),
        BookkeepingColumn("started_at", ColumnType.TIMESTAMP),
        BookkeepingColumn("finished_at", ColumnType.TIMESTAMP),
        BookkeepingColumn("duration_seconds", ColumnType.FLOAT),
        BookkeepingColumn("messages_total", ColumnType.INTEGER),
        BookkeepingColumn("cases_inserted", ColumnType.INTEGER),
        BookkeepingColumn("cases_updated", ColumnType.INTEGER),
        BookkeepingColumn("cases_skipped_older", ColumnType.INTEGER),
        BookkeepingColumn("cases_nullified", ColumnType.INTEGER),
        BookkeepingColumn(
            "versions_after_nullification", ColumnType.INTEGER, "Newer ordinary versions of nullified cases: logged, not applied"
        ),
        BookkeepingColumn("messages_rejected", ColumnType.INTEGER),
        BookkeepingColumn("row_counts", ColumnType.JSON, "Rows per table staged from the file"),
        BookkeepingColumn(
            "unmapped_values",
            ColumnType.INTEGER,
            "Values (non-blank texts and attributes) of the loaded messages that no column holds; they stay in the audit XML",
        ),
        BookkeepingColumn("unmapped_paths", ColumnType.JSON, "The first distinct paths of those values, from the message element"),
        BookkeepingColumn("error", ColumnType.TEXT),
    ),
)

# Rows written by the staging code (its rejections), by column name
QUARANTINE = BookkeepingTable(
    "etl_quarantine",
    "Messages (or whole files) that could not be loaded, with the reason",
    (
        BookkeepingColumn("quarantine_id", ColumnType.INTEGER, primary_key=True, identity=True),
        BookkeepingColumn("file_sha256", ColumnType.TEXT, nullable=False),
        BookkeepingColumn("file_name", ColumnType.TEXT, nullable=False),
        BookkeepingColumn(MESSAGE_POSITION, ColumnType.INTEGER),
        BookkeepingColumn(CASE_KEY, ColumnType.TEXT),
        BookkeepingColumn("element", ColumnType.TEXT),
        BookkeepingColumn("reason", ColumnType.TEXT, nullable=False),
        BookkeepingColumn("raw_xml", ColumnType.TEXT),
        BookkeepingColumn("quarantined_at", ColumnType.TIMESTAMP, nullable=False, load_stamp=True),
    ),
)

BOOKKEEPING_TABLES = (AUDIT_LOG, FILE_HISTORY, QUARANTINE)
# Filled by the loading database, not staged: when a row was loaded
LOAD_STAMPS = frozenset(c.name for c in (*MASTER_TAIL, *AUDIT_LOG.columns, *QUARANTINE.columns) if c.load_stamp)


def staged_column_facts(columns: Sequence[BookkeepingColumn]) -> tuple[tuple[BookkeepingColumn, Fact], ...]:
    """The staged ``columns`` with the message fact filling each, in row order: what a staging core writes there."""
    staged = []
    for column in columns:
        if column.staged:
            if column.fact is None:
                raise ValueError(f"staged column {column.name} names no message fact")
            staged.append((column, column.fact))
    return tuple(staged)


def staged_facts(columns: Sequence[BookkeepingColumn]) -> tuple[Fact, ...]:
    """The message facts of the staged ``columns``, in row order."""
    return tuple(fact for _, fact in staged_column_facts(columns))


def table_columns(table: TableSpec, ancestors: tuple[TableSpec, ...] = ()) -> list[Column]:
    columns = key_columns(table, ancestors)
    for spec in table.fields:
        columns.extend(field_columns(table.name, spec))
    if table is ICSR_MASTER:
        columns[0] = replace(columns[0], primary_key=True)  # C.1.1 is the master's first field
        columns.extend(Column(table.name, c.name, "", c.comment or "", c.type) for c in MASTER_TAIL)
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
