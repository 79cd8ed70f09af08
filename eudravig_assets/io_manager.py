"""The IO manager of the normalized tables, implemented by the loader plugin of the target DSN.

Writing: every table asset of a run receives the same :class:`LoadBatch`, committed once through
the loader (by the asset op, or by the first table handed here): each file is staged in worker
processes and bulk-loaded (COPY on PostgreSQL) in *one transaction across all tables*; each table
then only reports what landed. So although each table is its own asset, a file's rows are never
visible in some tables and missing from others, and no table is reported materialized before its
rows are committed.

Reading: ``load_input`` returns a table as a pandas DataFrame: the whole table, or for a consumer
of the file-partitioned ``etl_file_history``, the rows of its files.
"""

from typing import Any

import pandas as pd
from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext

from eudravig_assets.resources import EudravigDatabase
from py_load_eudravigilance.pipeline import LoadBatch, RunSummary
from py_load_eudravigilance.schema import AUDIT_TABLE
from py_load_eudravigilance.sources import key_for_partition

RUN_LEVEL_TABLES = ("icsr_master", AUDIT_TABLE)
MAX_LISTED_FILES = 50


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
    }


class LoaderIOManager(ConfigurableIOManager):
    """Writes table assets through the loader plugin; reads them back with SQLAlchemy Core."""

    database: EudravigDatabase

    def handle_output(self, context: OutputContext, obj: LoadBatch) -> None:
        summary = obj.commit(self.database.loader())  # committed once, by the op or by the first table handled
        table = context.asset_key.path[-1]
        rows = sum(outcome.row_counts.get(table, 0) for outcome in summary.outcomes)
        # Rows the parser produced from the run's files, all versions: more than the table gains when versions are
        # replaced or skipped (dagster/row_count, set by the op, is the table's size)
        metadata: dict[str, Any] = {"rows_parsed_from_files": rows, "database": self.database.display_name}
        if table in RUN_LEVEL_TABLES:
            metadata.update(summary_metadata(summary))
        context.add_output_metadata(metadata)

    def load_input(self, context: InputContext) -> pd.DataFrame:
        table = context.asset_key.path[-1]
        files = None
        if context.has_asset_partitions and context.step_context.has_partitions:
            # Only etl_file_history is partitioned (by file): a partitioned consumer reads its files' rows
            files = [key_for_partition(key) for key in context.asset_partition_keys]
        return self.database.reader().read_frame(table, files)
