"""The one contract the load pipeline depends on: what a target database does, declared, never probed.

Built-in loaders implement it directly (``SQLAlchemyLoader`` and its dialects). A plugin written as
the published guide says implements :class:`~loaders.interface.LoaderInterface`; the registry wraps
it in :class:`~loaders.guide.GuideLoader`, which implements this contract with the guide's methods,
so a plugin gets the same outcomes, history, quarantine and commands as the built-in loaders.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection, Engine

from py_load_eudravigilance.meddra import Release
from py_load_eudravigilance.signals import StatisticsSummary
from py_load_eudravigilance.staging import StagedFile

# What happened to a file, in the history, the CLI, `status` and Dagster alike
COMPLETED, PARTIAL, FAILED, RUNNING = "completed", "partial", "failed", "running"
# A delta run skips files whose content ended so: loading the same bytes again cannot end otherwise
FINAL_STATUSES = (COMPLETED, PARTIAL)


@dataclass
class LoadOutcome:
    """What loading one file did; also written to ``etl_file_history``."""

    file_name: str
    file_sha256: str
    status: str = COMPLETED
    messages_total: int = 0
    cases_inserted: int = 0
    cases_updated: int = 0
    cases_skipped_older: int = 0
    cases_nullified: int = 0
    versions_after_nullification: int = 0
    messages_rejected: int = 0
    row_counts: dict[str, int] = field(default_factory=dict)
    unmapped_values: int = 0  # values of the loaded messages no column holds (see mapping/unmapped.py)
    unmapped_paths: list[str] = field(default_factory=list)  # their first distinct paths
    duration_seconds: float = 0.0
    error: str | None = None
    # The first rejected messages (position, case id, element, reason), for reports; etl_quarantine holds every one
    rejections: list[tuple[int | None, str | None, str | None, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The outcome's fields as its history row has them (shallow: ``dataclasses.asdict`` deep-copies, and a run of
        10,000 files noticed)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "rejections"}


@dataclass
class SchemaReport:
    missing_tables: list[str] = field(default_factory=list)
    missing_columns: list[str] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)
    mistyped_columns: list[str] = field(default_factory=list)
    missing_views: list[str] = field(default_factory=list)
    missing_indexes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing_tables or self.missing_columns or self.mistyped_columns or self.missing_views or self.missing_indexes)


class Loader(ABC):
    """A target database, as the pipeline, the CLI and the Dagster IO manager use it."""

    #: Many small files may be loaded in one transaction (else one file per transaction)
    loads_groups: bool = True
    #: A large file's parts may be bulk-loaded in a transaction held open while it is parsed, beside other loads
    loads_parts_while_staging: bool = False
    #: SQLAlchemy engine for reading tables back (checks, status, the Dagster IO manager's inputs)
    engine: Engine

    @abstractmethod
    def create_all_tables(self) -> None:
        """Create every table and view of the schema that does not exist yet."""

    @abstractmethod
    def get_completed_file_hashes(self) -> set[str]:
        """SHA-256 of every file whose content ended loaded (completed or partial): ``delta`` skips them."""

    @abstractmethod
    def load(self, batches: Iterable[Path], load_mode: str, staged_files: Callable[[], list[StagedFile]]) -> list[LoadOutcome]:
        """Load staged ``batches`` (directories) in one transaction, one outcome and history row per file.

        ``batches`` may still be growing (parts published while the file is parsed); ``staged_files`` is
        called once they are exhausted, for the files' accounts (none: leave nothing behind). A
        ``full`` load empties the case tables first.
        """

    @abstractmethod
    def record_status(self, files: list[StagedFile], load_mode: str, status: str, error: str | None, started_at: datetime) -> None:
        """Write the files' history rows in a transaction of their own (``running`` before a load, ``failed`` after one)."""

    @abstractmethod
    def schema_report(self) -> SchemaReport:
        """How the database differs from the data dictionary's schema."""

    @abstractmethod
    def load_meddra(self, release: Release) -> dict[str, int]:
        """Load a user-supplied MedDRA release into the ``meddra_*`` tables (rows per table)."""

    @abstractmethod
    def refresh_drug_event_statistics(
        self, drug_roles: Sequence[str], rebuild: bool = False, meddra_version: str | None = None
    ) -> StatisticsSummary:
        """Bring ``drug_event_statistics`` up to date with the current cases, counting drugs of ``drug_roles`` and
        events as PTs of ``meddra_version`` (default: the latest loaded): from the cases loaded since the last refresh,
        or in full with ``rebuild``."""

    def keyed_lookups(self, conn: Connection) -> None:  # noqa: B027 - an optional hook: doing nothing is right by default
        """For the rest of ``conn``'s transaction, join large tables by looking rows up by key, as reading the few rows
        a refresh changed wants (a dialect hook; by default the planner decides, as SQLite's does well)."""
