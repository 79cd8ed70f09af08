"""What one Dagster run loads: the files of its partitions, committed once by the op, which then reports every table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from loaders.contract import Loader, LoadOutcome
from py_load_eudravigilance.pipeline import RunSummary, run_load
from py_load_eudravigilance.sources import SourceLocation, object_name


@dataclass
class LoadBatch:
    """Files to load together in one call of the load path, and what loading them did (``summary``: None until the
    op commits it, and in a run of the tables alone, which loads nothing)."""

    location: SourceLocation
    keys: list[str]
    mode: str = "delta"
    workers: int = 1
    quarantine: SourceLocation | None = None
    summary: RunSummary | None = None

    @property
    def file_names(self) -> list[str]:
        return [object_name(self.location, key) for key in self.keys]

    def commit(self, loader: Loader, on_file: Callable[[LoadOutcome], None] | None = None) -> RunSummary:
        """Load the files once; ``on_file`` hears each file's outcome as soon as it is committed (or failed)."""
        if self.summary is None:
            progress = (lambda outcome, _summary: on_file(outcome)) if on_file else None
            self.summary = run_load(
                self.location, loader, self.mode, self.workers, progress=progress, keys=self.keys, quarantine=self.quarantine
            )
        return self.summary
