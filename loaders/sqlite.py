"""SQLite: the embedded default. Bulk inserts (executemany) in one write transaction per load."""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Table, event
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from loaders.base import SQLAlchemyLoader
from loaders.dialect import Dialect

log = logging.getLogger(__name__)
# Each attempt at the write lock waits this long inside SQLite; attempts go on until LOCK_WAIT_SECONDS have passed
BUSY_TIMEOUT_MS = 60_000
LOCK_WAIT_SECONDS = 24 * 3600.0


class SQLiteLoader(SQLAlchemyLoader):
    """The built-in loader of ``sqlite://`` DSNs."""

    def __init__(self, dsn_or_engine: str | Engine, schema: str | None = None) -> None:
        super().__init__(dsn_or_engine, schema, SQLiteDialect())


class SQLiteDialect(Dialect):
    def configure(self, engine: Engine) -> None:
        event.listen(engine, "connect", _configure_connection)
        event.listen(engine, "begin", _begin_immediate)

    def upsert_history(self, conn: Connection, history: Table, rows: list[dict[str, Any]]) -> None:
        statement = sqlite_insert(history)
        updated = {name: statement.excluded[name] for name in rows[0] if name != "file_sha256"}
        conn.execute(statement.on_conflict_do_update(index_elements=["file_sha256"], set_=updated), rows)


def _configure_connection(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # Let SQLAlchemy issue BEGIN itself (BEGIN IMMEDIATE below), and wait for other writers
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    try:
        cursor.execute("SELECT ln(1.0), exp(0.0), sqrt(1.0)")
    except sqlite3.OperationalError:
        # SQLite built without its math functions (they are optional): the signal statistics need these three
        for name, function in (("ln", math.log), ("exp", math.exp), ("sqrt", math.sqrt)):
            dbapi_connection.create_function(name, 1, _null_safe(function), deterministic=True)
    cursor.close()


def _null_safe(function: Callable[[float], float]) -> Callable[[float | None], float | None]:
    # NULL in, NULL out, and NULL for a value outside the function's domain, as SQLite's own math functions do
    def call(value: float | None) -> float | None:
        try:
            return None if value is None else function(value)
        except (ValueError, OverflowError):
            return None

    return call


def _begin_immediate(conn: Connection) -> None:
    """Take the write lock up front: concurrent loads then run one after another, never interleaved. A load that
    finds the database held by another waits for it, however long that one takes, up to LOCK_WAIT_SECONDS."""
    started = time.monotonic()
    told = False
    while True:
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            return
        except OperationalError as exc:
            if "locked" not in str(exc.orig) and "busy" not in str(exc.orig):
                raise
            waited = time.monotonic() - started
            database = conn.engine.url.database or "(in memory)"
            if waited >= LOCK_WAIT_SECONDS:
                raise sqlite3.OperationalError(
                    f"another load has held the SQLite database {database} for {waited:,.0f} s; run again once it has finished"
                ) from None
            if not told:
                log.warning("another load holds the SQLite database %s: waiting for it to finish", database)
                told = True
