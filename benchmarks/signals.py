"""``make bench-signals``: the drug-event statistics refresh after a load into a large database, against a full rebuild.

Grows a fresh PostgreSQL database to ``--cases`` cases fast: a generated corpus of ``--seed-cases``
messages (follow-ups and nullifications included) is loaded with ``run_load``, then the four tables
the statistics read (``icsr_master``, ``drugs``, ``drug_substances``, ``reactions``) are multiplied
in SQL (``benchmarks.scale.copy_cases``: copy g renames every case with the suffix ``-G<g>``), and
``VACUUM ANALYZE`` leaves the planner the statistics of a database grown over time. Then, timed:

1. a full rebuild of the counts (``refresh --rebuild``: every case recounted);
2. a ``--load``-case load (two files, follow-ups of the first in the second), then the refresh after
   it, which recounts only the cases that load wrote;
3. a full rebuild again, so that both costs come from the same run and database.

Each refresh is timed by wall clock and by the CPU of the server process that ran it (from
``/proc``, when the server runs here): other databases' work on a shared server does not count,
but a parallel worker's would be missed (the incremental refresh uses none). ``--verify`` compares
every row of the view with the one-query computation after the incremental refresh. Nothing is asserted; figures are
printed.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from benchmarks.run import DEFAULT_SERVER_DSN, _proc_fields, bench_workdir, fresh_database
from benchmarks.scale import copy_cases
from loaders.registry import get_loader
from py_load_eudravigilance.fixtures.generator import CorpusSpec, write_corpus
from py_load_eudravigilance.pipeline import run_load
from py_load_eudravigilance.signals import DEFAULT_DRUG_ROLES, REACTION, STATISTICS_TABLE, StatisticsSummary, recomputed_statistics, refresh

STATISTICS_SOURCES = ("icsr_master", "drugs", "drug_substances", "reactions")
SEED, LOAD = 31, 32  # generator seeds: distinct case ids in each corpus


def grow(loader, cases: int, seed_messages: int, workdir: Path, workers: int) -> int:  # type: ignore[no-untyped-def]
    """Fill the new database of ``loader`` to about ``cases`` cases as described above; the cases it holds."""
    corpus = workdir / "seed"
    write_corpus(corpus, CorpusSpec(files=4, cases_per_file=math.ceil(seed_messages / 4), seed=SEED))
    run_load(corpus, loader, "delta", workers)
    master = loader.table("icsr_master")
    with loader.engine.begin() as conn:
        copies = math.ceil(cases / int(conn.scalar(select(func.count()).select_from(master)))) - 1
        if copies > 0:
            for name in STATISTICS_SOURCES:
                conn.execute(copy_cases(loader.table(name), copies))
    with loader.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
        return int(conn.scalar(select(func.count()).select_from(master)))


def backend_cpu_seconds(pid: int) -> float:
    fields = _proc_fields(pid)
    return math.nan if fields is None else (int(fields[12]) + int(fields[13])) / os.sysconf("SC_CLK_TCK")


def timed_refresh(loader, rebuild: bool) -> tuple[StatisticsSummary, float, float]:  # type: ignore[no-untyped-def]
    """One refresh in a connection of its own: its summary, wall seconds and its server process's CPU seconds."""
    local = make_url(str(loader.engine.url)).host in ("127.0.0.1", "localhost", "::1", None)
    with loader.engine.connect() as conn:
        pid = int(conn.scalar(text("SELECT pg_backend_pid()")))
        conn.commit()
        cpu_before, started = backend_cpu_seconds(pid) if local else math.nan, time.perf_counter()
        with conn.begin():
            summary = refresh(conn, loader, DEFAULT_DRUG_ROLES, rebuild)
        wall = time.perf_counter() - started
        return summary, wall, (backend_cpu_seconds(pid) - cpu_before) if local else math.nan


def verify(loader) -> int:  # type: ignore[no-untyped-def]
    """Rows of the view that differ from the one-query computation (counts and signal flag)."""
    compared = ("drug", REACTION, "a", "b", "c", "d", "n", "signal")
    with loader.engine.connect() as conn:
        view = {tuple(row) for row in conn.execute(select(*(loader.table(STATISTICS_TABLE).c[c] for c in compared)))}
        oracle = recomputed_statistics(loader.table).subquery()
        computed = {tuple(row) for row in conn.execute(select(*(oracle.c[c] for c in compared)))}
    return len(view ^ computed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=100_000, help="cases in the grown database (default: 100,000)")
    parser.add_argument("--seed-cases", type=int, default=5_000, help="messages loaded before the copies (default: 5,000)")
    parser.add_argument("--load", type=int, default=1_000, help="messages of the load before the refresh (default: 1,000)")
    parser.add_argument("--dsn", default=DEFAULT_SERVER_DSN)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--verify", action="store_true", help="compare every row of the view with the one-query computation")
    parser.add_argument("--workdir", help="keep the corpora here (default: a temporary directory)")
    args = parser.parse_args()

    with bench_workdir(args.workdir, "eudravig-signals-") as workdir, fresh_database(args.dsn) as dsn:
        loader = get_loader(dsn)
        loader.create_all_tables()
        started = time.perf_counter()
        cases = grow(loader, args.cases, args.seed_cases, workdir, args.workers)
        print(f"database grown to {cases:,} cases in {time.perf_counter() - started:.0f} s")
        print(f"{'refresh':<44} {'cases recounted':>15} {'pairs changed':>13} {'wall s':>7} {'server CPU s':>12}")

        def show(label: str, summary: StatisticsSummary, wall: float, cpu: float) -> None:
            print(f"{label:<44} {summary.cases_recounted:>15,} {summary.changed_pairs:>13,} {wall:>7.2f} {cpu:>12.2f}")

        show("full rebuild", *timed_refresh(loader, rebuild=True))
        corpus = workdir / "load"
        write_corpus(corpus, CorpusSpec(files=2, cases_per_file=math.ceil(args.load / 2), seed=LOAD, follow_up_fraction=0.1))
        run_load(corpus, loader, "delta", args.workers)
        summary, wall, cpu = timed_refresh(loader, rebuild=False)
        show(f"after loading {args.load:,} more messages", summary, wall, cpu)
        if args.verify:
            print(f"{'':<44} rows differing from the one-query computation: {verify(loader)}")
        rebuilt, rebuild_wall, rebuild_cpu = timed_refresh(loader, rebuild=True)
        show("full rebuild again", rebuilt, rebuild_wall, rebuild_cpu)
        print(
            f"\n{summary.cases:,} cases, {summary.pairs:,} pairs: the refresh after the load took {wall / rebuild_wall:.3f}x the "
            f"rebuild's wall time and {cpu / rebuild_cpu:.3f}x its server CPU (target: <= 1 s server CPU at >= 300,000 cases)"
        )
        loader.engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
