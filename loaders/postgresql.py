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
    def __init__(self, dsn_or_engine: str | URL | Engine, schema: str | None = None) -> None:
        if not isinstance(dsn_or_engine, Engine) and make_url(dsn_or_engine).drivername == "postgresql":
            # A bare postgresql:// means psycopg (3) to SQLAlchemy 2.1; psycopg2 is the driver installed here
            dsn_or_engine = make_url(dsn_or_engine).set(drivername="postgresql+psycopg2")
        super().__init__(dsn_or_engine, schema)

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
