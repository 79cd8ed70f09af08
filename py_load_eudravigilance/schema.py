"""The database schema, generated from the data dictionary (SQLAlchemy Core).

Normalized case tables and the batch header come from the column catalog; so do the loaders' own bookkeeping
tables (the audit log, the file history and the quarantine), whose columns ``catalog`` declares and whose
constraints and indexes are added here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from sqlalchemy import (
    DDL,
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeEngine

from py_load_eudravigilance import meddra, signals, views
from py_load_eudravigilance.mapping import catalog, code_lists
from py_load_eudravigilance.mapping.catalog import ANALYST_INDEXED, CASE_KEY, ColumnType
from py_load_eudravigilance.mapping.dictionary import BATCH_HEADER, ICSR_MASTER, iter_tables

AUDIT_TABLE = catalog.AUDIT_LOG.name
AUDIT_LATEST_VIEW = views.AUDIT_LATEST_VIEW
MASTER_TABLE = ICSR_MASTER.name  # one row per case: its current version
FILE_HISTORY_TABLE = catalog.FILE_HISTORY.name
QUARANTINE_TABLE = catalog.QUARANTINE.name
# Exact rows per table, kept by every load in its own transaction: reporting a table's size never counts it
ROW_COUNTS_TABLE = "etl_table_row_counts"
VIEW_DEFINITIONS_TABLE = views.DEFINITIONS_TABLE
# Carried by staged rows so a file holding several versions of a case keeps them apart
MESSAGE_POSITION = catalog.MESSAGE_POSITION

_SQL_TYPES: dict[ColumnType, type[TypeEngine]] = {
    ColumnType.TEXT: Text,
    ColumnType.BOOLEAN: Boolean,
    ColumnType.FLOAT: Float,
    ColumnType.INTEGER: Integer,
    ColumnType.BINARY: LargeBinary,
    ColumnType.BIGINT: BigInteger,
}

JSON_DOCUMENT = JSON().with_variant(JSONB(), "postgresql")
# The loading database stamps when a row was loaded (PostgreSQL: its transaction's start)
LOADED_NOW = text("CURRENT_TIMESTAMP")


def sql_type(kind: ColumnType) -> TypeEngine:
    if kind is ColumnType.TIMESTAMP:
        return DateTime(timezone=True)
    if kind is ColumnType.JSON:
        return JSON_DOCUMENT
    return _SQL_TYPES[kind]()


def bookkeeping_columns(table: catalog.BookkeepingTable) -> list[Column]:
    """The SQLAlchemy columns of a bookkeeping table, as the catalog declares them."""
    return [
        Column(
            c.name,
            sql_type(c.type),
            primary_key=c.primary_key,
            autoincrement=True if c.identity else "auto",
            nullable=c.nullable and not c.primary_key,
            server_default=LOADED_NOW if c.load_stamp else None,
            comment=c.comment,
        )
        for c in table.columns
    ]


def analyst_indexes(table: str, columns: list[catalog.Column]) -> list[Index]:
    named = [c.name for c in columns if c.name.endswith("_meddra_code")] + list(ANALYST_INDEXED.get(table, ()))
    return [Index(f"ix_{table}_{name}", name) for name in named]


@dataclass(frozen=True)
class Relation:
    """A child table's rows belong to a parent row: ``columns`` equal in both (not declared as foreign keys, which would
    order and check every delete and insert of a merge)."""

    child: str
    parent: str
    columns: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.child} -> {self.parent} ({', '.join(self.columns)})"


def relations() -> list[Relation]:
    """How the case tables join: each repeat to the row it repeats in, and the matrix to the reaction it assesses."""
    found = []
    for table, ancestors in iter_tables():
        if table is ICSR_MASTER:
            continue
        # The nearest repeat above it, else the case itself (one-per-case groups add no key)
        parent = next((a for a in reversed(ancestors) if a.position_column), ICSR_MASTER)
        keys = tuple(c.name for c in catalog.key_columns(table, ancestors))
        found.append(Relation(table.name, parent.name, keys[:-1] if table.position_column else keys))
    found.append(Relation("drug_reaction_matrix", "reactions", (CASE_KEY, "reaction_xml_id")))
    return found


def table_comments() -> dict[str, str]:
    comments = {table.name: f"E2B(R3) {table.element}: {table.description}" for table, _ in iter_tables()}
    for relation in relations():
        comments[relation.child] += f" Joins {relation.describe()}."
    return comments


def schema_table(name: str, schema: str | None = None) -> Table:
    """Table ``name`` of the data dictionary's schema, placed in database schema ``schema``."""
    return build_metadata(schema).tables[f"{schema}.{name}" if schema else name]


@functools.cache
def build_metadata(schema: str | None = None) -> MetaData:
    """All tables and views of the target database; ``schema`` places them in a database schema. Built once per schema
    (tens of milliseconds: every loader, reader and command start asks for it) and never changed after."""
    metadata = MetaData(schema=schema)
    comments = table_comments()
    for name, columns in catalog.case_table_columns().items():
        Table(
            name,
            metadata,
            *(
                Column(
                    c.name,
                    sql_type(c.type),
                    primary_key=c.primary_key,
                    server_default=LOADED_NOW if c.name in catalog.LOAD_STAMPS else None,
                    comment=f"{c.element}: {c.description}" if c.element else c.description,
                )
                for c in columns
            ),
            *analyst_indexes(name, columns),
            comment=comments[name],
        )
    Table(
        BATCH_HEADER.name,
        metadata,
        *(
            Column(c.name, sql_type(c.type), primary_key=c.primary_key, comment=c.element or c.description)
            for c in catalog.table_columns(BATCH_HEADER)
        ),
        comment="E2B(R3) N.1 batch wrapper, one row per file",
    )
    audit = Table(
        AUDIT_TABLE,
        metadata,
        *bookkeeping_columns(catalog.AUDIT_LOG),
        UniqueConstraint("file_sha256", MESSAGE_POSITION, name="uq_icsr_audit_log_message"),
        Index("ix_icsr_audit_log_case", CASE_KEY),
        comment=catalog.AUDIT_LOG.comment,
    )
    # PostgreSQL compresses a payload (lz4 where offered) and keeps it in the row when it then fits, instead of
    # out of line in the TOAST table: measured, 0.21 against 0.30 ms of server time per 31 KB payload
    event.listen(
        audit,
        "after_create",
        DDL("ALTER TABLE %(fullname)s ALTER COLUMN payload SET STORAGE MAIN").execute_if(dialect="postgresql"),
    )
    Table(
        FILE_HISTORY_TABLE,
        metadata,
        *bookkeeping_columns(catalog.FILE_HISTORY),
        # A run of the Dagster tables alone checks the files loaded since the checks last ran
        Index(f"ix_{FILE_HISTORY_TABLE}_finished_at", "finished_at"),
        Index(f"ix_{FILE_HISTORY_TABLE}_file_size_bytes", "file_size_bytes"),
        # A reader of some files' rows (a file-partitioned consumer) finds their hashes by name: one row per file
        Index(f"ix_{FILE_HISTORY_TABLE}_file_name", "file_name"),
        comment=catalog.FILE_HISTORY.comment,
    )
    Table(
        QUARANTINE_TABLE,
        metadata,
        *bookkeeping_columns(catalog.QUARANTINE),
        UniqueConstraint("file_sha256", MESSAGE_POSITION, name="uq_etl_quarantine_message"),
        comment=catalog.QUARANTINE.comment,
    )
    Table(
        ROW_COUNTS_TABLE,
        metadata,
        Column("table_name", Text, primary_key=True),
        Column("row_count", BigInteger, nullable=False),
        comment="Rows in each loaded table, kept exact by every load (rows inserted minus rows deleted, in its transaction)",
    )
    Table(
        VIEW_DEFINITIONS_TABLE,
        metadata,
        Column("view_name", Text, primary_key=True),
        Column("definition_sha256", Text, nullable=False, comment="SHA-256 of the CREATE VIEW statement the view was made with"),
        comment="The definition each view was made with: a release whose query for a view differs makes the view again",
    )
    code_lists.add_table(metadata)
    meddra.add_tables(metadata)
    signals.add_tables(metadata)
    views.add_views(metadata)
    return metadata


METADATA = build_metadata()
CASE_TABLE_NAMES = tuple(catalog.case_table_columns())
CHILD_TABLE_NAMES = CASE_TABLE_NAMES[1:]
# The tables whose rows the loads count (etl_table_row_counts)
COUNTED_TABLE_NAMES = (*CASE_TABLE_NAMES, BATCH_HEADER.name, AUDIT_TABLE, QUARANTINE_TABLE)
