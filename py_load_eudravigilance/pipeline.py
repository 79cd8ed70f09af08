"""The one load path: discover files, stage them in worker processes, load each in one transaction.

The CLI calls :func:`run_load`; everything database-specific goes through the loader chosen by
the DSN's dialect.
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
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from loaders.contract import FAILED, PARTIAL, RUNNING, Loader, LoadOutcome
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
    SplitFailed,
    StagedFile,
    StagedGroup,
    StagedMessages,
    StagingCore,
    add_up_shards,
    published_parts,
    sha256_of,
    stage_files,
    utc_now,
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


# Small files are staged and merged together, one transaction per group: per-transaction work
# (staging tables, locks, commit) would otherwise dominate. Big files stay alone.
GROUP_MAX_FILES = 100
GROUP_MAX_BYTES = 32 * 1024 * 1024
# A file at least this large is staged by every worker, each taking its share of the messages; in the
# run's last round of groups, so is a file of SHARD_IDLE_MIN_BYTES (a daily batch alone in its run, or the
# third of three files on two cores, would otherwise leave cores idle). Each shard parses its byte range of
# the file (staging/split.py: each also hashes and scans the whole file, a few percent of parsing it). Where
# the file cannot be cut so, each shard parses all of it: about a tenth of the cost of mapping it in Python,
# but most of the cost of the compiled mapper, which then does not shard (a second parse costs more than it saves)
SHARD_MIN_BYTES = 64 * 1024 * 1024
SHARD_IDLE_MIN_BYTES = 4 * 1024 * 1024
# Where the loader can (PostgreSQL), every group is staged in parts of this many messages, bulk-loaded while
# the rest is parsed: loading overlaps parsing inside each file too, and only the last part waits for the end
# of a run (a part costs a few queries and one COPY per table, so parts stay a few MB)
PART_MESSAGES = 250
# How often a load of parts looks for new ones while the workers are still parsing
PART_POLL_SECONDS = 0.05
# S3 keys a run names without a listing (Dagster partitions) are sized by HEAD requests up to this many
HEAD_SIZED_MAX_OBJECTS = 32


# A run stages under the temporary directory in <prefix><its pid>-...; a run killed before it could clean up leaves it
STAGING_PREFIX = "eudravig-stage-"
WORKER_DIED = "a parsing worker process died (killed by the operating system, out of memory?); the file was not loaded, run again"


def first_line(error: BaseException) -> str:
    text = str(error)
    return text.splitlines()[0] if text else ""


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
    """How many workers stage one file alone in its group: all of them when it is large, or when it is mid-size and
    in the run's last round of groups, which leaves workers with nothing else to do; else one."""
    threshold = min(SHARD_IDLE_MIN_BYTES, SHARD_MIN_BYTES) if in_last_round else SHARD_MIN_BYTES
    return max(1, workers) if file_bytes >= threshold else 1


def load_staged(loader: Loader, group: StagedGroup, load_mode: str) -> list[LoadOutcome]:
    """Load one staged group; a failure is recorded in the file history, then re-raised."""
    return _load_recorded(loader, group.batches(), load_mode, lambda: group.files, group.files)


def _load_recorded(
    loader: Loader, batches: Iterable[Path], load_mode: str, staged_files: Callable[[], list[StagedFile]], known: list[StagedFile]
) -> list[LoadOutcome]:
    """``loader.load`` with the files marked running before (if the process dies, the history says so) and failed after an error."""
    started_at = utc_now()
    marked: dict[str, StagedFile] = {}  # the files marked running: whatever happens next, none stays running
    if known:
        loader.record_status(known, load_mode, RUNNING, None, started_at)
    else:
        batches = _marked_running(loader, batches, load_mode, started_at, marked)
    try:
        return loader.load(batches, load_mode, staged_files)
    except Exception as exc:
        files = known or _files_if_staged(staged_files) or list(marked.values())
        if files and not isinstance(exc, SplitFailed):  # (that file is loaded again at once, in one piece)
            loader.record_status(files, load_mode, FAILED, f"{type(exc).__name__}: {exc}", started_at)
        raise


def _marked_running(
    loader: Loader, batches: Iterable[Path], load_mode: str, started_at: datetime, marked: dict[str, StagedFile]
) -> Iterator[Path]:
    """The batches of a load in parts, each file marked running in the history (and in ``marked``) as its first part
    arrives."""
    for batch in batches:
        files = [StagedFile(name, sha) for name, sha in StagedMessages.load(batch).files if sha not in marked]
        if files:
            loader.record_status(files, load_mode, RUNNING, None, started_at)
            marked.update((file.file_sha256, file) for file in files)
        yield batch


def _files_if_staged(staged_files: Callable[[], list[StagedFile]]) -> list[StagedFile]:
    """The files staged; if their staging failed, those it was staging when it did (when it knows them)."""
    try:
        return staged_files()
    except StagingError as exc:
        return exc.staged_files()
    except Exception:  # noqa: BLE001 - the staging error itself is what the caller reports
        return []


def _record_failed_file(loader: Loader, location: SourceLocation, key: str, error: BaseException, reason: str, load_mode: str) -> str:
    """A file that failed, whatever the fault (its worker could not stage it or died, the database went away), is
    ``failed`` in the history with the reason, never left ``running`` nor missing: by the SHA-256 its worker found,
    else (a local file) hashed here. Returns that SHA-256 ("" when unknown: an S3 object its worker never read)."""
    if isinstance(error, StagingError):
        files = error.staged_files()
    elif location.is_s3:
        return ""
    else:
        try:
            files = [StagedFile(object_name(location, key), sha256_of(location.local_path(key)))]
        except OSError:  # gone, or unreadable: nothing to key its history by
            return ""
    try:
        loader.record_status(files, load_mode, FAILED, reason, utc_now())
    except Exception:  # noqa: BLE001 - the database may be what failed: the run still reports the file
        log.warning("could not record %s as failed in the file history", files[0].file_name if files else key, exc_info=True)
    return files[0].file_sha256 if files else ""


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
class _Unit:
    """What loads in one transaction: a group of files, or one large file staged in shards."""

    keys: tuple[str, ...]
    tasks: list[_StageTask]
    results: dict[int, _Staged] = field(default_factory=dict)  # by shard index
    error: BaseException | None = None
    finished: int = 0
    submitted: list[Future[_Staged]] = field(default_factory=list)
    load: Future[tuple[list[LoadOutcome], int]] | None = None  # the load of a unit staged in parts, beside its staging
    truncates: bool = False  # its load in parts was the one to empty the tables (a full reload)
    retried: bool = False  # staged again after its pool broke: a second break makes it the culprit
    streamed: bool = False  # loaded part by part while its workers still stage it

    @property
    def pending(self) -> bool:
        return self.finished < len(self.tasks)


@dataclass
class _Staged:
    group: StagedGroup
    skipped: int  # files already loaded, or repeated within the group


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
        if task.quarantine is not None and (task.share is None or task.share.index == 0):
            for key, (path, _, _), staged in zip(keys, todo, group.files, strict=True):
                if staged.error:
                    try:
                        quarantine_file(task.quarantine, key or path.name, path, staged.error)
                    except Exception as exc:  # noqa: BLE001 - a broken quarantine must not stop the load
                        staged.error += f" (copy to quarantine failed: {type(exc).__name__}: {exc})"
    return _Staged(group, len(task.keys) - len(todo))


def _load_unit(loader: Loader, unit: _Unit, load_mode: str) -> tuple[list[LoadOutcome], int]:
    """Load a unit whose staging finished: its outcomes, and how many of its files were skipped."""
    if unit.error is not None:
        raise unit.error
    shards = [unit.results[index] for index in sorted(unit.results)]
    if len(shards) == 1:
        (staged,) = shards
        if not staged.group.files:
            return [], staged.skipped
        return load_staged(loader, staged.group, load_mode), staged.skipped
    file = add_up_shards([shard.group for shard in shards])  # the shards of one large file load as one
    if file is None:
        return [], 1
    batches = [batch for shard in shards for batch in shard.group.batches()]
    return _load_recorded(loader, batches, load_mode, lambda: [file], [file]), 0


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


def _load_in_parts(loader: Loader, unit: _Unit, load_mode: str) -> tuple[list[LoadOutcome], int]:
    """Load a unit while it is still being staged: one transaction, parts bulk-loaded as they come; its outcomes and
    how many of its files were skipped."""

    def staged_files() -> list[StagedFile]:
        staged = [future.result() for future in unit.submitted]  # a worker's error ends the load here, rolled back
        if len(staged) == 1:
            return staged[0].group.files
        file = add_up_shards([shard.group for shard in staged])  # the shards of one large file load as one
        return [file] if file is not None else []

    parts = _parts_as_published(unit.submitted, [task.directory for task in unit.tasks])
    outcomes = _load_recorded(loader, parts, load_mode, staged_files, [])
    skipped = unit.submitted[0].result().skipped if len(unit.tasks) == 1 else (0 if outcomes else 1)
    return outcomes, skipped


def run_load(
    source: str | Path | SourceLocation,
    dsn_or_loader: str | Loader,
    mode: str = "delta",
    workers: int = 1,
    progress: Callable[[LoadOutcome, RunSummary], None] | None = None,
    keys: Iterable[str] | None = None,
    quarantine: str | SourceLocation | None = None,
    mapper: str | None = None,
) -> RunSummary:
    """Load E2B(R3) files of ``source`` (all candidates, or only ``keys``) into the target database.

    Workers download, hash, parse and map groups of files into staged batches while the parent
    process loads them, one transaction per group, in the order the files are listed: parsing
    overlaps loading, and the outcome of every file is that of loading the files one by one. A
    large file is mapped by all workers at once and, where the loader can, bulk-loaded part by
    part while they parse it. ``mapper`` chooses the staging core (see ``staging/cores.py``).
    """
    if mode not in ("delta", "full"):
        raise ValueError(f"mode must be 'delta' or 'full', not {mode!r}")
    started = time.perf_counter()
    location = source if isinstance(source, SourceLocation) else parse_location(source)
    quarantine_location = parse_location(quarantine) if isinstance(quarantine, str | Path) else quarantine
    loader = get_loader(dsn_or_loader) if isinstance(dsn_or_loader, str) else dsn_or_loader
    mapper_kind = chosen_mapper(mapper)  # decided (and a missing build reported) once, not in every worker
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
    groups = plan_groups(todo, sizes, workers, grouping=loader.loads_groups)
    remove_abandoned_staging()
    workdir = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-"))
    truncate_next = mode == "full"
    serial = itertools.count()

    # Units load one after another, in order, so even a full reload (whose first load empties the tables) can load in parts
    parts_allowed = loader.loads_parts_while_staging

    def unit_of(keys: tuple[str, ...], in_last_round: bool = False, whole: bool = False) -> _Unit:
        """One task, or one per worker for a large file (each maps its share of the messages) unless ``whole``."""
        # (From S3, each shard downloads the object: mapping, not the download, is the cost of a large file)
        shards = 1
        if len(keys) == 1 and not whole:
            shards = shards_for(sizes.get(keys[0], 0), in_last_round, workers)
            if shards > 1 and mapper_kind != "python" and not location.is_s3 and not may_split(location.local_path(keys[0])):
                shards = 1  # gzip, or not UTF-8: not cut into ranges, and the compiled mapper's cost is mostly parsing
        if shards > 1:
            log.debug("mapping %s in %d shards%s", object_name(location, keys[0]), shards, ", loaded in parts" if parts_allowed else "")
        # Always in parts: a batch's index stays small however large the file (memory stays flat)
        number = next(serial)
        tasks = [
            _StageTask(
                location,
                keys,
                workdir / f"{number}-{k}",
                quarantine_location,
                mapper_kind,
                Share(k, shards) if shards > 1 else None,
                PART_MESSAGES,
            )
            for k in range(shards)
        ]
        return _Unit(keys, tasks, streamed=parts_allowed)

    def report(outcomes: list[LoadOutcome]) -> None:
        for outcome in outcomes:
            summary.outcomes.append(outcome)
            if progress:
                progress(outcome, summary)

    pools: list[ProcessPoolExecutor] = []
    pool_of: dict[Future[_Staged], ProcessPoolExecutor] = {}

    def submit(task: _StageTask) -> Future[_Staged]:
        """A task for the workers; a pool broken by a worker's death (the OS killed it) is replaced, so the rest go on."""
        for _ in range(2):
            if not pools:
                pools.append(ProcessPoolExecutor(max_workers=max(1, workers), initializer=_init_worker, initargs=(completed, os.getpid())))
            try:
                return pools[-1].submit(_stage_group, task)
            except BrokenProcessPool:
                pools.pop().shutdown(wait=False, cancel_futures=True)
        raise BrokenProcessPool(WORKER_DIED)

    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="load-parts") as part_loads:
            futures: dict[Future[_Staged], tuple[_Unit, _StageTask]] = {}
            # The last len(groups) % workers groups run while the other workers have nothing left to do
            last_round = len(groups) - len(groups) % max(1, workers)
            units = [unit_of(tuple(keys), index >= last_round) for index, keys in enumerate(groups)]
            queue = [(unit, task) for unit in units for task in unit.tasks]
            queue.reverse()
            loaded = 0  # units are loaded in order: units[:loaded] are done
            while loaded < len(units):
                # Keep a bounded number of staged groups on disk: parse ahead of loading, not all at once
                while queue and len(futures) < 2 * max(1, workers):
                    unit, task = queue.pop()
                    future = submit(task)
                    pool_of[future] = pools[-1]
                    futures[future] = (unit, task)
                    unit.submitted.append(future)
                unit = units[loaded]
                if unit.streamed and unit.load is None and len(unit.submitted) == len(unit.tasks):
                    unit.load = part_loads.submit(_load_in_parts, loader, unit, "full" if truncate_next else "delta")
                    unit.truncates, truncate_next = truncate_next, False
                watched: list[Future[Any]] = [*futures, *([unit.load] if unit.load is not None else [])]
                if watched:
                    done, _ = wait(watched, return_when=FIRST_COMPLETED)
                    for future in done:
                        if future in futures:
                            staged_unit, task = futures.pop(future)
                            staged_unit.finished += 1
                            try:
                                staged_unit.results[task.share.index if task.share else 0] = future.result()
                            except BrokenProcessPool:
                                staged_unit.error = staged_unit.error or BrokenProcessPool(WORKER_DIED)
                                if pools and pool_of.pop(future, None) is pools[-1]:  # else its pool was replaced already
                                    pools.pop().shutdown(wait=False, cancel_futures=True)
                            except Exception as exc:  # noqa: BLE001 - reported with the unit when it loads
                                staged_unit.error = staged_unit.error or exc
                # Load, in order, every unit whose turn has come and whose staging is done
                while loaded < len(units):
                    unit = units[loaded]
                    if unit.pending or (unit.streamed and (unit.load is None or not unit.load.done())):
                        break
                    loaded += 1
                    try:
                        if unit.load is not None:
                            outcomes, skipped = unit.load.result()  # the workers' or the database's error, if any
                            summary.files_skipped += skipped
                        else:
                            outcomes, skipped = _load_unit(loader, unit, "full" if truncate_next else "delta")
                            summary.files_skipped += skipped
                            truncate_next = truncate_next and not outcomes
                        report(outcomes)
                    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
                        truncate_next = truncate_next or unit.truncates  # rolled back: whatever replaces it empties the tables
                        if isinstance(exc, SplitFailed):
                            # A shard did not read what the scan of the file promised: never load wrong positions
                            log.debug("the shards of %s disagree with its scan; loading it in one piece", unit.keys[0], exc_info=True)
                            whole = unit_of(unit.keys, whole=True)
                            units[loaded:loaded] = [whole]
                            queue.extend((whole, task) for task in reversed(whole.tasks))
                            continue
                        broken = isinstance(exc, BrokenProcessPool)
                        if len(unit.keys) > 1 or (broken and not unit.retried):
                            # Find the culprit: its group-mates load on their own, in its place. A worker's death breaks
                            # its whole pool, failing every task in flight with it: each such file gets one more try
                            log.debug("%d files failed; loading them one by one", len(unit.keys), exc_info=True)
                            singles = [unit_of((key,)) for key in unit.keys]
                            for single in singles:
                                single.retried = unit.retried or broken
                            units[loaded:loaded] = singles
                            queue.extend((single, task) for single in reversed(singles) for task in reversed(single.tasks))
                            continue
                        name = object_name(location, unit.keys[0])
                        reason = WORKER_DIED if broken else f"{type(exc).__name__}: {first_line(exc)}"
                        log.debug("loading %s failed", name, exc_info=True)
                        digest = _record_failed_file(loader, location, unit.keys[0], exc, reason, mode)
                        report([LoadOutcome(name, digest, status=FAILED, error=reason)])
                    finally:
                        for task in unit.tasks:
                            shutil.rmtree(task.directory, ignore_errors=True)
    finally:
        for pool in pools:
            pool.shutdown(cancel_futures=True)
        shutil.rmtree(workdir, ignore_errors=True)
    summary.duration_seconds = time.perf_counter() - started
    return summary
