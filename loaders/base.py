"""The version-aware, case-level merge shared by the SQL loaders (SQLAlchemy Core).

One file is loaded in one transaction: its staged CSVs go into temporary staging tables through
the dialect's native bulk path, then each case is decided against the database:

* ``insert``: the case is new;
* ``update``: the staged version is strictly newer (C.1.5 instant, then N.2.r.4), so the master
  row and *all* child rows are replaced, and children a follow-up withdrew disappear;
  A nullification (C.1.11.1 = 1) is such a version: it wins like any newer version and flags the
  case ``is_nullified``, so no older version loaded later can bring the case back;
* ``skip``: older or identical versions change nothing.

Several versions of a case in one file resolve to the newest before this decision.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime
from io import IOBase
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Column, MetaData, Table, bindparam, create_engine, func, inspect, select, text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.type_api import TypeEngine
from sqlalchemy.types import Boolean, DateTime, Float, Integer, LargeBinary

from loaders.interface import LoaderInterface
from py_load_eudravigilance.mapping.catalog import CASE_KEY
from py_load_eudravigilance.schema import (
    AUDIT_LATEST_VIEW,
    AUDIT_TABLE,
    CASE_TABLE_NAMES,
    FILE_HISTORY_TABLE,
    MESSAGE_POSITION,
    QUARANTINE_TABLE,
    build_metadata,
)
from py_load_eudravigilance.staging import FILE_ORDINAL, STAGED_COLUMNS, StagedFile, open_table_files, utc_now

log = logging.getLogger(__name__)
# Included documents travel as one CSV field; the XML parser already caps a text node at 10 MB
csv.field_size_limit(64 * 1024 * 1024)

MASTER = "icsr_master"
BATCHES = "message_batches"
DECISIONS = "stg_case_decisions"
STAGED_TABLES = (*CASE_TABLE_NAMES, AUDIT_TABLE, QUARANTINE_TABLE, BATCHES)
# A missing N.2.r.4 compares as older than any (SQL literal): databases disagree on where NULLs sort
UNKNOWN_CREATION_TIME = "'0001-01-01 00:00:00'"


@dataclass
class LoadOutcome:
    """What loading one file did; also written to ``etl_file_history``."""

    file_name: str
    file_sha256: str
    status: str = "completed"
    messages_total: int = 0
    cases_inserted: int = 0
    cases_updated: int = 0
    cases_skipped_older: int = 0
    cases_nullified: int = 0
    messages_rejected: int = 0
    row_counts: dict[str, int] = field(default_factory=dict)
    duration_seconds: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SchemaReport:
    missing_tables: list[str] = field(default_factory=list)
    missing_columns: list[str] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)
    mistyped_columns: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing_tables or self.missing_columns or self.mistyped_columns)


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


def schema_definition(metadata: MetaData) -> dict[str, dict[str, str]]:
    """Table -> column -> type family: the form ``validate_schema`` compares."""
    return {table.name: {column.name: type_family(column.type) for column in table.columns} for table in metadata.sorted_tables}


class SQLAlchemyLoader(LoaderInterface):
    """Shared implementation; dialect loaders supply the bulk path and locking."""

    #: number of attempts for a file when the database reports a deadlock/serialization failure
    max_attempts = 5
    #: whether a file staged in parts can be bulk-loaded while other files' transactions commit
    #: (:meth:`load_parts` keeps a transaction open for as long as the file takes to parse)
    loads_parts_while_staging = False

    def __init__(self, dsn_or_engine: str | URL | Engine, schema: str | None = None) -> None:
        self.engine = dsn_or_engine if isinstance(dsn_or_engine, Engine) else create_engine(dsn_or_engine)
        self.schema = schema
        self.metadata = build_metadata(schema)
        self.last_outcome: LoadOutcome | None = None
        self._staging_tables: dict[str, Table] = {}

    # -- schema -------------------------------------------------------------------------------
    def table(self, name: str) -> Table:
        key = f"{self.schema}.{name}" if self.schema else name
        return self.metadata.tables[key]

    def quote(self, name: str) -> str:
        return self.engine.dialect.identifier_preparer.quote(name)

    def qualified(self, name: str) -> str:
        prefix = f"{self.quote(self.schema)}." if self.schema else ""
        return prefix + self.quote(name)

    def create_all_tables(self) -> None:
        """Create what is missing, in one transaction; concurrent first loads wait for each other."""
        audit, view = self.qualified(AUDIT_TABLE), self.qualified(AUDIT_LATEST_VIEW)
        case, c15, n24 = self.quote(CASE_KEY), self.quote("most_recent_info_date_utc"), self.quote("message_creation_time_utc")
        sha, position = self.quote("file_sha256"), self.quote(MESSAGE_POSITION)
        with self.engine.begin() as conn:
            self.acquire_schema_lock(conn)
            self.tune_session(conn)
            self.metadata.create_all(conn)
            if AUDIT_LATEST_VIEW not in inspect(conn).get_view_names(schema=self.schema):
                conn.execute(
                    text(
                        # The master's order: newest C.1.5, then N.2.r.4; an exact tie goes to the version the
                        # master kept (the first file received, inside a file the later message)
                        f"CREATE VIEW {view} AS SELECT * FROM ("
                        f"SELECT a.*, ROW_NUMBER() OVER (PARTITION BY a.{case} ORDER BY a.{c15} DESC, "
                        f"COALESCE(a.{n24}, {UNKNOWN_CREATION_TIME}) DESC, CASE WHEN m.{case} IS NULL THEN 1 ELSE 0 END, "
                        f"a.{self.quote('audit_id')} DESC) AS version_rank "
                        f"FROM {audit} a LEFT JOIN {self.qualified(MASTER)} m ON m.{case} = a.{case} "
                        f"AND m.{self.quote('source_file_sha256')} = a.{sha} AND m.{position} = a.{position}) ranked "
                        "WHERE version_rank = 1"
                    )
                )

    def acquire_schema_lock(self, conn: Connection) -> None:
        """Serialize schema creation across processes (dialect hook)."""

    def tune_session(self, conn: Connection) -> None:
        """Transaction-local settings for creating tables and loading (dialect hook)."""

    def schema_report(self, definition: dict[str, dict[str, str]] | None = None) -> SchemaReport:
        expected = definition or schema_definition(self.metadata)
        inspector = inspect(self.engine)
        present = set(inspector.get_table_names(schema=self.schema))
        report = SchemaReport()
        for table, columns in expected.items():
            if table not in present:
                report.missing_tables.append(table)
                continue
            actual = {c["name"]: type_family(c["type"]) for c in inspector.get_columns(table, schema=self.schema)}
            for column, family in columns.items():
                if column not in actual:
                    report.missing_columns.append(f"{table}.{column}")
                elif actual[column] != family and not (family == "float" and actual[column] == "integer"):
                    report.mistyped_columns.append(f"{table}.{column}: expected {family}, found {actual[column]}")
            report.extra_columns.extend(f"{table}.{c}" for c in actual if c not in columns)
        return report

    def validate_schema(self, schema_definition_: dict[str, Any] | None = None) -> bool:
        return self.schema_report(schema_definition_).ok

    def get_completed_file_hashes(self) -> set[str]:
        history = self.table(FILE_HISTORY_TABLE)
        with self.engine.connect() as conn:
            return set(conn.scalars(select(history.c.file_sha256).where(history.c.status == "completed")))

    # -- staging --------------------------------------------------------------------------------
    def staging_name(self, target_table: str) -> str:
        return f"stg_{target_table}"

    def staging_table(self, target_table: str) -> Table:
        if target_table not in self._staging_tables:
            self._staging_tables[target_table] = self._build_staging_table(target_table)
        return self._staging_tables[target_table]

    def _build_staging_table(self, target_table: str) -> Table:
        target = self.table(target_table)
        columns = []
        for name in STAGED_COLUMNS[target_table]:
            columns.append(Column(name, target.c[name].type if name in target.c else Integer()))
        return Table(self.staging_name(target_table), MetaData(), *columns, prefixes=["TEMPORARY"])

    def prepare_load(self, conn: Connection, target_table: str, load_mode: str) -> str:
        if load_mode == "full":
            conn.execute(self.table(target_table).delete())
        staging = self.staging_table(target_table)
        staging.drop(conn, checkfirst=True)
        staging.create(conn)
        return staging.name

    # -- merge ----------------------------------------------------------------------------------
    def acquire_merge_lock(self, conn: Connection) -> None:
        """Serialize merges so concurrent loads end as a sequential load would (dialect hook)."""

    def _insert_from_staging(
        self, conn: Connection, target_table: str, columns: list[str], stamp_column: str | None, tail: str, params: dict[str, Any]
    ) -> None:
        """``INSERT INTO target (columns[, stamp]) SELECT s.columns[, :stamp] FROM staging s <tail>``."""
        q = self.quote
        listed = ", ".join(q(c) for c in columns)
        selected = ", ".join(f"s.{q(c)}" for c in columns)
        if stamp_column:
            listed += f", {q(stamp_column)}"
            selected += ", :stamp"
            params = {**params, "stamp": utc_now()}
        staging = q(self.staging_name(target_table))
        conn.execute(text(f"INSERT INTO {self.qualified(target_table)} ({listed}) SELECT {selected} FROM {staging} s {tail}"), params)

    def handle_upsert(
        self, conn: Connection, staging_table: str, target_table: str, primary_keys: list[str], version_key: str | None
    ) -> None:
        """Replace the rows of every decided case with the winning version's staged rows."""
        key, decisions = self.quote(CASE_KEY), self.quote(DECISIONS)
        replaced = f"SELECT {key} FROM {decisions} WHERE action IN ('insert', 'update')"
        conn.execute(text(f"DELETE FROM {self.qualified(target_table)} WHERE {key} IN ({replaced})"))
        columns = [c.name for c in self.table(target_table).columns if c.name in STAGED_COLUMNS[target_table]]
        version, ordinal = self.quote(version_key or MESSAGE_POSITION), self.quote(FILE_ORDINAL)
        winners = (
            f"JOIN {decisions} d ON d.{key} = s.{key} AND d.{version} = s.{version} AND d.{ordinal} = s.{ordinal} "
            "WHERE d.action IN ('insert', 'update')"
        )
        self._insert_from_staging(conn, target_table, columns, "loaded_at" if target_table == MASTER else None, winners, {})

    def _decide(self, conn: Connection) -> dict[int, dict[str, int]]:
        """Create the decisions table (one row per staged case version) and count actions per file.

        Within the staged files the newest version wins; equal versions keep the earliest file
        and, inside one file, the later message, exactly as loading the files one by one would.
        """
        q = self.quote
        key, c15, n24, pos = q(CASE_KEY), q("most_recent_info_date_utc"), q("message_creation_time_utc"), q(MESSAGE_POSITION)
        ordinal = q(FILE_ORDINAL)
        floor = UNKNOWN_CREATION_TIME
        conn.execute(text(f"DROP TABLE IF EXISTS {q(DECISIONS)}"))
        conn.execute(
            text(
                f"CREATE TEMPORARY TABLE {q(DECISIONS)} AS "
                f"WITH ranked AS (SELECT {key}, {pos}, {ordinal}, {c15} AS c15, {n24} AS n24, {q('is_nullified')} AS nullification, "
                f"ROW_NUMBER() OVER (PARTITION BY {key} ORDER BY {c15} DESC, COALESCE({n24}, {floor}) DESC, {ordinal} ASC, {pos} DESC) "
                f"AS rank_in_files FROM {q(self.staging_name(MASTER))}) "
                f"SELECT r.{key}, r.{pos}, r.{ordinal}, r.nullification, CASE "
                "WHEN r.rank_in_files > 1 THEN 'superseded' "
                f"WHEN t.{key} IS NULL THEN 'insert' "
                f"WHEN r.c15 > t.{c15} OR (r.c15 = t.{c15} AND COALESCE(r.n24, {floor}) > COALESCE(t.{n24}, {floor})) "
                "THEN 'update' "
                "ELSE 'skip' END AS action "
                f"FROM ranked r LEFT JOIN {self.qualified(MASTER)} t ON t.{key} = r.{key}"
            )
        )
        counts: dict[int, dict[str, int]] = {}
        nullified_case = "CASE WHEN nullification AND action IN ('insert', 'update') THEN 1 ELSE 0 END"
        rows = conn.execute(
            text(f"SELECT {ordinal}, action, COUNT(*), SUM({nullified_case}) FROM {q(DECISIONS)} GROUP BY {ordinal}, action")
        )
        for file_ordinal, action, count, nullified in rows:
            per_file = counts.setdefault(int(file_ordinal), {})
            per_file[action] = int(count)
            per_file["nullified"] = per_file.get("nullified", 0) + int(nullified or 0)
        return counts

    def _count_versions(self, conn: Connection) -> None:
        """``version_count`` of every staged case: how many versions the audit log holds."""
        q = self.quote
        key, master, audit = q(CASE_KEY), self.qualified(MASTER), self.qualified(AUDIT_TABLE)
        conn.execute(
            text(
                f"UPDATE {master} SET {q('version_count')} = (SELECT COUNT(*) FROM {audit} a WHERE a.{key} = {master}.{key}) "
                f"WHERE {key} IN (SELECT {key} FROM {q(DECISIONS)})"
            )
        )

    def _append_file_rows(self, conn: Connection, target_table: str, file_hashes: list[str], unique: tuple[str, ...] = ()) -> None:
        """Insert staged audit/quarantine/batch rows; re-loading a file never duplicates them."""
        q = self.quote
        stamp_column = {AUDIT_TABLE: "loaded_at", QUARANTINE_TABLE: "quarantined_at"}.get(target_table)
        if unique:
            condition = " AND ".join(f"a.{q(c)} = s.{q(c)}" for c in unique)
            tail = f"WHERE NOT EXISTS (SELECT 1 FROM {self.qualified(target_table)} a WHERE {condition})"
        else:
            conn.execute(
                text(f"DELETE FROM {self.qualified(target_table)} WHERE {q('file_sha256')} IN :file_hashes").bindparams(
                    bindparam("file_hashes", expanding=True)
                ),
                {"file_hashes": file_hashes},
            )
            tail = ""
        self._insert_from_staging(conn, target_table, STAGED_COLUMNS[target_table], stamp_column, tail, {})

    def _record_history(self, conn: Connection, outcomes: list[LoadOutcome], load_mode: str, started_at: datetime) -> None:
        """Replace the history rows of these files: one DELETE and one multi-row INSERT for a whole group."""
        history = self.table(FILE_HISTORY_TABLE)
        finished_at = utc_now()
        conn.execute(history.delete().where(history.c.file_sha256.in_([o.file_sha256 for o in outcomes])))
        conn.execute(
            history.insert(),
            [
                {
                    "file_sha256": o.file_sha256,
                    "file_name": o.file_name,
                    "status": o.status,
                    "load_mode": load_mode,
                    "started_at": started_at,
                    "finished_at": finished_at,
                    "duration_seconds": o.duration_seconds,
                    "messages_total": o.messages_total,
                    "cases_inserted": o.cases_inserted,
                    "cases_updated": o.cases_updated,
                    "cases_skipped_older": o.cases_skipped_older,
                    "cases_nullified": o.cases_nullified,
                    "messages_rejected": o.messages_rejected,
                    "row_counts": o.row_counts,
                    "error": o.error,
                }
                for o in outcomes
            ],
        )

    def record_failure(self, files: list[StagedFile], load_mode: str, error: str, started_at: datetime) -> None:
        """Mark files failed in their own transaction (the load's transaction was rolled back)."""
        self._record_status(files, load_mode, "failed", error, started_at)

    def record_running(self, files: list[StagedFile], load_mode: str, started_at: datetime) -> None:
        """Mark files running before their load transaction: if the process dies, the history says so."""
        self._record_status(files, load_mode, "running", None, started_at)

    def _record_status(self, files: list[StagedFile], load_mode: str, status: str, error: str | None, started_at: datetime) -> None:
        outcomes = [LoadOutcome(file_name=f.file_name, file_sha256=f.file_sha256, status=status, error=error) for f in files]
        with self.engine.begin() as conn:
            self._record_history(conn, outcomes, load_mode, started_at)

    def is_retryable(self, error: DBAPIError) -> bool:
        return False

    def load_normalized_data(
        self, buffers: dict[str, IOBase], row_counts: dict[str, int], load_mode: str, file_path: str, file_hash: str
    ) -> None:
        """The plugin contract's one-file load: a group of one."""
        self.last_outcome = self.load_group(buffers, load_mode, [StagedFile(file_path, file_hash, 0, dict(row_counts))])[0]

    def load_group(self, buffers: dict[str, IOBase], load_mode: str, files: list[StagedFile]) -> list[LoadOutcome]:
        """Load the staged rows of several files in one transaction; one outcome (and history row) per file."""

        def rewind() -> None:
            for buffer in buffers.values():
                buffer.seek(0)

        return self._in_one_transaction(lambda conn: self._load_group(conn, buffers, load_mode, files), load_mode, rewind)

    def _in_one_transaction(
        self, load: Callable[[Connection], list[LoadOutcome]], load_mode: str, rewind: Callable[[], None]
    ) -> list[LoadOutcome]:
        """Run ``load`` and record its outcomes in one transaction, again (after ``rewind``) on a transient error."""
        started_at, clock = utc_now(), time.perf_counter()
        for attempt in range(1, self.max_attempts + 1):
            try:
                with self.engine.begin() as conn:
                    outcomes = load(conn)
                    if not outcomes:  # nothing to load after all: leave nothing behind
                        conn.rollback()
                        return outcomes
                    share = (time.perf_counter() - clock) / len(outcomes)
                    for outcome in outcomes:
                        outcome.duration_seconds = share
                    self._record_history(conn, outcomes, load_mode, started_at)
                return outcomes
            except DBAPIError as exc:
                if attempt == self.max_attempts or not self.is_retryable(exc):
                    raise
                log.warning("retrying a load after a transient database error (attempt %d)", attempt)
                rewind()
                time.sleep(0.05 * attempt)
        raise AssertionError("unreachable")

    def load_parts(self, load_mode: str, parts: Iterator[Path], staged_file: Callable[[], StagedFile | None]) -> list[LoadOutcome]:
        """Load one file staged in parts, in one transaction: each part is bulk-loaded as soon as ``parts``
        yields it (while the rest of the file is still being parsed), then the whole file is merged.

        ``staged_file`` is asked once the parts are exhausted: the file's account, or None when
        there was nothing to load (its content was loaded before), and the transaction is left.
        """
        loaded: list[Path] = []

        def load(conn: Connection) -> list[LoadOutcome]:
            self._create_staging(conn, list(STAGED_TABLES))
            for part in itertools.chain(list(loaded), parts):  # after a transient error: what was loaded, then the rest
                with ExitStack() as stack:
                    for table, stream in open_table_files(part, stack).items():
                        if os.fstat(stream.fileno()).st_size:
                            self.bulk_load_native(conn, stream, self.staging_name(table), STAGED_COLUMNS[table])
                if part not in loaded:
                    loaded.append(part)
            file = staged_file()
            return self._merge_staged(conn, load_mode, [file], list(STAGED_TABLES)) if file is not None else []

        return self._in_one_transaction(load, load_mode, lambda: None)

    def _load_group(self, conn: Connection, buffers: dict[str, IOBase], load_mode: str, files: list[StagedFile]) -> list[LoadOutcome]:
        staged_tables = [t for t in STAGED_TABLES if t in buffers]
        self._create_staging(conn, staged_tables)
        row_counts = {table: sum(f.row_counts.get(table, 0) for f in files) for table in staged_tables}
        for table in staged_tables:
            if row_counts.get(table):
                self.bulk_load_native(conn, buffers[table], self.staging_name(table), STAGED_COLUMNS[table])
        return self._merge_staged(conn, load_mode, files, staged_tables)

    def _create_staging(self, conn: Connection, tables: list[str]) -> None:
        """Session settings and empty staging tables; the targets are not touched before the merge."""
        self.tune_session(conn)
        for table in tables:
            self.prepare_load(conn, table, "delta")

    def _merge_staged(self, conn: Connection, load_mode: str, files: list[StagedFile], staged_tables: list[str]) -> list[LoadOutcome]:
        """Merge what the staging tables hold into the targets (full mode: into emptied case tables)."""
        self.acquire_merge_lock(conn)
        if load_mode == "full":
            for table in (*CASE_TABLE_NAMES, BATCHES):
                conn.execute(self.table(table).delete())
        decisions = self._decide(conn)
        for table in CASE_TABLE_NAMES:
            if table in staged_tables:
                self.handle_upsert(conn, self.staging_name(table), table, [CASE_KEY], MESSAGE_POSITION)
        hashes = [f.file_sha256 for f in files]
        if AUDIT_TABLE in staged_tables:
            self._append_file_rows(conn, AUDIT_TABLE, hashes, (CASE_KEY, "file_sha256", MESSAGE_POSITION))
        rejections: dict[str, tuple[int, str | None]] = {}
        if QUARANTINE_TABLE in staged_tables:
            self._append_file_rows(conn, QUARANTINE_TABLE, hashes)
            quarantine = self.staging_table(QUARANTINE_TABLE).c
            per_file = select(
                quarantine.file_sha256,
                func.count(quarantine[MESSAGE_POSITION]),
                func.min(quarantine.reason).filter(quarantine[MESSAGE_POSITION].is_(None)),
            ).group_by(quarantine.file_sha256)
            rejections = {digest: (rejected, file_error) for digest, rejected, file_error in conn.execute(per_file)}
        if BATCHES in staged_tables:
            self._append_file_rows(conn, BATCHES, hashes)
        self._count_versions(conn)
        outcomes = []
        for staged in files:
            counts = decisions.get(staged.ordinal, {})
            rejected, file_error = rejections.get(staged.file_sha256, (0, None))
            file_error = staged.error or file_error  # staging's own account, when it has one
            outcomes.append(
                LoadOutcome(
                    file_name=staged.file_name,
                    file_sha256=staged.file_sha256,
                    status=("partial" if staged.row_counts.get(AUDIT_TABLE) else "failed") if file_error else "completed",
                    error=file_error,
                    row_counts=dict(staged.row_counts),
                    messages_total=staged.row_counts.get(AUDIT_TABLE, 0) + rejected,
                    messages_rejected=rejected,
                    cases_inserted=counts.get("insert", 0),
                    cases_updated=counts.get("update", 0),
                    cases_skipped_older=counts.get("skip", 0) + counts.get("superseded", 0),
                    cases_nullified=counts.get("nullified", 0),
                )
            )
        self.drop_staging(conn, staged_tables)
        return outcomes

    def drop_staging(self, conn: Connection, tables: list[str]) -> None:
        for table in tables:
            conn.execute(text(f"DROP TABLE IF EXISTS {self.quote(self.staging_name(table))}"))
        conn.execute(text(f"DROP TABLE IF EXISTS {self.quote(DECISIONS)}"))

    def load_audit_data(self, buffer: IOBase, row_count: int, load_mode: str, file_path: str, file_hash: str) -> None:
        with self.engine.begin() as conn:
            staging = self.prepare_load(conn, AUDIT_TABLE, "delta")
            if row_count:
                self.bulk_load_native(conn, buffer, staging, STAGED_COLUMNS[AUDIT_TABLE])
            self._append_file_rows(conn, AUDIT_TABLE, [file_hash], (CASE_KEY, "file_sha256", MESSAGE_POSITION))
            self.drop_staging(conn, [AUDIT_TABLE])


def read_csv_rows(data_stream: IOBase, columns: list[str], types: dict[str, TypeEngine]) -> Iterator[dict[str, Any]]:
    """Rows of a staged CSV, converted to Python values for drivers without a CSV bulk path."""
    converters = {name: _converter(types[name]) for name in columns}
    for record in csv.reader(data_stream):  # type: ignore[arg-type]
        yield {name: (converters[name](value) if value != "" else None) for name, value in zip(columns, record, strict=False)}


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
