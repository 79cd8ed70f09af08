"""PostgreSQL: ``COPY ... FROM STDIN`` into temporary staging tables, then the case-level merge."""

from __future__ import annotations

from io import IOBase

from sqlalchemy import text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError

from loaders.base import SQLAlchemyLoader

# psycopg2 error codes worth retrying: serialization_failure, deadlock_detected
RETRYABLE_SQLSTATES = {"40001", "40P01"}
# Arbitrary, fixed keys of the advisory locks that serialize merges and schema creation
MERGE_LOCK_KEY = 0x45325242
SCHEMA_LOCK_KEY = 0x45325243


class PostgresLoader(SQLAlchemyLoader):
    # Transactions stage into their own temporary tables and merge one at a time (advisory lock)
    loads_parts_while_staging = True

    def __init__(self, dsn_or_engine: str | URL | Engine, schema: str | None = None) -> None:
        if not isinstance(dsn_or_engine, Engine):
            url = make_url(dsn_or_engine)
            # A bare postgresql:// means psycopg (3) to SQLAlchemy 2.1; psycopg2 is the driver installed here
            dsn_or_engine = url.set(drivername="postgresql+psycopg2") if url.drivername == "postgresql" else url
        super().__init__(dsn_or_engine, schema)
        self._has_lz4: bool | None = None

    def tune_session(self, conn: Connection) -> None:
        # Audit payloads (~30 KB of JSON each) are TOAST-compressed on the way in, staging tables
        # included; lz4 (PostgreSQL 14+, when built with it) compresses several times faster than pglz
        if self._has_lz4 is None:
            offered = conn.scalar(text("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"))
            self._has_lz4 = bool(offered)
        if self._has_lz4:
            conn.execute(text("SET LOCAL default_toast_compression = 'lz4'"))

    def bulk_load_native(self, conn: Connection, data_stream: IOBase, target_table: str, columns: list[str]) -> None:
        listed = ", ".join(self.quote(c) for c in columns)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.copy_expert(f"COPY {self.quote(target_table)} ({listed}) FROM STDIN WITH (FORMAT csv)", data_stream)
        finally:
            cursor.close()

    def acquire_merge_lock(self, conn: Connection) -> None:
        # Released at commit/rollback. Staging (COPY) runs in parallel; only merges queue here,
        # and newest-wins merges applied one at a time equal a sequential load in any order.
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MERGE_LOCK_KEY})

    def acquire_schema_lock(self, conn: Connection) -> None:
        # Two first loads creating the same tables at once collide in the catalog otherwise
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})

    def is_retryable(self, error: DBAPIError) -> bool:
        return getattr(error.orig, "pgcode", None) in RETRYABLE_SQLSTATES
