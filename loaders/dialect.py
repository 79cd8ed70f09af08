"""What differs between databases, in one object a loader is given: small hooks and capability flags, as Dagster's
``DbClient`` has them. :class:`Dialect` is the portable SQLAlchemy Core behaviour; ``postgresql.py`` and
``sqlite.py`` override the few hooks their database does better or differently.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from itertools import islice
from typing import IO, Any

from sqlalchemy import JSON, Column, Table
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.type_api import TypeEngine
from sqlalchemy.types import Boolean, DateTime, Float, Integer, LargeBinary

from py_load_eudravigilance.planning import Capabilities
from py_load_eudravigilance.staging.copybinary import decode_rows
from py_load_eudravigilance.staging.copytext import decode_lines
from py_load_eudravigilance.staging.layout import STAGED_FAMILIES

# Rows per executemany() where a driver has no bulk path of its own
INSERT_CHUNK = 5000
# Case keys per IN (...) list: SQLite allows 32,766 bound values in a statement
KEYS_PER_STATEMENT = 5000


_TYPE_FAMILIES: tuple[tuple[type[TypeEngine], str], ...] = (
    (Boolean, "boolean"),
    (DateTime, "timestamp"),
    (Float, "float"),
    (Integer, "integer"),
    (LargeBinary, "binary"),
)


def type_family(sql_type: TypeEngine) -> str:
    """A coarse type family, comparable between declared and reflected columns."""
    for base, family in _TYPE_FAMILIES:
        if isinstance(sql_type, base):
            return family
    name = type(sql_type).__name__.upper()
    if "BOOL" in name:
        return "boolean"
    if "TIMESTAMP" in name or "DATETIME" in name:
        return "timestamp"
    if name in ("REAL", "DOUBLE", "DOUBLE_PRECISION", "NUMERIC", "FLOAT"):
        return "float"
    if "INT" in name:
        return "integer"
    if name in ("BYTEA", "BLOB"):
        return "binary"
    return "text"


def text_rows(stream: Iterable[bytes | str], columns: tuple[str, ...], types: dict[str, TypeEngine]) -> Iterator[list[Any]]:
    """Rows of a COPY text stream (the guide's portable form) as Python values."""
    converters = [_converter(types[name]) for name in columns]
    lines = (line if isinstance(line, bytes) else line.encode("utf-8") for line in stream)
    for values in decode_lines(lines):
        yield [convert(value) if value is not None else None for convert, value in zip(converters, values, strict=True)]


def _converter(sql_type: TypeEngine) -> Any:
    family = type_family(sql_type)
    if family == "boolean":
        return lambda v: v == "true"
    if family == "integer":
        return int
    if family == "float":
        return float
    if family == "timestamp":
        return datetime.fromisoformat
    if family == "binary":
        return lambda v: bytes.fromhex(v[2:])
    if isinstance(sql_type, JSON):
        return json.loads
    return str


def execute_inserts(conn: Connection, table: Table, rows: Iterator[dict[str, Any]]) -> int:
    """``executemany`` of ``rows`` in chunks; returns how many."""
    statement, inserted = table.insert(), 0
    while chunk := list(islice(rows, INSERT_CHUNK)):
        conn.execute(statement, chunk)
        inserted += len(chunk)
    return inserted


def python_rows(rows: Iterator[list[Any]], columns: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    for values in rows:
        yield dict(zip(columns, values, strict=True))


class Dialect:
    """The portable behaviour: executemany, IN lists, DELETE then INSERT; no locks or settings of its own."""

    #: What the database allows the pipeline (see ``planning.Capabilities``)
    capabilities = Capabilities()
    # Connections a batch of read-only queries (a run's checks) may spread over: one unless the database answers
    # several at once on several cores (an embedded SQLite, or one in memory, is one connection's)
    reading_connections = 1

    def configure(self, engine: Engine) -> None:
        """Once, on the loader's engine: connection-level settings (SQLite's locking, for one)."""

    def insert_rows(self, conn: Connection, table: Table, stream: IO[bytes], columns: tuple[str, ...]) -> int:
        """Bulk-load staged rows (binary COPY tuples, ``columns`` of them) into ``table``; returns how many."""
        return execute_inserts(conn, table, python_rows(iter(decode_rows(stream.read(), STAGED_FAMILIES[table.name])), columns))

    def insert_text(self, conn: Connection, table: Table, stream: Iterable[bytes | str], columns: tuple[str, ...]) -> None:
        """Bulk-load COPY text rows (what the guide's ``bulk_load_native`` receives) into ``table``."""
        types = {column.name: column.type for column in table.columns}
        execute_inserts(conn, table, python_rows(text_rows(stream, columns, types), columns))

    def insert_records(self, conn: Connection, table: Table, records: list[dict[str, Any]]) -> None:
        """Bulk-insert rows given as Python values (MedDRA terms, the statistics' counts)."""
        execute_inserts(conn, table, iter(records))

    def case_filters(self, column: Column, case_ids: Sequence[str | int]) -> Iterator[ColumnElement[bool]]:
        """WHERE clauses that together select ``case_ids`` (or any other keys): IN lists of bounded size."""
        for start in range(0, len(case_ids), KEYS_PER_STATEMENT):
            yield column.in_(case_ids[start : start + KEYS_PER_STATEMENT])

    def upsert_history(self, conn: Connection, history: Table, rows: list[dict[str, Any]]) -> None:
        """Replace the files' history rows: DELETE, then INSERT."""
        for clause in self.case_filters(history.c.file_sha256, [row["file_sha256"] for row in rows]):
            conn.execute(history.delete().where(clause))
        conn.execute(history.insert(), rows)

    def empty_case_tables(self, conn: Connection, tables: list[Table]) -> None:
        """A full reload's first step: the case tables emptied."""
        for table in tables:
            conn.execute(table.delete())

    def tune_session(self, conn: Connection) -> None:
        """Transaction-local settings for creating tables and loading."""

    def acquire_schema_lock(self, conn: Connection) -> None:
        """Serialize schema creation across processes."""

    def is_retryable(self, error: BaseException) -> bool:
        """Whether the driver's ``error`` is worth another attempt of the whole load."""
        return False

    def lock_for_refresh(self, conn: Connection, table: Table) -> None:
        """Make concurrent refreshes of the statistics run one after another (SQLite's write lock does)."""

    def keyed_lookups(self, conn: Connection) -> None:
        """For the rest of ``conn``'s transaction, join large tables by looking rows up by key, as reading the few rows
        a refresh changed wants (by default the planner decides, as SQLite's does well)."""

    def run_scoped_reads(self, conn: Connection) -> None:
        """For the rest of ``conn``'s transaction, plan reads of a run's rows (the checks of a load) so that they look
        the run's cases up by key when the run is small beside the tables, and scan when it is most of them (by
        default the planner decides, as SQLite's does well)."""


def dialect_for(engine: Engine) -> Dialect:
    """The built-in dialect of the engine's database; the portable one for any other (a plugin's)."""
    name = engine.dialect.name
    if name == "postgresql":
        from loaders.postgresql import PostgresDialect

        return PostgresDialect()
    if name == "sqlite":
        from loaders.sqlite import SQLiteDialect

        return SQLiteDialect()
    return Dialect()
