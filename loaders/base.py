"""The version-aware, case-level load shared by the SQL loaders (SQLAlchemy Core); dialects add a few hooks.

A load is one transaction over one or more staged batches (a group of small files, the shards of
a large file, or its parts as they are published). For each batch the loader looks up the cases'
current versions (locking them where the database can), lets the :class:`~loaders.ledger.Ledger`
decide which staged versions win, deletes the rows of the cases those versions replace, and
bulk-loads the winners' rows straight into the target tables: the index says where each message's
rows are, so nothing is staged twice and no merge query runs. Every version also goes to the audit
log. Each file gets one history row with its counters, in the same transaction.

The hooks a dialect overrides, as Dagster's ``DbClient`` has them: :meth:`insert_rows` (the native
bulk path), :meth:`case_filters` (how a long list of case keys becomes a WHERE clause),
:meth:`read_versions` (locking them), :meth:`upsert_history`, :meth:`tune_session`,
:meth:`acquire_schema_lock` and :meth:`is_retryable`.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from io import IOBase
from itertools import islice
from pathlib import Path
from typing import IO, Any

from sqlalchemy import JSON, Column, MetaData, Table, bindparam, create_engine, func, inspect, literal, select, text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.engine.reflection import ObjectKind
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.type_api import TypeEngine
from sqlalchemy.types import Boolean, DateTime, Float, Integer, LargeBinary

from loaders.contract import FAILED, FINAL_STATUSES, PARTIAL, RUNNING, Loader, LoadOutcome, SchemaReport
from loaders.interface import LoaderInterface
from loaders.ledger import Ledger, Version
from py_load_eudravigilance.mapping.catalog import CASE_KEY
from py_load_eudravigilance.mapping.code_lists import CODE_LIST_TABLE, code_list_rows
from py_load_eudravigilance.meddra import RELEASES_TABLE, TERM_FILES, VERSION, Release
from py_load_eudravigilance.schema import (
    AUDIT_TABLE,
    CASE_TABLE_NAMES,
    COUNTED_TABLE_NAMES,
    FILE_HISTORY_TABLE,
    MASTER_TABLE,
    MESSAGE_POSITION,
    QUARANTINE_TABLE,
    ROW_COUNTS_TABLE,
    build_metadata,
)
from py_load_eudravigilance.signals import (
    DEFAULT_DRUG_ROLES,
    StatisticsSummary,
    queue_cases,
    rebuild_on_next_refresh,
    refresh,
    retire_earlier_counts,
)
from py_load_eudravigilance.staging import StagedFile, utc_now
from py_load_eudravigilance.staging.copybinary import decode_rows, encode_row, encode_value
from py_load_eudravigilance.staging.copytext import decode_lines
from py_load_eudravigilance.staging.copytext import encode_row as encode_text_row
from py_load_eudravigilance.staging.layout import (
    BATCHES,
    INDEXED_TABLES,
    STAGED_COLUMNS,
    STAGED_FAMILIES,
    ByteRanges,
    MessageKey,
    Piece,
    StagedMessages,
    runs,
    table_file,
)

log = logging.getLogger(__name__)

AUDIT_COLUMN = INDEXED_TABLES.index(AUDIT_TABLE)
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


def schema_definition(metadata: MetaData) -> dict[str, dict[str, str]]:
    """Table -> column -> type family: the form ``validate_schema`` compares (tables only; views are checked apart)."""
    return {
        table.name: {column.name: type_family(column.type) for column in table.columns}
        for table in metadata.sorted_tables
        if not table.is_view
    }


class SQLAlchemyLoader(Loader, LoaderInterface):
    """Shared implementation of the load contract, and of the guide's methods for plugins that delegate to it."""

    #: attempts for a load when the database reports a transient conflict (deadlock, serialization, a concurrent insert)
    max_attempts = 5

    def __init__(self, dsn_or_engine: str | URL | Engine, schema: str | None = None) -> None:
        self.engine = dsn_or_engine if isinstance(dsn_or_engine, Engine) else create_engine(dsn_or_engine)
        self.schema = schema
        self.metadata = build_metadata(schema)
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
        """Create what is missing (tables, their indexes, views) and the code lists, in one transaction; concurrent
        first loads wait for each other."""
        with self.engine.begin() as conn:
            self.acquire_schema_lock(conn)
            self.tune_session(conn)
            retire_earlier_counts(conn, self.metadata)
            self.metadata.create_all(conn)
            self.add_missing_columns(conn)
            # create_all indexes only the tables it creates: a database made by an earlier release gains them here
            for table in self.metadata.sorted_tables:
                for index in table.indexes:
                    index.create(conn, checkfirst=True)
            self.fill_code_lists(conn)
            self.start_row_counts(conn)

    def add_missing_columns(self, conn: Connection) -> None:
        """Bring a database an earlier release made up to this schema: columns added since (new E2B elements, history
        counters) are added empty, and a view whose columns changed is made again. Nothing is dropped or rewritten."""
        inspector = inspect(conn)
        reflected = inspector.get_multi_columns(schema=self.schema, kind=ObjectKind.ANY)
        held = {table: {column["name"] for column in columns} for (_, table), columns in reflected.items()}
        views = set(inspector.get_view_names(schema=self.schema))
        for table in self.metadata.sorted_tables:
            if table.name not in held:
                continue
            missing = [column for column in table.columns if column.name not in held[table.name]]
            if table.is_view:
                if table.name in views and (missing or held[table.name] - set(table.columns.keys())):
                    conn.execute(text(f"DROP VIEW {self.qualified(table.name)}"))
                    self.metadata.create_all(conn, tables=[table])
                continue
            for column in missing:
                kind = column.type.compile(dialect=conn.dialect)
                conn.execute(text(f"ALTER TABLE {self.qualified(table.name)} ADD COLUMN {self.quote(column.name)} {kind}"))

    def start_row_counts(self, conn: Connection) -> None:
        """Count the rows of each counted table that has no count yet, once: a new database, or one an earlier release
        loaded. From then on every load keeps the counts exact in its own transaction."""
        counts = self.table(ROW_COUNTS_TABLE)
        known = set(conn.scalars(select(counts.c.table_name)))
        missing = [name for name in COUNTED_TABLE_NAMES if name not in known]
        if missing:
            rows = [{"table_name": name, "row_count": conn.scalar(select(func.count()).select_from(self.table(name)))} for name in missing]
            conn.execute(counts.insert(), rows)

    def write_row_counts(self, conn: Connection, changes: dict[str, int], emptied: Iterable[str] = ()) -> None:
        """Add a load's row changes to ``etl_table_row_counts`` (``emptied`` tables start again from zero), in the load's
        transaction. Rows are updated in one order, so concurrent loads wait for each other's commit, never deadlock."""
        counts = self.table(ROW_COUNTS_TABLE)
        restarted = set(emptied)
        names = sorted(name for name in COUNTED_TABLE_NAMES if changes.get(name) or name in restarted)
        for name in names:
            base = literal(0) if name in restarted else counts.c.row_count
            conn.execute(counts.update().where(counts.c.table_name == name).values(row_count=base + changes.get(name, 0)))

    def fill_code_lists(self, conn: Connection) -> None:
        """Make ``e2b_code_lists`` hold the project's code lists exactly (rewritten only when they differ)."""
        codes = self.table(CODE_LIST_TABLE)
        wanted = {(row["element"], row["code"]): row["label"] for row in code_list_rows()}
        held = {(element, code): label for element, code, label in conn.execute(select(codes.c.element, codes.c.code, codes.c.label))}
        if held != wanted:
            conn.execute(codes.delete())
            conn.execute(codes.insert(), code_list_rows())

    def load_meddra(self, release: Release) -> dict[str, int]:
        """Load a MedDRA release into the ``meddra_*`` tables in one transaction, replacing an earlier load of the same
        version; other versions stay beside it. Returns the rows loaded per table."""
        loaded: dict[str, int] = {}
        with self.engine.begin() as conn:
            self.tune_session(conn)
            # The events of the statistics are PTs of the latest release: the next refresh counts them again
            rebuild_on_next_refresh(conn, self.table)
            for term_file in TERM_FILES:
                table = self.table(term_file.table)
                conn.execute(table.delete().where(table.c[VERSION] == release.version))
                self.insert_records(conn, table, release.rows[term_file.table])
                loaded[term_file.table] = len(release.rows[term_file.table])
            releases = self.table(RELEASES_TABLE)
            conn.execute(releases.delete().where(releases.c[VERSION] == release.version))
            conn.execute(
                releases.insert(),
                {VERSION: release.version, "language": release.language, "terms_loaded": loaded["meddra_llt"], "loaded_at": utc_now()},
            )
        return loaded

    def refresh_drug_event_statistics(
        self, drug_roles: Sequence[str] = DEFAULT_DRUG_ROLES, rebuild: bool = False, meddra_version: str | None = None
    ) -> StatisticsSummary:
        """Bring ``drug_event_statistics`` up to date in one transaction: from the cases loads wrote since the last
        refresh, or in full (``rebuild``, or when needed). Events are PTs of ``meddra_version`` (default: the latest
        MedDRA release loaded; none loaded: the reported codes). Readers see the old statistics or the new ones."""
        with self.engine.begin() as conn:
            return refresh(conn, self, drug_roles, rebuild, meddra_version)

    def lock_for_refresh(self, conn: Connection, table: Table) -> None:
        """Make concurrent refreshes of ``table`` run one after another (dialect hook; SQLite's write lock does)."""

    def insert_records(self, conn: Connection, table: Table, records: list[dict[str, Any]]) -> None:
        """Bulk-insert rows given as Python values (dialect hook; this one: executemany in chunks)."""
        self.execute_inserts(conn, table, iter(records))

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
            indexed = {index["name"] for index in inspector.get_indexes(table, schema=self.schema)}
            known = self.metadata.tables.get(f"{self.schema}.{table}" if self.schema else table)
            report.missing_indexes.extend(
                f"{table}.{i.name}" for i in (known.indexes if known is not None else ()) if i.name not in indexed
            )
        views = set(inspector.get_view_names(schema=self.schema))
        for view in (t for t in self.metadata.sorted_tables if t.is_view):
            if view.name not in views:
                report.missing_views.append(view.name)
                continue
            actual_columns = {c["name"] for c in inspector.get_columns(view.name, schema=self.schema)}
            report.missing_columns.extend(f"{view.name}.{c.name}" for c in view.columns if c.name not in actual_columns)
        return report

    def validate_schema(self, schema_definition_: dict[str, Any] | None = None) -> bool:
        return self.schema_report(schema_definition_).ok

    def get_completed_file_hashes(self) -> set[str]:
        history = self.table(FILE_HISTORY_TABLE)
        with self.engine.connect() as conn:
            return set(conn.scalars(select(history.c.file_sha256).where(history.c.status.in_(FINAL_STATUSES))))

    # -- dialect hooks ----------------------------------------------------------------------------
    def insert_rows(self, conn: Connection, table: Table, stream: IO[bytes], columns: tuple[str, ...]) -> int:
        """Bulk-load staged rows (binary COPY tuples, ``columns`` of them) into ``table``; returns how many (dialect hook;
        this one: executemany)."""
        return self.execute_inserts(conn, table, python_rows(decode_rows(stream.read(), STAGED_FAMILIES[table.name]), columns))

    def execute_inserts(self, conn: Connection, table: Table, rows: Iterator[dict[str, Any]]) -> int:
        statement, inserted = table.insert(), 0
        while chunk := list(islice(rows, INSERT_CHUNK)):
            conn.execute(statement, chunk)
            inserted += len(chunk)
        return inserted

    def case_filters(self, column: Column, case_ids: list[str]) -> Iterator[ColumnElement[bool]]:
        """WHERE clauses that together select ``case_ids`` (dialect hook; this one: IN lists of bounded size)."""
        for start in range(0, len(case_ids), KEYS_PER_STATEMENT):
            yield column.in_(case_ids[start : start + KEYS_PER_STATEMENT])

    def read_versions(self, conn: Connection, case_ids: list[str]) -> dict[str, Version]:
        """The current version of each of ``case_ids`` present, locked until the transaction ends where the database can."""
        master = self.table(MASTER_TABLE).c
        held: dict[str, Version] = {}
        for clause in self.case_filters(master[CASE_KEY], case_ids):
            query = (
                select(
                    master[CASE_KEY],
                    master.most_recent_info_date_utc,
                    master.message_creation_time_utc,
                    master.source_file_name,
                    master.source_file_sha256,
                    master.message_position,
                    master.is_nullified,
                )
                .where(clause)
                .order_by(master[CASE_KEY])
                .with_for_update()
            )
            for row in conn.execute(query):
                held[row[0]] = Version(row[0], _utc(row[1]), _utc(row[2]), row[3], row[4], row[5], bool(row[6]))
        return held

    def upsert_history(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Replace the files' history rows (dialect hook; this one: DELETE, then INSERT)."""
        history = self.table(FILE_HISTORY_TABLE)
        for clause in self.case_filters(history.c.file_sha256, [row["file_sha256"] for row in rows]):
            conn.execute(history.delete().where(clause))
        conn.execute(history.insert(), rows)

    def is_retryable(self, error: BaseException) -> bool:
        """Whether the driver's ``error`` is worth another attempt of the whole load (dialect hook)."""
        return False

    # -- the load -----------------------------------------------------------------------------------
    def load(self, batches: Iterable[Path], load_mode: str, staged_files: Callable[[], list[StagedFile]]) -> list[LoadOutcome]:
        consumed: list[Path] = []
        arriving = iter(batches)

        def replay() -> Iterator[Path]:
            """After a transient error: the batches loaded so far, then the rest as they arrive."""
            yield from list(consumed)
            for batch in arriving:
                consumed.append(batch)
                yield batch

        def attempt(conn: Connection) -> list[LoadOutcome]:
            run = _LoadRun(Ledger())
            self.tune_session(conn)
            emptied: tuple[str, ...] = ()
            if load_mode == "full":
                self.empty_tables(conn)
                emptied = (*CASE_TABLE_NAMES, BATCHES)
            for batch in replay():
                self._load_batch(conn, batch, run)
            files = staged_files()
            if not files:
                return []
            self.update_version_counts(conn, run)
            self.write_row_counts(conn, run.row_changes, emptied)
            if load_mode == "full":
                self.forget_other_files(conn, [file.file_sha256 for file in files])
            return self._outcomes(files, run.ledger)

        return self._in_one_transaction(attempt, load_mode)

    def empty_tables(self, conn: Connection) -> None:
        """A full reload starts from empty case tables."""
        rebuild_on_next_refresh(conn, self.table)  # first: a refresh under way finishes before the cases go
        for name in (*CASE_TABLE_NAMES, BATCHES):
            conn.execute(self.table(name).delete())

    def forget_other_files(self, conn: Connection, kept: list[str]) -> None:
        """After the load that emptied the tables: the history of every other file goes, its rows being gone (a delta
        run loads it again). Done at the end, so that files marked running meanwhile are not waited for."""
        history = self.table(FILE_HISTORY_TABLE)
        conn.execute(history.delete().where(history.c.file_sha256.not_in(kept)))

    def _load_batch(self, conn: Connection, directory: Path, run: _LoadRun) -> None:
        index = StagedMessages.load(directory)
        versions = [(version_of(key, index.files[key.ordinal]), number) for number, key in enumerate(index.keys)]
        ledger = run.ledger
        unknown = ledger.unknown(version.case_id for version, _ in versions)
        if unknown:
            ledger.know(unknown, self.read_versions(conn, unknown))
            run.prior.update(self.logged_versions(conn, unknown))
            run.counts.update((case, run.prior[case]) for case in unknown)
        # Every version goes to the audit log once, however often its file is loaded
        fresh = [sha for _, sha in index.files if sha not in run.logged]
        run.logged.update(self.logged_positions(conn, fresh))
        logging = [n for n, key in enumerate(index.keys) if key.position not in run.logged[index.files[key.ordinal][1]]]
        for number in logging:
            run.counts[index.keys[number].case_id] += 1
        writes = ledger.offer(versions)
        queue_cases(conn, self, (version.case_id for version, _, _ in writes))  # the statistics recount them
        replaced = [version.case_id for version, _, had_rows in writes if had_rows]
        changes = run.row_changes
        if replaced:
            for name in CASE_TABLE_NAMES:
                changes[name] -= self.delete_cases(conn, self.table(name), replaced)
        winners = sorted(message for _, message, _ in writes)
        # The master rows get their version count written in; the other tables' rows go as staged, run by run
        master: list[Piece] = []
        for number in winners:
            case = index.keys[number].case_id
            start, end = index.span(number, 0)
            at = index.version_count_at[number]
            master += [(start, at), encode_value(run.counts[case], "integer"), (at + 4, end)]
            run.counted[case] = run.counts[case]
        changes[MASTER_TABLE] += self._insert_pieces(conn, directory, MASTER_TABLE, master, index.size(0))
        winning_runs = runs(winners)
        for number, name in enumerate(CASE_TABLE_NAMES[1:], start=1):
            changes[name] += self._insert_pieces(conn, directory, name, index.pieces(winning_runs, number), index.size(number))
        audit_pieces = index.pieces(runs(logging), AUDIT_COLUMN)
        changes[AUDIT_TABLE] += self._insert_pieces(conn, directory, AUDIT_TABLE, audit_pieces, index.size(AUDIT_COLUMN))
        # A file's quarantine and batch rows replace those of its earlier loads
        for name in (QUARANTINE_TABLE, BATCHES):
            if fresh:
                for clause in self.case_filters(self.table(name).c.file_sha256, fresh):
                    changes[name] -= conn.execute(self.table(name).delete().where(clause)).rowcount
            path = table_file(directory, name)
            if path.exists() and path.stat().st_size:
                with path.open("rb") as stream:
                    changes[name] += self.insert_rows(conn, self.table(name), stream, STAGED_COLUMNS[name])

    def _insert_pieces(self, conn: Connection, directory: Path, name: str, pieces: list[Piece], size: int) -> int:
        """Bulk-load these byte ranges of a staged table; returns the rows loaded."""
        if not pieces:
            return 0
        with table_file(directory, name).open("rb") as handle:
            stream: IO[bytes] = handle if pieces == [(0, size)] else ByteRanges(handle, pieces)  # type: ignore[assignment]
            return self.insert_rows(conn, self.table(name), stream, STAGED_COLUMNS[name])

    def delete_cases(self, conn: Connection, table: Table, case_ids: list[str]) -> int:
        """Delete the cases' rows from ``table``; returns how many."""
        deleted = 0
        for clause in self.case_filters(table.c[CASE_KEY], case_ids):
            deleted += conn.execute(table.delete().where(clause)).rowcount
        return deleted

    def logged_positions(self, conn: Connection, file_hashes: list[str]) -> dict[str, set[int]]:
        """Message positions of these files already in the audit log (none, unless a file is loaded again)."""
        logged: dict[str, set[int]] = {sha: set() for sha in file_hashes}
        audit = self.table(AUDIT_TABLE).c
        for clause in self.case_filters(audit.file_sha256, file_hashes):
            for sha, position in conn.execute(select(audit.file_sha256, audit[MESSAGE_POSITION]).where(clause)):
                logged[sha].add(position)
        return logged

    def logged_versions(self, conn: Connection, case_ids: list[str]) -> dict[str, int]:
        """How many versions of each case the audit log holds."""
        audit = self.table(AUDIT_TABLE).c
        counts = dict.fromkeys(case_ids, 0)
        for clause in self.case_filters(audit[CASE_KEY], case_ids):
            for case, count in conn.execute(select(audit[CASE_KEY], func.count()).where(clause).group_by(audit[CASE_KEY])):
                counts[case] = count
        return counts

    def update_version_counts(self, conn: Connection, run: _LoadRun) -> None:
        """``version_count`` where the master row was not written with the final count: a case whose version did not
        change but was received again, or whose later versions arrived in a later part."""
        stale = [
            {"case": case, "count": count}
            for case, count in run.counts.items()
            if run.counted.get(case, run.prior[case]) != count and run.ledger.has_rows(case)
        ]
        if stale:
            master = self.table(MASTER_TABLE)
            statement = master.update().where(master.c[CASE_KEY] == bindparam("case")).values(version_count=bindparam("count"))
            conn.execute(statement, stale)

    def _outcomes(self, files: list[StagedFile], ledger: Ledger) -> list[LoadOutcome]:
        ordered = sorted(files, key=lambda f: f.ordinal)
        counts = ledger.tally([(f.file_name, f.file_sha256) for f in ordered])
        outcomes = []
        for staged in ordered:
            tally = counts[(staged.file_name, staged.file_sha256)]
            loaded = staged.messages_total - staged.messages_rejected
            problem = staged.error is not None or staged.messages_rejected > 0
            outcomes.append(
                LoadOutcome(
                    file_name=staged.file_name,
                    file_sha256=staged.file_sha256,
                    status=(PARTIAL if loaded else FAILED) if problem else "completed",
                    error=staged.error,
                    row_counts=dict(staged.row_counts),
                    messages_total=staged.messages_total,
                    messages_rejected=staged.messages_rejected,
                    cases_inserted=tally.inserted,
                    cases_updated=tally.updated,
                    cases_skipped_older=tally.skipped_older,
                    cases_nullified=tally.nullified,
                    versions_after_nullification=tally.after_nullification,
                    rejections=list(staged.rejections),
                    unmapped_values=staged.unmapped_values,
                    unmapped_paths=list(staged.unmapped_paths),
                )
            )
        return outcomes

    def _in_one_transaction(self, load: Callable[[Connection], list[LoadOutcome]], load_mode: str) -> list[LoadOutcome]:
        """Run ``load`` and record its outcomes in one transaction, again on a transient error."""
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
            except Exception as exc:
                # Errors of a driver's own bulk path (COPY) come unwrapped; SQLAlchemy's carry the driver's in .orig
                cause = exc.orig if isinstance(exc, DBAPIError) else exc
                if attempt == self.max_attempts or not self.is_retryable(cause):
                    raise
                log.warning("retrying a load after a transient database error (attempt %d): %s", attempt, type(cause).__name__)
                time.sleep(0.05 * attempt)
        raise AssertionError("unreachable")

    def _record_history(self, conn: Connection, outcomes: list[LoadOutcome], load_mode: str, started_at: datetime) -> None:
        if load_mode == "delta":
            outcomes = self._not_loaded_before(conn, outcomes)
            if not outcomes:
                return
        finished_at = utc_now()
        self.upsert_history(
            conn,
            [
                {
                    **{key: value for key, value in o.as_dict().items() if key != "duration_seconds"},
                    "load_mode": load_mode,
                    "started_at": started_at,
                    "finished_at": finished_at,
                    "duration_seconds": o.duration_seconds,
                }
                for o in outcomes
            ],
        )

    def _not_loaded_before(self, conn: Connection, outcomes: list[LoadOutcome]) -> list[LoadOutcome]:
        """The outcomes to record in delta mode. A file whose history is final already was loaded by a run that finished
        after this one listed the loaded files (two runs at once, or two copies in one run): that load's record stays
        (no later mark, failure or recount replaces it), and this outcome takes its counters, so both runs agree."""
        history = self.table(FILE_HISTORY_TABLE)
        by_hash = {outcome.file_sha256: outcome for outcome in outcomes}
        recorded: set[str] = set()
        for clause in self.case_filters(history.c.file_sha256, list(by_hash)):
            for row in conn.execute(select(history).where(clause, history.c.status.in_(FINAL_STATUSES))).mappings():
                outcome = by_hash[row["file_sha256"]]
                for name in outcome.as_dict():
                    if name not in ("file_name", "file_sha256") and row[name] is not None:
                        setattr(outcome, name, row[name])
                outcome.error = row["error"]
                recorded.add(outcome.file_sha256)
        return [outcome for outcome in outcomes if outcome.file_sha256 not in recorded]

    def record_status(self, files: list[StagedFile], load_mode: str, status: str, error: str | None, started_at: datetime) -> None:
        outcomes = [LoadOutcome(file_name=f.file_name, file_sha256=f.file_sha256, status=status, error=error) for f in files]
        with self.engine.begin() as conn:
            self._record_history(conn, outcomes, load_mode, started_at)

    def record_running(self, files: list[StagedFile], load_mode: str, started_at: datetime) -> None:
        self.record_status(files, load_mode, RUNNING, None, started_at)

    # -- the guide's methods (LoaderInterface), for plugins that delegate to a built-in loader --------------------
    def staging_name(self, target_table: str) -> str:
        return f"stg_{target_table}"

    def staging_table(self, target_table: str) -> Table:
        if target_table not in self._staging_tables:
            target = self.table(target_table)
            columns = [Column(name, target.c[name].type) for name in STAGED_COLUMNS[target_table]]
            self._staging_tables[target_table] = Table(self.staging_name(target_table), MetaData(), *columns, prefixes=["TEMPORARY"])
        return self._staging_tables[target_table]

    def prepare_load(self, conn: Connection, target_table: str, load_mode: str) -> str:
        """Empty ``target_table`` in 'full' mode; create an empty staging table for it and return its name."""
        if load_mode == "full":
            conn.execute(self.table(target_table).delete())
        staging = self.staging_table(target_table)
        staging.drop(conn, checkfirst=True)
        staging.create(conn)
        return staging.name

    def _named_table(self, name: str) -> Table:
        """A staging table this loader created, or a target table."""
        for staging in self._staging_tables.values():
            if staging.name == name:
                return staging
        return self.table(name)

    def bulk_load_native(self, conn: Connection, data_stream: IOBase, target_table: str, columns: list[str]) -> None:
        """COPY text rows into ``target_table`` (a staging table from :meth:`prepare_load`, or a target); executemany here."""
        table = self._named_table(target_table)
        types = {c.name: c.type for c in table.columns}
        self.execute_inserts(conn, table, python_rows(text_rows(data_stream, tuple(columns), types), tuple(columns)))

    def handle_upsert(
        self, conn: Connection, staging_table: str, target_table: str, primary_keys: list[str], version_key: str | None
    ) -> None:
        """Merge ``staging_table`` into ``target_table``: target rows whose ``primary_keys`` match a staged row are
        replaced by the staged rows; with ``version_key``, only by staged rows whose version is greater."""
        q = self.quote
        staging, target = q(staging_table), self.qualified(target_table)
        matches = " AND ".join(f"{target}.{q(k)} = s.{q(k)}" for k in primary_keys)
        newer = f" AND s.{q(version_key)} > {target}.{q(version_key)}" if version_key else ""
        conn.execute(text(f"DELETE FROM {target} WHERE EXISTS (SELECT 1 FROM {staging} s WHERE {matches}{newer})"))
        columns = STAGED_COLUMNS[target_table]
        listed, selected = ", ".join(q(c) for c in columns), ", ".join(f"s.{q(c)}" for c in columns)
        absent = f"NOT EXISTS (SELECT 1 FROM {target} WHERE {matches})"
        conn.execute(text(f"INSERT INTO {target} ({listed}) SELECT {selected} FROM {staging} s WHERE {absent}"))

    def load_normalized_data(
        self, buffers: dict[str, IOBase], row_counts: dict[str, int], load_mode: str, file_path: str, file_hash: str
    ) -> None:
        """One file's staged streams (every staged table, the audit log's included) loaded in one transaction."""
        with tempfile.TemporaryDirectory(prefix="eudravig-load-") as scratch:
            batch = Path(scratch)
            types = {name: {c.name: c.type for c in self.table(name).columns} for name in buffers}
            index = index_from_streams(buffers, batch, types)
            staged = StagedFile(file_path, file_hash, 0, dict(row_counts), messages_total=len(index.keys))
            self.load([batch], load_mode, lambda: [staged])

    def load_audit_data(self, buffer: IOBase, row_count: int, load_mode: str, file_path: str, file_hash: str) -> None:
        """Append one file's audit rows (COPY text), in a transaction of its own; versions already logged are left out."""
        audit, columns = self.table(AUDIT_TABLE), STAGED_COLUMNS[AUDIT_TABLE]
        rows = python_rows(text_rows(buffer, columns, {c.name: c.type for c in audit.columns}), columns)
        with self.engine.begin() as conn:
            logged = self.logged_positions(conn, [file_hash])[file_hash]
            appended = self.execute_inserts(conn, audit, (row for row in rows if row[MESSAGE_POSITION] not in logged))
            self.write_row_counts(conn, {AUDIT_TABLE: appended})


class _LoadRun:
    """What one load transaction has seen so far."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.logged: dict[str, set[int]] = {}  # by file: message positions in the audit log before this transaction
        self.prior: dict[str, int] = {}  # by case: versions in the audit log before this transaction
        self.counts: dict[str, int] = {}  # by case: versions in the audit log, this transaction's included
        self.counted: dict[str, int] = {}  # by case: the count written into the master row this transaction wrote
        self.row_changes: Counter[str] = Counter()  # by table: rows inserted minus rows deleted


def version_of(key: MessageKey, file: tuple[str, str]) -> Version:
    created = datetime.fromisoformat(key.message_creation_utc) if key.message_creation_utc else None
    return Version(
        key.case_id, datetime.fromisoformat(key.most_recent_info_utc), created, file[0], file[1], key.position, key.is_nullification
    )


def _utc(value: datetime | None) -> datetime | None:
    """Timestamps read back: SQLite returns them naive, in UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


def python_rows(rows: Iterable[list[Any]], columns: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    for values in rows:
        yield dict(zip(columns, values, strict=True))


def text_rows(stream: Any, columns: tuple[str, ...], types: dict[str, TypeEngine]) -> Iterator[list[Any]]:
    """Rows of a COPY text stream (what the guide's ``bulk_load_native`` receives) as Python values."""
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


def as_copy_text(data: bytes, table: str) -> bytes:
    """Staged binary tuples as COPY text lines: the portable form a guide plugin's bulk path receives."""
    return b"".join(encode_text_row(values) for values in decode_rows(data, STAGED_FAMILIES[table]))


def index_from_streams(buffers: dict[str, IOBase], directory: Path, types: dict[str, dict[str, TypeEngine]]) -> StagedMessages:
    """Write one file's staged COPY text streams (every table's, the audit log's included) into ``directory`` as a
    binary batch, and rebuild its index from the audit rows: each names its case version and its rows per table."""
    rows: dict[str, list[list[Any]]] = {}
    for table, stream in buffers.items():
        rows[table] = list(text_rows(stream, STAGED_COLUMNS[table], types[table]))
        with table_file(directory, table).open("wb") as sink:
            for values in rows[table]:
                sink.write(encode_row(values, STAGED_FAMILIES[table]))
    index = StagedMessages()
    sizes = {table: [len(encode_row(values, STAGED_FAMILIES[table])) for values in rows.get(table, [])] for table in INDEXED_TABLES}
    cursors, offsets = dict.fromkeys(INDEXED_TABLES, 0), dict.fromkeys(INDEXED_TABLES, 0)
    files: dict[tuple[str, str], int] = {}
    for values in rows.get(AUDIT_TABLE, []):
        row = dict(zip(STAGED_COLUMNS[AUDIT_TABLE], values, strict=True))
        ordinal = files.setdefault((row["file_name"], row["file_sha256"]), len(files))
        counts = {**(row["row_counts"] or {}), AUDIT_TABLE: 1}
        for table in INDEXED_TABLES:
            taken = sizes[table][cursors[table] : cursors[table] + counts.get(table, 0)]
            cursors[table] += len(taken)
            offsets[table] += sum(taken)
        created = row["message_creation_time_utc"]
        index.keys.append(
            MessageKey(
                ordinal,
                row[MESSAGE_POSITION],
                row[CASE_KEY],
                row["most_recent_info_date_utc"].isoformat(),
                created.isoformat() if created else None,
                bool(row["is_nullification"]),
            )
        )
        index.bounds.extend(offsets[table] for table in INDEXED_TABLES)
    index.files = list(files)
    index.save(directory)
    return index
