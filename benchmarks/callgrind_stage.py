"""Instructions a parsing worker executes per message, phase by phase, counted by callgrind (issue 24).

Time on a shared 2-core machine is noise; instruction counts are not. This stages ``--messages``
messages of the bench corpus (the FDA examples replicated, as ``make bench`` builds it; generated
compact messages without ``../shared``) in one batch file, the way a worker does, under
``valgrind --tool=callgrind``, once per phase added:

- ``parse``: ``BatchReader`` alone (lxml ``iterparse``, hardened, each message freed);
- ``map``: plus the compiled core's ``stage_message`` (every table's rows, the audit row and payload);
- ``unmapped``: plus the count of values no column holds (``mapping/_unmapped.pyx``);
- ``worker``: ``stage_files`` as a worker calls it (the above, the file's account, the
  batch written to disk).

Each run first stages a small warm-up file in full (imports, the plan, the automaton's states), and a
run with the warm-up alone is subtracted, so a phase's figure is what the messages cost, not start-up.
``PYTHONHASHSEED`` is fixed: two runs of the same code count within a few hundred instructions a message.

    .venv/bin/python -m benchmarks.callgrind_stage --messages 200 [--top 25]

``--top`` also prints the functions of the ``worker`` run that execute the most instructions themselves
(``callgrind_annotate``), which is where to look for waste. Needs valgrind; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

PHASES = ("parse", "map", "unmapped", "worker")
WARM_UP_MESSAGES = 12


def workload(phase: str, warm_up: Path, measured: Path | None, scratch: Path) -> None:
    """What the run under callgrind executes: the warm-up file in full, then ``measured`` up to ``phase``
    (``hash``: its SHA-256 alone; ``bare``: lxml's iterparse alone, as ``make bench`` (a) times it)."""
    from benchmarks.run import bare_parse
    from py_load_eudravigilance.mapping.unmapped import counter_for
    from py_load_eudravigilance.parsing.reader import BatchReader
    from py_load_eudravigilance.staging import sha256_of, stage_files
    from py_load_eudravigilance.staging.cores import create_core

    core = create_core("compiled")
    stage_files([(warm_up, warm_up.name, sha256_of(warm_up))], scratch / "warm-up", core)
    if measured is None:
        return
    if phase == "bare":
        bare_parse([measured])
    elif phase == "hash":
        sha256_of(measured)
    elif phase == "worker":  # the digest is passed, as the worker's own is the hash phase
        stage_files([(measured, measured.name, "0" * 64)], scratch / "measured", core)
    else:
        count = counter_for(core.name)
        core.begin_file(measured.name, "0" * 64)
        with measured.open("rb") as source:
            for position, message, _ in BatchReader(source, measured.name).entries():
                if phase != "parse":
                    core.stage_message(message, position)
                    if phase == "unmapped":
                        count(message)
                    core.take()  # what the batch writer does as buffers fill, without the file


def instructions(output: Path) -> int:
    """The run's total instruction count, from callgrind's output file."""
    for line in output.read_text().splitlines():
        if line.startswith("totals:") or line.startswith("summary:"):
            return int(line.split()[1])
    raise ValueError(f"no totals in {output}")


def run_under_callgrind(phase: str, warm_up: Path, measured: Path | None, directory: Path) -> Path:
    output = directory / f"callgrind.{phase if measured is not None else 'warm-up'}"
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={output}",
        sys.executable,
        "-m",
        "benchmarks.callgrind_stage",
        "--workload",
        phase,
        str(warm_up),
        str(measured or ""),
        str(directory),
    ]
    environment = {**os.environ, "PYTHONHASHSEED": "0", "PY_LOAD_EUDRAVIGILANCE_MAPPER": "compiled"}
    subprocess.run(command, check=True, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return output


def own_instructions(output: Path) -> dict[str, int]:
    """Instructions each function executed itself (not in its callees), from ``callgrind_annotate``."""
    annotated = subprocess.run(
        ["callgrind_annotate", "--auto=no", "--threshold=100", str(output)], check=True, capture_output=True, text=True
    )
    functions: dict[str, int] = {}
    for line in annotated.stdout.splitlines():
        matched = re.match(r"^\s*([\d,]+) \([ \d.]+%\)\s+(\S.*)$", line)
        if matched and "PROGRAM TOTALS" not in line:
            name = re.sub(r"^/tmp/python-build[^:]*/|'\d+", "", matched.group(2))  # recursion depths counted as one
            functions[name] = functions.get(name, 0) + int(matched.group(1).replace(",", ""))
    return functions


def top_functions(output: Path, base: Path, count: int, messages: int) -> list[str]:
    """The ``count`` functions whose own instructions grew the most from the warm-up run, per message."""
    measured, warm_up = own_instructions(output), own_instructions(base)
    grown = sorted(((n - warm_up.get(name, 0), name) for name, n in measured.items()), reverse=True)[:count]
    return [f"{added / messages:12,.0f}  {name}" for added, name in grown]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--top", type=int, default=0, help="also list the functions costing the most in the worker run")
    parser.add_argument("--phases", nargs="+", choices=(*PHASES, "bare", "hash"), default=[*PHASES, "bare", "hash"])
    parser.add_argument("--keep", type=Path, help="keep the corpus and callgrind's output files in this directory")
    parser.add_argument("--workload", nargs=4, metavar=("PHASE", "WARM_UP", "MEASURED", "SCRATCH"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.workload:
        phase, warm_up, measured, scratch = options.workload
        workload(phase, Path(warm_up), Path(measured) if measured else None, Path(scratch))
        return 0

    from benchmarks.run import default_corpus, write_batch

    message_of, description = default_corpus()
    with tempfile.TemporaryDirectory(prefix="callgrind-stage-") as temporary:
        directory = options.keep or Path(temporary)
        directory.mkdir(parents=True, exist_ok=True)
        warm_up = write_batch(directory / "warm-up.xml", map(message_of, range(10**6, 10**6 + WARM_UP_MESSAGES)), "WARM-UP")
        measured = write_batch(directory / "measured.xml", map(message_of, range(options.messages)), "MEASURED")
        n = options.messages
        print(f"{n} messages ({description}), {measured.stat().st_size // n:,} bytes each; M instructions a message:")
        base = run_under_callgrind("parse", warm_up, None, directory)
        chosen = [phase for phase in (*PHASES, "bare", "hash") if phase in options.phases]
        totals = {phase: instructions(run_under_callgrind(phase, warm_up, measured, directory)) - instructions(base) for phase in chosen}
        previous = 0
        for phase in (p for p in PHASES if p in totals):  # each phase's own share when the one before it ran too
            print(f"{phase:>9}: {totals[phase] / n / 1e6:7.3f}  ({(totals[phase] - previous) / n / 1e6:+.3f} this phase)")
            previous = totals[phase]
        if "bare" in totals:
            ratio = f"; the worker is {totals['worker'] / totals['bare']:.2f}x it" if "worker" in totals else ""
            print(f"{'bare':>9}: {totals['bare'] / n / 1e6:7.3f}  (lxml iterparse alone{ratio})")
        if "hash" in totals:  # valgrind hides the CPU's SHA instructions: OpenSSL takes a generic path, many times its real cost
            print(f"{'hash':>9}: {totals['hash'] / n / 1e6:7.3f}  (SHA-256, without the CPU's SHA instructions under valgrind)")
        if options.top and "worker" in totals:
            print(f"\nthe {options.top} functions whose own instructions grew most from the warm-up run (worker run, a message):")
            for line in top_functions(directory / "callgrind.worker", base, options.top, n):
                print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
