"""``make bench-scale``: what one daily load costs as the database grows (issue 24).

Times the same ``--load``-case load (two generated batch files, the second with follow-ups of the
first) into an empty database and into one grown to ``--cases`` cases, by the CLI path (``run_load``)
and by Dagster (the ``load_icsr_files`` job with every check), phase by phase, then the drug-event
statistics refresh after it (wall time and the server's CPU), and prints the ratio of each phase at
the large size to the empty one beside the targets. Nothing is asserted; figures are printed.

How the database grows fast: a generated corpus of ``--seed-cases`` messages (follow-ups and
nullifications included) is loaded once with ``run_load``; then every table holding cases or files
(the case tables, ``message_batches``, ``icsr_audit_log``, ``etl_file_history``, ``etl_quarantine``)
is multiplied in SQL, one ``INSERT ... SELECT`` per table joined with ``generate_series(1, copies)``:
copy ``g`` rewrites the case key ``safetyreportid``, the worldwide case id, the message id and the
file names and hashes with the suffix ``-G<g>``, so each copy is a distinct case from a distinct file
with its full version history in the audit log, as if a load had brought it. Then the exact row
counts (``etl_table_row_counts``) and the drug-event statistics are rebuilt over everything, and
``VACUUM ANALYZE`` leaves the planner the statistics a database that grew over time would have.
Each timed load gets its own copy of that database (``CREATE DATABASE ... TEMPLATE``). Each path runs
``--repeat`` times at each size, alternating CLI and Dagster, and each phase shows its median: on a
shared machine one run can be slowed by others' work.

Dagster's phases come from the run's event log: step start to the first materialization (the load
committed), the file partitions' events, the tables' materializations with ``dagster/row_count``,
each check by name, the step's end. Each event is charged the time since the event before it, so a
phase's figure is the time the step spent before reporting it: checks evaluated together and
reported at once charge their shared time to the first name reported.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Table, Text, cast, func, insert, select, text, true
from sqlalchemy.engine import make_url

from benchmarks.run import DEFAULT_SERVER_DSN, bench_workdir, dagster_backfill, fresh_database, local_postmaster_pid, server_cpu_seconds
from loaders.registry import get_loader
from loaders.upkeep import refresh_drug_event_statistics
from py_load_eudravigilance.fixtures.generator import CorpusSpec, write_corpus
from py_load_eudravigilance.mapping.catalog import CASE_KEY
from py_load_eudravigilance.pipeline import run_load
from py_load_eudravigilance.schema import COUNTED_TABLE_NAMES, FILE_HISTORY_TABLE, ROW_COUNTS_TABLE

if TYPE_CHECKING:
    from dagster import EventLogEntry

    from loaders.base import Loader

SEED_CORPUS, LOAD_CORPUS, WARM_UP_CORPUS = 21, 22, 23  # generator seeds: distinct case ids in each corpus
# Columns that name a case, a message or a file: each copy gets its own
COPIED_IDENTITY = (CASE_KEY, "worldwide_unique_case_id", "message_id", "file_sha256", "source_file_sha256", "file_name", "source_file_name")
# What a load writes, cases and files; the statistics' own tables are built from the cases afterwards
GROWN_TABLES = (*COUNTED_TABLE_NAMES, FILE_HISTORY_TABLE)
LOAD_FILES = 2  # the timed load's files: the second has follow-ups of the first


def load_corpus(directory: Path, messages: int, seed: int, files: int = LOAD_FILES) -> Path:
    write_corpus(directory, CorpusSpec(files=files, cases_per_file=math.ceil(messages / files), seed=seed))
    return directory


def copy_cases(table: Table, copies: int):  # type: ignore[no-untyped-def]
    """``INSERT ... SELECT``: ``copies`` copies of every row of ``table``, copy g with ``-G<g>`` after each identity."""
    series = func.generate_series(1, copies).table_valued("g").render_derived(name="copy")
    columns = [c for c in table.c if c.autoincrement is not True]  # a serial id numbers the copies itself
    values = [(c + "-G" + cast(series.c.g, Text)).label(c.name) if c.name in COPIED_IDENTITY else c for c in columns]
    return insert(table).from_select([c.name for c in columns], select(*values).select_from(table).join(series, true()))


def grow(loader: Loader, cases: int, seed_messages: int, workdir: Path, workers: int) -> int:
    """Fill the (new) database of ``loader`` to about ``cases`` cases as described above; the cases it holds."""
    loader.create_all_tables()
    if cases:
        summary = run_load(load_corpus(workdir / "seed", min(cases, seed_messages), SEED_CORPUS), loader, "delta", workers)
        if summary.failures:
            raise SystemExit(f"seed load failed: {summary.failures[:3]}")
        master = loader.table("icsr_master")
        with loader.engine.begin() as conn:
            seeded = int(conn.scalar(select(func.count()).select_from(master)))
            copies = math.ceil(cases / seeded) - 1
            if copies:
                for name in GROWN_TABLES:
                    conn.execute(copy_cases(loader.table(name), copies))
            # The copies bypassed the loads that keep the counts: counted again, as a database of an earlier release is
            conn.execute(loader.table(ROW_COUNTS_TABLE).delete())
            loader.start_row_counts(conn)
        refresh_drug_event_statistics(loader.engine, rebuild=True)  # the copies were never queued for an incremental refresh
    with loader.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
        return int(conn.scalar(select(func.count()).select_from(loader.table("icsr_master"))))


def cli_phases(dsn: str, source: Path, workers: int) -> dict[str, float]:
    """``run_load`` of ``source``, then the statistics refresh: wall seconds and the server's CPU seconds of each."""
    loader, postmaster = get_loader(dsn), local_postmaster_pid(dsn)

    def server() -> float:
        return server_cpu_seconds(postmaster) if postmaster is not None else math.nan

    try:
        phases: dict[str, float] = {}
        server_before, started = server(), time.perf_counter()
        summary = run_load(source, loader, "delta", workers)
        phases["CLI: run_load"] = time.perf_counter() - started
        phases["CLI: run_load, server CPU"] = server() - server_before
        if summary.failures:
            raise SystemExit(f"load failed: {summary.failures[:3]}")
        server_before, started = server(), time.perf_counter()
        refresh_drug_event_statistics(loader.engine)
        phases["statistics refresh after the load"] = time.perf_counter() - started
        phases["statistics refresh, server CPU"] = server() - server_before
        return phases
    finally:
        loader.engine.dispose()


def dagster_phases(dsn: str, source: Path, workers: int) -> dict[str, float]:
    """The ``load_icsr_files`` run(s) over ``source``: the wall time, and each phase from the event log."""
    from dagster import instance_for_test

    with instance_for_test() as instance:
        _, seconds, run_ids = dagster_backfill(source, dsn, workers, instance)
        phases: dict[str, float] = defaultdict(float)
        for run_id in run_ids:
            for label, spent in step_phases(instance.all_logs(run_id)).items():
                phases[f"Dagster: {label}"] += spent
        phases["Dagster: outside the run's events (creating it, returning)"] = seconds - sum(phases.values())
        return {"Dagster: whole run (wall)": seconds, **phases}


def step_phases(records: Sequence[EventLogEntry]) -> dict[str, float]:
    """Seconds per phase of one run: each event of a phase is charged the time since the event before it."""
    from dagster import DagsterEventType as Type

    phases: dict[str, float] = defaultdict(float)
    evaluations: Counter[str] = Counter()
    events = sorted((r for r in records if r.dagster_event is not None), key=lambda r: r.timestamp)
    previous = events[0].timestamp if events else 0.0  # the run's first event: its checks and materializations planned
    loaded = False
    for record in events:
        event = record.dagster_event
        assert event is not None
        kind = event.event_type
        if kind == Type.RUN_START:
            label = "run planned (first event to run start)"
        elif kind == Type.STEP_START:
            label = "run start to step start"
        elif kind == Type.ASSET_MATERIALIZATION:
            if not loaded:
                label, loaded = "load (step start to first materialization)", True
            else:
                label = "file partitions' events" if event.partition else "table counts and materializations (dagster/row_count)"
        elif kind == Type.ASSET_CHECK_EVALUATION:
            name = event.event_specific_data.check_name  # type: ignore[union-attr]
            evaluations[name] += 1
            label = f"check {name}"
        elif kind in (Type.STEP_SUCCESS, Type.STEP_FAILURE):
            label = "step end (after the last check)"
        elif kind in (Type.RUN_SUCCESS, Type.RUN_FAILURE):
            label = "step end to run end"
        else:
            continue  # outputs, logs: their time goes to the next phase event
        phases[label] += record.timestamp - previous
        previous = record.timestamp
    return {(f"{label} ({evaluations[label[6:]]}x)" if label.startswith("check ") else label): spent for label, spent in phases.items()}


def database_size(dsn: str) -> str:
    loader = get_loader(dsn)
    try:
        with loader.engine.connect() as conn:
            return str(conn.scalar(text("SELECT pg_size_pretty(pg_database_size(current_database()))")))
    finally:
        loader.engine.dispose()


def report(sizes: list[int], results: list[dict[str, float]]) -> None:
    """One row per phase: its seconds at each size, and the ratio of the large size to the empty one, beside the target."""
    (empty_cases, large_cases), (empty, large) = sizes, results
    labels = list(dict.fromkeys([*empty, *large]))
    print(f"\n{'phase of one load':<72} {f'{empty_cases:,} cases':>12} {f'{large_cases:,} cases':>15} {'ratio':>7}  target")
    for label in labels:
        small, big = empty.get(label, 0.0), large.get(label, 0.0)
        ratio = big / small if small >= 0.005 else math.nan
        goal = ""
        if label in ("CLI: run_load", "Dagster: whole run (wall)"):
            goal = f"<= 1.2x {'met' if ratio <= 1.2 else 'MISSED'}"
        elif label == "statistics refresh, server CPU":
            goal = f"<= 1 s at {large_cases:,} cases {'met' if big <= 1.0 else 'MISSED'}"
        ratio_text = f"{ratio:.2f}x" if not math.isnan(ratio) else "-"
        print(f"{label:<72} {small:>10.2f} s {big:>13.2f} s {ratio_text:>7}  {goal}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=300_000, help="cases of the large database (the other is empty)")
    parser.add_argument("--load", type=int, default=1_000, help="messages of the timed load")
    parser.add_argument("--seed-cases", type=int, default=2_000, help="messages loaded once, then copied in SQL")
    parser.add_argument("--dsn", default=DEFAULT_SERVER_DSN)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=3, help="timed loads per path and size (each phase: the median)")
    parser.add_argument("--workdir", help="keep the corpora here (default: a temporary directory)")
    args = parser.parse_args()

    with bench_workdir(args.workdir, "eudravig-scale-") as workdir:
        source = load_corpus(workdir / "load", args.load, LOAD_CORPUS)
        # Both paths once on a throwaway database first: the first load of a process pays imports and warm-up
        warm_up = load_corpus(workdir / "warm-up", 20, WARM_UP_CORPUS)
        for path in (cli_phases, dagster_phases):
            with fresh_database(args.dsn) as dsn:
                path(dsn, warm_up, args.workers)
        print(f"timed load: {args.load} messages in {LOAD_FILES} generated files; workers: {args.workers}, cores: {os.cpu_count()}")
        sizes, results = [], []
        for target in (0, args.cases):
            with fresh_database(args.dsn) as template:
                started = time.perf_counter()
                loader = get_loader(template)
                try:
                    cases = grow(loader, target, args.seed_cases, workdir / f"grow-{target}", args.workers)
                finally:
                    loader.engine.dispose()  # a template database must have no connections
                print(f"database of {cases:,} cases, {database_size(template)} on disk, grown in {time.perf_counter() - started:.0f} s")
                name = make_url(template).database
                runs: dict[str, list[float]] = defaultdict(list)
                for _ in range(args.repeat):
                    for path in (cli_phases, dagster_phases):
                        with fresh_database(args.dsn, template=name) as dsn:
                            for label, seconds in path(dsn, source, args.workers).items():
                                runs[label].append(seconds)
                sizes.append(cases)
                results.append({label: statistics.median(values) for label, values in runs.items()})
        report(sizes, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
