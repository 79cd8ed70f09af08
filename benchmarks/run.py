"""``make bench``: throughput and memory of every load path, against a bare-parse baseline measured in the same run.

(a) bare lxml ``iterparse`` of the corpus on one core (the baseline every ratio refers to);
(b) the end-to-end CLI path (``run_load``) into PostgreSQL with all cores, with the compiled mapper and
    with the Python mapper, each with the CPU its parsing workers, the loading process and the server used;
(c) the same files through Dagster: one run per backfill chunk of file partitions;
(d) the same cases as single-case files against one batch file (CLI path);
(e) peak memory of staging one large batch file, and of one a quarter its size (flat as files grow).
The server's CPU is read from /proc when it runs on this machine. A run that uses the cores it has is
bound by computing, not by waiting; the server's CPU plus one bare parse, spread over the cores, is
the floor no faster mapping can go below. (c), (d) and (e) use the compiled mapper (else Python).

Nothing here is asserted; figures are printed. Needs a reachable PostgreSQL (``--dsn`` or
``$PGHOST``); a fresh database is created and dropped for each load.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lxml import etree
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from py_load_eudravigilance.fixtures.generator import (
    TERMS,
    CaseSpec,
    DrugSpec,
    ReactionSpec,
    build_batch,
    build_message,
    single_message_file,
)
from py_load_eudravigilance.parsing.reader import HARDENED, MESSAGE_TAG
from py_load_eudravigilance.pipeline import run_load

RICH_SHARE = 0.7  # messages like the FDA examples (~47 KB, comments); the rest are compact


def case(rng: random.Random, number: int) -> tuple[CaseSpec, bool]:
    rich = rng.random() < RICH_SHARE
    reactions = [ReactionSpec(*rng.choice(TERMS), xml_id=f"r-{number}-{i}") for i in range(4 if rich else rng.randint(1, 3))]
    drugs = [DrugSpec(xml_id=f"d-{number}-{i}") for i in range(4 if rich else rng.randint(1, 2))]
    spec = CaseSpec(f"BENCH-{number:07d}", reactions=reactions, drugs=drugs, padding_paragraphs=90 if rich else 0)
    return spec, rich


def write_batches(directory: Path, cases: int, per_file: int, seed: int = 1) -> list[Path]:
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for start in range(0, cases, per_file):
        messages = [build_message(*case(rng, n)) for n in range(start, min(cases, start + per_file))]
        path = directory / f"batch-{start // per_file:04d}.xml"
        path.write_text(build_batch(messages, f"BENCH-{start}"), encoding="utf-8")
        paths.append(path)
    return paths


def write_singles(directory: Path, cases: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for n in range(cases):
        (directory / f"case-{n:07d}.xml").write_text(single_message_file(*case(rng, n)), encoding="utf-8")


def bare_parse(paths: list[Path]) -> tuple[int, float]:
    """Messages and seconds for lxml iterparse alone (same hardening), freeing each message."""
    started, messages = time.perf_counter(), 0
    for path in paths:
        with path.open("rb") as source:
            for _, element in etree.iterparse(source, events=("end",), tag=MESSAGE_TAG, **HARDENED):
                messages += 1
                element.clear()
                parent = element.getparent()
                if parent is not None:
                    parent.remove(element)
    return messages, time.perf_counter() - started


@contextmanager
def fresh_database(server_dsn: str) -> Iterator[str]:
    url = make_url(server_dsn)
    name = f"eudravig_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# The local server's maintenance database; each load gets a fresh database beside it
DEFAULT_SERVER_DSN = f"postgresql+psycopg2://{os.environ.get('PGUSER', 'postgres')}@{os.environ.get('PGHOST', '127.0.0.1')}/postgres"


@contextmanager
def bench_workdir(kept: str | None, prefix: str) -> Iterator[Path]:
    """Where a bench writes its corpus: ``kept`` when given (left in place), else a temporary directory removed after."""
    workdir = Path(kept or tempfile.mkdtemp(prefix=prefix))
    try:
        yield workdir
    finally:
        if not kept:
            shutil.rmtree(workdir, ignore_errors=True)


def cli_load(source: Path, server_dsn: str, workers: int) -> tuple[int, float]:
    messages, seconds, _ = cli_load_with_server_cpu(source, server_dsn, workers)
    return messages, seconds


def cli_load_with_server_cpu(source: Path, server_dsn: str, workers: int, mapper: str | None = None) -> tuple[int, float, float | None]:
    """Messages, seconds, and the CPU seconds the PostgreSQL server spent meanwhile (None when it is not on this machine)."""
    with fresh_database(server_dsn) as dsn:
        postmaster = local_postmaster_pid(dsn)
        server_before = server_cpu_seconds(postmaster) if postmaster is not None else 0.0
        summary = run_load(source, dsn, "delta", workers, mapper=mapper)
        server_cpu = server_cpu_seconds(postmaster) - server_before if postmaster is not None else None
        if summary.failures:
            raise SystemExit(f"load failed: {summary.failures[:3]}")
        return summary.totals()["messages_total"], summary.duration_seconds, server_cpu


LOCAL_HOSTS = (None, "", "localhost", "127.0.0.1", "::1")


def local_postmaster_pid(dsn: str) -> int | None:
    """The server's main process when it runs on this machine and /proc shows it (its backends are its children)."""
    if make_url(dsn).host not in LOCAL_HOSTS:
        return None
    engine = create_engine(dsn)
    try:
        with engine.connect() as conn:
            # Read while connected: the backend process ends with its connection
            fields = _proc_fields(int(conn.scalar(text("SELECT pg_backend_pid()"))))
    finally:
        engine.dispose()
    return int(fields[2]) if fields is not None and fields[0].startswith("postgres") else None


def server_cpu_seconds(postmaster: int) -> float:
    """CPU seconds of the server so far: its processes alive now, and the children it has reaped (finished backends)."""
    ticks = 0
    for pid in (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()):
        fields = _proc_fields(pid)
        if fields is None or postmaster not in (pid, int(fields[2])):
            continue
        utime, stime, children_utime, children_stime = (int(f) for f in fields[12:16])
        ticks += utime + stime + (children_utime + children_stime if pid == postmaster else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def _proc_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` from the command name on: command, state, ppid, ... (see proc(5)); None if the process is gone."""
    try:
        command, rest = Path(f"/proc/{pid}/stat").read_text().split(" (", 1)[1].rsplit(")", 1)
    except (OSError, IndexError, ValueError):
        return None
    return [command, *rest.split()]


def dagster_load(source: Path, server_dsn: str, workers: int) -> tuple[int, float]:
    """Materialize every file partition the way a backfill does: one run per policy chunk."""
    from dagster import instance_for_test
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from eudravig_assets.assets import FILES_PER_BACKFILL_RUN
    from eudravig_assets.definitions import build_definitions
    from eudravig_assets.partitions import icsr_files
    from eudravig_assets.resources import EudravigDatabase, EudravigSource
    from py_load_eudravigilance.sources import list_objects, parse_location, partition_key_for

    keys = [partition_key_for(o.key) for o in list_objects(parse_location(source))]
    with fresh_database(server_dsn) as dsn, instance_for_test() as instance:
        instance.add_dynamic_partitions(icsr_files.name, keys)
        defs = build_definitions(EudravigDatabase(dsn=dsn), EudravigSource(source_uri=str(source)))
        job = defs.resolve_job_def("load_icsr_files")
        started, messages = time.perf_counter(), 0
        for start in range(0, len(keys), FILES_PER_BACKFILL_RUN):
            chunk = keys[start : start + FILES_PER_BACKFILL_RUN]
            result = job.execute_in_process(
                instance=instance,
                tags={ASSET_PARTITION_RANGE_START_TAG: chunk[0], ASSET_PARTITION_RANGE_END_TAG: chunk[-1]},
                # Events are stored as in production; printing each one to the terminal is not
                run_config={
                    "ops": {"icsr_tables": {"config": {"workers": workers}}},
                    "loggers": {"console": {"config": {"log_level": "WARNING"}}},
                },
            )
            master = next(e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "icsr_master")
            messages += int(master.materialization.metadata["messages"].value)
        return messages, time.perf_counter() - started


def peak_memory_mb(path: Path) -> float:
    """Peak RSS of a fresh process that stages ``path`` as a run does (parse, map, write parts).

    Read from VmHWM: unlike ``ru_maxrss``, it starts afresh at exec instead of inheriting the
    high-water mark of the (large) benchmark process that forked it.
    """
    code = (
        "import sys, tempfile; from pathlib import Path;"
        "from py_load_eudravigilance.pipeline import PART_MESSAGES; from py_load_eudravigilance.staging import sha256_of, stage_files;"
        "p = Path(sys.argv[1]); d = tempfile.mkdtemp(); stage_files([(p, p.name, sha256_of(p))], Path(d), part_messages=PART_MESSAGES);"
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))"
    )
    output = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True).stdout
    return int(output.strip().splitlines()[-1]) / 1024


def big_batch(path: Path, megabytes: int) -> Path:
    """A batch file of about ``megabytes`` MB of rich messages, written as a stream."""
    rng = random.Random(5)
    target = megabytes * 1024 * 1024
    written, number = 0, 0
    with path.open("w", encoding="utf-8") as out:
        head, tail = build_batch(["@@"], "BIG").split("@@")
        out.write(head)
        while written < target:
            message = build_message(case(rng, number)[0], with_comments=True)
            out.write(message)
            written += len(message)
            number += 1
        out.write(tail)
    return path


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds used so far by this process (the loading side) and by its finished children (the parsing workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def mappers() -> list[str]:
    """The mappers (b) compares: the compiled one when it is built, and the Python one."""
    from py_load_eudravigilance.staging.cores import compiled_core_problem

    problem = compiled_core_problem()
    if problem is not None:
        print(f"(b) {problem}: the Python mapper only")
        return ["python"]
    return ["compiled", "python"]


def report(rows: list[tuple[str, int, float]], baseline: float) -> None:
    print(f"\n{'path':<66} {'ICSRs':>8} {'seconds':>9} {'ICSRs/s':>9} {'time vs (a)':>12}")
    for label, messages, seconds in rows:
        rate = messages / seconds if seconds else 0.0
        ratio = (seconds / messages) / baseline if messages and baseline else float("nan")
        print(f"{label:<66} {messages:>8} {seconds:>9.2f} {rate:>9.0f} {ratio:>11.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--per-file", type=int, default=1_000, help="cases per batch file")
    parser.add_argument("--big-mb", type=int, default=1024, help="size of the large batch for the memory figure (0: skip)")
    parser.add_argument("--dsn", default=DEFAULT_SERVER_DSN)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-dagster", action="store_true")
    parser.add_argument("--workdir", help="keep the corpus here (default: a temporary directory)")
    args = parser.parse_args()

    with bench_workdir(args.workdir, "eudravig-bench-") as workdir:
        batches, one_batch, singles = workdir / "batches", workdir / "one-batch", workdir / "singles"
        paths = write_batches(batches, args.cases, args.per_file)
        write_batches(one_batch, args.cases, args.cases)
        write_singles(singles, args.cases)
        size_mb = sum(p.stat().st_size for p in paths) / 2**20
        print(f"corpus: {args.cases} cases ({RICH_SHARE:.0%} ~47 KB with comments, the rest compact)")
        print(f"        {len(paths)} batch files, {size_mb:.0f} MB")
        print(f"cores: {os.cpu_count()}, workers: {args.workers}")

        messages, seconds = bare_parse(paths)
        baseline = seconds / messages
        rows = [("(a) bare lxml iterparse, 1 core", messages, seconds)]
        splits = []
        for mapper in mappers():
            cpu_before = cpu_seconds()
            loaded, wall, server_cpu = cli_load_with_server_cpu(batches, args.dsn, args.workers, mapper)
            rows.append((f"(b) CLI run_load -> PostgreSQL, {args.workers} workers, {mapper} mapper", loaded, wall))
            loading_cpu, parsing_cpu = (after - before for after, before in zip(cpu_seconds(), cpu_before, strict=True))
            splits.append((mapper, loaded, wall, parsing_cpu, loading_cpu, server_cpu))
        cli = rows[1]
        if not args.skip_dagster:
            rows.append(("(c) Dagster backfill of the batch-file partitions", *dagster_load(batches, args.dsn, args.workers)))
        rows.append(("(d) CLI run_load -> PostgreSQL, the same cases in one batch file", *cli_load(one_batch, args.dsn, args.workers)))
        rows.append((f"(d) CLI run_load -> PostgreSQL, {args.cases} single-case files", *cli_load(singles, args.dsn, args.workers)))
        report(rows, baseline)
        cores = os.cpu_count() or 1
        print(f"\n(b) CPU per ICSR ({cores} cores; bare parse {baseline * 1000:.2f} ms):")
        for mapper, loaded, wall, parsing_cpu, loading_cpu, server_cpu in splits:
            server = f"server {server_cpu / loaded * 1000:.2f} ms" if server_cpu is not None else "server not on this machine"
            used = parsing_cpu + loading_cpu + (server_cpu or 0.0)
            print(
                f"    {mapper:<8} workers {parsing_cpu / loaded * 1000:.2f} ms, "
                f"loading process {loading_cpu / loaded * 1000:.2f} ms, {server}; "
                f"{used:.1f} s of the {cores * wall:.1f} s the cores offered"
            )
            if server_cpu is not None:
                # Whatever the mapping costs, the server's work and one parse of every message need the cores this long
                floor = (server_cpu + baseline * loaded) / cores
                print(
                    f"    {'':<8} floor: the server's CPU plus one bare parse over {cores} cores take {floor:.1f} s = "
                    f"{floor / loaded / baseline:.2f}x (a), {loaded / floor:.0f} ICSRs/s, even if mapping cost nothing"
                )
        print(f"\n(d) single-case files take {rows[-1][2] / rows[-2][2]:.2f}x the time of one batch of the same cases")
        if not args.skip_dagster:
            dagster_row = next(row for row in rows if row[0].startswith("(c)"))
            print(f"(c) Dagster takes {dagster_row[2] / cli[2]:.2f}x the time of the CLI path ({cli[0][4:]}) on the same files")

        if args.big_mb:
            small = big_batch(workdir / "quarter.xml", max(1, args.big_mb // 4))
            large = big_batch(workdir / "large.xml", args.big_mb)
            print(f"(e) peak RSS staging a {small.stat().st_size / 2**20:.0f} MB batch: {peak_memory_mb(small):.0f} MB")
            print(f"(e) peak RSS staging a {large.stat().st_size / 2**20:.0f} MB batch: {peak_memory_mb(large):.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
