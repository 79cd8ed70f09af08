"""The benchmarks' own machinery: a corpus whose copies are distinct cases, a database grown in SQL that looks loaded,
phases read from a Dagster run's events. (Their figures are printed by ``make bench`` and ``make bench-scale``.)"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from sqlalchemy import func, select

from benchmarks.run import ExampleCopies, generated_message, padded_message, write_batches, write_singles
from benchmarks.scale import grow, load_corpus, step_phases
from loaders.registry import get_loader
from py_load_eudravigilance.pipeline import run_load
from py_load_eudravigilance.schema import AUDIT_TABLE, CASE_TABLE_NAMES, ROW_COUNTS_TABLE
from tests.conftest import SHARED_E2B

FDA_EXAMPLES = SHARED_E2B / "fda-examples"


@pytest.mark.skipif(not FDA_EXAMPLES.is_dir(), reason="needs ../shared/e2b/fda-examples")
def test_replicated_fda_examples_are_distinct_cases(tmp_path: Path) -> None:
    copies = ExampleCopies(FDA_EXAMPLES)
    cases = 2 * len(copies.templates) + 1  # every example twice: the copies of one example differ only by their ids
    write_batches(tmp_path / "batches", copies, cases, files=2)
    write_singles(tmp_path / "singles", copies, 3)
    for corpus, expected in (("batches", cases), ("singles", 3)):
        loader = get_loader(f"sqlite:///{tmp_path / corpus}.db")
        summary = run_load(tmp_path / corpus, loader)
        assert summary.failures == [] and summary.messages_rejected == 0
        master = loader.table("icsr_master")
        with loader.engine.connect() as conn:
            ids = conn.execute(select(master.c.safetyreportid, master.c.worldwide_unique_case_id, master.c.message_id)).all()
        loader.engine.dispose()
        assert len(ids) == expected
        for column in zip(*ids, strict=True):  # each identifier differs from copy to copy
            assert {value.rsplit("-", 1)[1] for value in column} == {f"BENCH{n:07d}" for n in range(expected)}


@pytest.mark.parametrize("message_of", [generated_message, padded_message])
def test_generated_corpora_are_distinct_cases(tmp_path: Path, message_of) -> None:  # type: ignore[no-untyped-def]
    write_batches(tmp_path / "corpus", message_of, 5, files=2)
    summary = run_load(tmp_path / "corpus", f"sqlite:///{tmp_path / 'corpus.db'}")
    assert summary.failures == [] and summary.totals()["cases_inserted"] == 5


def test_database_grown_in_sql_looks_loaded(postgres_dsn: str, tmp_path: Path) -> None:
    loader = get_loader(postgres_dsn)
    seed = get_loader(f"sqlite:///{tmp_path / 'seed.db'}")  # the seed corpus alone, loaded the ordinary way
    run_load(load_corpus(tmp_path / "alone", 30, 21), seed)
    try:
        cases = grow(loader, 70, 30, tmp_path, workers=1)
        with seed.engine.connect() as conn:
            seeded = {name: conn.scalar(select(func.count()).select_from(seed.table(name))) for name in (*CASE_TABLE_NAMES, AUDIT_TABLE)}
        with loader.engine.connect() as conn:
            grown = {name: conn.scalar(select(func.count()).select_from(loader.table(name))) for name in (*CASE_TABLE_NAMES, AUDIT_TABLE)}
            counts = loader.table(ROW_COUNTS_TABLE)
            kept = {name: rows for name, rows in conn.execute(select(counts.c.table_name, counts.c.row_count))}
        factor = math.ceil(70 / seeded["icsr_master"])
        assert factor >= 2 and cases == factor * seeded["icsr_master"]
        assert grown == {name: factor * rows for name, rows in seeded.items()}
        assert all(kept[name] == rows for name, rows in grown.items() if name in kept)
        # A load on top of it goes on as on any database: its cases come in beside the copies
        summary = run_load(load_corpus(tmp_path / "next", 10, 22), loader)
        assert summary.failures == [] and summary.totals()["cases_inserted"] > 0
    finally:
        loader.engine.dispose()
        seed.engine.dispose()


def test_dagster_phases_come_from_the_run_events(tmp_path: Path, sqlite_dsn: str) -> None:
    from dagster import instance_for_test

    from benchmarks.run import dagster_backfill

    with instance_for_test() as instance:
        messages, _, run_ids = dagster_backfill(load_corpus(tmp_path / "load", 6, 22), sqlite_dsn, 1, instance)
        records = instance.all_logs(run_ids[0])
    phases = step_phases(records)
    assert messages == 6
    assert phases["load (step start to first materialization)"] > 0
    assert any(label.startswith("check ") for label in phases)
    stamps = [r.timestamp for r in records if r.dagster_event is not None]
    assert sum(phases.values()) == pytest.approx(max(stamps) - min(stamps))
