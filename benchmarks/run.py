"""``make bench``: throughput and memory of every load path, against a bare-parse baseline measured in the same run.

The corpus has the element density of real ICSRs: copies of the FDA example messages in
``../shared/e2b/fda-examples`` (the ~45 KB ones; each copy is a distinct case: its case id C.1.1,
worldwide id C.1.8.1 and message id N.2.r.1 get a suffix, and every batch file its own batch id
N.1.2), else, without ``../shared``, compact generated messages. The former default corpus, 70% of
whose messages carry ~90 comment paragraphs that lxml parses and the mapper skips, stays as a second
row (``--skip-padded`` leaves it out): padding flatters the ratio to the bare parse.

(a) bare lxml ``iterparse`` of the corpus on one core (the baseline every ratio refers to);
(b) ``eudravigloader run`` as a user runs it (a new process: start-up and schema creation count) into
    PostgreSQL with all cores, with the compiled mapper and with the Python mapper, each with the CPU its
    parsing workers, the loading process and the server used;
(c) the same files through Dagster: one run per backfill chunk of file partitions, every check on; Dagster's own
    runs and events stored in its default SQLite instance storage, then in PostgreSQL (dagster-postgres);
(d) the same cases as one batch file and as single-case files, against the ``--files`` batch files of (b);
(e) peak memory of staging one large batch file, and of one a quarter its size (flat as files grow).
The server's CPU is read from /proc when it runs on this machine. A run that uses the cores it has is
bound by computing, not by waiting; the server's CPU plus one bare parse, spread over the cores, is
the floor no faster mapping can go below. (c), (d) and (e) use the compiled mapper (else Python).
Each figure is printed beside its target (issue 24).

Nothing here is asserted; figures are printed. Needs a reachable PostgreSQL (``--dsn`` or
``$PGHOST``); a fresh database is created and dropped for each load.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lxml import etree
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from py_load_eudravigilance.fixtures.generator import (
    TERMS,
    CaseSpec,
    CorpusSpec,
    DrugSpec,
    ReactionSpec,
    build_batch,
    build_message,
    random_case,
    standalone_message,
)
from py_load_eudravigilance.parsing.reader import HARDENED, MESSAGE_TAG
from py_load_eudravigilance.staging.cores import MAPPER_ENV

if TYPE_CHECKING:
    from dagster import DagsterInstance

MessageOf = Callable[[int], str]  # the message of case number n of a corpus

FDA_EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "e2b" / "fda-examples"
# The examples of a real ICSR's size; FAERS2022Scenario6 is a 2 MB stress instance, not a typical case
EXAMPLE_MAX_BYTES = 100_000
HL7 = {"h": "urn:hl7-org:v3"}
CASE_ID_ROOTS = ("2.16.840.1.113883.3.989.2.1.3.1", "2.16.840.1.113883.3.989.2.1.3.2")  # C.1.1, C.1.8.1
MESSAGE_END = "</PORR_IN049016UV>"


class ExampleCopies:
    """Message ``n`` is a copy of an FDA example (round robin) whose case and message ids end in ``-BENCH<n>``."""

    def __init__(self, directory: Path) -> None:
        self.templates = [self._cut(path) for path in sorted(directory.glob("*.xml")) if path.stat().st_size <= EXAMPLE_MAX_BYTES]
        if not self.templates:
            raise ValueError(f"no FDA example of at most {EXAMPLE_MAX_BYTES} bytes in {directory}")

    @staticmethod
    def _cut(path: Path) -> tuple[str, ...]:
        """The example's message split around its identifier values: odd pieces are the values that get the suffix."""
        document = path.read_text(encoding="utf-8")
        message = document[document.index("<PORR_IN049016UV") : document.index(MESSAGE_END) + len(MESSAGE_END)]
        root = etree.fromstring(path.read_bytes(), etree.XMLParser(**HARDENED))
        identifiers = {
            *root.xpath("h:PORR_IN049016UV/h:id/@extension", namespaces=HL7),  # N.2.r.1
            *(v for r in CASE_ID_ROOTS for v in root.xpath(".//h:investigationEvent/h:id[@root=$r]/@extension", r=r, namespaces=HL7)),
        }
        pattern = re.compile('(?<=extension=")(' + "|".join(re.escape(value) for value in identifiers) + ')(?=")')
        return tuple(pattern.split(message))

    def __call__(self, number: int) -> str:
        pieces, suffix = self.templates[number % len(self.templates)], f"-BENCH{number:07d}"
        return "".join(piece + suffix if index % 2 else piece for index, piece in enumerate(pieces))


def generated_message(number: int) -> str:
    """A compact generated case (1-3 reactions and drugs, no padding), the same for the same number."""
    return build_message(random_case(random.Random(number), f"BENCH-{number:07d}", 0, CorpusSpec()))


RICH_SHARE = 0.7  # of the padded corpus: messages padded with narrative and comments to ~47 KB; the rest are compact


def padded_message(number: int) -> str:
    """The former bench corpus: a rich message (4 reactions and drugs, ~90 paragraphs of narrative and comments) or a compact one."""
    rng = random.Random(number)
    rich = rng.random() < RICH_SHARE
    reactions = [ReactionSpec(*rng.choice(TERMS), xml_id=f"r-{number}-{i}") for i in range(4 if rich else rng.randint(1, 3))]
    drugs = [DrugSpec(xml_id=f"d-{number}-{i}") for i in range(4 if rich else rng.randint(1, 2))]
    spec = CaseSpec(f"BENCH-{number:07d}", reactions=reactions, drugs=drugs, padding_paragraphs=90 if rich else 0)
    return build_message(spec, with_comments=rich)


def default_corpus() -> tuple[MessageOf, str]:
    """The FDA examples replicated when ``../shared`` has them, else compact generated messages; and its description."""
    if FDA_EXAMPLES.is_dir():
        copies = ExampleCopies(FDA_EXAMPLES)
        return copies, f"{len(copies.templates)} FDA examples replicated, unique ids per copy"
    return generated_message, f"generated compact messages ({FDA_EXAMPLES} not found)"


def write_batch(path: Path, messages: Iterable[str], batch_number: str) -> Path:
    """A batch file of ``messages``, written as a stream (a 10,000-case file is never held in memory)."""
    head, tail = build_batch(["@@"], batch_number).split("@@")
    with path.open("w", encoding="utf-8") as out:
        out.write(head)
        for message in messages:
            out.write(message)
            out.write("\n")
        out.write(tail)
    return path


def write_batches(directory: Path, message_of: MessageOf, cases: int, files: int) -> list[Path]:
    """Cases 0..cases-1 in ``files`` batch files of (about) equal size, each with its own batch id."""
    directory.mkdir(parents=True, exist_ok=True)
    per_file = -(-cases // files)
    return [
        write_batch(
            directory / f"batch-{number:04d}.xml",
            map(message_of, range(start, min(cases, start + per_file))),
            f"BENCH-{uuid.uuid4()}",
        )
        for number, start in enumerate(range(0, cases, per_file))
    ]


def write_singles(directory: Path, message_of: MessageOf, cases: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for n in range(cases):
        (directory / f"case-{n:07d}.xml").write_text(standalone_message(message_of(n)), encoding="utf-8")


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
def fresh_database(server_dsn: str, template: str | None = None) -> Iterator[str]:
    """A new database beside ``server_dsn``'s (a copy of the database ``template`` when given), dropped after."""
    url = make_url(server_dsn)
    name = f"eudravig_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        copy = ""
        if template:
            # FILE_COPY copies the template's files at once instead of writing every block to the WAL (15's default)
            strategy = " STRATEGY FILE_COPY" if int(conn.scalar(text("SHOW server_version_num"))) >= 150000 else ""
            copy = f' TEMPLATE "{template}"{strategy}'
        conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
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


@dataclass
class Load:
    """One timed load: ICSRs loaded, wall seconds, and CPU seconds of its parts (None where not measured)."""

    messages: int
    seconds: float
    workers_cpu: float | None = None  # the parsing and mapping processes
    loading_cpu: float | None = None  # the process that runs the load (with its start-up)
    server_cpu: float | None = None  # PostgreSQL, when it runs on this machine


# `eudravigloader run` as its console script runs it (the same import and call), telling its CPU and its workers' at exit
CLI = (
    "import resource, sys\n"
    "from py_load_eudravigilance.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]\n"
    "print('bench-cpu', *(u.ru_utime + u.ru_stime for u in usage))\n"
    "sys.exit(code)\n"
)


def cli_run(source: Path, server_dsn: str, workers: int, mapper: str) -> Load:
    """``eudravigloader run SOURCE`` in a new process into a fresh database, timed from the process's start to its end."""
    with fresh_database(server_dsn) as dsn:
        postmaster = local_postmaster_pid(dsn)
        server_before = server_cpu_seconds(postmaster) if postmaster is not None else 0.0
        command = [sys.executable, "-c", CLI, "run", str(source), "--dsn", dsn, "--workers", str(workers)]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, MAPPER_ENV: mapper})
        seconds = time.perf_counter() - started
        server_cpu = server_cpu_seconds(postmaster) - server_before if postmaster is not None else None
    inserted, cpu = re.search(r"cases: (\d+) inserted", done.stdout), re.search(r"^bench-cpu (\S+) (\S+)$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or inserted is None or cpu is None:
        raise SystemExit(f"eudravigloader run {source} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    return Load(int(inserted.group(1)), seconds, float(cpu.group(2)), float(cpu.group(1)), server_cpu)


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


def dagster_load(source: Path, server_dsn: str, workers: int, postgres_instance: bool = False) -> tuple[int, float, dict[str, float]]:
    """Every file partition of ``source`` materialized into a fresh database, the way a backfill does it. Dagster's own
    runs and events go to its default SQLite instance storage, or with ``postgres_instance`` to a fresh PostgreSQL
    database (dagster-postgres, the storage of a deployment over several machines). Also the seconds of each phase of
    the runs, from their events (``benchmarks.scale.step_phases``)."""
    from dagster import instance_for_test

    from benchmarks.scale import step_phases

    with ExitStack() as stack:
        dsn = stack.enter_context(fresh_database(server_dsn))
        overrides = None
        if postgres_instance:
            overrides = {"storage": {"postgres": {"postgres_url": stack.enter_context(fresh_database(server_dsn))}}}
        instance = stack.enter_context(instance_for_test(overrides=overrides))
        messages, seconds, run_ids = dagster_backfill(source, dsn, workers, instance)
        phases: dict[str, float] = {}
        for run_id in run_ids:
            for label, spent in step_phases(instance.all_logs(run_id)).items():
                phases[label] = phases.get(label, 0.0) + spent
        return messages, seconds, phases


def print_phases(phases: dict[str, float]) -> None:
    """A Dagster run's phases under its row: where the time beyond the CLI's load goes."""
    for label, spent in phases.items():
        print(f"      {label:<66} {spent:>9.2f}")


def dagster_backfill(source: Path, dsn: str, workers: int, instance: DagsterInstance) -> tuple[int, float, list[str]]:
    """Materialize every file partition the way a backfill does: one run per policy chunk. ICSRs, seconds and the run ids."""
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from eudravig_assets.assets import FILES_PER_BACKFILL_RUN
    from eudravig_assets.definitions import build_definitions
    from eudravig_assets.partitions import icsr_files
    from eudravig_assets.resources import EudravigDatabase, EudravigSource
    from py_load_eudravigilance.sources import list_objects, parse_location, partition_key_for

    keys = [partition_key_for(o.key) for o in list_objects(parse_location(source))]
    instance.add_dynamic_partitions(icsr_files.name, keys)
    defs = build_definitions(EudravigDatabase(dsn=dsn), EudravigSource(source_uri=str(source)))
    job = defs.resolve_job_def("load_icsr_files")
    started, messages, run_ids = time.perf_counter(), 0, []
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
        run_ids.append(result.run_id)
        master = next(e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "icsr_master")
        messages += int(master.materialization.metadata["messages"].value)
    return messages, time.perf_counter() - started, run_ids


def peak_memory_mb(path: Path) -> float:
    """Peak RSS of a fresh process that stages ``path`` as a run does (parse, map, write parts).

    Read from VmHWM: unlike ``ru_maxrss``, it starts afresh at exec instead of inheriting the
    high-water mark of the (large) benchmark process that forked it.
    """
    code = (
        "import sys, tempfile; from pathlib import Path;"
        "from py_load_eudravigilance.planning import PlanLimits; from py_load_eudravigilance.staging import sha256_of, stage_files;"
        "p = Path(sys.argv[1]); d = tempfile.mkdtemp();"
        "stage_files([(p, p.name, sha256_of(p))], Path(d), part_messages=PlanLimits().part_messages);"
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))"
    )
    output = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True).stdout
    return int(output.strip().splitlines()[-1]) / 1024


def big_batch(path: Path, message_of: MessageOf, megabytes: int) -> Path:
    """A batch file of about ``megabytes`` MB of the corpus's messages."""
    target, written = megabytes * 2**20, 0

    def until_large_enough() -> Iterator[str]:
        nonlocal written
        for number in itertools.count():
            if written >= target:
                return
            message = message_of(number)
            written += len(message) + 1
            yield message

    return write_batch(path, until_large_enough(), f"BENCH-BIG-{megabytes}")


def mappers() -> list[str]:
    """The mappers (b) compares: the compiled one when it is built, and the Python one."""
    from py_load_eudravigilance.staging.cores import compiled_core_problem

    problem = compiled_core_problem()
    if problem is not None:
        print(f"(b) {problem}: the Python mapper only")
        return ["python"]
    return ["compiled", "python"]


def row(label: str, load: Load, baseline: float) -> None:
    """One path's figures, printed as soon as they are measured (a long run shows its progress)."""
    rate = load.messages / load.seconds if load.seconds else 0.0
    ratio = (load.seconds / load.messages) / baseline if load.messages and baseline else float("nan")
    print(f"{label:<72} {load.messages:>8} {load.seconds:>9.2f} {rate:>9.0f} {ratio:>11.2f}x", flush=True)


def target(what: str, figure: float, limit: float, unit: str = "x") -> None:
    """One figure beside its target (issue 24), and whether it is met."""
    print(f"  {what:<68} {f'{figure:.2f}{unit}':>9}   target {f'<= {limit:g}{unit}':<10} {'met' if figure <= limit else 'MISSED'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=10, help="batch files the cases of (a), (b), (c) are spread over")
    parser.add_argument("--big-mb", type=int, default=1024, help="size of the large batch for the memory figure (0: skip)")
    parser.add_argument("--dsn", default=DEFAULT_SERVER_DSN)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-dagster", action="store_true")
    parser.add_argument("--skip-padded", action="store_true", help="leave out the padded corpus's rows")
    parser.add_argument("--workdir", help="keep the corpus here (default: a temporary directory)")
    args = parser.parse_args()

    message_of, description = default_corpus()
    with bench_workdir(args.workdir, "eudravig-bench-") as workdir:
        batches, one_batch, singles = workdir / "batches", workdir / "one-batch", workdir / "singles"
        paths = write_batches(batches, message_of, args.cases, args.files)
        write_batches(one_batch, message_of, args.cases, 1)
        write_singles(singles, message_of, args.cases)
        size_mb = sum(p.stat().st_size for p in paths) / 2**20
        print(f"corpus: {args.cases} cases, {description}")
        print(f"        {len(paths)} batch files, {size_mb:.0f} MB ({size_mb * 2**10 / args.cases:.0f} KB per ICSR)")
        print(f"cores: {os.cpu_count()}, workers: {args.workers}")

        messages, seconds = bare_parse(paths)
        baseline = seconds / messages
        print(f"\n{'path':<72} {'ICSRs':>8} {'seconds':>9} {'ICSRs/s':>9} {'time vs (a)':>12}")
        row("(a) bare lxml iterparse, 1 core", Load(messages, seconds), baseline)
        loads: dict[str, Load] = {}
        for mapper in mappers():
            loads[mapper] = cli_run(batches, args.dsn, args.workers, mapper)
            row(f"(b) eudravigloader run -> PostgreSQL, {args.workers} workers, {mapper} mapper", loads[mapper], baseline)
        cli_mapper = next(iter(loads))
        cli = loads[cli_mapper]
        dagster = dagster_on_postgres = None
        if not args.skip_dagster:
            messages, seconds, phases = dagster_load(batches, args.dsn, args.workers)
            dagster = Load(messages, seconds)
            row("(c) Dagster backfill of the batch-file partitions, every check", dagster, baseline)
            print_phases(phases)
            messages, seconds, _ = dagster_load(batches, args.dsn, args.workers, postgres_instance=True)
            dagster_on_postgres = Load(messages, seconds)
            row("(c) the same, Dagster's instance storage in PostgreSQL", dagster_on_postgres, baseline)
        one = cli_run(one_batch, args.dsn, args.workers, cli_mapper)
        row("(d) eudravigloader run, the same cases in one batch file", one, baseline)
        single = cli_run(singles, args.dsn, args.workers, cli_mapper)
        row(f"(d) eudravigloader run, {args.cases} single-case files", single, baseline)
        if not args.skip_padded:
            padded = write_batches(workdir / "padded", padded_message, args.cases, args.files)
            padded_parse = Load(*bare_parse(padded))
            padded_baseline = padded_parse.seconds / padded_parse.messages
            row(f"(a) padded corpus ({RICH_SHARE:.0%} with ~90 comment paragraphs): bare parse", padded_parse, padded_baseline)
            padded_load = cli_run(workdir / "padded", args.dsn, args.workers, cli_mapper)
            row(f"(b) padded corpus: eudravigloader run, {cli_mapper} mapper", padded_load, padded_baseline)

        cores = os.cpu_count() or 1
        print(f"\n(b) CPU per ICSR ({cores} cores; bare parse {baseline * 1000:.2f} ms):")
        for mapper, load in loads.items():
            assert load.workers_cpu is not None and load.loading_cpu is not None
            server = "server not on this machine" if load.server_cpu is None else f"server {load.server_cpu / load.messages * 1000:.2f} ms"
            used = load.workers_cpu + load.loading_cpu + (load.server_cpu or 0.0)
            print(
                f"    {mapper:<8} workers {load.workers_cpu / load.messages * 1000:.2f} ms, "
                f"loading process {load.loading_cpu / load.messages * 1000:.2f} ms (with its start-up), {server}; "
                f"{used:.1f} s of the {cores * load.seconds:.1f} s the cores offered"
            )
            if load.server_cpu is not None:
                # Whatever the mapping costs, the server's work and one parse of every message need the cores this long
                floor = (load.server_cpu + baseline * load.messages) / cores
                print(
                    f"    {'':<8} floor: the server's CPU plus one bare parse over {cores} cores take {floor:.1f} s = "
                    f"{floor / load.messages / baseline:.2f}x (a), {load.messages / floor:.0f} ICSRs/s, even if mapping cost nothing"
                )

        print("\ntargets (issue 24):")
        target(f"(b) eudravigloader run ({cli_mapper}) vs (a) bare parse, {args.cases} cases", cli.seconds / (baseline * cli.messages), 1.5)
        if dagster is not None and dagster_on_postgres is not None:
            target(f"(c) Dagster backfill, every check, vs (b) the CLI ({cli_mapper})", dagster.seconds / cli.seconds, 1.3)
            target("(c) the same, instance storage in PostgreSQL", dagster_on_postgres.seconds / cli.seconds, 1.3)
        target(f"(d) one {args.cases}-case file vs the same cases in {len(paths)} files", one.seconds / cli.seconds, 1.1)
        target("(d) single-case files vs one batch file", single.seconds / one.seconds, 1.3)
        assert cli.workers_cpu is not None
        target(f"(b) workers' CPU per ICSR ({cli_mapper})", cli.workers_cpu / cli.messages * 1000, 1.0, " ms")
        if cli.server_cpu is not None:
            target(f"(b) server's CPU per ICSR ({cli_mapper})", cli.server_cpu / cli.messages * 1000, 0.4, " ms")

        if args.big_mb:
            small = big_batch(workdir / "quarter.xml", message_of, max(1, args.big_mb // 4))
            large = big_batch(workdir / "large.xml", message_of, args.big_mb)
            small_mb, large_mb = peak_memory_mb(small), peak_memory_mb(large)
            print(f"(e) peak RSS staging a {small.stat().st_size / 2**20:.0f} MB batch: {small_mb:.0f} MB")
            print(f"(e) peak RSS staging a {large.stat().st_size / 2**20:.0f} MB batch: {large_mb:.0f} MB")
            target("(e) peak RSS of the large batch vs the quarter-size one (flat)", large_mb / small_mb, 1.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
