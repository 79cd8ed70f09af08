"""PostgreSQL: ``COPY ... FROM STDIN`` straight into the target tables, cases locked row by row."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from io import BytesIO
from typing import IO, Any

from psycopg2.extras import Json, execute_values
from sqlalchemy import Column, Table, any_, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.sql.elements import ColumnElement

from loaders.base import SQLAlchemyLoader
from loaders.dialect import Dialect
from py_load_eudravigilance.planning import Capabilities
from py_load_eudravigilance.staging.copytext import encode_row as encode_text_row
from py_load_eudravigilance.staging.layout import CopyStream

# Worth another attempt: serialization_failure, deadlock_detected, and unique_violation, which a load meets
# when a concurrent load inserted the same new case (or logged the same file) first: the next attempt sees it
RETRYABLE_SQLSTATES = {"40001", "40P01", "23505"}
# Arbitrary, fixed key of the advisory lock that serializes schema creation
SCHEMA_LOCK_KEY = 0x45325243
COPY_CHUNK = 1 << 20


class PostgresLoader(SQLAlchemyLoader):
    """The built-in loader of ``postgresql://`` DSNs."""

    def __init__(self, dsn_or_engine: str | URL | Engine, schema: str | None = None) -> None:
        if not isinstance(dsn_or_engine, Engine):
            url = make_url(dsn_or_engine)
            # A bare postgresql:// means psycopg (3) to SQLAlchemy 2.1; psycopg2 is the driver installed here
            dsn_or_engine = url.set(drivername="postgresql+psycopg2") if url.drivername == "postgresql" else url
        super().__init__(dsn_or_engine, schema, PostgresDialect())


class PostgresDialect(Dialect):
    # Loads of different cases never wait for each other: a load locks the master rows of its cases (FOR UPDATE)
    capabilities = Capabilities(loads_groups=True, loads_parts_while_staging=True)
    # A run's checks on two connections: 10,000 cases checked in 0.5-0.7 s against 0.9-1.1 s on one (2 cores)
    reading_connections = 2

    def __init__(self) -> None:
        self._has_lz4: bool | None = None

    def tune_session(self, conn: Connection) -> None:
        # Audit payloads (~45 KB of XML each) are TOAST-compressed on the way in; lz4 (PostgreSQL 14+, when
        # built with it) compresses several times faster than pglz
        if self._has_lz4 is None:
            offered = conn.scalar(text("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"))
            self._has_lz4 = bool(offered)
        if self._has_lz4:
            conn.execute(text("SET LOCAL default_toast_compression = 'lz4'"))

    def insert_rows(self, conn: Connection, table: Table, stream: IO[bytes], columns: tuple[str, ...]) -> int:
        # The staged tuples are binary COPY's own: the server parses no text
        return self._copy(conn, table, CopyStream(stream), columns, "binary")

    def insert_text(self, conn: Connection, table: Table, stream: Iterable[bytes | str], columns: tuple[str, ...]) -> None:
        self._copy(conn, table, stream, columns, "text, ENCODING 'UTF8'")

    def insert_records(self, conn: Connection, table: Table, records: list[dict[str, Any]]) -> None:
        if records:
            columns = tuple(records[0])
            lines = BytesIO(b"".join(encode_text_row(record[c] for c in columns) for record in records))
            self._copy(conn, table, lines, columns, "text, ENCODING 'UTF8'")

    def _copy(self, conn: Connection, table: Table, stream: Any, columns: tuple[str, ...], form: str) -> int:
        """COPY ``stream`` into ``table``; returns the rows copied (the server's own count)."""
        preparer = conn.dialect.identifier_preparer
        listed = ", ".join(preparer.quote(c) for c in columns)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.copy_expert(f"COPY {preparer.format_table(table)} ({listed}) FROM STDIN WITH (FORMAT {form})", stream, size=COPY_CHUNK)
            return max(cursor.rowcount, 0)
        finally:
            cursor.close()

    def case_filters(self, column: Column, case_ids: Sequence[str | int]) -> Iterator[ColumnElement[bool]]:
        # One array parameter, however many keys: the planner uses the index for = ANY(array)
        yield column == any_(bindparam("keys", value=list(case_ids), type_=ARRAY(column.type), unique=True))

    def upsert_history(self, conn: Connection, history: Table, rows: list[dict[str, Any]]) -> None:
        # Two loads of one file at once (two runs, or a run and a sensor) must not collide on its history row. All
        # rows go in one INSERT ... VALUES (psycopg2's execute_values): an executemany upsert runs row by row
        columns = list(rows[0])
        preparer = conn.dialect.identifier_preparer
        listed = ", ".join(preparer.quote(c) for c in columns)
        updates = ", ".join(f"{preparer.quote(c)} = EXCLUDED.{preparer.quote(c)}" for c in columns if c != "file_sha256")
        values = [tuple(Json(row[c]) if c in ("row_counts", "unmapped_paths") else row[c] for c in columns) for row in rows]
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            execute_values(
                cursor,
                f"INSERT INTO {preparer.format_table(history)} ({listed}) VALUES %s ON CONFLICT (file_sha256) DO UPDATE SET {updates}",
                values,
                page_size=500,
            )
        finally:
            cursor.close()

    def acquire_schema_lock(self, conn: Connection) -> None:
        # Two first loads creating the same tables at once collide in the catalog otherwise
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})

    def keyed_lookups(self, conn: Connection) -> None:
        # A refresh joins a few thousand changed keys with tables of millions of rows: the planner, costing random
        # reads high, would scan the large table whole (measured: 3M pairs, 20k keys, 1.8 s against 0.8 s looked
        # up). Without hash and merge joins it looks each key up in the primary key; no JIT for these small reads.
        # A filter on ~900 keys (`= ANY(array)`) of a 120k-row table was a sequential scan too (30-60 ms, growing
        # with the table, against 3-13 ms through the index): no sequential scan where an index serves
        for setting in ("enable_hashjoin", "enable_mergejoin", "enable_seqscan", "jit"):
            conn.execute(text(f"SET LOCAL {setting} = off"))

    def run_scoped_reads(self, conn: Connection) -> None:
        # Costed for random reads of a slow disk (4x a sequential one), the planner hashed a 1.2M-row child table whole
        # to check 2,000 cases of a 300k-case database (0.7 s for the 24 tables, JIT compiling for ~0.1 s of it per
        # table). Costed as the cached or solid-state storage of a database this size is, it looks a small run's cases
        # up by key (0.2 s) and still scans for a run that is most of the table (a first load of 10,000 cases: 2.0 s,
        # as the planner alone; forced lookups took 2.3-3.0 s)
        conn.execute(text("SET LOCAL random_page_cost = 1.1"))
        conn.execute(text("SET LOCAL jit = off"))

    def lock_for_refresh(self, conn: Connection, table: Table) -> None:
        # Readers go on reading the previous statistics until the refresh commits; a second refresh waits
        conn.execute(text(f"LOCK TABLE {conn.dialect.identifier_preparer.format_table(table)} IN SHARE ROW EXCLUSIVE MODE"))

    def is_retryable(self, error: BaseException) -> bool:
        return getattr(error, "pgcode", None) in RETRYABLE_SQLSTATES
