"""Reading loaded tables back (SQLAlchemy Core, any dialect): for the Dagster IO manager, the commands and checks.

Rows can be restricted to what given source files brought in: for case tables, the cases whose
current version came from those files; for the bookkeeping tables, the files' own rows. A table's
size comes from ``etl_table_row_counts``, which every load keeps exact: nothing is counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.sql import Select

from py_load_eudravigilance.mapping.catalog import CASE_KEY
from py_load_eudravigilance.schema import CASE_TABLE_NAMES, FILE_HISTORY_TABLE, MASTER_TABLE, ROW_COUNTS_TABLE, schema_table


@dataclass
class TableReader:
    engine: Engine
    schema: str | None = None

    def table(self, name: str) -> Table:
        return schema_table(name, self.schema)

    def select_rows(self, name: str, file_names: Sequence[str] | None = None, columns: Sequence[str] | None = None) -> Select:
        table = self.table(name)
        query = select(*(table.c[column] for column in columns)) if columns else select(table)
        if file_names is None:
            return query
        if name in CASE_TABLE_NAMES:
            # Through the files' hashes (one history row per file), which icsr_master indexes; its file names it does not
            master, history = self.table(MASTER_TABLE), self.table(FILE_HISTORY_TABLE)
            hashes = select(history.c.file_sha256).where(history.c.file_name.in_(bindparam("files", expanding=True)))
            current = select(master.c[CASE_KEY]).where(master.c.source_file_sha256.in_(hashes))
            return query.where(table.c[CASE_KEY].in_(current))
        return query.where(table.c.file_name.in_(bindparam("files", expanding=True)))

    def read_frame(self, name: str, file_names: Sequence[str] | None = None, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The table's rows as a DataFrame (all rows, or those the files brought in), all its columns or ``columns``."""
        with self.engine.connect() as conn:
            return pd.read_sql(self.select_rows(name, file_names, columns), conn, params=_file_params(file_names))

    def row_counts(self, names: Sequence[str]) -> dict[str, int]:
        """Rows in each table now, as the loads keep them in ``etl_table_row_counts``; a table they do not count
        (the file history: one row per file) is counted."""
        counts = self.table(ROW_COUNTS_TABLE)
        with self.engine.connect() as conn:
            listed = select(counts.c.table_name, counts.c.row_count).where(counts.c.table_name.in_(list(names)))
            kept: dict[str, int] = {name: count for name, count in conn.execute(listed)}
            for name in names:
                if name not in kept:
                    kept[name] = conn.scalar(select(func.count()).select_from(self.table(name))) or 0
        return {name: int(kept[name]) for name in names}


def _file_params(file_names: Sequence[str] | None) -> dict[str, Any]:
    """Bind values of the ``files`` parameter of :meth:`TableReader.select_rows` (none when reading everything)."""
    return {"files": list(file_names)} if file_names is not None else {}
