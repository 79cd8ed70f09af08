"""How a run is cut into units of work: the planner's decisions, from keys, sizes, workers, mapper and capabilities."""

from __future__ import annotations

import gzip
from pathlib import Path

from py_load_eudravigilance.fixtures.generator import CaseSpec, build_batch, build_message
from py_load_eudravigilance.planning import Capabilities, PlanLimits, Planner, UnitPlan
from py_load_eudravigilance.staging import split

MB = 1024 * 1024
GROUPS = Capabilities(loads_groups=True, loads_parts_while_staging=False)
PARTS = Capabilities(loads_groups=True, loads_parts_while_staging=True)
ONE_FILE_PER_LOAD = Capabilities(loads_groups=False, loads_parts_while_staging=False)


def planner(sizes: dict[str, int], workers: int = 2, mapper: str = "compiled", **options) -> Planner:  # type: ignore[no-untyped-def]
    return Planner(sizes, workers, mapper, options.pop("capabilities", GROUPS), **options)


def shards(plan: list[UnitPlan]) -> dict[str, int]:
    """The files staged by more than one worker, and by how many."""
    return {unit.keys[0]: unit.shards for unit in plan if unit.shards > 1}


def test_small_files_are_grouped_in_listing_order_so_that_every_worker_gets_several_groups() -> None:
    keys = [f"{n:02d}.xml" for n in range(12)]
    plan = planner(dict.fromkeys(keys, 1000)).plan(keys)
    assert [unit.keys for unit in plan] == [tuple(keys[n : n + 3]) for n in range(0, 12, 3)]  # 2 workers: 4 groups
    assert [key for unit in plan for key in unit.keys] == keys


def test_a_group_stops_at_its_limits_of_files_and_bytes() -> None:
    keys = [f"{n:04d}.xml" for n in range(2000)]
    by_count = planner(dict.fromkeys(keys, 1000)).plan(keys)
    assert max(len(unit.keys) for unit in by_count) == PlanLimits().group_max_files
    by_bytes = planner(dict.fromkeys(keys, 10 * MB)).plan(keys)
    assert max(len(unit.keys) for unit in by_bytes) == 3  # 32 MB a group
    assert planner({}).plan(["a.xml"]) == [UnitPlan(("a.xml",))]  # sizes unknown: grouped by count alone


def test_a_loader_that_takes_one_file_per_transaction_gets_one_unit_per_file() -> None:
    keys = ["a.xml", "b.xml", "c.xml"]
    plan = planner(dict.fromkeys(keys, 1000), capabilities=ONE_FILE_PER_LOAD).plan(keys)
    assert [unit.keys for unit in plan] == [("a.xml",), ("b.xml",), ("c.xml",)]


def test_a_large_file_is_staged_by_every_worker_and_in_parts_where_the_loader_can() -> None:
    sizes = {"small.xml": MB, "large.xml": 100 * MB}
    assert shards(planner(sizes, workers=3).plan(list(sizes))) == {"large.xml": 3}
    assert [unit.in_parts for unit in planner(sizes, capabilities=PARTS).plan(list(sizes))] == [True, True]
    assert [unit.in_parts for unit in planner(sizes).plan(list(sizes))] == [False, False]
    assert shards(planner(sizes, workers=1).plan(list(sizes))) == {}  # one worker: nothing to share


def test_a_mid_size_file_is_sharded_only_where_workers_would_otherwise_idle() -> None:
    daily = {"a-daily.xml": 8 * MB}
    assert shards(planner(daily).plan(list(daily))) == {"a-daily.xml": 2}  # alone in its run
    three = {"a-daily.xml": 8 * MB, "b-second.xml": 8 * MB, "c-third.xml": 8 * MB}
    # Two workers take the first two files; the third would leave one idle, so both map it
    assert shards(planner(three).plan(list(three))) == {"c-third.xml": 2}
    assert shards(planner({"tiny.xml": MB}).plan(["tiny.xml"])) == {}


def test_limits_given_to_the_planner_replace_the_defaults() -> None:
    limits = PlanLimits(shard_min_bytes=1, group_max_files=1)
    plan = planner({"a.xml": 10, "b.xml": 10}, limits=limits).plan(["a.xml", "b.xml"])
    assert plan == [UnitPlan(("a.xml",), 2), UnitPlan(("b.xml",), 2)]


def test_a_file_the_compiled_mapper_cannot_cut_is_staged_whole_and_the_python_mapper_still_shares_it(tmp_path: Path) -> None:
    plain = tmp_path / "big.xml"
    plain.write_text(build_batch([build_message(CaseSpec(f"C-{n}")) for n in range(4)]))
    zipped = tmp_path / "big.xml.gz"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    paths = {path.name: path for path in (plain, zipped)}
    sizes = dict.fromkeys(paths, 100 * MB)
    asked: list[str] = []

    def splittable(key: str) -> bool:
        asked.append(key)
        return split.may_split(paths[key])

    assert planner(sizes, mapper="compiled", splittable=splittable).unit(("big.xml.gz",)).shards == 1
    assert planner(sizes, mapper="compiled", splittable=splittable).unit(("big.xml",)).shards == 2
    assert planner(sizes, mapper="python", splittable=splittable).unit(("big.xml.gz",)).shards == 2
    assert asked == ["big.xml.gz", "big.xml"]  # the Python mapper shares any file: its cost is mostly mapping


def test_a_failed_unit_is_replaced_by_the_plan_for_it() -> None:
    sizes = {"a.xml": MB, "b.xml": MB, "large.xml": 100 * MB}
    plan = planner(sizes, capabilities=PARTS)
    group = UnitPlan(("a.xml", "b.xml"), in_parts=True)
    sharded = plan.unit(("large.xml",))

    # Shards that disagree with the scan of their file: the file again, in one piece
    assert plan.whole(sharded) == UnitPlan(("large.xml",), 1, in_parts=True)
    # A group that failed: its files one by one, to find the culprit
    assert plan.retries(group, worker_died=False)
    assert plan.one_by_one(group) == [UnitPlan(("a.xml",), in_parts=True), UnitPlan(("b.xml",), in_parts=True)]
    # A file whose worker died gets one more try; a second death fails it
    single = plan.unit(("a.xml",))
    assert not plan.retries(single, worker_died=False)
    assert plan.retries(single, worker_died=True)
    (retry,) = plan.one_by_one(single, worker_died=True)
    assert retry.retried and not plan.retries(retry, worker_died=True)
    # A large file alone, failed: it keeps its shards, and its retry is the plan's unit for it
    assert plan.one_by_one(sharded, worker_died=True)[0].shards == 2
