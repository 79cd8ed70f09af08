"""Reading loaded tables back (SQLAlchemy Core, any dialect): for checks and downstream consumers.

Rows can be restricted to what given source files brought in: for case tables, the cases whose
current version came from those files; for the bookkeeping tables, the files' own rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.sql import Select

from py_load_eudravigilance.mapping.catalog import CASE_KEY
from py_load_eudravigilance.schema import (
    AUDIT_TABLE,
    CASE_TABLE_NAMES,
    CHILD_TABLE_NAMES,
    MESSAGE_POSITION,
    QUARANTINE_TABLE,
    build_metadata,
)
from py_load_eudravigilance.views import count_where

MASTER = "icsr_master"
# A table read in parts comes in DataFrames of about this size (the first part's rows decide how many
# rows that is): a large backfill's rows never sit in memory at once, and few parts keep pandas fast
FRAME_BYTES = 8 * 2**20
FIRST_FRAME_ROWS = 1_000


@dataclass
class TableReader:
    engine: Engine
    schema: str | None = None

    def __post_init__(self) -> None:
        self.metadata = build_metadata(self.schema)

    def table(self, name: str) -> Table:
        return self.metadata.tables[f"{self.schema}.{name}" if self.schema else name]

    def _cases_from(self, file_names: Sequence[str]) -> Select:
        master = self.table(MASTER)
        return select(master.c[CASE_KEY]).where(master.c.source_file_name.in_(bindparam("files", expanding=True)))

    def select_rows(self, name: str, file_names: Sequence[str] | None = None) -> Select:
        table = self.table(name)
        query = select(table)
        if file_names is None:
            return query
        if name in CASE_TABLE_NAMES:
            return query.where(table.c[CASE_KEY].in_(self._cases_from(file_names)))
        return query.where(table.c.file_name.in_(bindparam("files", expanding=True)))

    def read_frame(self, name: str, file_names: Sequence[str] | None = None) -> pd.DataFrame:
        """The table's rows as a DataFrame (all rows, or those the files brought in)."""
        with self.engine.connect() as conn:
            return pd.read_sql(self.select_rows(name, file_names), conn, params=_file_params(file_names))

    def iter_frames(
        self, name: str, file_names: Sequence[str] | None = None, frame_bytes: int = FRAME_BYTES, first_rows: int = FIRST_FRAME_ROWS
    ) -> Iterator[pd.DataFrame]:
        """The rows of :meth:`read_frame` in parts of about ``frame_bytes``, numbered through (index) as one frame.

        The database streams them (a server-side cursor where the driver has one), so memory stays
        bounded however many files a run loaded. Values arrive as :meth:`read_frame` gives them.
        """
        offset, rows = 0, first_rows
        with self.engine.connect().execution_options(stream_results=True) as conn:
            result = conn.execute(self.select_rows(name, file_names), _file_params(file_names))
            columns = list(result.keys())
            while records := result.fetchmany(rows):
                # pandas.read_sql builds its frames the same way (from_records, floats coerced)
                frame = pd.DataFrame.from_records(records, columns=columns, coerce_float=True)
                frame.index += offset
                if offset == 0:
                    row_bytes = frame.memory_usage(deep=True).sum() / len(frame)
                    rows = max(first_rows, int(frame_bytes / max(row_bytes, 1)))
                offset += len(frame)
                yield frame

    def orphan_counts(self) -> dict[str, tuple[int, int]]:
        """Per child table: (its rows, rows whose case is missing from ``icsr_master``)."""
        master = self.table(MASTER)
        counts = {}
        with self.engine.connect() as conn:
            for name in CHILD_TABLE_NAMES:
                child = self.table(name)
                orphaned = ~child.c[CASE_KEY].in_(select(master.c[CASE_KEY]))
                rows, orphans = conn.execute(select(func.count(), count_where(orphaned)).select_from(child)).one()
                counts[name] = (rows, int(orphans))
        return counts

    def row_count_comparison(self, file_names: Sequence[str] | None = None) -> dict[str, tuple[int, int]]:
        """Per case table: (rows the parser produced for the current versions, rows in the table).

        The audit log keeps what the parser produced for every version; the current version of a
        case is the one its master row points to (file and message position).
        """
        master, audit = self.table(MASTER), self.table(AUDIT_TABLE)
        current = select(audit.c.row_counts).join(
            master,
            (master.c[CASE_KEY] == audit.c[CASE_KEY])
            & (master.c.source_file_sha256 == audit.c.file_sha256)
            & (master.c[MESSAGE_POSITION] == audit.c[MESSAGE_POSITION]),
        )
        params = _file_params(file_names)
        if file_names is not None:
            current = current.where(master.c.source_file_name.in_(bindparam("files", expanding=True)))
        expected = dict.fromkeys(CASE_TABLE_NAMES, 0)
        actual = {}
        with self.engine.connect().execution_options(stream_results=True) as conn:  # one row per case version: streamed
            for (row_counts,) in conn.execute(current, params):
                for name, count in (row_counts or {}).items():
                    expected[name] = expected.get(name, 0) + int(count)
            for name in CASE_TABLE_NAMES:
                actual[name] = conn.scalar(self.count_rows(name, file_names), params) or 0
        return {name: (expected[name], actual[name]) for name in CASE_TABLE_NAMES}

    def count_rows(self, name: str, file_names: Sequence[str] | None = None) -> Select:
        return select(func.count()).select_from(self.select_rows(name, file_names).subquery())

    def row_count(self, name: str, file_names: Sequence[str] | None = None) -> int:
        """Rows of the table (all, or those the files brought in)."""
        with self.engine.connect() as conn:
            return conn.scalar(self.count_rows(name, file_names), _file_params(file_names)) or 0

    def rejected_message_count(self, file_names: Sequence[str] | None = None) -> int:
        """Messages of these files (None: of every file) held in the quarantine; a file-level error has no position."""
        quarantine = self.table(QUARANTINE_TABLE)
        rejected = self.select_rows(QUARANTINE_TABLE, file_names).where(quarantine.c[MESSAGE_POSITION].is_not(None)).subquery()
        with self.engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(rejected), _file_params(file_names)) or 0


def _file_params(file_names: Sequence[str] | None) -> dict[str, Any]:
    """Bind values of the ``files`` parameter of :meth:`TableReader.select_rows` (none when reading everything)."""
    return {"files": list(file_names)} if file_names is not None else {}
