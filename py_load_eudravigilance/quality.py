"""Data-quality rules for the normalized tables, as pandera schemas built from the column catalog.

Every column is type-checked; key columns must be present; coded elements must hold a value of
their E2B(R3) code list (a missing value is allowed: the element may carry a nullFlavor instead);
MedDRA codes have 8 digits and country codes are ISO 3166-1 alpha-2 (or ``EU``, as E2B allows).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

import pandas as pd
import pandera.pandas as pa

from loaders.readback import TableReader
from loaders.registry import loader_for
from py_load_eudravigilance.mapping import catalog
from py_load_eudravigilance.mapping.catalog import ColumnType
from py_load_eudravigilance.mapping.code_lists import CODE_LISTS
from py_load_eudravigilance.mapping.dictionary import BATCH_HEADER
from py_load_eudravigilance.schema import QUARANTINE_TABLE

MEDDRA_CODE = r"^\d{8}$"
COUNTRY_CODE = r"^(?:[A-Z]{2})$"

_DTYPES = {
    ColumnType.TEXT: "string",
    ColumnType.INTEGER: "Int64",
    ColumnType.FLOAT: "Float64",
    ColumnType.BOOLEAN: "boolean",
    ColumnType.TIMESTAMP: pd.DatetimeTZDtype(tz="UTC"),
    ColumnType.BINARY: None,  # bytes: no pandas dtype to check
}


def _checks(column: catalog.Column) -> list[pa.Check]:
    name = column.name
    if name.endswith(("_null_flavor", "_code_system", "_precision", "_utc")):
        return []
    if column.element in CODE_LISTS and name == catalog.element_columns().get(column.element, ("", ""))[1]:
        return [pa.Check.isin(tuple(CODE_LISTS[column.element]), name=f"{column.element} code list")]
    if name.endswith("meddra_code"):
        return [pa.Check.str_matches(MEDDRA_CODE, name="MedDRA code of 8 digits")]
    if name.endswith("_country"):
        return [pa.Check.str_matches(COUNTRY_CODE, name="ISO 3166-1 alpha-2 country code")]
    return []


@cache
def table_schema(table: str) -> pa.DataFrameSchema:
    """The pandera schema of one normalized table (case tables and ``message_batches``)."""
    columns = catalog.table_columns(BATCH_HEADER) if table == BATCH_HEADER.name else catalog.case_table_columns()[table]
    return pa.DataFrameSchema(
        {
            c.name: pa.Column(
                _DTYPES[c.type],
                checks=_checks(c),
                nullable=not c.primary_key,
                required=True,
                description=f"{c.element}: {c.description}" if c.element else c.description,
            )
            for c in columns
        },
        name=table,
        coerce=True,  # databases return booleans as 0/1 and timestamps as text (SQLite)
        strict=False,
    )


# Failure cases kept for the report: a table that fails on every row must not fill memory with them
KEPT_FAILURES = 1_000


@dataclass
class Conformance:
    """A table checked against its schema: rows read, rows with a failing value, and pandera's failure cases (every
    one counted, the first :data:`KEPT_FAILURES` kept)."""

    rows_checked: int
    rows_failing: int
    failure_count: int
    cases: pd.DataFrame

    @property
    def passed(self) -> bool:
        return self.failure_count == 0


def validate_frames(table: str, frames: Iterable[pd.DataFrame]) -> Conformance:
    """Check every frame (parts of one table, read one after another, numbered through) against the table's schema."""
    schema, rows, failing, count, kept = table_schema(table), 0, 0, 0, []
    for frame in frames:
        rows += len(frame)
        try:
            schema.validate(frame, lazy=True)
        except pa.errors.SchemaErrors as errors:
            count += len(errors.failure_cases)
            failing += errors.failure_cases["index"].dropna().nunique()
            if sum(map(len, kept)) < KEPT_FAILURES:
                kept.append(errors.failure_cases)
    cases = pd.concat(kept, ignore_index=True).head(KEPT_FAILURES) if kept else pd.DataFrame()
    return Conformance(rows, int(failing), count, cases)


def validate_loaded_table(dsn: str, db_schema: str | None, table: str, file_names: Sequence[str] | None) -> Conformance:
    """Read back what ``file_names`` brought into ``table`` (None: all of it) and validate it.

    Takes a DSN, not an engine, so that worker processes can run it: reading back and validating a
    backfill's rows is CPU work that can use other cores while the caller goes on.
    """
    return validate_frames(table, _reader_of_process(dsn, db_schema, os.getpid()).iter_frames(table, file_names))


@dataclass
class LoadedCounts:
    """What the SQL checks count over what some files brought in (or over every row)."""

    orphans: dict[str, tuple[int, int]]  # per child table: (its rows, rows whose case is missing from icsr_master)
    rows: dict[str, tuple[int, int]]  # per case table: (rows the parser produced, rows in the table)
    rejected_messages: int
    quarantined_rows: int  # rows of these files (None: of every file) in the quarantine, file-level errors included


def count_loaded_rows(dsn: str, db_schema: str | None, file_names: Sequence[str] | None) -> LoadedCounts:
    """The counts the SQL checks need; like :func:`validate_loaded_table`, runnable in a worker process."""
    reader = _reader_of_process(dsn, db_schema, os.getpid())
    return LoadedCounts(
        reader.orphan_counts(),
        reader.row_count_comparison(file_names),
        reader.rejected_message_count(file_names),
        reader.row_count(QUARANTINE_TABLE, file_names),
    )


def count_table_rows(dsn: str, db_schema: str | None, tables: Sequence[str]) -> dict[str, int]:
    """Rows in each table now (what a materialization reports as its row count); runnable in a worker process."""
    reader = _reader_of_process(dsn, db_schema, os.getpid())
    return {table: reader.row_count(table) for table in tables}


@cache
def _reader_of_process(dsn: str, db_schema: str | None, pid: int) -> TableReader:
    """One reader per worker process and database, for all the tables it validates: building the
    loader and the table metadata takes ~0.2 s, more than reading back most tables of a run. Keyed
    by process id so that a forked worker never uses connections its parent opened."""
    return TableReader(loader_for(dsn, db_schema).engine, db_schema)
