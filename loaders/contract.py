"""The one contract the load pipeline depends on: what a target database does, declared, never probed.

Built-in loaders implement it (``SQLAlchemyLoader``, given a dialect). A plugin written as the
published guide says implements :class:`~loaders.interface.LoaderInterface`; the registry wraps it
in :class:`~loaders.guide.GuideLoader`, which implements this contract with the guide's methods, so
a plugin gets the same outcomes, history, quarantine and commands as the built-in loaders. MedDRA
releases and the statistics are not part of it: ``loaders/upkeep.py`` does them over an engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from py_load_eudravigilance.planning import Capabilities
from py_load_eudravigilance.staging import StagedFile

# What happened to a file, in the history, the CLI, `status` and Dagster alike
COMPLETED, PARTIAL, FAILED, RUNNING = "completed", "partial", "failed", "running"
# A delta run skips files whose content ended so: loading the same bytes again cannot end otherwise
FINAL_STATUSES = (COMPLETED, PARTIAL)


class LoadMode(StrEnum):
    """``delta`` skips files whose content is loaded already; ``full`` empties the case tables and reloads (the history
    and the CLI keep the word)."""

    DELTA = "delta"
    FULL = "full"


# What a load receives of its files: known before it starts (a staged group), or only once its parts are exhausted
# (parts loaded while the workers still stage them)
StagedFiles = list[StagedFile] | Callable[[], list[StagedFile]]


class StagingError(Exception):
    """A worker could not stage files it had hashed (a full or failing disk, a bug): which, and why, so that their
    history says ``failed`` with the reason."""

    def __init__(self, files: list[tuple[str, str]], reason: str) -> None:
        super().__init__(files, reason)  # both in args: the exception crosses from the worker process by pickle
        self.files, self.reason = files, reason

    def __str__(self) -> str:
        return self.reason

    def staged_files(self) -> list[StagedFile]:
        return [StagedFile(name, sha256) for name, sha256 in self.files]


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
    file_size_bytes: int | None = None  # of the bytes hashed
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
    #: views an earlier release made with another query (the next load or ``init-db`` makes them again)
    outdated_views: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.missing_tables
            or self.missing_columns
            or self.mistyped_columns
            or self.missing_views
            or self.missing_indexes
            or self.outdated_views
        )


class Loader(ABC):
    """A target database, as the pipeline, the CLI and the Dagster IO manager use it."""

    #: What the database allows: many files in one transaction, a transaction held open while a file is parsed
    capabilities: Capabilities = Capabilities()
    #: SQLAlchemy engine for reading tables back (checks, status, the Dagster IO manager's inputs)
    engine: Engine

    @abstractmethod
    def create_all_tables(self) -> None:
        """Create every table and view of the schema that does not exist yet."""

    def holds_file_history(self) -> bool:
        """Whether the database has its file history yet. A new one has no file loaded: a run then creates the schema
        while its first files are parsed, instead of before. Answering True is always safe (the schema is created
        first, as an earlier release needs its upgrade before anything is read)."""
        return True

    @abstractmethod
    def get_completed_file_hashes(self, sizes: Collection[int] | None = None) -> set[str]:
        """SHA-256 of every file whose content ended loaded (completed or partial): ``delta`` skips them. With
        ``sizes``, those of files of these sizes (and of any whose size is not recorded) suffice: a run asks for its
        own files' sizes, so what it reads follows the run, not the history."""

    @abstractmethod
    def load(self, batches: Iterable[Path], load_mode: LoadMode, files: StagedFiles) -> list[LoadOutcome]:
        """Load staged ``batches`` (directories) in one transaction, one outcome per file; the file history is the
        load's: each file ``running`` (committed) before its rows load, then ``completed`` or ``partial`` in the load's
        transaction, or ``failed`` with the error, which is raised again.

        ``batches`` may still be growing (parts published while the file is parsed); ``files``, the files' accounts,
        is then a callable, called once they are exhausted (none: leave nothing behind). A ``full`` load empties the
        case tables first.
        """

    @abstractmethod
    def record_failed(self, files: list[StagedFile], load_mode: LoadMode, reason: str) -> None:
        """Mark files ``failed`` whose staging failed before any load of them could start (a worker died or could not
        write), in a transaction of their own."""

    @abstractmethod
    def schema_report(self) -> SchemaReport:
        """How the database differs from the data dictionary's schema."""
