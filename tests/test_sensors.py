"""Arrival sensors against a real S3 API on loopback (moto server) and a local folder."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from dagster import DagsterInstance, Definitions, SensorResult, SkipReason, build_sensor_context
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from eudravig_assets.definitions import build_definitions
from eudravig_assets.partitions import icsr_files
from eudravig_assets.resources import EudravigDatabase, EudravigSource, database_from_env, source_from_env
from py_load_eudravigilance.fixtures.generator import CaseSpec, CorpusSpec, single_message_file, write_corpus
from py_load_eudravigilance.settings import DSN_ENV, QUARANTINE_ENV, SOURCE_ENV
from py_load_eudravigilance.sources import key_for_partition, partition_key_for
from tests.support.db import query

PAGE = 1000  # keys per page of an S3 listing


def tick(defs: Definitions, name: str, instance: DagsterInstance, cursor: str | None = None) -> SensorResult | SkipReason:
    with build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=defs.resources) as context:
        return defs.resolve_sensor_def(name)(context)


def run_requested(defs: Definitions, instance: DagsterInstance, result: SensorResult, succeeds: bool = True) -> list[str]:
    """What the daemon does with a sensor result: add the partitions, then launch each run; the runs' failure messages."""
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    job = defs.resolve_job_def("load_icsr_files")
    failures = []
    for request in result.run_requests:
        tags = dict(request.tags)
        if request.partition_key:
            tags["dagster/partition"] = request.partition_key
        outcome = job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
        failures += [str(e.event_specific_data.error.message) for e in outcome.all_events if e.event_type_value == "STEP_FAILURE"]
        assert outcome.success == succeeds, failures
    return failures


def test_s3_sensor_loads_every_case_with_only_environment_settings(
    dsn: str, s3_bucket, dagster_instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    client, bucket = s3_bucket
    # A full first page of other objects: the ICSR files are only on the second page of the listing
    for n in range(PAGE + 1):
        client.put_object(Bucket=bucket, Key=f"incoming/0-notes/note-{n:05d}.txt", Body=b"not a candidate")
    batches = write_corpus(tmp_path / "corpus", CorpusSpec(files=2, cases_per_file=10, seed=4, follow_up_fraction=0.3))
    client.upload_file(str(batches[0]), bucket, "incoming/2026/11/batch, \"one\" 'a'.xml")
    client.upload_file(str(batches[1]), bucket, "incoming/2026/11/batch-two.xml")
    client.put_object(Bucket=bucket, Key="incoming/singles/case-1.xml", Body=single_message_file(CaseSpec("S3-SINGLE-1")))
    monkeypatch.setenv(DSN_ENV, dsn)
    monkeypatch.setenv(SOURCE_ENV, f"s3://{bucket}/incoming/")
    monkeypatch.setenv(QUARANTINE_ENV, f"s3://{bucket}/quarantine/")
    defs = build_definitions(database_from_env(), source_from_env())  # exactly what workspace.yaml loads

    first = tick(defs, "s3_arrivals_sensor", dagster_instance)

    assert isinstance(first, SensorResult)
    added = [key for request in first.dynamic_partitions_requests for key in request.partition_keys]
    assert sorted(key_for_partition(key) for key in added) == [
        "2026/11/batch, \"one\" 'a'.xml",
        "2026/11/batch-two.xml",
        "singles/case-1.xml",
    ]
    run_requested(defs, dagster_instance, first)
    expected = 1 + len({case for path in batches for case in _case_ids(path)})
    assert query(dsn, "SELECT COUNT(*) FROM icsr_master")[0][0] == expected
    assert query(dsn, "SELECT COUNT(*) FROM etl_file_history WHERE status = 'completed'")[0][0] == 3

    second = tick(defs, "s3_arrivals_sensor", dagster_instance, cursor=first.cursor)
    assert not getattr(second, "run_requests", None)
    restarted = tick(defs, "s3_arrivals_sensor", dagster_instance, cursor=None)  # cursor lost: the partitions remember
    assert not getattr(restarted, "run_requests", None)

    client.put_object(Bucket=bucket, Key="incoming/late/broken.xml", Body=b"<MCCI_IN200100UV01><unclosed>")
    third = tick(defs, "s3_arrivals_sensor", dagster_instance, cursor=second.cursor)
    assert isinstance(third, SensorResult) and len(third.run_requests) == 1
    (failure,) = run_requested(defs, dagster_instance, third, succeeds=False)  # the run fails, naming the file
    assert "late/broken.xml" in failure
    reason = client.get_object(Bucket=bucket, Key="quarantine/late/broken.xml.reason.txt")["Body"].read().decode()
    assert "late/broken.xml" in reason
    assert query(dsn, "SELECT COUNT(*) FROM icsr_master")[0][0] == expected


def test_s3_sensor_batches_more_than_a_page_of_new_files_into_few_runs(
    s3_bucket, dagster_instance: DagsterInstance, sqlite_dsn: str
) -> None:  # type: ignore[no-untyped-def]
    client, bucket = s3_bucket
    keys = [f"in/{n:05d}.xml" for n in range(PAGE + 5)]
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=b"<x/>")
    source = EudravigSource(source_uri=f"s3://{bucket}/in/", files_per_run=300)
    defs = build_definitions(EudravigDatabase(dsn=sqlite_dsn), source)

    result = tick(defs, "s3_arrivals_sensor", dagster_instance)

    assert isinstance(result, SensorResult)
    added = [key for request in result.dynamic_partitions_requests for key in request.partition_keys]
    assert sorted(added) == sorted(partition_key_for(key.removeprefix("in/")) for key in keys)
    ranges = [(r.tags[ASSET_PARTITION_RANGE_START_TAG], r.tags[ASSET_PARTITION_RANGE_END_TAG]) for r in result.run_requests]
    assert len(ranges) == math.ceil(len(keys) / 300)
    covered = [key for start, end in ranges for key in added[added.index(start) : added.index(end) + 1]]
    assert covered == added  # contiguous ranges, each new file in exactly one run


def _case_ids(path: Path) -> list[str]:
    from lxml import etree

    ids = etree.parse(str(path)).xpath(
        "//h:investigationEvent/h:id[@root='2.16.840.1.113883.3.989.2.1.3.1']/@extension", namespaces={"h": "urn:hl7-org:v3"}
    )
    return [str(i) for i in ids]


def test_local_folder_sensor_requests_new_files_once(sqlite_dsn: str, tmp_path: Path, dagster_instance: DagsterInstance) -> None:
    incoming = tmp_path / "incoming"
    defs = build_definitions(EudravigDatabase(dsn=sqlite_dsn), EudravigSource(source_uri=str(incoming), files_per_run=2))
    assert isinstance(tick(defs, "local_folder_sensor", dagster_instance), SkipReason)  # folder not there yet
    write_corpus(incoming, CorpusSpec(files=3, cases_per_file=4, seed=8))

    first = tick(defs, "local_folder_sensor", dagster_instance)
    assert isinstance(first, SensorResult) and len(first.run_requests) == 2
    run_requested(defs, dagster_instance, first)
    assert sorted(dagster_instance.get_dynamic_partitions(icsr_files.name)) == sorted(p.name for p in incoming.iterdir())
    assert query(sqlite_dsn, "SELECT COUNT(*) FROM etl_file_history WHERE status = 'completed'") == [(3,)]

    again = tick(defs, "local_folder_sensor", dagster_instance, cursor=first.cursor)
    assert not getattr(again, "run_requests", None)
    assert isinstance(tick(defs, "s3_arrivals_sensor", dagster_instance), SkipReason)  # not an S3 source
