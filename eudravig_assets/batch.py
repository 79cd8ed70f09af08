"""What one Dagster run loads: the files of its partitions, committed once by the op, which then reports every table."""

from __future__ import annotations

from dataclasses import dataclass

from loaders.contract import Loader
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

    def commit(self, loader: Loader) -> RunSummary:
        if self.summary is None:
            self.summary = run_load(self.location, loader, self.mode, self.workers, keys=self.keys, quarantine=self.quarantine)
        return self.summary
