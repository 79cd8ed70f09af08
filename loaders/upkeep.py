"""Work on a loaded database that is not a load: MedDRA releases and the drug-event statistics, as functions over
the engine a loader made (``loader.engine``, whose connections the loader configured), in its schema. The database's
differences come from its :class:`~loaders.dialect.Dialect`; no loader contract is involved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import Column, Table
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from loaders.dialect import Dialect, dialect_for
from py_load_eudravigilance.meddra import RELEASES_TABLE, TERM_FILES, VERSION, Release
from py_load_eudravigilance.schema import schema_table
from py_load_eudravigilance.signals import DEFAULT_DRUG_ROLES, StatisticsSummary, rebuild_on_next_refresh, refresh
from py_load_eudravigilance.staging import utc_now


def schema_tables(schema: str | None) -> Callable[[str], Table]:
    """The schema's tables by name."""
    return partial(schema_table, schema=schema)


@dataclass(frozen=True)
class RefreshTarget:
    """What the statistics (``signals.RefreshHooks``) need: the schema's tables and the dialect's hooks."""

    table: Callable[[str], Table]
    dialect: Dialect

    def case_filters(self, column: Column, case_ids: list[str]) -> Iterator[ColumnElement[bool]]:
        return self.dialect.case_filters(column, case_ids)

    def insert_records(self, conn: Connection, table: Table, records: list[dict[str, Any]]) -> None:
        self.dialect.insert_records(conn, table, records)

    def lock_for_refresh(self, conn: Connection, table: Table) -> None:
        self.dialect.lock_for_refresh(conn, table)

    def keyed_lookups(self, conn: Connection) -> None:
        self.dialect.keyed_lookups(conn)


def load_meddra(engine: Engine, release: Release, schema: str | None = None, dialect: Dialect | None = None) -> dict[str, int]:
    """Load a MedDRA release into the ``meddra_*`` tables in one transaction, replacing an earlier load of the same
    version; other versions stay beside it. Returns the rows loaded per table. (``dialect``: the engine's by default.)"""
    dialect, table = dialect or dialect_for(engine), schema_tables(schema)
    loaded: dict[str, int] = {}
    with engine.begin() as conn:
        dialect.tune_session(conn)
        # Counts of this version's PTs are counted again (its terms may have changed); a new version is a new basis
        rebuild_on_next_refresh(conn, table, release.version)
        for term_file in TERM_FILES:
            terms = table(term_file.table)
            conn.execute(terms.delete().where(terms.c[VERSION] == release.version))
            dialect.insert_records(conn, terms, release.rows[term_file.table])
            loaded[term_file.table] = len(release.rows[term_file.table])
        releases = table(RELEASES_TABLE)
        conn.execute(releases.delete().where(releases.c[VERSION] == release.version))
        conn.execute(
            releases.insert(),
            {VERSION: release.version, "language": release.language, "terms_loaded": loaded["meddra_llt"], "loaded_at": utc_now()},
        )
    return loaded


def refresh_drug_event_statistics(
    engine: Engine,
    drug_roles: Sequence[str] = DEFAULT_DRUG_ROLES,
    rebuild: bool = False,
    schema: str | None = None,
    dialect: Dialect | None = None,
    meddra_version: str | None = None,
) -> StatisticsSummary:
    """Bring ``drug_event_statistics`` up to date in one transaction: from the cases loads wrote since the last
    refresh, or in full (``rebuild``, or when needed). Events are PTs of ``meddra_version`` (default: the latest
    MedDRA release loaded; none loaded: the reported codes). Readers see the old statistics or the new ones."""
    with engine.begin() as conn:
        target = RefreshTarget(schema_tables(schema), dialect or dialect_for(engine))
        return refresh(conn, target, drug_roles, rebuild, meddra_version)
