"""Version-aware merge semantics, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import itertools
import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from loaders.registry import get_loader
from py_load_eudravigilance.fixtures.generator import CaseSpec, DrugSpec, ReactionSpec
from py_load_eudravigilance.pipeline import files_to_load, run_load
from py_load_eudravigilance.planning import PlanLimits, Planner
from py_load_eudravigilance.schema import CASE_TABLE_NAMES
from py_load_eudravigilance.sources import parse_location
from tests.support.db import query, snapshot

HEADACHE = ReactionSpec("10019211", "Headache", xml_id="r-headache")
NAUSEA = ReactionSpec("10028813", "Nausea", xml_id="r-nausea")


def version(n: int, **kwargs) -> CaseSpec:  # type: ignore[no-untyped-def]
    base = {"most_recent_info": f"2024011{n}", "message_created": f"2024011{n}090000+0000", "reactions": [HEADACHE, NAUSEA]}
    base.update(kwargs)
    return CaseSpec("CASE-1", drugs=[DrugSpec(xml_id="d-1")], **base)


def load(dsn: str, *paths: Path, mode: str = "delta") -> None:
    for path in paths:
        summary = run_load(path, dsn, mode, workers=1)
        assert not summary.failures, summary.failures


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_version_chain_in_any_order_ends_with_the_newest(dsn: str, write_batch, order: tuple[int, ...]) -> None:  # type: ignore[no-untyped-def]
    files = [write_batch(f"v{n}.xml", version(n, reactions=[HEADACHE, NAUSEA][: 1 + (n % 2)])) for n in (1, 2, 3)]
    load(dsn, *(files[i] for i in order))
    assert query(dsn, "SELECT most_recent_info_date FROM icsr_master") == [("20240113",)]
    assert query(dsn, "SELECT COUNT(*) FROM reactions") == [(2,)]
    assert query(dsn, "SELECT COUNT(*) FROM icsr_audit_log") == [(3,)]


def test_amendment_that_drops_a_reaction_drops_its_rows_and_causality(dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    load(dsn, write_batch("v1.xml", version(1)))
    assert query(dsn, "SELECT COUNT(*) FROM drug_reaction_assessments") == [(2,)]
    load(dsn, write_batch("v2.xml", version(2, reactions=[HEADACHE])))
    assert query(dsn, "SELECT reaction_meddra_code FROM reactions") == [("10019211",)]
    assert query(dsn, "SELECT reaction_xml_id FROM drug_reaction_matrix") == [("r-headache",)]
    assert query(dsn, "SELECT COUNT(*) FROM drug_reaction_assessments") == [(1,)]


def test_nullification_sticks_against_older_versions(dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    load(dsn, write_batch("v1.xml", version(1)), write_batch("v3.xml", version(3, nullification=True)))
    load(dsn, write_batch("v2.xml", version(2)))
    rows = query(
        dsn, "SELECT is_nullified, nullification_amendment, nullification_amendment_reason, most_recent_info_date FROM icsr_master"
    )
    assert [(bool(r[0]), *r[1:]) for r in rows] == [(True, "1", "Duplicate report", "20240113")]


def test_dates_with_different_offsets_order_by_instant(dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    later_in_real_time = version(1, most_recent_info="20240201230000-0500", reactions=[HEADACHE])
    earlier_but_larger_text = version(2, most_recent_info="20240202010000+0000", reactions=[NAUSEA])
    load(dsn, write_batch("a.xml", later_in_real_time), write_batch("b.xml", earlier_but_larger_text))
    assert query(dsn, "SELECT most_recent_info_date FROM icsr_master") == [("20240201230000-0500",)]
    assert query(dsn, "SELECT reaction_meddra_code FROM reactions") == [("10019211",)]


def test_versions_in_one_batch_resolve_to_the_newest(dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    load(dsn, write_batch("all.xml", version(3, reactions=[NAUSEA]), version(1), version(2)))
    assert query(dsn, "SELECT most_recent_info_date FROM icsr_master") == [("20240113",)]
    assert query(dsn, "SELECT reaction_meddra_code FROM reactions") == [("10028813",)]


def test_loading_the_same_files_twice_changes_nothing(dsn: str, tmp_path: Path) -> None:
    from py_load_eudravigilance.fixtures.generator import CorpusSpec, write_corpus

    paths = write_corpus(tmp_path / "corpus", CorpusSpec(files=3, cases_per_file=15, seed=3))
    load(dsn, tmp_path / "corpus")
    before = snapshot(dsn)
    audit_before = query(dsn, "SELECT COUNT(*) FROM icsr_audit_log")
    summary = run_load(tmp_path / "corpus", dsn, "delta")
    assert summary.files_skipped == len(paths)
    run_load(tmp_path / "corpus", dsn, "full")
    assert snapshot(dsn) == before
    assert query(dsn, "SELECT COUNT(*) FROM icsr_audit_log") == audit_before


def test_a_run_reads_the_loaded_hashes_of_its_own_files_sizes_only(dsn: str, tmp_path: Path) -> None:
    from py_load_eudravigilance.fixtures.generator import CorpusSpec, write_corpus

    paths = write_corpus(tmp_path / "corpus", CorpusSpec(files=3, cases_per_file=4, seed=5))
    load(dsn, tmp_path / "corpus")
    recorded = dict(query(dsn, "SELECT file_name, file_size_bytes FROM etl_file_history"))
    assert recorded == {path.name: path.stat().st_size for path in paths}
    hashes = dict(query(dsn, "SELECT file_name, file_sha256 FROM etl_file_history"))
    loader = get_loader(dsn)
    size = paths[0].stat().st_size
    of_that_size = {hashes[path.name] for path in paths if path.stat().st_size == size}

    assert loader.get_completed_file_hashes({size}) == of_that_size
    assert loader.get_completed_file_hashes({1}) == set()
    assert loader.get_completed_file_hashes() == set(hashes.values())
    with create_engine(dsn).begin() as conn:  # a row an earlier release wrote, without a size: it may be any file's
        conn.execute(text("UPDATE etl_file_history SET file_size_bytes = NULL WHERE file_name = :name"), {"name": paths[1].name})
    assert loader.get_completed_file_hashes({1}) == {hashes[paths[1].name]}
    assert run_load(tmp_path / "corpus", dsn, "delta").files_skipped == len(paths)


@contextmanager
def failing_merge_of_reactions(dialect_class: type, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Within the block, the dialect's bulk load fails when it reaches the reactions table."""
    insert = dialect_class.insert_rows

    def fail_on_reactions(self, conn, table, stream, columns):  # type: ignore[no-untyped-def]
        if table.name == "reactions":
            raise RuntimeError("injected failure while loading reactions")
        return insert(self, conn, table, stream, columns)

    monkeypatch.setattr(dialect_class, "insert_rows", fail_on_reactions)
    yield
    monkeypatch.setattr(dialect_class, "insert_rows", insert)


def test_failure_mid_file_leaves_tables_unchanged_and_a_rerun_completes(dsn: str, write_batch, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    load(dsn, write_batch("v1.xml", version(1)))
    before = snapshot(dsn)
    path = write_batch("v2.xml", version(2, reactions=[NAUSEA]))
    with failing_merge_of_reactions(type(get_loader(dsn).dialect), monkeypatch):
        summary = run_load(path, dsn, "delta", workers=1)
    assert summary.failures and summary.exit_code == 1
    assert snapshot(dsn) == before
    assert query(dsn, "SELECT status FROM etl_file_history WHERE file_name = 'v2.xml'") == [("failed",)]
    load(dsn, path)
    assert query(dsn, "SELECT status FROM etl_file_history WHERE file_name = 'v2.xml'") == [("completed",)]
    assert query(dsn, "SELECT reaction_meddra_code FROM reactions") == [("10028813",)]


def test_concurrent_loads_with_overlapping_cases_equal_the_sequential_result(dsn: str, tmp_path: Path) -> None:
    from py_load_eudravigilance.fixtures.generator import CorpusSpec, write_corpus

    paths = write_corpus(tmp_path / "corpus", CorpusSpec(files=4, cases_per_file=25, seed=11, follow_up_fraction=0.5))
    sequential = dsn
    load(sequential, *paths)
    expected = snapshot(sequential)
    for table in CASE_TABLE_NAMES:
        query_engine = create_engine(dsn)
        with query_engine.begin() as conn:
            conn.execute(text(f'DELETE FROM "{table}"'))
        query_engine.dispose()
    engine = create_engine(dsn)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM etl_file_history"))
    engine.dispose()
    with ThreadPoolExecutor(max_workers=4) as pool:
        summaries = list(pool.map(lambda p: run_load(p, dsn, "delta", workers=1), reversed(paths)))
    assert [s.failures for s in summaries] == [[]] * len(summaries)
    assert snapshot(dsn) == expected


def test_unknown_backend_lists_installed_loaders() -> None:
    from loaders.registry import UnknownLoaderError

    with pytest.raises(UnknownLoaderError, match="redshift.*installed loaders: .*postgresql.*sqlite"):
        get_loader("redshift+psycopg2://user:secret@host/db")


LARGE_FILE_HISTORY = "SELECT status, messages_total, messages_rejected, cases_inserted FROM etl_file_history WHERE file_name = 'large.xml'"


def test_a_large_file_mapped_in_shards_loads_exactly_as_in_one_piece(dsn: str, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from py_load_eudravigilance.fixtures.generator import build_batch, build_message

    messages = [build_message(CaseSpec(f"SHARD-{n % 40:03d}", most_recent_info=f"202401{10 + n // 40:02d}")) for n in range(120)]
    messages[7] = messages[7].replace('extension="SHARD-007" ', "", 1)  # a rejected message in shard 1 of 3
    path = tmp_path / "in" / "large.xml"
    path.parent.mkdir()
    path.write_text(build_batch(messages)[:-300])  # and a file-level error at the end
    in_shards = PlanLimits(shard_min_bytes=1, part_messages=7)  # on PostgreSQL, each shard is loaded in parts as it is parsed
    monkeypatch.setenv("PY_LOAD_EUDRAVIGILANCE_MAPPER", "python")  # (the compiled mapper: tests/test_split.py)

    sharded = run_load(path, dsn, workers=3, limits=in_shards)
    state = snapshot(dsn)
    history = query(dsn, LARGE_FILE_HISTORY)
    quarantined = query(dsn, "SELECT message_position, element FROM etl_quarantine ORDER BY 1")
    whole = run_load(path, dsn, mode="full", workers=1, limits=PlanLimits(part_messages=7))
    assert snapshot(dsn) == state
    other = tmp_path / "other" / "other.xml"
    other.parent.mkdir()
    other.write_text(build_batch([build_message(CaseSpec("OTHER-1"))]))
    load(dsn, other)
    reloaded = run_load(path, dsn, mode="full", workers=3, limits=in_shards)  # one file, in parts on PostgreSQL: empties the tables

    assert not sharded.failures and not whole.failures and not reloaded.failures
    assert snapshot(dsn) == state
    assert query(dsn, LARGE_FILE_HISTORY) == history
    assert history[0][0] == "partial" and history[0][2] == 1
    assert query(dsn, "SELECT message_position, element FROM etl_quarantine ORDER BY 1") == quarantined


def test_a_mid_size_file_is_mapped_by_every_worker_when_other_workers_would_idle(dsn: str, write_batch, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # (which files are shared out: tests/test_planning.py)
    mid_size = PlanLimits(shard_idle_min_bytes=1)  # these small files stand for mid-size daily batches
    monkeypatch.setenv("PY_LOAD_EUDRAVIGILANCE_MAPPER", "python")  # (the compiled mapper: tests/test_split.py)
    daily = write_batch("a-daily.xml", *[CaseSpec(f"DAY-{n}") for n in range(6)])
    assert not run_load(daily, dsn, workers=2, limits=mid_size).failures

    write_batch("b-second.xml", *[CaseSpec(f"SECOND-{n}") for n in range(6)])
    write_batch("c-third.xml", *[CaseSpec(f"THIRD-{n}") for n in range(6)])
    assert not run_load(daily.parent, dsn, workers=2, limits=mid_size).failures
    assert query(dsn, "SELECT COUNT(*) FROM icsr_master") == [(18,)]


IN_PARTS = PlanLimits(shard_min_bytes=1, part_messages=5)  # a large file shared by the workers, staged in parts of 5 messages


def large_file_in_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cases: int) -> Path:
    """A batch the pipeline shards across workers and stages in parts of 5 messages per worker (with IN_PARTS)."""
    from py_load_eudravigilance.fixtures.generator import build_batch, build_message

    path = tmp_path / "in" / "large.xml"
    path.parent.mkdir()
    path.write_text(build_batch([build_message(CaseSpec(f"PART-{n:03d}")) for n in range(cases)]))
    monkeypatch.setenv("PY_LOAD_EUDRAVIGILANCE_MAPPER", "python")  # (the compiled mapper: tests/test_split.py)
    return path


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork", reason="slows the workers' mapping by patching it before they fork")
def test_a_large_file_is_bulk_loaded_while_its_later_messages_are_still_parsed(
    postgres_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loaders.postgresql import PostgresDialect
    from py_load_eudravigilance import pipeline
    from py_load_eudravigilance.mapping.mapper import CaseMapper

    path = large_file_in_parts(tmp_path, monkeypatch, cases=60)
    map_message, insert_rows, add_up_shards = CaseMapper.map_message, PostgresDialect.insert_rows, pipeline.add_up_shards
    times: dict[str, float] = {}

    def slow_after_the_first_parts(self, message, position):  # type: ignore[no-untyped-def]
        if position > 20:
            time.sleep(0.04)  # 20 such messages per worker: the shards finish ~0.8 s after their first parts
        return map_message(self, message, position)

    def first_copy(self, conn, table, stream, columns):  # type: ignore[no-untyped-def]
        times.setdefault("first_copy", time.monotonic())
        return insert_rows(self, conn, table, stream, columns)

    def all_staged(shards):  # type: ignore[no-untyped-def]
        times["all_staged"] = time.monotonic()  # asked once every shard has finished
        return add_up_shards(shards)

    monkeypatch.setattr(CaseMapper, "map_message", slow_after_the_first_parts)
    monkeypatch.setattr(PostgresDialect, "insert_rows", first_copy)
    monkeypatch.setattr(pipeline, "add_up_shards", all_staged)
    summary = run_load(path, postgres_dsn, workers=2, limits=IN_PARTS)

    assert not summary.failures and summary.totals()["cases_inserted"] == 60
    assert times["first_copy"] < times["all_staged"] - 0.4, times
    assert query(postgres_dsn, "SELECT COUNT(*), COUNT(DISTINCT safetyreportid) FROM icsr_audit_log") == [(60, 60)]


def test_a_large_file_loaded_in_parts_that_fails_leaves_nothing_and_a_rerun_completes(
    postgres_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loaders.postgresql import PostgresDialect

    path = large_file_in_parts(tmp_path, monkeypatch, cases=24)
    get_loader(postgres_dsn).create_all_tables()
    before = snapshot(postgres_dsn)
    with failing_merge_of_reactions(PostgresDialect, monkeypatch):
        failed = run_load(path, postgres_dsn, workers=2, limits=IN_PARTS)
    assert [name for name, _ in failed.failures] == ["large.xml"] and "injected failure" in failed.failures[0][1]
    assert snapshot(postgres_dsn) == before
    assert query(postgres_dsn, "SELECT status FROM etl_file_history") == [("failed",)]

    rerun = run_load(path, postgres_dsn, workers=2, limits=IN_PARTS)
    assert not rerun.failures and rerun.totals()["cases_inserted"] == 24
    assert query(postgres_dsn, "SELECT status, messages_total FROM etl_file_history") == [("completed", 24)]
    assert query(postgres_dsn, "SELECT COUNT(*) FROM icsr_master") == [(24,)]
    again = run_load(path, postgres_dsn, workers=2, limits=IN_PARTS)  # the shards see the content loaded: no part, no transaction
    assert again.files_skipped == 1 and not again.outcomes and not again.failures


def test_the_latest_audit_view_agrees_with_the_master_when_a_version_lacks_its_creation_time(dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    dated = write_batch("dated.xml", version(1, reactions=[HEADACHE]))
    undated = write_batch("undated.xml", version(1, reactions=[NAUSEA], message_created=""))  # same C.1.5, no N.2.r.4
    load(dsn, dated, undated)
    assert query(dsn, "SELECT reaction_meddra_code FROM reactions") == [("10019211",)]  # an unknown N.2.r.4 is the oldest
    assert query(dsn, "SELECT file_name FROM icsr_audit_latest") == [("dated.xml",)]


def test_a_large_s3_object_is_mapped_in_shards_and_loads_as_the_local_file(dsn: str, s3_bucket, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from py_load_eudravigilance.fixtures.generator import build_batch, build_message

    client, bucket = s3_bucket
    path = tmp_path / "large.xml"
    path.write_text(build_batch([build_message(CaseSpec(f"S3-{n:03d}")) for n in range(30)]))
    load(dsn, path)
    expected = snapshot(dsn)
    client.put_object(Bucket=bucket, Key="in/large.xml", Body=path.read_bytes())
    monkeypatch.setenv("PY_LOAD_EUDRAVIGILANCE_MAPPER", "python")  # (the compiled mapper: tests/test_split.py)
    limits = PlanLimits(shard_min_bytes=1, part_messages=4)
    source = parse_location(f"s3://{bucket}/in/")

    # The key comes as from a Dagster partition: its size from a HEAD request, so it is planned in shards
    keys, sizes = files_to_load(source, ["large.xml"])
    assert Planner(sizes, 2, "python", limits=limits).plan(keys)[0].shards == 2
    summary = run_load(source, dsn, mode="full", workers=2, keys=["large.xml"], limits=limits)

    assert not summary.failures and summary.totals()["cases_inserted"] == 30
    assert snapshot(dsn) == expected


def test_s3_keys_a_run_names_are_sized_so_its_last_file_is_sharded(sqlite_dsn: str, s3_bucket, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from py_load_eudravigilance.fixtures.generator import build_batch, build_message

    client, bucket = s3_bucket
    for name in ("a.xml", "b.xml", "c.xml"):
        body = build_batch([build_message(CaseSpec(f"{name}-{n}")) for n in range(3)])
        client.put_object(Bucket=bucket, Key=f"in/{name}", Body=body.encode())
    limits = PlanLimits(shard_idle_min_bytes=1)  # these small objects stand for mid-size batches
    monkeypatch.setenv("PY_LOAD_EUDRAVIGILANCE_MAPPER", "python")  # (the compiled mapper: tests/test_split.py)
    source = parse_location(f"s3://{bucket}/in/")

    keys, sizes = files_to_load(source, ["a.xml", "b.xml", "c.xml"])  # keys as a Dagster run names them: no listing
    assert sorted(sizes) == keys and all(sizes.values())  # HEAD's sizes
    assert [unit.shards for unit in Planner(sizes, 2, "python", limits=limits).plan(keys)] == [1, 1, 2]
    summary = run_load(source, sqlite_dsn, workers=2, keys=keys, limits=limits)

    assert not summary.failures and summary.totals()["cases_inserted"] == 9


def test_shards_that_read_different_bytes_are_refused() -> None:
    from py_load_eudravigilance.staging import ShardsDisagree, StagedFile, StagedGroup, add_up_shards

    def shard(*digests: str) -> StagedGroup:
        return StagedGroup(Path("."), [StagedFile("large.xml", digest, 0, {"icsr_master": 5}) for digest in digests])

    assert add_up_shards([shard("a"), shard("a")]).row_counts == {"icsr_master": 10}
    with pytest.raises(ShardsDisagree, match="large.xml changed while it was being read"):
        add_up_shards([shard("a"), shard("b")])  # the object was replaced between the shards' downloads
    with pytest.raises(ShardsDisagree):
        add_up_shards([shard(), shard("b")])  # one shard found content loaded before, the other new content


@pytest.mark.parametrize("one_run", [False, True], ids=["one-run-per-file", "one-run"])
def test_the_latest_audit_view_agrees_with_the_master_on_exact_ties(dsn: str, write_batch, one_run: bool) -> None:  # type: ignore[no-untyped-def]
    # Equal C.1.5 and N.2.r.4 with different content: across files the first received stays (a later
    # one is not newer); inside one file the later message wins
    first = write_batch("a-first.xml", version(1, reactions=[HEADACHE]))
    second = write_batch("b-second.xml", version(1, reactions=[NAUSEA]), version(1, reactions=[HEADACHE, NAUSEA]))
    if one_run:
        assert not run_load(first.parent, dsn, workers=1).failures
    else:
        load(dsn, first, second)
    assert query(dsn, "SELECT reaction_meddra_code FROM reactions") == [("10019211",)]
    assert query(dsn, "SELECT file_name, message_position FROM icsr_audit_latest") == [("a-first.xml", 1)]

    inside_one_file = write_batch("c-third.xml", version(2, reactions=[NAUSEA]), version(2, reactions=[HEADACHE, NAUSEA]))
    load(dsn, inside_one_file)
    assert query(dsn, "SELECT COUNT(*) FROM reactions") == [(2,)]
    assert query(dsn, "SELECT file_name, message_position FROM icsr_audit_latest") == [("c-third.xml", 2)]


def backends_waiting_on_a_lock(dsn: str) -> int:
    database = dsn.rsplit("/", 1)[1]
    return query(dsn, f"SELECT COUNT(*) FROM pg_stat_activity WHERE datname = '{database}' AND wait_event_type = 'Lock'")[0][0]


def test_loads_of_different_cases_do_not_wait_for_each_other_and_overlapping_ones_do(
    postgres_dsn: str, write_batch, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """Cases are locked one by one, not by a global merge lock: a load of other cases completes while a load holds
    its transaction open, a load of one of the same cases waits for it, and the end state is a sequential load's."""
    import io
    import threading

    from loaders.postgresql import PostgresDialect

    held = write_batch("held.xml", *[CaseSpec(f"HELD-{n}") for n in range(5)])
    disjoint = write_batch("disjoint.xml", *[CaseSpec(f"OTHER-{n}") for n in range(5)])
    overlapping = write_batch("overlapping.xml", CaseSpec("HELD-3", most_recent_info="20240301", reactions=[NAUSEA]))
    inside, release = threading.Event(), threading.Event()
    insert_rows = PostgresDialect.insert_rows

    def hold_after_the_master_rows(self, conn, table, stream, columns):  # type: ignore[no-untyped-def]
        if table.name != "patient_characteristics":
            return insert_rows(self, conn, table, stream, columns)
        rows = stream.read()
        if b"HELD-0" in rows:
            inside.set()  # its new master rows are written, not committed: a load of HELD-3 must wait for them
            assert release.wait(60), "the test never released the held load"
        return insert_rows(self, conn, table, io.BytesIO(rows), columns)

    monkeypatch.setattr(PostgresDialect, "insert_rows", hold_after_the_master_rows)
    with ThreadPoolExecutor(max_workers=1) as holder, ThreadPoolExecutor(max_workers=1) as other:
        holding = holder.submit(run_load, held, postgres_dsn, "delta", 1)
        assert inside.wait(60)
        assert not run_load(disjoint, postgres_dsn, "delta", 1).failures  # completes while the other load holds its cases
        assert not holding.done()
        waiting = other.submit(run_load, overlapping, postgres_dsn, "delta", 1)
        deadline = time.monotonic() + 60
        while backends_waiting_on_a_lock(postgres_dsn) == 0 and time.monotonic() < deadline and not waiting.done():
            time.sleep(0.05)
        assert backends_waiting_on_a_lock(postgres_dsn) >= 1 and not waiting.done()
        release.set()
        assert not holding.result(timeout=120).failures
        assert not waiting.result(timeout=120).failures

    assert query(postgres_dsn, "SELECT COUNT(*) FROM icsr_master") == [(10,)]
    assert query(postgres_dsn, "SELECT most_recent_info_date FROM icsr_master WHERE safetyreportid = 'HELD-3'") == [("20240301",)]
    assert query(postgres_dsn, "SELECT reaction_meddra_code FROM reactions WHERE safetyreportid = 'HELD-3'") == [("10028813",)]
    assert query(postgres_dsn, "SELECT version_count FROM icsr_master WHERE safetyreportid = 'HELD-3'") == [(2,)]
