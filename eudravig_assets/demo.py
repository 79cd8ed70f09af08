"""``make demo``: load a folder of files through the Dagster definitions, in process, and report.

Registers one partition per file in the Dagster instance (``$DAGSTER_HOME``, so ``dagster dev``
shows the run afterwards) and runs the ``load_icsr_files`` job over all of them as one run.
"""

import argparse
import sys
from collections.abc import Sequence

from dagster import AssetKey, DagsterInstance
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from sqlalchemy import func, select

from eudravig_assets.definitions import build_definitions
from eudravig_assets.partitions import icsr_files
from eudravig_assets.resources import EudravigDatabase, EudravigSource
from py_load_eudravigilance.pipeline import redact_dsn
from py_load_eudravigilance.schema import CASE_TABLE_NAMES
from py_load_eudravigilance.settings import DEFAULT_DSN
from py_load_eudravigilance.signals import STATISTICS_TABLE
from py_load_eudravigilance.sources import list_objects, parse_location, partition_key_for

# What the demo suggests looking at when it ends (a test runs them on a loaded database)
SUGGESTED_QUERIES = (
    "select safetyreportid, is_nullified from icsr_master limit 5",
    f"select drug, event_code, event_name, a, prr, ic025, signal from {STATISTICS_TABLE} order by ic025 desc limit 5",
)


def database_client(dsn: str) -> str:
    """How to open the database to look at it: its own client; never the DSN as given, which may hold a password."""
    if dsn.startswith("sqlite:///"):
        return f"sqlite3 {dsn.removeprefix('sqlite:///')}"
    return f"(your client on {redact_dsn(dsn)})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eudravig_assets.demo", description=__doc__)
    parser.add_argument("source", help="folder of E2B(R3) files")
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    args = parser.parse_args(argv)

    keys = [partition_key_for(obj.key) for obj in list_objects(parse_location(args.source))]
    if not keys:
        sys.stderr.write(f"error: no .xml files in {args.source}\n")
        return 1
    database = EudravigDatabase(dsn=args.dsn)
    defs = build_definitions(database, EudravigSource(source_uri=args.source))
    instance = DagsterInstance.get()
    known = set(instance.get_dynamic_partitions(icsr_files.name))
    instance.add_dynamic_partitions(icsr_files.name, [key for key in keys if key not in known])
    wanted = set(keys)
    ordered = [key for key in instance.get_dynamic_partitions(icsr_files.name) if key in wanted]
    # The run's events are in the instance (`make ui` shows them); the console gets warnings and errors only
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    result = defs.resolve_job_def("load_icsr_files").execute_in_process(
        instance=instance,
        run_config=quiet,
        tags={ASSET_PARTITION_RANGE_START_TAG: ordered[0], ASSET_PARTITION_RANGE_END_TAG: ordered[-1]},
        raise_on_error=False,
    )

    master = next((e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "icsr_master"), None)
    if master is None:
        sys.stderr.write("error: the load failed; see the run in the Dagster UI or etl_file_history\n")
        return 1
    # What the automation sensor does after a load in `dagster dev`: refresh the signal statistics
    statistics = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[AssetKey(STATISTICS_TABLE)], run_config=quiet, raise_on_error=False
    )
    signals = next((e.materialization.metadata for e in statistics.get_asset_materialization_events()), {})
    meta = {key: value.value for key, value in master.materialization.metadata.items()}
    checks = [*result.get_asset_check_evaluations(), *statistics.get_asset_check_evaluations()]
    failed_checks = [f"{c.asset_key.path[-1]}.{c.check_name}" for c in checks if not c.passed]
    reader = database.reader()
    with reader.engine.connect() as conn:
        rows = {table: conn.scalar(select(func.count()).select_from(reader.table(table))) for table in CASE_TABLE_NAMES}

    print(f"Loaded {args.source} through Dagster (run {result.run_id[:8]}) into {redact_dsn(args.dsn)}")
    print(
        f"  files:    {meta['files_loaded']} loaded, {meta['files_skipped_already_loaded']} already loaded, {meta['files_failed']} failed"
    )
    print(
        f"  cases:    {meta['cases_inserted']} loaded, {meta['cases_updated']} updated by follow-ups, "
        f"{meta['cases_skipped_older']} versions skipped as older, {meta['cases_nullified']} nullified"
    )
    print(f"  messages: {meta['messages']} read, {meta['messages_rejected']} rejected ({meta['cases_per_second']} ICSRs/s)")
    print(f"  checks:   {len(checks) - len(failed_checks)} passed, {len(failed_checks)} failed {' '.join(failed_checks)}".rstrip())
    if signals:
        changed = f"{signals['changed_pairs'].value} changed, {signals['signals_among_changed_pairs'].value} of them signals"
        print(f"  signals:  {signals['pairs'].value} drug-event pairs, {changed} (view {STATISTICS_TABLE})")
    else:
        print(f"  signals:  {STATISTICS_TABLE} failed to refresh; see its run in the Dagster UI")
    print("  rows per table:")
    for table, count in rows.items():
        if count:
            print(f"    {table:<28} {count}")
    print("Look at it:")
    print("  make ui                         # Dagster UI on http://localhost:3000 with this run, assets and checks")
    client = database_client(args.dsn)
    for query in SUGGESTED_QUERIES:
        print(f"  {client} '{query}'")
    return 0 if result.success and statistics.success else 2


if __name__ == "__main__":
    sys.exit(main())
