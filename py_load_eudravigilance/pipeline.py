"""The one load path: discover files, stage them in worker processes, load each in one transaction.

The CLI calls :func:`run_load`; everything database-specific goes through the loader chosen by
the DSN's dialect.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url

from loaders.base import LoadOutcome
from loaders.interface import LoaderInterface
from loaders.registry import get_loader
from py_load_eudravigilance.staging import StagedFile, sha256_of, stage_file, utc_now

log = logging.getLogger(__name__)

XML_SUFFIXES = (".xml",)


@dataclass
class RunSummary:
    files_found: int = 0
    files_skipped: int = 0
    outcomes: list[LoadOutcome] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

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

    def totals(self) -> dict[str, int]:
        keys = ("messages_total", "cases_inserted", "cases_updated", "cases_skipped_older", "cases_nullified", "messages_rejected")
        return {key: sum(getattr(o, key) for o in self.outcomes) for key in keys}


def redact_dsn(dsn: str) -> str:
    """The DSN with its password masked, for logs and messages."""
    try:
        return make_url(dsn).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable DSN is shown as nothing rather than leaked
        return "<unparsable DSN>"


def discover_files(source: str | Path) -> list[Path]:
    """XML files of a local folder (recursively), a glob pattern or a single file, sorted."""
    text = str(source)
    if any(ch in text for ch in "*?["):
        base = Path(text).anchor or "."
        pattern = str(Path(text).relative_to(base)) if Path(text).is_absolute() else text
        return sorted(p for p in Path(base).glob(pattern) if p.is_file())
    path = Path(text)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in XML_SUFFIXES)
    if path.is_file():
        return [path]
    raise FileNotFoundError(f"source not found: {text}")


def load_staged(loader: LoaderInterface, staged: StagedFile, load_mode: str) -> LoadOutcome:
    """Load one staged file; a failure is recorded in the file history, then re-raised."""
    started_at = utc_now()
    with ExitStack() as stack:
        buffers = staged.open_buffers(stack)
        try:
            loader.load_normalized_data(buffers, staged.row_counts, load_mode, staged.file_name, staged.file_sha256)  # type: ignore[arg-type]
        except Exception as exc:
            record = getattr(loader, "record_failure", None)
            if record is not None:
                record(staged.file_name, staged.file_sha256, load_mode, f"{type(exc).__name__}: {exc}", started_at)
            raise
    # Loaders built on loaders.base report what the merge did; for other plugins, what staging saw
    return getattr(loader, "last_outcome", None) or LoadOutcome(
        staged.file_name, staged.file_sha256, messages_total=staged.messages_total, messages_rejected=staged.messages_rejected
    )


def run_load(
    source: str | Path,
    dsn: str,
    mode: str = "delta",
    workers: int = 1,
    progress: Callable[[LoadOutcome, RunSummary], None] | None = None,
    files: Iterable[Path] | None = None,
) -> RunSummary:
    """Load every E2B(R3) file of ``source`` into the database at ``dsn``."""
    if mode not in ("delta", "full"):
        raise ValueError(f"mode must be 'delta' or 'full', not {mode!r}")
    loader = get_loader(dsn)
    loader.create_all_tables()
    paths = list(files) if files is not None else discover_files(source)
    summary = RunSummary(files_found=len(paths))
    completed = loader.get_completed_file_hashes() if mode == "delta" else set()
    pending: list[tuple[Path, str]] = []
    for path in paths:
        digest = sha256_of(path)
        if digest in completed:
            summary.files_skipped += 1
            continue
        pending.append((path, digest))
    workdir = Path(tempfile.mkdtemp(prefix="eudravig-stage-"))
    truncate_next = mode == "full"
    try:
        with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
            futures: dict[Future[StagedFile], tuple[Path, Path]] = {}
            queue = list(enumerate(pending))
            while queue or futures:
                # Keep a bounded number of staged files on disk: parse ahead of loading, not all at once
                while queue and len(futures) < 2 * max(1, workers):
                    index, (path, digest) = queue.pop(0)
                    stage_dir = workdir / str(index)
                    futures[pool.submit(stage_file, path, stage_dir, file_sha256=digest)] = (path, stage_dir)
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in done:
                    path, stage_dir = futures.pop(future)
                    try:
                        staged = future.result()
                        outcome = load_staged(loader, staged, "full" if truncate_next else "delta")
                        truncate_next = False
                        summary.outcomes.append(outcome)
                        if progress:
                            progress(outcome, summary)
                    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
                        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                        log.debug("loading %s failed", path.name, exc_info=True)
                        summary.failures.append((path.name, reason))
                    finally:
                        shutil.rmtree(stage_dir, ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return summary
