"""The IO manager of the normalized tables, implemented by the loader plugin of the DSN: it reads them.

Every table of a run is written by one call of the load path, in the op: each file staged in
worker processes and bulk-loaded (COPY on PostgreSQL) in *one transaction across all tables*, so a
file's rows are never visible in some tables and missing from others. The op then reports each
table with a ``MaterializeResult``, which Dagster hands to no IO manager: the outputs are handled
in the op. (Dagster's ``DbIOManager`` writes each output on its own, which would split a file's
rows over as many transactions as tables.)

Reading: ``load_input`` returns a table as a pandas DataFrame: the whole table, or for a consumer
of the file-partitioned ``etl_file_history``, the rows of its files; only the columns an input names
in its ``columns`` metadata when it names them (as Dagster's ``DbIOManager`` reads them). A whole
table of a database holding years of cases does not fit in memory: name the columns, or query the
database.
"""

from typing import Any

import pandas as pd
from dagster import ConfigurableIOManager, InputContext, OutputContext

from eudravig_assets.resources import EudravigDatabase
from py_load_eudravigilance.sources import key_for_partition


class LoaderIOManager(ConfigurableIOManager):
    """Reads the tables the loader plugin of the DSN wrote, with SQLAlchemy Core, for downstream assets."""

    database: EudravigDatabase

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        # The op reports every table with a MaterializeResult, which Dagster hands to no IO manager: an output that
        # arrives here was meant to be written on its own, outside the load's transaction
        raise TypeError(
            f"{context.asset_key.to_user_string()}: the ICSR tables are written by the load in the op (one transaction per file) "
            "and reported with MaterializeResult; an IO manager cannot write them one by one"
        )

    def load_input(self, context: InputContext) -> pd.DataFrame:
        table = context.asset_key.path[-1]
        files = None
        if context.has_asset_partitions and context.step_context.has_partitions:
            # Only etl_file_history is partitioned (by file): a partitioned consumer reads its files' rows
            files = [key_for_partition(key) for key in context.asset_partition_keys]
        columns = (context.definition_metadata or {}).get("columns")
        return self.database.reader().read_frame(table, files, columns)
