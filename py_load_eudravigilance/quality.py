"""Data-quality rules of the normalized tables, and the checks of a load, evaluated in the database.

The rules are declared once, as pandera schemas built from the column catalog: every column is
typed; key columns must be present; coded elements must hold a value of their E2B(R3) code list (a
missing value is allowed: the element may carry a nullFlavor instead); MedDRA codes have 8 digits
and country codes are ISO 3166-1 alpha-2 (or ``EU``, as E2B allows). The checks never read rows
back into Python: each pandera check becomes a SQL condition (:func:`rules`), and one query per
table counts, over the rows a run brought, the rows failing each rule, the rows whose case is
missing from ``icsr_master`` and the rows of the cases whose current version the run loaded. Types
need no query: the table's declared column types hold them (``validate-db-schema`` compares those).

A run's rows are those of the cases its files brought (found through the audit log's index on the
file's SHA-256, and listed once per connection in a temporary table: :func:`cases_listed`), so a
check costs what the run loaded, however large the database. The statements
are built by small functions and can be read as text (``str(statement)``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

import pandas as pd
import pandera.pandas as pa
from sqlalchemy import Column, ColumnElement, FromClause, MetaData, Select, Table, Text, and_, false, func, or_, select, text, true
from sqlalchemy.engine import Connection

from py_load_eudravigilance.mapping import catalog
from py_load_eudravigilance.mapping.catalog import CASE_KEY, ColumnType
from py_load_eudravigilance.mapping.code_lists import CODE_LISTS
from py_load_eudravigilance.mapping.dictionary import BATCH_HEADER
from py_load_eudravigilance.markdown import markdown_table
from py_load_eudravigilance.schema import AUDIT_TABLE, CASE_TABLE_NAMES, MASTER_TABLE, MESSAGE_POSITION, QUARANTINE_TABLE
from py_load_eudravigilance.views import count_where

MEDDRA_CODE = r"^\d{8}$"
COUNTRY_CODE = r"^(?:[A-Z]{2})$"
# Failing rows, and rejected messages, that a check result lists (the counts cover every one)
LISTED_ROWS = 20

_DTYPES = {
    ColumnType.TEXT: "string",
    ColumnType.INTEGER: "Int64",
    ColumnType.FLOAT: "Float64",
    ColumnType.BOOLEAN: "boolean",
    ColumnType.TIMESTAMP: pd.DatetimeTZDtype(tz="UTC"),
    ColumnType.BINARY: None,  # bytes: no pandas dtype to check
}

TableNamed = Callable[[str], Table]


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


class RuleWithoutSQL(ValueError):
    """A pandera check the SQL translation does not know: the checks would silently skip it."""


@dataclass(frozen=True)
class Rule:
    """One pandera rule of one column, as SQL: ``fails`` is true for a row that breaks it."""

    name: str
    column: str
    allowed: tuple[str, ...] | None = None  # Check.isin
    pattern: str | None = None  # Check.str_matches (anchored, as pandera's re.match with a leading ^)
    required: bool = False  # a column that is not nullable

    def fails(self, table: Table) -> ColumnElement[bool]:
        value = table.c[self.column]
        if self.required:
            return value.is_(None)
        if self.allowed is not None:
            return and_(value.is_not(None), value.not_in(list(self.allowed)))
        assert self.pattern is not None
        return and_(value.is_not(None), ~value.regexp_match(self.pattern))


@cache
def rules(table: str) -> tuple[Rule, ...]:
    """Every rule of the table's pandera schema as SQL; a check with no SQL form is an error, never skipped."""
    found = []
    for name, column in table_schema(table).columns.items():
        if not column.nullable:
            found.append(Rule(f"{name}: required", name, required=True))
        for check in column.checks:
            statistics = check.statistics or {}
            if "allowed_values" in statistics:
                found.append(Rule(f"{name}: {check.name}", name, allowed=tuple(map(str, statistics["allowed_values"]))))
            elif "pattern" in statistics:
                pattern = str(statistics["pattern"])
                found.append(Rule(f"{name}: {check.name}", name, pattern=pattern if pattern.startswith("^") else "^" + pattern))
            else:
                raise RuleWithoutSQL(f"{table}.{name}: the pandera check {check.name!r} has no SQL form in quality.rules()")
    return tuple(found)


def has_value_rules(table: str) -> bool:
    """Whether a rule of the table looks at values (a code list, a pattern), beyond the keys its primary key holds."""
    return any(not rule.required for rule in rules(table))


@dataclass(frozen=True)
class CheckScope:
    """The rows the checks cover: those the files with these SHA-256 brought, or every row (``None``); ``cases``: a
    temporary table listing the cases of those files, once :func:`cases_listed` made it."""

    file_hashes: tuple[str, ...] | None
    cases: Table | None = None

    @classmethod
    def everything(cls) -> CheckScope:
        return cls(None)

    @classmethod
    def of_files(cls, hashes: Iterable[str]) -> CheckScope:
        return cls(tuple(sorted({sha for sha in hashes if sha})))


def run_cases(table: TableNamed, scope: CheckScope) -> Select:
    """The cases the scope's files brought, any version of them (the audit log logs every one, indexed by file)."""
    if scope.cases is not None:
        return select(scope.cases.c[CASE_KEY])
    audit = table(AUDIT_TABLE)
    query = select(audit.c[CASE_KEY])
    return query if scope.file_hashes is None else query.where(audit.c.file_sha256.in_(scope.file_hashes))


CHECKED_CASES = "checked_cases"


@contextmanager
def cases_listed(conn: Connection, table: TableNamed, scope: CheckScope) -> Iterator[CheckScope]:
    """``scope`` with its cases listed once, in a temporary table of ``conn``'s, for the queries run on ``conn``: each
    table's check then joins that short list instead of finding the run's cases in the audit log again (a lookup there
    reads the row, payload and all: 77 of the 96 ms of one table's check of 10,000 cases)."""
    if scope.file_hashes is None:
        yield scope
        return
    listed = Table(CHECKED_CASES, MetaData(), Column(CASE_KEY, Text, primary_key=True), prefixes=["TEMPORARY"])
    # Dropped after the queries, not after a failure: a DROP in PostgreSQL's aborted transaction would raise over the
    # query's own error. The rollback drops it with the transaction where DDL is transactional; a connection that ran
    # it outside one (SQLite without its BEGIN) still holds it, hence the drop first
    listed.drop(conn, checkfirst=True)
    listed.create(conn)
    conn.execute(listed.insert().from_select([CASE_KEY], run_cases(table, scope).distinct()))
    conn.execute(text(f"ANALYZE {CHECKED_CASES}"))  # its size, for the planner: a few cases or millions
    yield replace(scope, cases=listed)
    listed.drop(conn)


def current_from_run(master: Table, scope: CheckScope) -> ColumnElement[bool]:
    """Whether a master row (possibly NULL: an orphan's) is a case whose current version came from the scope's files."""
    if scope.file_hashes is None:
        return master.c[CASE_KEY].is_not(None)
    return master.c.source_file_sha256.in_(scope.file_hashes)


def in_scope(table: TableNamed, name: str, scope: CheckScope) -> ColumnElement[bool]:
    """The rows of table ``name`` in the scope: a case table's rows of the run's cases, the batch rows of its files."""
    target = table(name)
    if scope.file_hashes is None:
        return true()
    if name in CASE_TABLE_NAMES:
        return target.c[CASE_KEY].in_(run_cases(table, scope))
    return target.c.file_sha256.in_(scope.file_hashes)


def table_check_query(table: TableNamed, name: str, scope: CheckScope, with_rules: bool = True) -> Select:
    """One query for a table: rows in scope, rows whose case is missing from ``icsr_master`` (child tables), rows of
    the cases the run made current (case tables), then the rows failing each rule and those failing any."""
    target = table(name)
    columns: list[ColumnElement[Any]] = [func.count().label("rows_checked")]
    checked: FromClause = target
    if name in CASE_TABLE_NAMES:
        master = table(MASTER_TABLE)
        if name != MASTER_TABLE:
            # Each row's case joined once (looked up by key for a small run, hashed for a large one): a row without it
            # is an orphan, and the case's source file tells whether the run made it current. (A correlated EXISTS
            # per row could only be looked up row by row: 1.3 s of the 1.6 s the checks of 10,000 cases took)
            checked = target.outerjoin(master, master.c[CASE_KEY] == target.c[CASE_KEY])
            columns.append(count_where(master.c[CASE_KEY].is_(None)).label("orphans"))
        columns.append(count_where(current_from_run(master, scope)).label("rows_current"))
    failing = [rule.fails(target) for rule in rules(name)] if with_rules else []
    columns += [count_where(condition).label(f"rule_{number}") for number, condition in enumerate(failing)]
    columns.append(count_where(or_(false(), *failing)).label("rows_failing"))
    return select(*columns).select_from(checked).where(in_scope(table, name, scope))


def failing_rows_query(table: TableNamed, name: str, rule: Rule, scope: CheckScope, limit: int = LISTED_ROWS) -> Select:
    """The first rows breaking ``rule``: their key columns and the value at fault."""
    target = table(name)
    keys = [c for c in target.primary_key.columns if c.name != rule.column]
    return (
        select(*keys, target.c[rule.column].label("value"))
        .where(in_scope(table, name, scope), rule.fails(target))
        .order_by(*keys)
        .limit(limit)
    )


def parsed_rows_query(table: TableNamed, scope: CheckScope) -> Select:
    """Rows per table the parser produced for each current version the scope's files brought (from the audit log)."""
    master, audit = table(MASTER_TABLE), table(AUDIT_TABLE)
    joined = master.join(
        audit,
        (master.c[CASE_KEY] == audit.c[CASE_KEY])
        & (master.c.source_file_sha256 == audit.c.file_sha256)
        & (master.c[MESSAGE_POSITION] == audit.c[MESSAGE_POSITION]),
    )
    return select(audit.c.row_counts).select_from(joined).where(current_from_run(master, scope))


def rejected_messages_query(table: TableNamed, scope: CheckScope, limit: int | None = None) -> Select:
    """Rejected messages of the scope's files (a file-level error has no position): file, position, case, element, reason."""
    quarantine = table(QUARANTINE_TABLE)
    query = (
        select(quarantine.c.file_name, quarantine.c[MESSAGE_POSITION], quarantine.c[CASE_KEY], quarantine.c.element, quarantine.c.reason)
        .where(quarantine.c[MESSAGE_POSITION].is_not(None))
        .order_by(quarantine.c.file_name, quarantine.c[MESSAGE_POSITION])
    )
    if scope.file_hashes is not None:
        query = query.where(quarantine.c.file_sha256.in_(scope.file_hashes))
    return query if limit is None else query.limit(limit)


@dataclass
class TableChecks:
    """What the checks found in one table's rows in scope."""

    rows_checked: int
    orphans: int | None  # child tables: rows whose case is missing from icsr_master
    rows_current: int | None  # case tables: rows of the cases whose current version the scope's files brought
    rule_failures: dict[str, int]  # rule name -> rows breaking it (failing rules only)
    rows_failing: int  # rows breaking any rule
    examples: list[dict[str, Any]] = field(default_factory=list)  # the first failing rows, with the rule they break

    @property
    def failure_count(self) -> int:
        return sum(self.rule_failures.values())


@dataclass
class RunChecks:
    tables: dict[str, TableChecks]
    parsed: dict[str, int]  # case table -> rows the parser produced for the current versions in scope
    rejected_messages: int
    rejections: list[dict[str, Any]]  # the first rejected messages


def check_table(conn: Connection, table: TableNamed, name: str, scope: CheckScope, with_rules: bool = True) -> TableChecks:
    listed = rules(name) if with_rules else ()
    row = conn.execute(table_check_query(table, name, scope, with_rules)).mappings().one()
    failures = {rule.name: int(row[f"rule_{n}"]) for n, rule in enumerate(listed) if row[f"rule_{n}"]}
    examples: list[dict[str, Any]] = []
    for rule in listed:
        if rule.name in failures and len(examples) < LISTED_ROWS:
            found = conn.execute(failing_rows_query(table, name, rule, scope, LISTED_ROWS - len(examples))).mappings()
            examples += [{"rule": rule.name, **record} for record in found]
    return TableChecks(
        int(row["rows_checked"]),
        int(row["orphans"]) if "orphans" in row else None,
        int(row["rows_current"]) if "rows_current" in row else None,
        failures,
        int(row["rows_failing"]),
        examples,
    )


def parsed_rows(conn: Connection, table: TableNamed, scope: CheckScope) -> dict[str, int]:
    """Rows per case table the parser produced for the current versions in scope (a run's: one row per case it loaded)."""
    expected = dict.fromkeys(CASE_TABLE_NAMES, 0)
    for (row_counts,) in conn.execute(parsed_rows_query(table, scope).execution_options(stream_results=True)):
        for name, count in (row_counts or {}).items():
            expected[name] = expected.get(name, 0) + int(count)
    return expected


def rejected_messages(conn: Connection, table: TableNamed, scope: CheckScope) -> tuple[int, list[dict[str, Any]]]:
    """How many messages of the scope's files were rejected, and the first of them."""
    query = rejected_messages_query(table, scope)
    count = conn.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    listed = [dict(row) for row in conn.execute(rejected_messages_query(table, scope, LISTED_ROWS)).mappings()]
    return int(count), listed


def markdown_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows as a Markdown table (columns of the first row; NULL as -; a value cut at 200 characters)."""
    if not rows:
        return ""
    columns = list(rows[0])
    return markdown_table(columns, [["-" if row.get(c) is None else str(row.get(c))[:200] for c in columns] for row in rows])
