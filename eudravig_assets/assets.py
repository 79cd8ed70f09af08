"""Software-defined assets: the raw ICSR files and every table they load into.

``icsr_source_files`` is one partition per source file (reported by the arrival sensors). The
normalized tables, the audit log, the quarantine and the file history are the outputs of one
multi-asset downstream of the files, so the UI shows the lineage file -> tables and a run over any
set of files (sensor batch or backfill) loads them in one step.

Only ``etl_file_history`` (one row per file) is partitioned by file: its partitions say which files
are loaded. The other tables are materialized once per run. Dagster records every asset partition
as its own events, so partitioning all 37 tables by file made each file cost 74 events (about 1.5 s
of Dagster bookkeeping per file, whatever its size); this way a file costs two.
"""

import os
import queue
from collections import Counter
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from datetime import datetime, timezone
from functools import partial
from typing import Any

from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    AssetSpec,
    BackfillPolicy,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    multi_asset,
)
from sqlalchemy import select
from sqlalchemy.engine import Connection

from eudravig_assets.batch import LoadBatch
from eudravig_assets.partitions import icsr_files
from eudravig_assets.resources import EudravigDatabase, EudravigSource
from loaders.contract import FAILED, LoadOutcome
from loaders.dialect import dialect_for
from loaders.readback import TableReader
from py_load_eudravigilance.mapping.dictionary import BATCH_HEADER, iter_tables
from py_load_eudravigilance.pipeline import COUNTERS, RunSummary
from py_load_eudravigilance.quality import (
    LISTED_ROWS,
    CheckScope,
    TableChecks,
    cases_listed,
    check_table,
    has_value_rules,
    markdown_rows,
    parsed_rows,
    rejected_messages,
)
from py_load_eudravigilance.schema import AUDIT_TABLE, CASE_TABLE_NAMES, FILE_HISTORY_TABLE, METADATA, QUARANTINE_TABLE
from py_load_eudravigilance.sources import key_for_partition, partition_key_for

# A backfill of many files runs as few runs: dynamic partitions are chunked in order of arrival
FILES_PER_BACKFILL_RUN = 500
# Failed files named in a failed step's description, file hashes listed in a run's metadata
MAX_LISTED_FILES = 50
SECTION_GROUPS = {
    "C": "c_report",
    "D": "d_patient",
    "E": "e_reactions",
    "F": "f_tests",
    "G": "g_drugs",
    "H": "h_narrative",
    "N": "n_batch",
}
ETL_GROUP = "etl_audit"
SOURCE_GROUP = "sources"

icsr_source_files = AssetSpec(
    "icsr_source_files",
    partitions_def=icsr_files,
    group_name=SOURCE_GROUP,
    description="E2B(R3) ICSR files as received (local folder or S3 prefix): one partition per file. "
    "Reported by the arrival sensors; partition keys are the object keys with unsafe characters escaped as ~XX.",
)


def _column_schema(table: str) -> TableSchema:
    sql_table = METADATA.tables[table]
    return TableSchema(columns=[TableColumn(c.name, str(c.type).lower(), description=c.comment or "") for c in sql_table.columns])


def _table_spec(name: str, description: str, group: str, metadata: dict[str, Any]) -> AssetSpec:
    return AssetSpec(
        name,
        deps=[icsr_source_files],
        description=description,
        group_name=group,
        metadata={"dagster/column_schema": _column_schema(name), **metadata},
        # A file's partition of its history row; the tables hold many files' cases and are not partitioned
        partitions_def=icsr_files if name == FILE_HISTORY_TABLE else None,
        # A file that failed leaves its partition unmaterialized (the op reports each file's partition itself)
        skippable=name == FILE_HISTORY_TABLE,
    ).with_io_manager_key("loader_io_manager")


def _table_specs() -> dict[str, AssetSpec]:
    """One asset per table, described and grouped from the data dictionary."""
    specs = {}
    for spec, _ancestors in [*iter_tables(), (BATCH_HEADER, ())]:
        section = spec.element.removeprefix("FDA.")[0]
        description = f"{spec.element}: {spec.description}"
        specs[spec.name] = _table_spec(spec.name, description, SECTION_GROUPS[section], {"e2b_element": spec.element})
    for name, text in (
        (QUARANTINE_TABLE, "Messages and files that could not be loaded, with the reason"),
        (AUDIT_TABLE, "Every received version of every case with the message's XML as received (append-only)"),
        (FILE_HISTORY_TABLE, "One row per source file: status, counts, duration and error; one partition per file"),
    ):
        specs[name] = _table_spec(name, text, ETL_GROUP, {})
    return specs


TABLE_SPECS = _table_specs()
CHECKED_TABLES = (*CASE_TABLE_NAMES, BATCH_HEADER.name)
# Tables with a rule on their values: on the others the rules left (keys present, column types) are the table's own
# constraints, which the database enforces on every row, so a check of them could never fail
CONFORMANCE_CHECKED = tuple(table for table in CHECKED_TABLES if has_value_rules(table))
# The checks are of the load, not of one table (a file's rows land in every table in one transaction): each is one check
# on the case table the others hang off. Dagster writes three events per check and looks up its asset's latest
# materialization: one conformance check per table cost a 10,000-case run 0.6-0.9 s (1.30-1.40x the CLI against
# 1.16-1.20x with one check)
LOAD_CHECKED_TABLE = "icsr_master"


def _check_specs() -> list[AssetCheckSpec]:
    specs = [
        AssetCheckSpec(
            "conforms_to_data_dictionary",
            asset=LOAD_CHECKED_TABLE,
            description="The data dictionary's pandera rules, evaluated in the database over the run's rows of the "
            f"{len(CONFORMANCE_CHECKED)} tables with a rule on their values: E2B code lists, 8-digit MedDRA codes, ISO country "
            "codes, keys present (one check for the load; a failure lists its tables, rules and first rows)",
        )
    ]
    specs.append(
        AssetCheckSpec(
            "rows_match_parser",
            asset=LOAD_CHECKED_TABLE,
            description="Every case table's rows of the loaded cases equal the rows the parser produced for their current "
            "versions, and every row's case is in icsr_master (one check for the load, which writes all tables of a file "
            "in one transaction; a failure lists its tables)",
        )
    )
    specs.append(AssetCheckSpec("no_rejected_messages", asset=QUARANTINE_TABLE, description="No message of these files was rejected"))
    return specs


# Runs of the full_reload job carry this tag: empty every table, then load all files
LOAD_MODE_TAG = "eudravig/load_mode"


class LoadConfig(Config):
    workers: int = os.cpu_count() or 1  # processes parsing files in parallel
    # A run of the tables alone checks the files loaded since the checks last ran; this checks every row instead
    check_every_row: bool = False


@multi_asset(
    specs=list(TABLE_SPECS.values()),
    check_specs=_check_specs(),
    # Dagster allows assets of one multi-asset to be partitioned differently only when it can be subset
    can_subset=True,
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=FILES_PER_BACKFILL_RUN),
    name="icsr_tables",
)
def icsr_tables(context: AssetExecutionContext, config: LoadConfig, source: EudravigSource, database: EudravigDatabase):  # type: ignore[no-untyped-def]
    """Load the run's files into every table (one transaction per file), then check what landed.

    The files are those of the run's ``etl_file_history`` partitions. A run of the tables alone (a
    backfill runs them after the file partitions, as a run of their own) loads nothing: it reports
    the tables and checks every row.
    """
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    loads_files = FILE_HISTORY_TABLE in selected
    partition_keys = list(context.partition_keys) if loads_files else []
    mode = context.run.tags.get(LOAD_MODE_TAG, "delta")
    if mode not in ("delta", "full"):
        raise Failure(description=f"{LOAD_MODE_TAG} must be 'delta' or 'full', not {mode!r}")
    if mode == "full":
        everything = set(context.instance.get_dynamic_partitions(icsr_files.name))
        if set(partition_keys) != everything:
            raise Failure(
                description=f"a full reload empties every table, so it must cover all {len(everything)} file partitions "
                f"in one run (this run has {len(partition_keys)}); launch it with the whole partition range"
            )
    batch = LoadBatch(
        source.location(),
        [key_for_partition(key) for key in partition_keys],
        mode=mode,
        workers=config.workers,
        quarantine=source.quarantine(),
    )
    # Every table but the file history goes through the IO manager; each file's history partition is reported below
    tables = [name for name in TABLE_SPECS if name in selected and name != FILE_HISTORY_TABLE]
    summary = (yield from _committed_reporting_files(batch, database)) if loads_files else None
    # The checks cover what the run loaded (a run of the tables alone: every row); they are queries the database
    # answers while Dagster records the materializations
    reader = database.reader()
    if summary is not None:
        scope = CheckScope.of_files(o.file_sha256 for o in summary.outcomes)
    else:
        scope = _tables_run_scope(context, reader, config.check_every_row)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="checks") as checking:
        checks = checking.submit(_run_checks, reader, scope, context.selected_asset_check_keys)
        totals = reader.row_counts(tables)  # kept exact by the loads: nothing is counted
        # The op wrote every table in the load's transactions: each is reported, not handed to an IO manager
        for table in tables:
            metadata = {**table_metadata(database, table, totals[table]), **load_metadata(table, batch.summary, database)}
            yield MaterializeResult(asset_key=table, metadata=metadata)
        yield from checks.result()
    if summary is not None and summary.failures:
        # After the other files committed, their partitions and the tables materialized and the checks ran: the step
        # fails, and so do the failed files' partitions (planned, never materialized)
        listing = "; ".join(f"{name}: {reason}" for name, reason in summary.failures[:MAX_LISTED_FILES])
        raise Failure(description=f"{len(summary.failures)} of {summary.files_found} files failed to load: {listing}")


def table_metadata(database: EudravigDatabase, table: str, rows: int) -> dict[str, Any]:
    """Dagster's standard table metadata: the table's name and its rows after the run."""
    return {"dagster/table_name": database.table_name(table), "dagster/row_count": MetadataValue.int(rows)}


# Tables whose materialization also carries what the whole run did
RUN_LEVEL_TABLES = ("icsr_master", AUDIT_TABLE)


def load_metadata(table: str, summary: RunSummary | None, database: EudravigDatabase) -> dict[str, Any]:
    """What the run's load did to ``table``: the rows the parser produced from its files (all versions: more than the
    table gains when versions are replaced or skipped), and for the run-level tables the run's counters."""
    summary = summary or RunSummary()  # a run of the tables alone loaded nothing
    rows = sum(outcome.row_counts.get(table, 0) for outcome in summary.outcomes)
    metadata: dict[str, Any] = {"rows_parsed_from_files": rows, "database": database.display_name}
    if table in RUN_LEVEL_TABLES:
        metadata.update(summary_metadata(summary))
    return metadata


def summary_metadata(summary: RunSummary) -> dict[str, Any]:
    """What the load did, for materialization metadata: counts, hashes, speed; never credentials."""
    totals = summary.totals()
    hashes = {o.file_name: o.file_sha256 for o in summary.outcomes}
    listed = dict(list(hashes.items())[:MAX_LISTED_FILES])
    return {
        "files_loaded": len(summary.outcomes),
        "files_skipped_already_loaded": summary.files_skipped,
        "files_failed": len(summary.failures),
        "messages": totals["messages_total"],
        "cases_inserted": totals["cases_inserted"],
        "cases_updated": totals["cases_updated"],
        "cases_skipped_older": totals["cases_skipped_older"],
        "cases_nullified": totals["cases_nullified"],
        "messages_rejected": totals["messages_rejected"],
        "file_sha256": MetadataValue.json(listed),
        "duration_seconds": round(summary.duration_seconds, 3),
        "cases_per_second": round(summary.cases_per_second, 1),
        "mapper": summary.mapper or "none",  # compiled or python: which staging core mapped the messages
    }


def _committed_reporting_files(batch: LoadBatch, database: EudravigDatabase):  # type: ignore[no-untyped-def]
    """Commit the batch, yielding each file's events as soon as its load ends: Dagster writes them while the workers
    still parse the next files, instead of after the whole load. Returns the run's summary."""
    outcomes: queue.SimpleQueue[LoadOutcome | None] = queue.SimpleQueue()
    partition_of = {name: partition_key_for(key) for key, name in zip(batch.keys, batch.file_names, strict=True)}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="load") as loading:
        load = loading.submit(batch.commit, database.loader(), outcomes.put)
        load.add_done_callback(lambda _: outcomes.put(None))
        while (outcome := outcomes.get()) is not None:
            yield from _file_events(outcome.file_name, partition_of[outcome.file_name], outcome, database)
        summary = load.result()
    reported = {outcome.file_name for outcome in summary.outcomes}
    for name, partition in partition_of.items():
        if name not in reported:  # its content was loaded before
            yield from _file_events(name, partition, None, database)
    return summary


def _file_events(name: str, partition: str, outcome: LoadOutcome | None, database: EudravigDatabase):  # type: ignore[no-untyped-def]
    """A file's partition: its source file observed, and its history partition materialized with the file's own
    outcome, unless it failed; a file already loaded before (no outcome) counts as loaded."""
    yield AssetMaterialization(asset_key=icsr_source_files.key, partition=partition, metadata={"file_name": name})
    if outcome is not None and outcome.status == FAILED:
        # Not materialized, so the partition shows failed; the observation puts why on the partition's page
        yield AssetObservation(asset_key=FILE_HISTORY_TABLE, partition=partition, metadata=file_metadata(name, outcome))
        return
    metadata = {**file_metadata(name, outcome), **table_metadata(database, FILE_HISTORY_TABLE, 1)}  # the file's one row
    yield AssetMaterialization(asset_key=FILE_HISTORY_TABLE, partition=partition, metadata=metadata)


def file_metadata(name: str, outcome: LoadOutcome | None) -> dict[str, Any]:
    """One file's load, as its history partition shows it."""
    if outcome is None:
        return {"file_name": name, "status": "skipped", "reason": "its content was loaded before (same SHA-256)"}
    return {
        "file_name": name,
        "status": outcome.status,
        "file_sha256": outcome.file_sha256,
        **{counter: getattr(outcome, counter) for counter in COUNTERS},
        **({"unmapped_paths": MetadataValue.json(outcome.unmapped_paths)} if outcome.unmapped_paths else {}),
        "duration_seconds": round(outcome.duration_seconds, 3),
        **({"error": outcome.error} if outcome.error else {}),
        **({"rejected_messages": MetadataValue.md(rejections_table(outcome))} if outcome.rejections else {}),
    }


def rejections_table(outcome: LoadOutcome) -> str:
    """The file's first rejected messages as Markdown (etl_quarantine holds every one)."""
    rows = [
        {"position": position, "case_id": case_id, "element": element, "reason": reason}
        for position, case_id, element, reason in outcome.rejections
    ]
    more = outcome.messages_rejected - len(rows)
    return markdown_rows(rows) + (f"\n\n... and {more} more in etl_quarantine" if more > 0 else "")


def _is_selected(selected: AbstractSet[AssetCheckKey], table: str, check: str) -> bool:
    """Whether the run evaluates ``check`` on ``table`` (a run can be a subset of the checks)."""
    return AssetCheckKey(AssetKey(table), check) in selected


def _tables_run_scope(context: AssetExecutionContext, reader: TableReader, every_row: bool) -> CheckScope:
    """What a run of the tables alone checks (a backfill's last run, whose file runs loaded and left the checks to it):
    the files whose load finished since a run last evaluated the checks, found through the history's index on
    ``finished_at``; every row the first time, or when ``every_row`` is asked."""
    selected = sorted(context.selected_asset_check_keys, key=lambda key: key.to_user_string())
    if every_row or not selected:
        return CheckScope.everything()
    storage = context.instance.event_log_storage
    previous = [r for r in storage.get_asset_check_execution_history(selected[0], limit=2) if r.run_id != context.run.run_id]
    if not previous:
        return CheckScope.everything()
    since = datetime.fromtimestamp(previous[0].create_timestamp, timezone.utc)
    history = reader.table(FILE_HISTORY_TABLE)
    with reader.engine.connect() as conn:
        return CheckScope.of_files(conn.scalars(select(history.c.file_sha256).where(history.c.finished_at >= since)))


def _run_checks(reader: TableReader, scope: CheckScope, selected: AbstractSet[AssetCheckKey]) -> list[AssetCheckResult]:
    """The selected checks' results, each with how many rows it checked and how many failed (Dagster plots numeric
    check metadata). One query per table answers all of its checks; a check nobody selected costs nothing."""
    matching = _is_selected(selected, LOAD_CHECKED_TABLE, "rows_match_parser")
    conforming = _is_selected(selected, LOAD_CHECKED_TABLE, "conforms_to_data_dictionary")
    rules_asked = {name: conforming and name in CONFORMANCE_CHECKED for name in CHECKED_TABLES}
    wanted = {name: asked for name, asked in rules_asked.items() if asked or (matching and name in CASE_TABLE_NAMES)}
    queries: list[tuple[str, Callable[[Connection, CheckScope], Any]]] = [
        (name, partial(check_table, table=reader.table, name=name, with_rules=rules_too)) for name, rules_too in wanted.items()
    ]
    if matching:
        queries.append(("parsed", partial(parsed_rows, table=reader.table)))
    if _is_selected(selected, QUARANTINE_TABLE, "no_rejected_messages"):
        queries.append(("rejected", partial(rejected_messages, table=reader.table)))
    answers = _answered(reader, scope, queries, on_cases=set(wanted))
    return _check_results(answers, wanted, matching, conforming)


def _answered(
    reader: TableReader, scope: CheckScope, queries: list[tuple[str, Callable[[Connection, CheckScope], Any]]], on_cases: AbstractSet[str]
) -> dict[str, Any]:
    """Each query's answer by its name, the queries dealt out over as many connections as the dialect reads on at once.
    The run's cases are listed on a connection only for the queries that read them (``on_cases``: the tables' checks)."""
    if not queries:
        return {}  # no check selected (a backfill's file runs): nothing is read
    dialect = dialect_for(reader.engine)

    def answer(share: list[tuple[str, Callable[[Connection, CheckScope], Any]]]) -> dict[str, Any]:
        with reader.engine.begin() as conn:
            if scope.file_hashes is not None:
                # A day's run is a few thousand keys in tables that grow for years: looked up through the keys, not
                # scanned (PostgreSQL hashed a 1.2M-row child table whole for 2,000 cases: 250 ms a table)
                dialect.run_scoped_reads(conn)
            reads_cases = any(name in on_cases for name, _ in share)
            with cases_listed(conn, reader.table, scope) if reads_cases else nullcontext(scope) as listed:
                return {name: ask(conn, scope=listed) for name, ask in share}

    connections = max(1, min(dialect.reading_connections, len(queries)))
    with ThreadPoolExecutor(max_workers=connections, thread_name_prefix="check-queries") as pool:
        shares = pool.map(answer, [queries[start::connections] for start in range(connections)])
        return {name: found for share in shares for name, found in share.items()}


def _check_results(answers: dict[str, Any], wanted: dict[str, bool], matching: bool, conforming: bool) -> list[AssetCheckResult]:
    """The check results from the queries' answers (``wanted``: each checked table, whether its rules were asked)."""
    results: list[AssetCheckResult] = []
    parsed = answers.get("parsed", {})
    integrity: Counter[str] = Counter()
    mismatched: list[dict[str, Any]] = []
    conformance: dict[str, TableChecks] = {}  # the tables whose rules were evaluated
    for name, rules_asked in wanted.items():
        counted = matching and name in CASE_TABLE_NAMES
        found = answers[name]
        if counted:
            counts = {
                "rows_parsed": parsed[name],
                "rows_of_current_versions": found.rows_current or 0,
                "rows_without_their_case": found.orphans or 0,
            }
            failing = abs(counts["rows_parsed"] - counts["rows_of_current_versions"]) + counts["rows_without_their_case"]
            integrity.update(rows_checked=found.rows_checked, rows_failing=failing, **counts)
            if failing:
                mismatched.append({"table": name, **counts})
        if rules_asked:
            conformance[name] = found
    if conforming:
        results.append(_conformance_result(conformance))
    if matching:
        totals = ("rows_checked", "rows_failing", "rows_parsed", "rows_of_current_versions", "rows_without_their_case")
        metadata = {key: integrity[key] for key in totals}
        metadata["tables_checked"] = len(CASE_TABLE_NAMES)
        if mismatched:
            metadata["tables_failing"] = MetadataValue.md(markdown_rows(mismatched))
        passed = not mismatched
        results.append(AssetCheckResult(check_name="rows_match_parser", asset_key=LOAD_CHECKED_TABLE, passed=passed, metadata=metadata))
    if "rejected" in answers:
        rejected, listed = answers["rejected"]
        metadata = {"rows_checked": rejected, "rows_failing": rejected}
        if listed:
            metadata["rejected_messages"] = MetadataValue.md(markdown_rows(listed))
        results.append(
            AssetCheckResult(
                check_name="no_rejected_messages",
                asset_key=QUARANTINE_TABLE,
                passed=rejected == 0,
                severity=AssetCheckSeverity.WARN,
                metadata=metadata,
            )
        )
    return results


def _conformance_result(tables: dict[str, TableChecks]) -> AssetCheckResult:
    """``conforms_to_data_dictionary`` for the load: totals over its tables (plotted), each table's rows checked, and for a
    failure the tables, rules and first rows (as the database returns them) that break the rules."""
    failing = {name: found for name, found in tables.items() if found.rule_failures}
    metadata: dict[str, Any] = {
        "rows_checked": sum(found.rows_checked for found in tables.values()),
        "rows_failing": sum(found.rows_failing for found in tables.values()),
        "failure_count": sum(found.failure_count for found in tables.values()),
        "tables_checked": len(tables),
        "rows_checked_by_table": MetadataValue.json({name: found.rows_checked for name, found in tables.items()}),
    }
    if failing:
        listed = [
            {"table": name, "rows_checked": found.rows_checked, "rows_failing": found.rows_failing, "failure_count": found.failure_count}
            for name, found in failing.items()
        ]
        metadata["tables_failing"] = MetadataValue.md(markdown_rows(listed))
        metadata["rules_failing"] = MetadataValue.json({name: found.rule_failures for name, found in failing.items()})
        examples = [_example_row(name, example) for name, found in failing.items() for example in found.examples]
        metadata["failures"] = MetadataValue.md(markdown_rows(examples[:LISTED_ROWS]))
    return AssetCheckResult(check_name="conforms_to_data_dictionary", asset_key=LOAD_CHECKED_TABLE, passed=not failing, metadata=metadata)


def _example_row(table: str, example: dict[str, Any]) -> dict[str, Any]:
    """A failing row of any table in one layout: its table, the rule, its key (each table has its own key columns), the
    value at fault."""
    key = ", ".join(f"{column}={value}" for column, value in example.items() if column not in ("rule", "value"))
    return {"table": table, "rule": example["rule"], "row": key, "value": example["value"]}
