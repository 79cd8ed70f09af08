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

import gc
import os
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetSpec,
    BackfillPolicy,
    Config,
    Failure,
    MetadataValue,
    Output,
    TableColumn,
    TableSchema,
    multi_asset,
)

from eudravig_assets.partitions import icsr_files
from eudravig_assets.resources import EudravigDatabase, EudravigSource
from loaders.contract import FAILED, LoadOutcome
from py_load_eudravigilance.mapping.dictionary import BATCH_HEADER, iter_tables
from py_load_eudravigilance.pipeline import COUNTERS, LoadBatch, RunSummary
from py_load_eudravigilance.quality import Conformance, LoadedCounts, count_loaded_rows, count_table_rows, validate_loaded_table
from py_load_eudravigilance.schema import AUDIT_TABLE, CASE_TABLE_NAMES, CHILD_TABLE_NAMES, FILE_HISTORY_TABLE, METADATA, QUARANTINE_TABLE
from py_load_eudravigilance.sources import key_for_partition, partition_key_for

# A backfill of many files runs as few runs: dynamic partitions are chunked in order of arrival
FILES_PER_BACKFILL_RUN = 500
# Failed files named in a failed step's description
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
SCHEMA_CHECKED = (*CASE_TABLE_NAMES, BATCH_HEADER.name)


def _check_specs() -> list[AssetCheckSpec]:
    specs = [
        AssetCheckSpec(
            "conforms_to_data_dictionary",
            asset=table,
            description="pandera: column types, keys present, E2B code lists, 8-digit MedDRA codes, ISO country codes",
        )
        for table in SCHEMA_CHECKED
    ]
    specs += [
        AssetCheckSpec("every_row_has_its_case", asset=table, description="Referential integrity: each row's case is in icsr_master")
        for table in CHILD_TABLE_NAMES
    ]
    specs += [
        AssetCheckSpec(
            "rows_match_parser",
            asset=table,
            description="Rows of the loaded cases equal the rows the parser produced for their current versions",
        )
        for table in CASE_TABLE_NAMES
    ]
    specs.append(AssetCheckSpec("no_rejected_messages", asset=QUARANTINE_TABLE, description="No message of these files was rejected"))
    return specs


# Runs of the full_reload job carry this tag: empty every table, then load all files
LOAD_MODE_TAG = "eudravig/load_mode"


class LoadConfig(Config):
    workers: int = os.cpu_count() or 1  # processes parsing files in parallel


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
    checked_files = batch.file_names if loads_files else None
    # Every table but the file history goes through the IO manager; each file's history partition is reported below
    tables = [name for name in TABLE_SPECS if name in selected and name != FILE_HISTORY_TABLE]
    summary = batch.commit(database.loader()) if loads_files else None
    if summary is not None:
        yield from _file_events(batch, summary, database)
    # Reading back, counting and validating the loaded rows is work for the database and the CPU:
    # worker processes do it while Dagster records the other tables' materializations
    # Forked from this process, the workers freeze the Dagster heap they inherit, as the parsing workers do
    pool = ProcessPoolExecutor(max_workers=max(1, config.workers), initializer=gc.freeze)
    try:
        counts = pool.submit(count_loaded_rows, database.dsn, database.db_schema, checked_files)
        conformance = {
            table: pool.submit(validate_loaded_table, database.dsn, database.db_schema, table, checked_files)
            for table in SCHEMA_CHECKED
            if _is_selected(context.selected_asset_check_keys, table, "conforms_to_data_dictionary")
        }
        # Each table's size after the run (Dagster plots it per materialization): a quick count, waited for
        totals = count_table_rows(database.dsn, database.db_schema, tables)
        for table in tables:
            yield Output(batch, output_name=table, metadata=table_metadata(database, table, totals[table]))
        yield from _evaluate_checks(counts.result(), conformance, context.selected_asset_check_keys)
    finally:
        pool.shutdown(cancel_futures=True)  # a run stopped midway waits for the tables in progress only
    if summary is not None and summary.failures:
        # After the other files committed, their partitions and the tables materialized and the checks ran: the step
        # fails, and so do the failed files' partitions (planned, never materialized)
        listing = "; ".join(f"{name}: {reason}" for name, reason in summary.failures[:MAX_LISTED_FILES])
        raise Failure(description=f"{len(summary.failures)} of {summary.files_found} files failed to load: {listing}")


def table_metadata(database: EudravigDatabase, table: str, rows: int) -> dict[str, Any]:
    """Dagster's standard table metadata: the table's name and its rows after the run."""
    return {"dagster/table_name": database.table_name(table), "dagster/row_count": MetadataValue.int(rows)}


def _file_events(batch: LoadBatch, summary: RunSummary, database: EudravigDatabase):  # type: ignore[no-untyped-def]
    """Each file's partition: its source file observed, and its history partition materialized with that file's own
    outcome, unless it failed; a file already loaded before counts as loaded."""
    outcomes = {outcome.file_name: outcome for outcome in summary.outcomes}
    for key, name in zip(batch.keys, batch.file_names, strict=True):
        partition = partition_key_for(key)
        yield AssetMaterialization(asset_key=icsr_source_files.key, partition=partition, metadata={"file_name": name})
        outcome = outcomes.get(name)
        if outcome is not None and outcome.status == FAILED:
            continue
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
        "duration_seconds": round(outcome.duration_seconds, 3),
        **({"error": outcome.error} if outcome.error else {}),
    }


def _is_selected(selected: AbstractSet[AssetCheckKey], table: str, check: str) -> bool:
    """Whether the run evaluates ``check`` on ``table`` (a run can be a subset of the checks)."""
    return AssetCheckKey(AssetKey(table), check) in selected


def _evaluate_checks(  # type: ignore[no-untyped-def]
    counts: LoadedCounts, conformance: Mapping[str, "Future[Conformance]"], selected: AbstractSet[AssetCheckKey]
):
    """The selected checks' results, each with how many rows it checked and how many failed (Dagster plots numeric
    check metadata); ``conformance``: each selected table's pandera validation, under way."""
    for table, (parsed, in_table) in counts.rows.items():
        if _is_selected(selected, table, "rows_match_parser"):
            yield AssetCheckResult(
                check_name="rows_match_parser",
                asset_key=table,
                passed=parsed == in_table,
                metadata={"rows_checked": in_table, "rows_failing": abs(parsed - in_table), "rows_parsed": parsed},
            )
    for table, (rows, orphans) in counts.orphans.items():
        if _is_selected(selected, table, "every_row_has_its_case"):
            yield AssetCheckResult(
                check_name="every_row_has_its_case",
                asset_key=table,
                passed=orphans == 0,
                metadata={"rows_checked": rows, "rows_failing": orphans},
            )
    if _is_selected(selected, QUARANTINE_TABLE, "no_rejected_messages"):
        yield AssetCheckResult(
            check_name="no_rejected_messages",
            asset_key=QUARANTINE_TABLE,
            passed=counts.rejected_messages == 0,
            severity=AssetCheckSeverity.WARN,
            metadata={"rows_checked": counts.quarantined_rows, "rows_failing": counts.rejected_messages},
        )
    for table, validation in conformance.items():
        result = validation.result()
        metadata: dict[str, Any] = {
            "rows_checked": result.rows_checked,
            "rows_failing": result.rows_failing,
            "failure_count": result.failure_count,
        }
        if not result.passed:
            metadata["failures"] = MetadataValue.md(result.cases.head(20).to_markdown(index=False))
        yield AssetCheckResult(check_name="conforms_to_data_dictionary", asset_key=table, passed=result.passed, metadata=metadata)
