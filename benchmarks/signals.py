"""``make bench-signals``: how long refreshing ``drug_event_statistics`` takes as the database grows.

Loads a generated corpus (follow-ups and nullifications included) into a fresh PostgreSQL database
in two steps, a tenth of it then the rest, and times the refresh after each: wall time and the
server's CPU. The ratio of the two shows how the refresh grows with the number of cases. Nothing is
asserted; figures are printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

from sqlalchemy import text

from benchmarks.run import DEFAULT_SERVER_DSN, bench_workdir, fresh_database, local_postmaster_pid, server_cpu_seconds
from loaders.registry import get_loader
from py_load_eudravigilance.fixtures.generator import CorpusSpec, write_corpus
from py_load_eudravigilance.pipeline import run_load

# The generator dates a follow-up by its file number (C.1.5 = 2024-01-(10 + file)): at most 20 files
FILES = 20


def refresh(dsn: str, repeats: int) -> tuple[float, float | None, int, int]:
    """Best wall seconds of ``repeats`` refreshes, the server CPU of that one, and the table's pairs and signals."""
    loader, postmaster = get_loader(dsn), local_postmaster_pid(dsn)
    best: tuple[float, float | None] = (float("inf"), None)
    for _ in range(repeats):
        before = server_cpu_seconds(postmaster) if postmaster else 0.0
        started = time.perf_counter()
        summary = loader.refresh_drug_event_statistics()
        wall = time.perf_counter() - started
        server = server_cpu_seconds(postmaster) - before if postmaster else None
        best = min(best, (wall, server), key=lambda pair: pair[0])
    return best[0], best[1], summary.pairs, summary.signals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=100_000, help="distinct cases, about (10%% more messages: follow-ups)")
    parser.add_argument("--dsn", default=DEFAULT_SERVER_DSN)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", help="keep the corpus here (default: a temporary directory)")
    args = parser.parse_args()

    with bench_workdir(args.workdir, "eudravig-signals-") as workdir:
        spec = CorpusSpec(files=FILES, cases_per_file=round(args.cases * 1.1 / FILES), seed=11, follow_up_fraction=0.1)
        paths = write_corpus(workdir / "corpus", spec)
        first, rest = workdir / "first", workdir / "rest"
        for target, chosen in ((first, paths[: FILES // 10]), (rest, paths[FILES // 10 :])):
            target.mkdir(exist_ok=True)
            for path in chosen:
                shutil.move(path, target / path.name)
        with fresh_database(args.dsn) as dsn:
            print(f"{'database':<40} {'cases':>8} {'pairs':>6} {'signals':>8} {'refresh s':>10} {'server CPU s':>13}")
            timings = []
            for step in (first, rest):
                run_load(step, dsn, "delta", os.cpu_count() or 1)
                with get_loader(dsn).engine.connect() as conn:
                    cases = conn.scalar(text("SELECT COUNT(*) FROM icsr_master WHERE NOT is_nullified"))
                wall, server, pairs, signals = refresh(dsn, args.repeats)
                timings.append((cases, wall))
                server_text = f"{server:.2f}" if server is not None else "-"
                print(f"{'after loading ' + step.name:<40} {cases:>8} {pairs:>6} {signals:>8} {wall:>10.2f} {server_text:>13}")
        (small, small_wall), (large, large_wall) = timings
        print(f"\n{large / small:.1f}x the cases took {large_wall / small_wall:.1f}x the refresh time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
