"""The one load path: discover files, stage them in worker processes, load each in one transaction.

The CLI calls :func:`run_load`; everything database-specific goes through the loader chosen by
the DSN's dialect.
"""

from __future__ import annotations

import gc
import itertools
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from loaders.base import LoadOutcome, SQLAlchemyLoader
from loaders.interface import LoaderInterface
from loaders.registry import get_loader
from py_load_eudravigilance.sources import (
    SourceLocation,
    list_objects,
    local_copy,
    object_name,
    object_size,
    parse_location,
    quarantine_file,
)
from py_load_eudravigilance.staging import (
    Share,
    StagedFile,
    StagedGroup,
    add_up_shards,
    merge_shards,
    published_parts,
    sha256_of,
    stage_files,
    utc_now,
)

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    files_found: int = 0
    files_skipped: int = 0
    outcomes: list[LoadOutcome] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    duration_seconds: float = 0.0

    @property
    def messages_rejected(self) -> int:
        return sum(o.messages_rejected for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        """0: everything loaded; 1: a file failed; 2: loaded, but some messages were rejected."""
        if self.failures:
            return 1
        if self.messages_rejected or any(o.status != "completed" for o in self.outcomes):
            return 2
        return 0

    @property
    def cases_per_second(self) -> float:
        return self.totals()["messages_total"] / self.duration_seconds if self.duration_seconds else 0.0

    def totals(self) -> dict[str, int]:
        keys = ("messages_total", "cases_inserted", "cases_updated", "cases_skipped_older", "cases_nullified", "messages_rejected")
        return {key: sum(getattr(o, key) for o in self.outcomes) for key in keys}


def redact_dsn(dsn: str) -> str:
    """The DSN with its password masked, for logs and messages."""
    try:
        return make_url(dsn).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable DSN is shown as nothing rather than leaked
        return "<unparsable DSN>"


# Small files are staged and merged together, one transaction per group: per-transaction work
# (staging tables, locks, commit) would otherwise dominate. Big files stay alone.
GROUP_MAX_FILES = 100
GROUP_MAX_BYTES = 32 * 1024 * 1024
# A file at least this large is mapped by every worker, each taking its share of the messages; in the
# run's last round of groups, so is a file of SHARD_IDLE_MIN_BYTES (a daily batch alone in its run, or
# the third of three files on two cores, would otherwise leave cores idle). Each shard parses the
# whole file: about a tenth of the cost of mapping it
SHARD_MIN_BYTES = 64 * 1024 * 1024
SHARD_IDLE_MIN_BYTES = 4 * 1024 * 1024
# ... and, where the loader can (PostgreSQL), staged in parts of this many messages per worker that are
# bulk-loaded while the rest of the file is parsed, so that only the merge waits for the last message
PART_MESSAGES = 1_000
# How often a load of parts looks for new ones while the workers are still parsing
PART_POLL_SECONDS = 0.05
# S3 keys a run names without a listing (Dagster partitions) are sized by HEAD requests up to this many
HEAD_SIZED_MAX_OBJECTS = 32


def plan_groups(keys: list[str], sizes: dict[str, int], workers: int, grouping: bool = True) -> list[list[str]]:
    """Consecutive keys in groups of at most GROUP_MAX_FILES files / GROUP_MAX_BYTES bytes (sizes as far as known),
    small enough that every worker gets several groups."""
    if not grouping:
        return [[key] for key in keys]
    per_group = max(1, min(GROUP_MAX_FILES, -(-len(keys) // (2 * max(1, workers)))))
    groups: list[list[str]] = []
    current: list[str] = []
    current_bytes = 0
    for key in keys:
        size = sizes.get(key, 0)
        if current and (len(current) >= per_group or current_bytes + size > GROUP_MAX_BYTES):
            groups.append(current)
            current, current_bytes = [], 0
        current.append(key)
        current_bytes += size
    if current:
        groups.append(current)
    return groups


def shards_for(file_bytes: int, in_last_round: bool, workers: int) -> int:
    """How many workers map one file alone in its group: all of them when it is large, or when it is
    mid-size and in the run's last round of groups, which leaves workers with nothing else to do; else one."""
    threshold = min(SHARD_IDLE_MIN_BYTES, SHARD_MIN_BYTES) if in_last_round else SHARD_MIN_BYTES
    return max(1, workers) if file_bytes >= threshold else 1


def load_staged(loader: LoaderInterface, group: StagedGroup, load_mode: str) -> list[LoadOutcome]:
    """Load one staged group; a failure is recorded in the file history, then re-raised."""
    started_at = utc_now()
    mark_running = getattr(loader, "record_running", None)
    if mark_running is not None:
        mark_running(group.files, load_mode, started_at)
    with ExitStack() as stack:
        buffers = group.open_buffers(stack)
        try:
            if isinstance(loader, SQLAlchemyLoader):
                return loader.load_group(buffers, load_mode, group.files)  # type: ignore[arg-type]
            # A plugin implements the one-file contract: groups of one file are planned for it
            (staged,) = group.files
            loader.load_normalized_data(buffers, staged.row_counts, load_mode, staged.file_name, staged.file_sha256)  # type: ignore[arg-type]
        except Exception as exc:
            _record_failure(loader, group.files, load_mode, exc, started_at)
            raise
    return [
        getattr(loader, "last_outcome", None)
        or LoadOutcome(
            staged.file_name, staged.file_sha256, messages_total=staged.messages_total, messages_rejected=staged.messages_rejected
        )
    ]


def _record_failure(loader: LoaderInterface, files: list[StagedFile], load_mode: str, error: Exception, started_at: datetime) -> None:
    """Mark the files failed in the file history, where the loader keeps one (its load was rolled back)."""
    record = getattr(loader, "record_failure", None)
    if record is not None:
        record(files, load_mode, f"{type(error).__name__}: {error}", started_at)


@dataclass(frozen=True)
class _StageTask:
    location: SourceLocation
    keys: tuple[str, ...]
    directory: Path
    quarantine: SourceLocation | None
    share: Share | None = None
    part_messages: int | None = None


@dataclass
class _Unit:
    """What loads in one transaction: a group of files, or one large file staged in shards."""

    keys: tuple[str, ...]
    tasks: list[_StageTask]
    results: dict[int, _Staged] = field(default_factory=dict)  # by shard index
    error: BaseException | None = None
    finished: int = 0
    submitted: list[Future[_Staged]] = field(default_factory=list)
    load: Future[list[LoadOutcome]] | None = None  # the load of a unit staged in parts, running beside staging

    @property
    def pending(self) -> bool:
        return self.finished < len(self.tasks)

    @property
    def in_parts(self) -> bool:
        return self.tasks[0].part_messages is not None


@dataclass
class _Staged:
    group: StagedGroup
    skipped: int  # files already loaded, or repeated within the group


_completed_hashes: frozenset[str] = frozenset()


def _init_worker(completed: frozenset[str]) -> None:
    global _completed_hashes
    _completed_hashes = completed
    # A forked worker inherits its parent's heap (all of Dagster, in an asset run): left to the
    # collector, every full collection would walk those objects again and copy their pages
    gc.freeze()


def _stage_group(task: _StageTask) -> _Staged:
    """Worker: fetch, hash and stage a group of objects, skipping files whose content already loaded."""
    with ExitStack() as stack:
        todo: list[tuple[Path, str, str]] = []
        seen: set[str] = set()
        for key in task.keys:
            path = stack.enter_context(local_copy(task.location, key))
            digest = sha256_of(path)
            if digest not in _completed_hashes and digest not in seen:
                seen.add(digest)
                todo.append((path, object_name(task.location, key), digest))
        group = stage_files(todo, task.directory, share=task.share, part_messages=task.part_messages)
        if task.quarantine is not None and (task.share is None or task.share.index == 0):
            for (path, name, _), staged in zip(todo, group.files, strict=True):
                if staged.error:
                    try:
                        quarantine_file(task.quarantine, name, path, staged.error)
                    except Exception as exc:  # noqa: BLE001 - a broken quarantine must not stop the load
                        staged.error += f" (copy to quarantine failed: {type(exc).__name__}: {exc})"
    return _Staged(group, len(task.keys) - len(todo))


def _combine(unit: _Unit) -> _Staged:
    """The unit's staged rows as one group: shards of a file are appended to the first shard."""
    ordered = [unit.results[index] for index in sorted(unit.results)]
    if len(ordered) == 1:
        return ordered[0]
    return _Staged(merge_shards([staged.group for staged in ordered]), ordered[0].skipped)


def _parts_as_published(shards: list[Future[_Staged]], directories: list[Path]) -> Iterator[Path]:
    """Every part the shards publish, as soon as it is complete, until all shards have finished."""
    seen: set[Path] = set()
    while True:
        finished = all(shard.done() for shard in shards)  # before listing: then nothing published is missed
        fresh = [part for directory in directories for part in published_parts(directory) if part not in seen]
        seen.update(fresh)
        yield from fresh
        if finished:
            return
        if not fresh:
            wait(shards, timeout=PART_POLL_SECONDS, return_when=FIRST_COMPLETED)


def _load_in_parts(loader: SQLAlchemyLoader, unit: _Unit, load_mode: str) -> list[LoadOutcome]:
    """Load a large file while its shards are still being staged: one transaction, parts bulk-loaded as they come."""
    started_at = utc_now()
    file: StagedFile | None = None

    def staged_file() -> StagedFile | None:
        nonlocal file
        groups = [future.result().group for future in unit.submitted]  # a shard's error ends the load here, rolled back
        file = add_up_shards(groups)
        if file is not None:
            loader.record_running([file], load_mode, started_at)
        return file

    try:
        return loader.load_parts(load_mode, _parts_as_published(unit.submitted, [task.directory for task in unit.tasks]), staged_file)
    except Exception as exc:
        if file is not None:
            _record_failure(loader, [file], load_mode, exc, started_at)
        raise


def run_load(
    source: str | Path | SourceLocation,
    dsn_or_loader: str | LoaderInterface,
    mode: str = "delta",
    workers: int = 1,
    progress: Callable[[LoadOutcome, RunSummary], None] | None = None,
    keys: Iterable[str] | None = None,
    quarantine: str | SourceLocation | None = None,
) -> RunSummary:
    """Load E2B(R3) files of ``source`` (all candidates, or only ``keys``) into the target database.

    Workers download, hash, parse and map groups of files into staged CSVs while the parent
    process loads what is ready, one transaction per group: parsing overlaps loading. A large
    file is mapped by all workers at once and, where the loader can, bulk-loaded part by part
    while they parse it.
    """
    if mode not in ("delta", "full"):
        raise ValueError(f"mode must be 'delta' or 'full', not {mode!r}")
    started = time.perf_counter()
    location = source if isinstance(source, SourceLocation) else parse_location(source)
    quarantine_location = parse_location(quarantine) if isinstance(quarantine, str | Path) else quarantine
    loader = get_loader(dsn_or_loader) if isinstance(dsn_or_loader, str) else dsn_or_loader
    loader.create_all_tables()
    if keys is None:
        objects = list_objects(location)
        todo, sizes = [o.key for o in objects], {o.key: o.size for o in objects}
    else:
        todo, sizes = list(keys), {}
    if not sizes and (not location.is_s3 or len(todo) <= HEAD_SIZED_MAX_OBJECTS):
        # Sizes decide grouping and sharding: a local stat is cheap, and S3 HEAD requests pay off in a
        # run of a few files, whose last ones would leave workers idle unless they are sharded
        sizes = {key: size for key in todo if (size := object_size(location, key)) is not None}
    summary = RunSummary(files_found=len(todo))
    completed = frozenset(loader.get_completed_file_hashes()) if mode == "delta" else frozenset()
    groups = plan_groups(todo, sizes, workers, grouping=isinstance(loader, SQLAlchemyLoader))
    workdir = Path(tempfile.mkdtemp(prefix="eudravig-stage-"))
    truncate_next = mode == "full"
    serial = itertools.count()

    # Parts load in their own transaction beside others' merges; a full reload empties the tables with its first
    # merge, so its merges run one after another, and it loads in parts only when the run is that one file
    parts_loader = None
    if isinstance(loader, SQLAlchemyLoader) and loader.loads_parts_while_staging and (mode == "delta" or len(groups) == 1):
        parts_loader = loader

    def unit_of(keys: tuple[str, ...], in_last_round: bool = False) -> _Unit:
        """One task, or one per worker for a large file (each maps its share of the messages)."""
        # (From S3, each shard downloads the object: mapping, not the download, is the cost of a large file)
        shards = shards_for(sizes.get(keys[0], 0), in_last_round, workers) if len(keys) == 1 else 1
        if shards > 1:
            log.debug(
                "mapping %s in %d shards%s", object_name(location, keys[0]), shards, ", loaded in parts" if parts_loader is not None else ""
            )
        part_messages = PART_MESSAGES if shards > 1 and parts_loader is not None else None
        number = next(serial)
        tasks = [
            _StageTask(
                location, keys, workdir / f"{number}-{k}", quarantine_location, Share(k, shards) if shards > 1 else None, part_messages
            )
            for k in range(shards)
        ]
        return _Unit(keys, tasks)

    try:
        with (
            ProcessPoolExecutor(max_workers=max(1, workers), initializer=_init_worker, initargs=(completed,)) as pool,
            ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="load-parts") as part_loads,
        ):
            futures: dict[Future[_Staged], tuple[_Unit, _StageTask]] = {}
            # The last len(groups) % workers groups run while the other workers have nothing left to do
            last_round = len(groups) - len(groups) % max(1, workers)
            units = [unit_of(tuple(keys), index >= last_round) for index, keys in enumerate(groups)]
            queue = [(unit, task) for unit in units for task in unit.tasks]
            queue.reverse()
            while queue or futures:
                # Keep a bounded number of staged groups on disk: parse ahead of loading, not all at once
                while queue and len(futures) < 2 * max(1, workers):
                    unit, task = queue.pop()
                    future = pool.submit(_stage_group, task)
                    futures[future] = (unit, task)
                    unit.submitted.append(future)
                    if parts_loader is not None and unit.in_parts and len(unit.submitted) == len(unit.tasks):
                        unit.load = part_loads.submit(_load_in_parts, parts_loader, unit, mode)
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in done:
                    unit, task = futures.pop(future)
                    unit.finished += 1
                    try:
                        unit.results[task.share.index if task.share else 0] = future.result()
                    except Exception as exc:  # noqa: BLE001 - reported with the unit below
                        unit.error = unit.error or exc
                    if unit.pending:
                        continue
                    try:
                        if unit.load is not None:
                            outcomes = unit.load.result()  # the shards' or the database's error, if any
                            summary.files_skipped += 0 if outcomes else 1
                        else:
                            if unit.error is not None:
                                raise unit.error
                            staged = _combine(unit)
                            summary.files_skipped += staged.skipped
                            if not staged.group.files:
                                continue
                            outcomes = load_staged(loader, staged.group, "full" if truncate_next else "delta")
                            truncate_next = False
                        for outcome in outcomes:
                            summary.outcomes.append(outcome)
                            if progress:
                                progress(outcome, summary)
                    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
                        if len(unit.keys) > 1:
                            # Find the culprit: its group-mates load on their own
                            log.debug("group of %d files failed; loading them one by one", len(unit.keys), exc_info=True)
                            queue.extend((single, task) for single in (unit_of((key,)) for key in unit.keys) for task in single.tasks)
                            continue
                        name = object_name(location, unit.keys[0])
                        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                        log.debug("loading %s failed", name, exc_info=True)
                        summary.failures.append((name, reason))
                    finally:
                        for task in unit.tasks:
                            shutil.rmtree(task.directory, ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary.duration_seconds = time.perf_counter() - started
    return summary


@dataclass
class LoadBatch:
    """Files to load together; committed once, however many consumers ask (each table asset does)."""

    location: SourceLocation
    keys: list[str]
    mode: str = "delta"
    workers: int = 1
    quarantine: SourceLocation | None = None
    summary: RunSummary | None = None

    @property
    def file_names(self) -> list[str]:
        return [object_name(self.location, key) for key in self.keys]

    def commit(self, loader: LoaderInterface) -> RunSummary:
        if self.summary is None:
            self.summary = run_load(self.location, loader, self.mode, self.workers, keys=self.keys, quarantine=self.quarantine)
        return self.summary
