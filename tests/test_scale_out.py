"""Runs spread over machines: Dagster runs in separate processes share only PostgreSQL (the target database and
Dagster's own instance storage, dagster-postgres), load disjoint file partitions at the same time, and end as a
sequential load would. Each process stands for a machine a run launcher placed the run on."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from py_load_eudravigilance.fixtures.generator import CorpusSpec, write_corpus
from py_load_eudravigilance.pipeline import run_load
from py_load_eudravigilance.sources import partition_key_for
from tests.conftest import postgres_database
from tests.support.db import snapshot

RUN = textwrap.dedent(
    """
    import sys
    from dagster import DagsterInstance
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
    from eudravig_assets.definitions import build_definitions
    from eudravig_assets.resources import EudravigDatabase, EudravigSource

    dsn, source, first, last = sys.argv[1:5]
    instance = DagsterInstance.get()  # DAGSTER_HOME: PostgreSQL instance storage, shared by every "machine"
    defs = build_definitions(EudravigDatabase(dsn=dsn), EudravigSource(source_uri=source))
    result = defs.resolve_job_def("load_icsr_files").execute_in_process(
        instance=instance,
        tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last},
        run_config={"ops": {"icsr_tables": {"config": {"workers": 1}}}},
    )
    sys.exit(0 if result.success else 1)
    """
)


@pytest.fixture
def dagster_home(postgres_server: str, tmp_path: Path) -> Iterator[Path]:
    """A DAGSTER_HOME whose instance keeps runs and events in a PostgreSQL database of its own."""
    with postgres_database(postgres_server, "eudravig_dagster") as url:
        home = tmp_path / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(f"storage:\n  postgres:\n    postgres_url: {url}\ntelemetry:\n  enabled: false\n")
        yield home


def test_runs_on_separate_machines_load_disjoint_partitions_at_once_and_end_as_a_sequential_load(
    postgres_server: str, postgres_dsn: str, dagster_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster import DagsterInstance, RunsFilter

    from eudravig_assets.partitions import icsr_files

    source = tmp_path / "in"
    paths = write_corpus(source, CorpusSpec(files=6, cases_per_file=60, seed=5, follow_up_fraction=0.3))
    keys = [partition_key_for(path.name) for path in paths]
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(icsr_files.name, keys)
    halves = (keys[:3], keys[3:])
    environment = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    arguments = [[sys.executable, "-c", RUN, postgres_dsn, str(source), half[0], half[-1]] for half in halves]
    machines = [subprocess.Popen(command, env=environment) for command in arguments]
    assert [machine.wait(timeout=600) for machine in machines] == [0, 0]

    with DagsterInstance.get() as instance:
        runs = instance.get_run_records(RunsFilter())
        assert len(runs) == 2 and all(run.dagster_run.is_success for run in runs)
        (first, second) = sorted((run.start_time, run.end_time) for run in runs)
        assert second[0] < first[1], f"the runs did not overlap: {first} then {second}"

    with postgres_database(postgres_server) as sequential:
        for path in paths:
            assert not run_load(path, sequential, "delta", 1).failures
        assert snapshot(postgres_dsn) == snapshot(sequential)
