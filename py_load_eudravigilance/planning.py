"""How a run cuts its files into units of work: pure decisions, from the keys, their sizes, the workers, the mapper
and what the loader can do. Nothing here reads a file, starts a process or touches a database.

A unit is what loads in one transaction: a group of small files, or one file staged by one or more
workers ("shards"), each of its tasks staging in parts of ``part_messages`` messages. The pipeline
(``pipeline.py``) stages the units' tasks in a process pool and commits the units in order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class PlanLimits:
    """The sizes the plan is made of. Small files are staged and loaded together, one transaction per group: per
    transaction work (locks, commit) would otherwise dominate; big files stay alone."""

    # As many messages as a part of a large file, for single-case files: 5,000 of them loaded in 4.2-4.9 s in groups
    # of 250 against 5.0-6.1 s in groups of 100 (server CPU 1.6-1.8 s against 2.1-2.4 s); 1,000 balanced worse
    group_max_files: int = 250
    group_max_bytes: int = 32 * 1024 * 1024
    # A file at least this large is staged by every worker, each taking its share of the messages; in the run's last
    # round of groups, so is a file of shard_idle_min_bytes (a daily batch alone in its run, or the third of three
    # files on two cores, would otherwise leave cores idle). Each shard parses its byte range of the file (staging/
    # split.py: each also hashes and scans the whole file, a few percent of parsing it). Where the file cannot be cut
    # so, each shard parses all of it: about a tenth of the cost of mapping it in Python, but most of the cost of the
    # compiled mapper, which then does not shard (a second parse costs more than it saves)
    shard_min_bytes: int = 64 * 1024 * 1024
    shard_idle_min_bytes: int = 4 * 1024 * 1024
    # Every task stages in parts of this many messages: a part's index stays small however large the file (memory
    # stays flat), and where the loader can, parts are bulk-loaded while the rest is parsed (a part costs a few
    # queries and one COPY per table, so parts stay a few MB)
    part_messages: int = 250


@dataclass(frozen=True)
class Capabilities:
    """What the target database allows, as its loader declares it."""

    loads_groups: bool = True  # many small files in one transaction (else one file per transaction)
    loads_parts_while_staging: bool = False  # a transaction held open while a file is parsed, beside other loads


@dataclass(frozen=True)
class UnitPlan:
    """One unit: its keys, how many workers stage it (each its share of one file's messages when more than one),
    whether it is loaded part by part while its workers still stage it, and whether it replaces a unit whose worker
    died (a second death makes it the culprit)."""

    keys: tuple[str, ...]
    shards: int = 1
    in_parts: bool = False
    retried: bool = False


def _always(_key: str) -> bool:
    return True


@dataclass(frozen=True)
class Planner:
    """Plans a run's units, and the units that replace one that failed (``whole``, ``one_by_one``).

    ``splittable(key)`` says whether a file can be cut into byte ranges of whole messages (not gzip, UTF-8); it is
    asked only of a file the plan would shard with the compiled mapper."""

    sizes: Mapping[str, int]
    workers: int
    mapper: str
    capabilities: Capabilities = Capabilities()
    limits: PlanLimits = PlanLimits()
    splittable: Callable[[str], bool] = field(default=_always, compare=False)

    @property
    def _workers(self) -> int:
        return max(1, self.workers)

    def groups(self, keys: list[str]) -> list[tuple[str, ...]]:
        """Consecutive keys in groups of at most ``group_max_files`` files / ``group_max_bytes`` bytes (sizes as far as
        known), small enough that every worker gets several groups; one key each where the loader takes one file per
        transaction."""
        if not self.capabilities.loads_groups:
            return [(key,) for key in keys]
        per_group = max(1, min(self.limits.group_max_files, -(-len(keys) // (2 * self._workers))))
        groups: list[tuple[str, ...]] = []
        current: list[str] = []
        current_bytes = 0
        for key in keys:
            size = self.sizes.get(key, 0)
            if current and (len(current) >= per_group or current_bytes + size > self.limits.group_max_bytes):
                groups.append(tuple(current))
                current, current_bytes = [], 0
            current.append(key)
            current_bytes += size
        if current:
            groups.append(tuple(current))
        return groups

    def plan(self, keys: list[str]) -> list[UnitPlan]:
        """The run's units, in the order the files are listed."""
        groups = self.groups(keys)
        # The last len(groups) % workers groups run while the other workers have nothing left to do
        last_round = len(groups) - len(groups) % self._workers
        return [self.unit(group, in_last_round=index >= last_round) for index, group in enumerate(groups)]

    def unit(self, keys: tuple[str, ...], in_last_round: bool = False) -> UnitPlan:
        """A group, or one file staged by every worker when it is large (or mid-size in the last round)."""
        return UnitPlan(keys, self.shards(keys, in_last_round), self.capabilities.loads_parts_while_staging)

    def shards(self, keys: tuple[str, ...], in_last_round: bool) -> int:
        """How many workers stage a unit: all of them for one file that is large, or mid-size in the run's last round
        of groups (which leaves workers with nothing else to do); else one. (From S3, each shard downloads the
        object: mapping, not the download, is the cost of a large file.)"""
        if len(keys) != 1:
            return 1
        limits = self.limits
        threshold = min(limits.shard_idle_min_bytes, limits.shard_min_bytes) if in_last_round else limits.shard_min_bytes
        if self.sizes.get(keys[0], 0) < threshold or self._workers == 1:
            return 1
        if self.mapper != "python" and not self.splittable(keys[0]):
            return 1  # gzip, or not UTF-8: not cut into ranges, and the compiled mapper's cost is mostly parsing
        return self._workers

    def whole(self, unit: UnitPlan) -> UnitPlan:
        """A sharded file whose shards read other than the scan of it promised, staged again in one piece."""
        return replace(unit, shards=1)

    def one_by_one(self, unit: UnitPlan, worker_died: bool = False) -> list[UnitPlan]:
        """A failed group's files (or a file whose worker died), each a unit of its own, so that the culprit is found
        and the others load. A worker's death breaks its whole pool, failing every task in flight with it: each such
        file gets one more try."""
        retried = unit.retried or worker_died
        return [replace(self.unit((key,)), retried=retried) for key in unit.keys]

    def retries(self, unit: UnitPlan, worker_died: bool) -> bool:
        """Whether a failed unit is replaced by its files one by one, rather than its file recorded failed."""
        return len(unit.keys) > 1 or (worker_died and not unit.retried)
