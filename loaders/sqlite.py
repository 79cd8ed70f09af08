"""SQLite: the embedded default. Bulk inserts (executemany) inside one transaction per file."""

from __future__ import annotations

from io import IOBase
from itertools import islice

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from loaders.base import SQLAlchemyLoader, read_csv_rows

INSERT_CHUNK = 5000


class SQLiteLoader(SQLAlchemyLoader):
    def __init__(self, dsn_or_engine: str | Engine, schema: str | None = None) -> None:
        super().__init__(dsn_or_engine, schema)
        event.listen(self.engine, "connect", _configure_connection)
        event.listen(self.engine, "begin", _begin_immediate)

    def bulk_load_native(self, conn: Connection, data_stream: IOBase, target_table: str, columns: list[str]) -> None:
        staging = self.staging_table(target_table.removeprefix("stg_"))
        types = {c.name: c.type for c in staging.columns}
        rows = read_csv_rows(data_stream, columns, types)
        statement = staging.insert()
        while chunk := list(islice(rows, INSERT_CHUNK)):
            conn.execute(statement, chunk)


def _configure_connection(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # Let SQLAlchemy issue BEGIN itself (BEGIN IMMEDIATE below), and wait for other writers
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout = 60000")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.close()


def _begin_immediate(conn: Connection) -> None:
    # Take the write lock up front: concurrent loads then run one after another, never interleaved
    conn.exec_driver_sql("BEGIN IMMEDIATE")
