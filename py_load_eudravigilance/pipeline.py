"""The one load path: discover files, stage them in worker processes, load each unit in one transaction.

The CLI and Dagster call :func:`run_load`. It is three pieces: the planner (``planning.py``: pure
decisions, units of work from the files), the :class:`StagingPool` (worker processes staging the
units' tasks) and the :class:`InOrderCommitter` (each unit loaded in listing order, a failed one
replaced by the plan's units for it). Everything database-specific, the file history included,
goes through the loader chosen by the DSN's dialect.
"""

from __future__ import annotations

import ctypes
import gc
import itertools
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from loaders.contract import FAILED, PARTIAL, Loader, LoadMode, LoadOutcome, StagingError
from loaders.registry import get_loader
from py_load_eudravigilance.planning import PlanLimits, Planner, UnitPlan
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
    SplitFailed,
    StagedFile,
    StagedGroup,
    StagingCore,
    add_up_shards,
    published_parts,
    sha256_of,
    stage_files,
)
from py_load_eudravigilance.staging.cores import chosen_mapper, create_core
from py_load_eudravigilance.staging.split import may_split

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a run did: one outcome per file it loaded or failed to load; files skipped as already loaded are counted."""

    files_found: int = 0
    files_skipped: int = 0
    outcomes: list[LoadOutcome] = field(default_factory=list)
    duration_seconds: float = 0.0
    mapper: str = ""  # the staging core that mapped the run's messages: compiled or python (none chosen: empty)

    def with_status(self, status: str) -> list[LoadOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def failures(self) -> list[tuple[str, str]]:
        """The files that failed, with why."""
        return [(o.file_name, o.error or "failed") for o in self.with_status(FAILED)]

    @property
    def messages_rejected(self) -> int:
        return sum(o.messages_rejected for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        """0: every file completed (or was already loaded); 1: a file failed; 2: no file failed, but some are partial."""
        if self.with_status(FAILED):
            return 1
        if self.with_status(PARTIAL):
            return 2
        return 0

    @property
    def cases_per_second(self) -> float:
        return self.totals()["messages_total"] / self.duration_seconds if self.duration_seconds else 0.0

    def totals(self) -> dict[str, int]:
        return {key: sum(getattr(o, key) for o in self.outcomes) for key in COUNTERS}


# The counters of a file's outcome that add up over a run
COUNTERS = (
    "messages_total",
    "cases_inserted",
    "cases_updated",
    "cases_skipped_older",
    "cases_nullified",
    "versions_after_nullification",
    "messages_rejected",
    "unmapped_values",
)


# Query parameters of a DSN that hold a secret (psycopg2's ?password=, sslpassword, tokens, keys)
_SECRET_PARAMETER = re.compile(r"pass|pwd|secret|token|key|credential", re.IGNORECASE)


_USER_PASSWORD = re.compile(r"^(?P<start>[^:/?#]+://[^:@/?#]*:).*@(?=[^@]*$)", re.DOTALL)


def redact_dsn(dsn: str) -> str:
    """The DSN with its password masked, in the user part and in any query parameter holding one, for output."""
    # The password is masked in the text first, up to the last '@': one holding an unescaped '@' is not cut short
    # (URL parsers end it at its first '@' and read its tail as the host)
    dsn = _USER_PASSWORD.sub(r"\g<start>***@", dsn, count=1)
    try:
        url = make_url(dsn)
        hidden = {name: "***" for name in url.query if _SECRET_PARAMETER.search(name)}
        return url.update_query_dict(hidden).render_as_string(hide_password=True).replace("%2A%2A%2A", "***")
    except Exception:  # noqa: BLE001 - an unparsable DSN is shown as nothing rather than leaked
        return "<unparsable DSN>"


# The sizes a run's plan is made of, unless the caller gives others (see planning.PlanLimits)
DEFAULT_LIMITS = PlanLimits()
# How often a load of parts looks for new ones while the workers are still parsing
PART_POLL_SECONDS = 0.05
# S3 keys a run names without a listing (Dagster partitions) are sized by HEAD requests up to this many
HEAD_SIZED_MAX_OBJECTS = 32


# A run stages under the temporary directory in <prefix><its pid>-...; a run killed before it could clean up leaves it
STAGING_PREFIX = "eudravig-stage-"
WORKER_DIED = "a parsing worker process died (killed by the operating system, out of memory?); the file was not loaded, run again"


def files_to_load(location: SourceLocation, keys: Iterable[str] | None = None) -> tuple[list[str], dict[str, int]]:
    """The keys to load (all candidates, or ``keys``) and their sizes, as far as known: they decide grouping and
    sharding. A listing has them; for named keys, a local stat is cheap, and S3 HEAD requests pay off in a run of a
    few files, whose last ones would leave workers idle unless they are sharded."""
    if keys is None:
        objects = list_objects(location)
        return [o.key for o in objects], {o.key: o.size for o in objects}
    todo = list(keys)
    if location.is_s3 and len(todo) > HEAD_SIZED_MAX_OBJECTS:
        return todo, {}
    return todo, {key: size for key in todo if (size := object_size(location, key)) is not None}


def first_line(error: BaseException) -> str:
    text = str(error)
    return text.splitlines()[0] if text else ""


def remove_abandoned_staging(directory: str | Path | None = None) -> list[Path]:
    """Remove the staging folders of runs whose process is gone (killed before it could clean up); returns them."""
    removed = []
    for path in Path(directory or tempfile.gettempdir()).glob(f"{STAGING_PREFIX}*"):
        pid = path.name[len(STAGING_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


@dataclass(frozen=True)
class _StageTask:
    location: SourceLocation
    keys: tuple[str, ...]
    directory: Path
    quarantine: SourceLocation | None
    mapper: str
    share: Share | None = None
    part_messages: int | None = None


@dataclass
class _Staged:
    group: StagedGroup
    skipped: int  # files already loaded, or repeated within the group


@dataclass
class _Unit:
    """A planned unit as it runs: its staging tasks, their results, and its load."""

    plan: UnitPlan
    tasks: list[_StageTask]
    results: dict[int, _Staged] = field(default_factory=dict)  # by shard index
    error: BaseException | None = None
    finished: int = 0
    submitted: list[Future[_Staged]] = field(default_factory=list)
    load: Future[tuple[list[LoadOutcome], int]] | None = None  # the load of a unit staged in parts, beside its staging
    truncates: bool = False  # its load in parts was the one to empty the tables (a full reload)

    @property
    def keys(self) -> tuple[str, ...]:
        return self.plan.keys

    @property
    def ready(self) -> bool:
        """Staged, and (loaded in parts) loaded: its turn to commit may come."""
        if self.finished < len(self.tasks):
            return False
        return not self.plan.in_parts or (self.load is not None and self.load.done())

    def staged_files(self) -> list[StagedFile]:
        """The unit's files once its staging finished; a worker's error is raised here."""
        staged = [future.result() for future in self.submitted]
        if len(staged) == 1:
            return staged[0].group.files
        file = add_up_shards([shard.group for shard in staged])  # the shards of one large file load as one
        return [file] if file is not None else []


# -- the workers --------------------------------------------------------------------------------------------------

_completed_hashes: frozenset[str] = frozenset()
_cores: dict[str, StagingCore] = {}


def _die_with_parent(parent_pid: int) -> None:
    """Linux: the kernel kills this worker when the process that started it dies, even by ``kill -9``;
    a parent already gone before this ran is noticed by the worker's new parent id."""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


def _init_worker(completed: frozenset[str], parent_pid: int) -> None:
    global _completed_hashes
    _die_with_parent(parent_pid)
    _completed_hashes = completed
    # A forked worker inherits its parent's heap (all of Dagster, in an asset run): left to the
    # collector, every full collection would walk those objects again and copy their pages
    gc.freeze()


def _core(mapper: str) -> StagingCore:
    """The worker's staging core, built once (compiling the dictionary takes a moment)."""
    if mapper not in _cores:
        _cores[mapper] = create_core(mapper)
    return _cores[mapper]


def _stage_group(task: _StageTask) -> _Staged:
    """Worker: fetch, hash and stage a group of objects, skipping files whose content already loaded."""
    with ExitStack() as stack:
        todo: list[tuple[Path, str, str]] = []
        keys: list[str] = []
        seen: set[str] = set()
        for key in task.keys:
            path = stack.enter_context(local_copy(task.location, key))
            digest = sha256_of(path)
            if digest not in _completed_hashes and digest not in seen:
                seen.add(digest)
                todo.append((path, object_name(task.location, key), digest))
                keys.append(key)
        try:
            group = stage_files(todo, task.directory, _core(task.mapper), share=task.share, part_messages=task.part_messages)
        except SplitFailed:
            raise  # not a failure of the file: run_load stages it again, in one piece
        except Exception as exc:  # an I/O error (a full staging disk) or a bug: the parent records these files failed
            raise StagingError([(name, digest) for _, name, digest in todo], f"{type(exc).__name__}: {first_line(exc)}") from exc
        for (path, _, _), staged in zip(todo, group.files, strict=True):
            staged.file_size_bytes = path.stat().st_size  # the bytes hashed: a later run asks for hashes by size
        if task.quarantine is not None and (task.share is None or task.share.index == 0):
            for key, (path, _, _), staged in zip(keys, todo, group.files, strict=True):
                if staged.error:
                    try:
                        quarantine_file(task.quarantine, key or path.name, path, staged.error)
                    except Exception as exc:  # noqa: BLE001 - a broken quarantine must not stop the load
                        staged.error += f" (copy to quarantine failed: {type(exc).__name__}: {exc})"
    return _Staged(group, len(task.keys) - len(todo))


class StagingPool:
    """Worker processes staging the units' tasks in the order given, a bounded number in flight (parse ahead of
    loading, not all at once); a pool broken by a worker's death (the OS killed it) is replaced, so the rest go on."""

    def __init__(self, workers: int, completed: frozenset[str]) -> None:
        self.workers = max(1, workers)
        self.completed = completed
        self.queue: deque[tuple[_Unit, _StageTask]] = deque()
        self.in_flight: dict[Future[_Staged], tuple[_Unit, _StageTask, ProcessPoolExecutor]] = {}
        self.pools: list[ProcessPoolExecutor] = []

    def schedule(self, units: list[_Unit], first: bool = False) -> None:
        """Stage these units' tasks after those scheduled (or before them, ``first``: units replacing a failed one)."""
        tasks = [(unit, task) for unit in units for task in unit.tasks]
        if first:
            self.queue.extendleft(reversed(tasks))
        else:
            self.queue.extend(tasks)

    def top_up(self) -> None:
        while self.queue and len(self.in_flight) < 2 * self.workers:
            unit, task = self.queue.popleft()
            future, pool = self._submit(task)
            self.in_flight[future] = (unit, task, pool)
            unit.submitted.append(future)

    def _submit(self, task: _StageTask) -> tuple[Future[_Staged], ProcessPoolExecutor]:
        for _ in range(2):
            if not self.pools:
                initargs = (self.completed, os.getpid())
                self.pools.append(ProcessPoolExecutor(max_workers=self.workers, initializer=_init_worker, initargs=initargs))
            try:
                return self.pools[-1].submit(_stage_group, task), self.pools[-1]
            except BrokenProcessPool:
                self.pools.pop().shutdown(wait=False, cancel_futures=True)
        raise BrokenProcessPool(WORKER_DIED)

    def wait(self, also: Future[Any] | None) -> None:
        """Until a task (or ``also``) finishes; each finished task's result, or error, goes to its unit."""
        watched: list[Future[Any]] = [*self.in_flight, *([also] if also is not None else [])]
        if not watched:
            return
        done, _ = wait(watched, return_when=FIRST_COMPLETED)
        for future in done:
            if future not in self.in_flight:
                continue
            unit, task, pool = self.in_flight.pop(future)
            unit.finished += 1
            try:
                unit.results[task.share.index if task.share else 0] = future.result()
            except BrokenProcessPool:
                unit.error = unit.error or BrokenProcessPool(WORKER_DIED)
                if self.pools and pool is self.pools[-1]:  # else its pool was replaced already
                    self.pools.pop().shutdown(wait=False, cancel_futures=True)
            except Exception as exc:  # noqa: BLE001 - reported with the unit when it loads
                unit.error = unit.error or exc

    def close(self) -> None:
        for pool in self.pools:
            pool.shutdown(cancel_futures=True)


# -- the loads ------------------------------------------------------------------------------------------------------


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


def _load_staged(loader: Loader, unit: _Unit, load_mode: LoadMode) -> tuple[list[LoadOutcome], int]:
    """Load a unit whose staging finished: its outcomes, and how many of its files were skipped."""
    if unit.error is not None:
        raise unit.error
    shards = [unit.results[index] for index in sorted(unit.results)]
    if len(shards) == 1:
        (staged,) = shards
        if not staged.group.files:
            return [], staged.skipped
        return loader.load(staged.group.batches(), load_mode, staged.group.files), staged.skipped
    file = add_up_shards([shard.group for shard in shards])  # the shards of one large file load as one
    if file is None:
        return [], 1
    batches = [batch for shard in shards for batch in shard.group.batches()]
    return loader.load(batches, load_mode, [file]), 0


def _load_in_parts(loader: Loader, unit: _Unit, load_mode: LoadMode) -> tuple[list[LoadOutcome], int]:
    """Load a unit while it is still being staged: one transaction, parts bulk-loaded as they come; its outcomes and
    how many of its files were skipped."""
    parts = _parts_as_published(unit.submitted, [task.directory for task in unit.tasks])
    outcomes = loader.load(parts, load_mode, unit.staged_files)  # a worker's error ends the load, rolled back
    skipped = unit.submitted[0].result().skipped if len(unit.tasks) == 1 else (0 if outcomes else 1)
    return outcomes, skipped


class InOrderCommitter:
    """Loads the units one after another, in the order the files are listed, so each file's counters are those of
    loading the files one by one; a unit that fails is replaced by the plan's units for it, or its file recorded
    failed. Holds the run's load mode: in a full reload, the first load that commits empties the tables."""

    def __init__(self, loader: Loader, planner: Planner, location: SourceLocation, mode: LoadMode, summary: RunSummary) -> None:
        self.loader, self.planner, self.location, self.mode, self.summary = loader, planner, location, mode, summary
        self.truncate_next = mode is LoadMode.FULL

    @property
    def next_mode(self) -> LoadMode:
        return LoadMode.FULL if self.truncate_next else LoadMode.DELTA

    def start_in_parts(self, unit: _Unit, part_loads: ThreadPoolExecutor) -> None:
        """Start loading a unit staged in parts once every task of it is in the workers' hands."""
        if unit.plan.in_parts and unit.load is None and len(unit.submitted) == len(unit.tasks):
            unit.load = part_loads.submit(_load_in_parts, self.loader, unit, self.next_mode)
            unit.truncates, self.truncate_next = self.truncate_next, False

    def commit(self, unit: _Unit) -> tuple[list[LoadOutcome], list[UnitPlan]]:
        """The unit's outcomes; or the units that replace it (none loaded yet)."""
        try:
            if unit.load is not None:
                outcomes, skipped = unit.load.result()  # the workers' or the database's error, if any
            else:
                outcomes, skipped = _load_staged(self.loader, unit, self.next_mode)
                self.truncate_next = self.truncate_next and not outcomes
            self.summary.files_skipped += skipped
            return outcomes, []
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
            self.truncate_next = self.truncate_next or unit.truncates  # rolled back: whatever replaces it empties the tables
            if isinstance(exc, SplitFailed):
                # A shard did not read what the scan of the file promised: never load wrong positions
                log.debug("the shards of %s disagree with its scan; loading it in one piece", unit.keys[0], exc_info=True)
                return [], [self.planner.whole(unit.plan)]
            broken = isinstance(exc, BrokenProcessPool)
            if self.planner.retries(unit.plan, broken):
                log.debug("%d files failed; loading them one by one", len(unit.keys), exc_info=True)
                return [], self.planner.one_by_one(unit.plan, broken)
            name = object_name(self.location, unit.keys[0])
            reason = WORKER_DIED if broken else f"{type(exc).__name__}: {first_line(exc)}"
            log.debug("loading %s failed", name, exc_info=True)
            staged = [file for index in sorted(unit.results)[:1] for file in unit.results[index].group.files]
            digest = self._record_failed_file(unit.keys[0], exc, reason, staged)
            return [LoadOutcome(name, digest, status=FAILED, error=reason)], []

    def _record_failed_file(self, key: str, error: BaseException, reason: str, staged: list[StagedFile]) -> str:
        """A file that failed, whatever the fault (its worker could not stage it or died, the database went away), is
        ``failed`` in the history with the reason, never left ``running`` nor missing: by the SHA-256 its worker found
        (``staged``: its account when staging succeeded and the load failed), else (a local file) hashed here. Returns
        that SHA-256 ("" when unknown: an S3 object its worker never read)."""
        if staged:
            files = staged
        elif isinstance(error, StagingError):
            files = error.staged_files()
        elif self.location.is_s3:
            return ""
        else:
            try:
                files = [StagedFile(object_name(self.location, key), sha256_of(self.location.local_path(key)))]
            except OSError:  # gone, or unreadable: nothing to key its history by
                return ""
        try:
            self.loader.record_failed(files, self.mode, reason)
        except Exception:  # noqa: BLE001 - the database may be what failed: the run still reports the file
            log.warning("could not record %s as failed in the file history", files[0].file_name if files else key, exc_info=True)
        return files[0].file_sha256 if files else ""


def run_load(
    source: str | Path | SourceLocation,
    dsn_or_loader: str | Loader,
    mode: LoadMode | str = LoadMode.DELTA,
    workers: int = 1,
    progress: Callable[[LoadOutcome, RunSummary], None] | None = None,
    keys: Iterable[str] | None = None,
    quarantine: str | SourceLocation | None = None,
    mapper: str | None = None,
    limits: PlanLimits = DEFAULT_LIMITS,
) -> RunSummary:
    """Load E2B(R3) files of ``source`` (all candidates, or only ``keys``) into the target database.

    Workers download, hash, parse and map groups of files into staged batches while the parent
    process loads them, one transaction per group, in the order the files are listed: parsing
    overlaps loading, and the outcome of every file is that of loading the files one by one. A
    large file is mapped by all workers at once and, where the loader can, bulk-loaded part by
    part while they parse it (``planning.py`` decides; ``limits`` sizes its groups, shards and
    parts). ``mapper`` chooses the staging core (see ``staging/cores.py``).
    """
    try:
        load_mode = LoadMode(mode)
    except ValueError:
        raise ValueError(f"mode must be 'delta' or 'full', not {mode!r}") from None
    started = time.perf_counter()
    location = source if isinstance(source, SourceLocation) else parse_location(source)
    quarantine_location = parse_location(quarantine) if isinstance(quarantine, str | Path) else quarantine
    loader = get_loader(dsn_or_loader) if isinstance(dsn_or_loader, str) else dsn_or_loader
    mapper_kind = chosen_mapper(mapper)  # decided (and a missing build reported) once, not in every worker
    # A new database has loaded nothing: its schema (0.3-0.4 s of DDL on PostgreSQL) is made while the workers parse
    new_database = not loader.holds_file_history()
    if not new_database:
        loader.create_all_tables()  # first: an earlier release's history may need its upgrade before it is read
    todo, sizes = files_to_load(location, keys)
    summary = RunSummary(files_found=len(todo), mapper=mapper_kind)
    completed = frozenset()
    if load_mode is LoadMode.DELTA and not new_database:
        # Content loaded before can only be a file of the same size: with every size known, the history is read by
        # its index on size, for the run's files (not every file ever loaded)
        known = len(sizes) == len(todo)
        completed = frozenset(loader.get_completed_file_hashes(set(sizes.values()) if known else None))
    planner = Planner(
        sizes,
        workers,
        mapper_kind,
        loader.capabilities,
        limits,
        splittable=lambda key: location.is_s3 or may_split(location.local_path(key)),
    )
    remove_abandoned_staging()
    workdir = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-"))
    serial = itertools.count()

    def started_unit(plan: UnitPlan) -> _Unit:
        number = next(serial)
        tasks = [
            _StageTask(
                location,
                plan.keys,
                workdir / f"{number}-{k}",
                quarantine_location,
                mapper_kind,
                Share(k, plan.shards) if plan.shards > 1 else None,
                limits.part_messages,
            )
            for k in range(plan.shards)
        ]
        return _Unit(plan, tasks)

    pool = StagingPool(workers, completed)
    committer = InOrderCommitter(loader, planner, location, load_mode, summary)
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="load-parts") as part_loads:
            units = [started_unit(plan) for plan in planner.plan(todo)]
            pool.schedule(units)
            if new_database:
                pool.top_up()  # the workers start parsing: the schema is made meanwhile
                loader.create_all_tables()
            loaded = 0  # units are loaded in order: units[:loaded] are done
            while loaded < len(units):
                pool.top_up()
                committer.start_in_parts(units[loaded], part_loads)
                pool.wait(also=units[loaded].load)
                while loaded < len(units) and units[loaded].ready:
                    unit = units[loaded]
                    loaded += 1
                    try:
                        outcomes, replacements = committer.commit(unit)
                    finally:
                        for task in unit.tasks:
                            shutil.rmtree(task.directory, ignore_errors=True)
                    fresh = [started_unit(plan) for plan in replacements]
                    units[loaded:loaded] = fresh
                    pool.schedule(fresh, first=True)
                    for outcome in outcomes:
                        summary.outcomes.append(outcome)
                        if progress:
                            progress(outcome, summary)
    finally:
        pool.close()
        shutil.rmtree(workdir, ignore_errors=True)
    summary.duration_seconds = time.perf_counter() - started
    return summary
