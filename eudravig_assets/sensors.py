"""Arrival sensors: new files become partitions and are loaded in batched runs.

Each tick lists the source (every page of an S3 listing), adds a partition for each file not seen
before and requests runs over contiguous ranges of the new partitions, ``files_per_run`` files per
run. Dynamic partitions are ordered by insertion, so the keys added in one tick form a range. The
set of partitions is the record of files already requested, so no file is requested twice, across
restarts too; the cursor keeps the newest modification time seen, so an object replaced in place
(same key, newer upload) is requested again for its existing partition. Loading is hash-aware,
so re-requesting unchanged bytes never changes the tables.
"""

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from dagster import (
    AssetMaterialization,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from dagster_aws.s3 import S3Resource

from eudravig_assets.assets import icsr_source_files
from eudravig_assets.jobs import load_icsr_files_job
from eudravig_assets.partitions import icsr_files
from eudravig_assets.resources import EudravigSource
from py_load_eudravigilance.sources import SourceLocation, SourceObject, list_objects, partition_key_for

SENSOR_INTERVAL_SECONDS = 30


def _read_cursor(cursor: str | None) -> tuple[datetime | None, set[str]]:
    if not cursor:
        return None, set()
    state = json.loads(cursor)
    return datetime.fromisoformat(state["modified"]), set(state["keys_at_modified"])


def _write_cursor(objects: Sequence[SourceObject], previous: str | None) -> str | None:
    if not objects:
        return previous
    newest = max(o.modified for o in objects)
    return json.dumps({"modified": newest.isoformat(), "keys_at_modified": sorted(o.key for o in objects if o.modified == newest)})


def _run_key(keys: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode("utf-8")).hexdigest()


def arrivals(
    context: SensorEvaluationContext, location: SourceLocation, files_per_run: int, client: Any | None = None
) -> "SensorResult | SkipReason":
    """One tick: register new files as partitions and request their runs in batches."""
    objects = list_objects(location, client)
    known = set(context.instance.get_dynamic_partitions(icsr_files.name))
    mark, keys_at_mark = _read_cursor(context.cursor)

    def changed_since_cursor(obj: SourceObject) -> bool:
        return mark is not None and (obj.modified > mark or (obj.modified == mark and obj.key not in keys_at_mark))

    new = [o for o in sorted(objects, key=lambda o: (o.modified, o.key)) if partition_key_for(o.key) not in known]
    replaced = [o for o in objects if partition_key_for(o.key) in known and changed_since_cursor(o)]
    cursor = _write_cursor(objects, context.cursor)
    if not new and not replaced:
        return SensorResult(skip_reason=SkipReason(f"no new files under {location.uri}"), cursor=cursor)

    new_keys = [partition_key_for(o.key) for o in new]
    requests = []
    for start in range(0, len(new_keys), max(1, files_per_run)):
        chunk = new_keys[start : start + files_per_run]
        requests.append(
            RunRequest(
                run_key=_run_key(chunk),
                tags={ASSET_PARTITION_RANGE_START_TAG: chunk[0], ASSET_PARTITION_RANGE_END_TAG: chunk[-1]},
            )
        )
    for obj in replaced:
        key = partition_key_for(obj.key)
        requests.append(RunRequest(run_key=_run_key([key, obj.modified.isoformat()]), partition_key=key))
    events = [
        AssetMaterialization(
            asset_key=icsr_source_files.key,
            partition=partition_key_for(o.key),
            metadata={"uri": location.display(o.key), "size_bytes": o.size, "last_modified": o.modified.isoformat()},
        )
        for o in (*new, *replaced)
    ]
    context.log.info(f"{len(new)} new and {len(replaced)} replaced files under {location.uri}: {len(requests)} runs requested")
    return SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[icsr_files.build_add_request(new_keys)] if new_keys else [],
        asset_events=events,
        cursor=cursor,
    )


@sensor(
    job=load_icsr_files_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description="Loads new objects under an s3:// PY_LOAD_EUDRAVIGILANCE_SOURCE_URI, in batches of files per run.",
)
def s3_arrivals_sensor(context: SensorEvaluationContext, source: EudravigSource, s3: S3Resource) -> "SensorResult | SkipReason":
    location = source.location()
    if not location.is_s3:
        return SkipReason(f"the source is not an S3 prefix ({location.uri}); the local folder sensor watches it")
    return arrivals(context, location, source.files_per_run, s3.get_client())


@sensor(
    job=load_icsr_files_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description="Loads new files in a local PY_LOAD_EUDRAVIGILANCE_SOURCE_URI folder (the embedded default).",
)
def local_folder_sensor(context: SensorEvaluationContext, source: EudravigSource) -> "SensorResult | SkipReason":
    location = source.location()
    if location.is_s3:
        return SkipReason("the source is an S3 prefix; the S3 arrivals sensor watches it")
    try:
        return arrivals(context, location, source.files_per_run)
    except FileNotFoundError:
        return SkipReason(f"source folder {location.uri} does not exist yet")
