"""The version-aware, case-level load shared by the SQL loaders (SQLAlchemy Core); dialects add a few hooks.

A load is one transaction over one or more staged batches (a group of small files, the shards of
a large file, or its parts as they are published). For each batch the loader looks up the cases'
current versions (locking them where the database can), lets the :class:`~loaders.ledger.Ledger`
decide which staged versions win, deletes the rows of the cases those versions replace, and
bulk-loads the winners' rows straight into the target tables: the index says where each message's
rows are, so nothing is staged twice and no merge query runs. Every version also goes to the audit
log. Each file gets one history row with its counters, in the same transaction.

What differs between databases (the native bulk path, how a long list of case keys becomes a WHERE
clause, the history upsert, locks, session settings, which errors are worth another attempt, and
what the pipeline may do) is the loader's :class:`~loaders.dialect.Dialect`, given to it, as
Dagster's ``DbClient`` is. The file history is the load's: see :meth:`SQLAlchemyLoader.load`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from sqlalchemy import MetaData, Table, bindparam, create_engine, func, inspect, literal, select, text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.engine.reflection import ObjectKind
from sqlalchemy.exc import DBAPIError

from loaders.contract import (
    FAILED,
    FINAL_STATUSES,
    PARTIAL,
    RUNNING,
    Loader,
    LoadMode,
    LoadOutcome,
    SchemaReport,
    StagedFiles,
    StagingError,
)
from loaders.dialect import Dialect, type_family
from loaders.ledger import Ledger, Version
from loaders.upkeep import RefreshTarget
from py_load_eudravigilance.mapping.catalog import CASE_KEY
from py_load_eudravigilance.mapping.code_lists import CODE_LIST_TABLE, code_list_rows
from py_load_eudravigilance.planning import Capabilities
from py_load_eudravigilance.schema import (
    AUDIT_TABLE,
    CASE_TABLE_NAMES,
    COUNTED_TABLE_NAMES,
    FILE_HISTORY_TABLE,
    MASTER_TABLE,
    MESSAGE_POSITION,
    QUARANTINE_TABLE,
    ROW_COUNTS_TABLE,
    VIEW_DEFINITIONS_TABLE,
    build_metadata,
    schema_table,
)
from py_load_eudravigilance.signals import (
    queue_cases,
    rebuild_on_next_refresh,
    retire_earlier_counts,
)
from py_load_eudravigilance.staging import SplitFailed, StagedFile, utc_now
from py_load_eudravigilance.staging.copybinary import encode_value
from py_load_eudravigilance.staging.layout import (
    BATCHES,
    INDEXED_TABLES,
    STAGED_COLUMNS,
    ByteRanges,
    MessageKey,
    Piece,
    StagedMessages,
    runs,
    table_file,
)
from py_load_eudravigilance.views import view_definition

log = logging.getLogger(__name__)

AUDIT_COLUMN = INDEXED_TABLES.index(AUDIT_TABLE)


def schema_definition(metadata: MetaData) -> dict[str, dict[str, str]]:
    """Table -> column -> type family: the form ``validate_schema`` compares (tables only; views are checked apart)."""
    return {
        table.name: {column.name: type_family(column.type) for column in table.columns}
        for table in metadata.sorted_tables
        if not table.is_view
    }


class SQLAlchemyLoader(Loader):
    """The load contract over SQLAlchemy Core; what differs between databases comes from its :class:`Dialect`."""

    #: attempts for a load when the database reports a transient conflict (deadlock, serialization, a concurrent insert)
    max_attempts = 5
    #: see :meth:`view_definitions` (a class default: plugin adapters set up their own attributes)
    _view_definitions: dict[str, str] | None = None

    def __init__(self, dsn_or_engine: str | URL | Engine, schema: str | None = None, dialect: Dialect | None = None) -> None:
        self.engine = dsn_or_engine if isinstance(dsn_or_engine, Engine) else create_engine(dsn_or_engine)
        self.dialect = dialect or Dialect()
        self.dialect.configure(self.engine)
        self.schema = schema
        self.metadata = build_metadata(schema)

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        return self.dialect.capabilities

    # -- schema -------------------------------------------------------------------------------
    def table(self, name: str) -> Table:
        return schema_table(name, self.schema)

    def quote(self, name: str) -> str:
        return self.engine.dialect.identifier_preparer.quote(name)

    def qualified(self, name: str) -> str:
        prefix = f"{self.quote(self.schema)}." if self.schema else ""
        return prefix + self.quote(name)

    def create_all_tables(self) -> None:
        """Create what is missing (tables, their indexes, views) and the code lists, in one transaction; concurrent
        first loads wait for each other."""
        with self.engine.begin() as conn:
            self.dialect.acquire_schema_lock(conn)
            self.dialect.tune_session(conn)
            retire_earlier_counts(conn, self.metadata)
            # Outdated views go first: create_all then makes them again, once the columns they read exist
            for view in reversed(self.outdated_views(conn)):
                conn.execute(text(f"DROP VIEW {self.qualified(view.name)}"))
            self.add_missing_columns(conn)
            self.metadata.create_all(conn)
            # create_all indexes only the tables it creates: a database made by an earlier release gains them here
            for table in self.metadata.sorted_tables:
                for index in table.indexes:
                    index.create(conn, checkfirst=True)
            self.record_view_definitions(conn)
            self.fill_code_lists(conn)
            self.start_row_counts(conn)

    def views(self) -> list[Table]:
        return [table for table in self.metadata.sorted_tables if table.is_view]

    def view_definitions(self) -> dict[str, str]:
        """View -> the SHA-256 of its CREATE VIEW on this database, compiled once per loader (a few ms a view)."""
        if self._view_definitions is None:
            self._view_definitions = {view.name: view_definition(view, self.engine.dialect) for view in self.views()}
        return self._view_definitions

    def add_missing_columns(self, conn: Connection) -> None:
        """Bring a database an earlier release made up to this schema: columns added since (new E2B elements, history
        counters) are added empty. Nothing is dropped or rewritten."""
        inspector = inspect(conn)
        reflected = inspector.get_multi_columns(schema=self.schema, kind=ObjectKind.TABLE)
        held = {table: {column["name"] for column in columns} for (_, table), columns in reflected.items()}
        for table in self.metadata.sorted_tables:
            if table.is_view or table.name not in held:
                continue
            for column in (column for column in table.columns if column.name not in held[table.name]):
                kind = column.type.compile(dialect=conn.dialect)
                conn.execute(text(f"ALTER TABLE {self.qualified(table.name)} ADD COLUMN {self.quote(column.name)} {kind}"))

    def outdated_views(self, conn: Connection) -> list[Table]:
        """The views that exist with another query than this release's: their recorded definition differs from this
        release's (none is recorded in a database made before definitions were), or their columns do."""
        inspector = inspect(conn)
        existing = set(inspector.get_view_names(schema=self.schema))
        recorded: dict[str, str] = {}
        if inspector.has_table(VIEW_DEFINITIONS_TABLE, schema=self.schema):
            definitions = self.table(VIEW_DEFINITIONS_TABLE)
            recorded = dict(conn.execute(select(definitions.c.view_name, definitions.c.definition_sha256)).all())
        reflected = inspector.get_multi_columns(schema=self.schema, kind=ObjectKind.VIEW)
        held = {view: {column["name"] for column in columns} for (_, view), columns in reflected.items()}
        wanted = self.view_definitions()
        return [
            view
            for view in self.views()
            if view.name in existing and (recorded.get(view.name) != wanted[view.name] or held.get(view.name) != set(view.columns.keys()))
        ]

    def record_view_definitions(self, conn: Connection) -> None:
        """Record the definition of every view as this release makes it (written only when it changed)."""
        definitions = self.table(VIEW_DEFINITIONS_TABLE)
        wanted = self.view_definitions()
        held = dict(conn.execute(select(definitions.c.view_name, definitions.c.definition_sha256)).all())
        if held != wanted:
            conn.execute(definitions.delete())
            conn.execute(definitions.insert(), [{"view_name": name, "definition_sha256": sha} for name, sha in wanted.items()])

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
        with self.engine.connect() as conn:
            report.outdated_views = [view.name for view in self.outdated_views(conn)]
        return report

    def validate_schema(self, schema_definition_: dict[str, Any] | None = None) -> bool:
        return self.schema_report(schema_definition_).ok

    def holds_file_history(self) -> bool:
        with self.engine.connect() as conn:
            return inspect(conn).has_table(FILE_HISTORY_TABLE, schema=self.schema)

    def get_completed_file_hashes(self, sizes: Collection[int] | None = None) -> set[str]:
        history = self.table(FILE_HISTORY_TABLE)
        loaded = select(history.c.file_sha256).where(history.c.status.in_(FINAL_STATUSES))
        with self.engine.connect() as conn:
            if sizes is None:
                return set(conn.scalars(loaded))
            # Rows an earlier release wrote have no size: they may be any file's (a number fixed at the upgrade)
            found = set(conn.scalars(loaded.where(history.c.file_size_bytes.is_(None))))
            for clause in self.dialect.case_filters(history.c.file_size_bytes, sorted(sizes)):
                found.update(conn.scalars(loaded.where(clause)))
            return found

    def read_versions(self, conn: Connection, case_ids: list[str]) -> dict[str, Version]:
        """The current version of each of ``case_ids`` present, locked until the transaction ends where the database can."""
        master = self.table(MASTER_TABLE).c
        held: dict[str, Version] = {}
        for clause in self.dialect.case_filters(master[CASE_KEY], case_ids):
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

    # -- the load -----------------------------------------------------------------------------------
    def load(self, batches: Iterable[Path], load_mode: LoadMode, files: StagedFiles) -> list[LoadOutcome]:
        started_at = utc_now()
        running: dict[str, StagedFile] = {}  # the files marked running: whatever happens next, none stays running
        if isinstance(files, list):
            self._mark_running(files, load_mode, started_at, running)  # before the transaction: SQLite has one writer
        consumed: list[Path] = []  # paths only: a part's index is read again if a retry replays it (memory stays flat)
        arriving = iter(batches)

        def replay() -> Iterator[tuple[Path, StagedMessages]]:
            """After a transient error: the batches loaded so far, then the rest as they arrive, each file marked
            running as its first part arrives."""
            for batch in list(consumed):
                yield batch, StagedMessages.load(batch)
            for batch in arriving:
                index = StagedMessages.load(batch)
                self._mark_running([StagedFile(name, sha) for name, sha in index.files], load_mode, started_at, running)
                consumed.append(batch)
                yield batch, index

        def attempt(conn: Connection) -> list[LoadOutcome]:
            run = _LoadRun(Ledger())
            self.dialect.tune_session(conn)
            emptied: tuple[str, ...] = ()
            if load_mode == LoadMode.FULL:
                self.empty_tables(conn)
                emptied = (*CASE_TABLE_NAMES, BATCHES)
            for batch, index in replay():
                self._load_batch(conn, batch, index, run)
            staged = files if isinstance(files, list) else files()
            if not staged:
                return []
            self.update_version_counts(conn, run)
            self.write_row_counts(conn, run.row_changes, emptied)
            if load_mode == LoadMode.FULL:
                self.forget_other_files(conn, [file.file_sha256 for file in staged])
            return self._outcomes(staged, run.ledger)

        try:
            return self._in_one_transaction(attempt, load_mode, started_at)
        except Exception as exc:
            failed = files if isinstance(files, list) else _files_if_staged(files) or list(running.values())
            if failed and not isinstance(exc, SplitFailed):  # (that file is loaded again at once, in one piece)
                self._write_status(failed, load_mode, FAILED, f"{type(exc).__name__}: {exc}", started_at)
            raise

    def _mark_running(self, files: list[StagedFile], load_mode: LoadMode, started_at: datetime, running: dict[str, StagedFile]) -> None:
        """Files not marked yet are ``running`` in the history, committed (if the process dies, the history says so)."""
        fresh = [file for file in files if file.file_sha256 not in running]
        if fresh:
            self._write_status(fresh, load_mode, RUNNING, None, started_at)
            running.update((file.file_sha256, file) for file in fresh)

    def record_failed(self, files: list[StagedFile], load_mode: LoadMode, reason: str) -> None:
        self._write_status(files, load_mode, FAILED, reason, utc_now())

    def empty_tables(self, conn: Connection) -> None:
        """A full reload starts from empty case tables."""
        rebuild_on_next_refresh(conn, self.table)  # first: a refresh under way finishes before the cases go
        self.dialect.empty_case_tables(conn, [self.table(name) for name in CASE_TABLE_NAMES])
        conn.execute(self.table(BATCHES).delete())

    def forget_other_files(self, conn: Connection, kept: list[str]) -> None:
        """After the load that emptied the tables: the history of every other file goes, its rows being gone (a delta
        run loads it again). Done at the end, so that files marked running meanwhile are not waited for."""
        history = self.table(FILE_HISTORY_TABLE)
        conn.execute(history.delete().where(history.c.file_sha256.not_in(kept)))

    def _load_batch(self, conn: Connection, directory: Path, index: StagedMessages, run: _LoadRun) -> None:
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
        # The statistics recount them
        queue_cases(conn, RefreshTarget(self.table, self.dialect), (version.case_id for version, _, _ in writes))
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
                for clause in self.dialect.case_filters(self.table(name).c.file_sha256, fresh):
                    changes[name] -= conn.execute(self.table(name).delete().where(clause)).rowcount
            path = table_file(directory, name)
            if path.exists() and path.stat().st_size:
                with path.open("rb") as stream:
                    changes[name] += self.dialect.insert_rows(conn, self.table(name), stream, STAGED_COLUMNS[name])

    def _insert_pieces(self, conn: Connection, directory: Path, name: str, pieces: list[Piece], size: int) -> int:
        """Bulk-load these byte ranges of a staged table; returns the rows loaded."""
        if not pieces:
            return 0
        with table_file(directory, name).open("rb") as handle:
            stream: IO[bytes] = handle if pieces == [(0, size)] else ByteRanges(handle, pieces)  # type: ignore[assignment]
            return self.dialect.insert_rows(conn, self.table(name), stream, STAGED_COLUMNS[name])

    def delete_cases(self, conn: Connection, table: Table, case_ids: list[str]) -> int:
        """Delete the cases' rows from ``table``; returns how many."""
        deleted = 0
        for clause in self.dialect.case_filters(table.c[CASE_KEY], case_ids):
            deleted += conn.execute(table.delete().where(clause)).rowcount
        return deleted

    def logged_positions(self, conn: Connection, file_hashes: list[str]) -> dict[str, set[int]]:
        """Message positions of these files already in the audit log (none, unless a file is loaded again)."""
        logged: dict[str, set[int]] = {sha: set() for sha in file_hashes}
        audit = self.table(AUDIT_TABLE).c
        for clause in self.dialect.case_filters(audit.file_sha256, file_hashes):
            for sha, position in conn.execute(select(audit.file_sha256, audit[MESSAGE_POSITION]).where(clause)):
                logged[sha].add(position)
        return logged

    def logged_versions(self, conn: Connection, case_ids: list[str]) -> dict[str, int]:
        """How many versions of each case the audit log holds."""
        audit = self.table(AUDIT_TABLE).c
        counts = dict.fromkeys(case_ids, 0)
        for clause in self.dialect.case_filters(audit[CASE_KEY], case_ids):
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
                    file_size_bytes=staged.file_size_bytes,
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

    def _in_one_transaction(
        self, load: Callable[[Connection], list[LoadOutcome]], load_mode: LoadMode, started_at: datetime
    ) -> list[LoadOutcome]:
        """Run ``load`` and record its outcomes in one transaction, again on a transient error."""
        clock = time.perf_counter()
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
                if attempt == self.max_attempts or not self.dialect.is_retryable(cause):
                    raise
                log.warning("retrying a load after a transient database error (attempt %d): %s", attempt, type(cause).__name__)
                time.sleep(0.05 * attempt)
        raise AssertionError("unreachable")

    def _record_history(self, conn: Connection, outcomes: list[LoadOutcome], load_mode: LoadMode, started_at: datetime) -> None:
        if load_mode == LoadMode.DELTA:
            outcomes = self._not_loaded_before(conn, outcomes)
            if not outcomes:
                return
        finished_at = utc_now()
        self.dialect.upsert_history(
            conn,
            self.table(FILE_HISTORY_TABLE),
            [
                {
                    **{key: value for key, value in o.as_dict().items() if key != "duration_seconds"},
                    "load_mode": LoadMode(load_mode).value,
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
        for clause in self.dialect.case_filters(history.c.file_sha256, list(by_hash)):
            for row in conn.execute(select(history).where(clause, history.c.status.in_(FINAL_STATUSES))).mappings():
                outcome = by_hash[row["file_sha256"]]
                for name in outcome.as_dict():
                    if name not in ("file_name", "file_sha256") and row[name] is not None:
                        setattr(outcome, name, row[name])
                outcome.error = row["error"]
                recorded.add(outcome.file_sha256)
        return [outcome for outcome in outcomes if outcome.file_sha256 not in recorded]

    def _write_status(self, files: list[StagedFile], load_mode: LoadMode, status: str, error: str | None, started_at: datetime) -> None:
        """The files' history rows, in a transaction of their own (``running`` before a load, ``failed`` after one)."""
        outcomes = [
            LoadOutcome(file_name=f.file_name, file_sha256=f.file_sha256, file_size_bytes=f.file_size_bytes, status=status, error=error)
            for f in files
        ]
        with self.engine.begin() as conn:
            self._record_history(conn, outcomes, load_mode, started_at)

class _LoadRun:
    """What one load transaction has seen so far."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.logged: dict[str, set[int]] = {}  # by file: message positions in the audit log before this transaction
        self.prior: dict[str, int] = {}  # by case: versions in the audit log before this transaction
        self.counts: dict[str, int] = {}  # by case: versions in the audit log, this transaction's included
        self.counted: dict[str, int] = {}  # by case: the count written into the master row this transaction wrote
        self.row_changes: Counter[str] = Counter()  # by table: rows inserted minus rows deleted


def _files_if_staged(staged_files: Callable[[], list[StagedFile]]) -> list[StagedFile]:
    """The files staged; if their staging failed, those it was staging when it did (when it knows them)."""
    try:
        return staged_files()
    except StagingError as exc:
        return exc.staged_files()
    except Exception:  # noqa: BLE001 - the staging error itself is what the caller reports
        return []


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


