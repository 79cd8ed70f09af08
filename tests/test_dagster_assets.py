"""The Dagster project: file partitions, the loader-backed IO manager, checks, backfills, full reload."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, DefaultSensorStatus, Definitions, build_input_context, evaluate_automation_conditions
from dagster._core.definitions.automation_tick_evaluation_context import build_run_requests_with_backfill_policies
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.definitions.partitions.context import partition_loading_context
from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from sqlalchemy import create_engine, text

from eudravig_assets.assets import FILES_PER_BACKFILL_RUN, TABLE_SPECS, icsr_tables
from eudravig_assets.catalog import Catalog
from eudravig_assets.definitions import build_definitions
from eudravig_assets.io_manager import LoaderIOManager
from eudravig_assets.partitions import icsr_files
from eudravig_assets.resources import EudravigDatabase, EudravigSource
from py_load_eudravigilance.fixtures.generator import CaseSpec, CorpusSpec, DrugSpec, ReactionSpec, build_batch, build_message, write_corpus
from py_load_eudravigilance.pipeline import run_load
from py_load_eudravigilance.settings import CatalogSettings
from py_load_eudravigilance.signals import STATISTICS_TABLE
from py_load_eudravigilance.sources import partition_key_for
from tests.support.db import query, snapshot
from tests.test_signals import brute_force


@pytest.fixture
def instance(dagster_instance: DagsterInstance) -> DagsterInstance:
    return dagster_instance


def project(dsn: str, source: Path | str, quarantine: Path | None = None) -> Definitions:
    return build_definitions(
        EudravigDatabase(dsn=dsn), EudravigSource(source_uri=str(source), quarantine_uri=str(quarantine) if quarantine else None)
    )


def materialize_files(defs: Definitions, instance: DagsterInstance, keys: list[str], job: str = "load_icsr_files", **kwargs):  # type: ignore[no-untyped-def]
    """Run a job over a range of file partitions in one run, as a sensor batch or a backfill does."""
    tags = {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]}
    return defs.resolve_job_def(job).execute_in_process(instance=instance, tags=tags, raise_on_error=False, **kwargs)


def materialize_tables_alone(defs: Definitions, instance: DagsterInstance, every_row: bool = False):  # type: ignore[no-untyped-def]
    """Run every table but the file history (no file partitions), as a backfill's last run does."""
    tables = [icsr_tables.keys_by_output_name[name] for name in TABLE_SPECS if name != "etl_file_history"]
    config = {"ops": {"icsr_tables": {"config": {"check_every_row": every_row}}}}
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance, asset_selection=tables, run_config=config)


def register(instance: DagsterInstance, keys: list[str]) -> list[str]:
    partition_keys = [partition_key_for(key) for key in keys]
    instance.add_dynamic_partitions(icsr_files.name, partition_keys)
    return partition_keys


def test_materializing_file_partitions_loads_what_the_cli_loads(dsn: str, tmp_path: Path, instance: DagsterInstance) -> None:
    corpus = tmp_path / "incoming"
    paths = write_corpus(corpus, CorpusSpec(files=3, cases_per_file=12, seed=5, follow_up_fraction=0.4, nullification_fraction=0.1))
    keys = register(instance, [p.relative_to(corpus).as_posix() for p in paths])

    result = materialize_files(project(dsn, corpus), instance, keys)

    assert result.success
    events = result.get_asset_materialization_events()
    materializations = Counter((e.asset_key.path[-1], e.partition) for e in events)
    # One partition of the file history and of the source files per file; the tables, materialized once by the run
    assert materializations == {("etl_file_history", key): 1 for key in keys} | {("icsr_source_files", key): 1 for key in keys} | {
        (table, None): 1 for table in TABLE_SPECS if table != "etl_file_history"
    }
    # Each file's history partition carries that file's own outcome, not the run's
    histories = {e.partition: e.materialization.metadata for e in events if e.asset_key.path[-1] == "etl_file_history"}
    expected = dict(query(dsn, "SELECT file_name, messages_total FROM etl_file_history"))
    assert {key: meta["messages_total"].value for key, meta in histories.items()} == {key: expected[key] for key in keys}
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks), [(c.asset_key, c.check_name, c.metadata) for c in checks if not c.passed]
    master = next(e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "icsr_master")
    metadata = master.materialization.metadata
    assert metadata["files_loaded"].value == 3
    assert metadata["cases_inserted"].value == query(dsn, "SELECT COUNT(*) FROM icsr_master")[0][0]

    through_dagster = snapshot(dsn)
    assert not run_load(corpus, dsn, mode="full", workers=1).failures  # the CLI's path rebuilds from the same files
    assert snapshot(dsn) == through_dagster


def loaded_project(dsn: str, tmp_path: Path, instance: DagsterInstance, spec: CorpusSpec) -> tuple[Definitions, list[str]]:
    """A corpus written, registered as partitions and loaded in one run."""
    corpus = tmp_path / "incoming"
    keys = register(instance, [p.name for p in write_corpus(corpus, spec)])
    defs = project(dsn, corpus)
    assert materialize_files(defs, instance, keys).success
    return defs, keys


def test_backfill_over_loaded_partitions_leaves_every_table_unchanged(dsn: str, tmp_path: Path, instance: DagsterInstance) -> None:
    defs, keys = loaded_project(dsn, tmp_path, instance, CorpusSpec(files=4, cases_per_file=8, seed=9, follow_up_fraction=0.5))
    before = snapshot(dsn)
    history = query(dsn, "SELECT file_sha256, status, finished_at FROM etl_file_history ORDER BY 1")

    again = materialize_files(defs, instance, keys[1:3])

    assert again.success
    assert snapshot(dsn) == before
    assert query(dsn, "SELECT file_sha256, status, finished_at FROM etl_file_history ORDER BY 1") == history


def test_a_run_of_the_tables_alone_loads_nothing_and_checks_what_loaded_since_the_checks_ran(
    sqlite_dsn: str, tmp_path: Path, instance: DagsterInstance
) -> None:
    defs, _keys = loaded_project(sqlite_dsn, tmp_path, instance, CorpusSpec(files=2, cases_per_file=5, seed=4))
    before = snapshot(sqlite_dsn)

    result = materialize_tables_alone(defs, instance)

    assert result.success
    assert snapshot(sqlite_dsn) == before
    master = next(e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "icsr_master")
    assert master.materialization.metadata["files_loaded"].value == 0
    checks = result.get_asset_check_evaluations()
    integrity = next(c for c in checks if c.check_name == "rows_match_parser")
    assert integrity.asset_key.path[-1] == "icsr_master" and integrity.metadata["tables_checked"].value == 36
    assert integrity.metadata["rows_parsed"].value == integrity.metadata["rows_of_current_versions"].value > 0
    assert all(c.passed for c in checks)
    conformance = next(c for c in checks if c.check_name == "conforms_to_data_dictionary")
    checked = conformance.metadata["rows_checked_by_table"].value
    assert checked["reactions"] == query(sqlite_dsn, "SELECT COUNT(*) FROM reactions")[0][0]  # loaded since

    with create_engine(sqlite_dsn).begin() as conn:  # a row broken behind the loads' back
        conn.execute(text("UPDATE reactions SET reaction_meddra_code = '123' WHERE rowid = 1"))
        conn.execute(text("DELETE FROM drugs WHERE rowid = (SELECT MIN(rowid) FROM drugs)"))
    again = materialize_tables_alone(defs, instance)  # nothing loaded since the last checks: nothing to check
    assert all(c.passed and c.metadata["rows_checked"].value == 0 for c in again.get_asset_check_evaluations())
    every_row = materialize_tables_alone(defs, instance, every_row=True)
    failing = {(c.asset_key.path[-1], c.check_name): c for c in every_row.get_asset_check_evaluations() if not c.passed}
    assert set(failing) == {("icsr_master", "conforms_to_data_dictionary"), ("icsr_master", "rows_match_parser")}
    broken = failing[("icsr_master", "conforms_to_data_dictionary")]
    assert broken.metadata["rules_failing"].value == {"reactions": {"reaction_meddra_code: MedDRA code of 8 digits": 1}}
    assert broken.metadata["rows_failing"].value == 1 and "| reactions |" in broken.metadata["tables_failing"].value
    lost = failing[("icsr_master", "rows_match_parser")]
    assert lost.metadata["rows_failing"].value == 1  # the drug row deleted behind the loads' back, named with its table
    assert "| drugs |" in lost.metadata["tables_failing"].value


def test_a_failing_file_fails_the_run_and_its_partition(sqlite_dsn: str, tmp_path: Path, instance: DagsterInstance) -> None:
    corpus, quarantine = tmp_path / "incoming", tmp_path / "quarantine"
    write_corpus(corpus, CorpusSpec(files=1, cases_per_file=3))
    (corpus / "sub").mkdir()
    (corpus / "sub" / "broken, 'quoted'.xml").write_text("<MCCI_IN200100UV01 xmlns='urn:hl7-org:v3'><PORR_IN049016UV>", encoding="utf-8")
    keys = register(instance, sorted(p.relative_to(corpus).as_posix() for p in corpus.rglob("*.xml")))

    result = materialize_files(project(sqlite_dsn, corpus, quarantine), instance, keys)

    reason = quarantine / "sub" / "broken, 'quoted'.xml.reason.txt"
    assert reason.exists() and "broken, 'quoted'.xml" in reason.read_text()
    assert query(sqlite_dsn, "SELECT status FROM etl_file_history WHERE file_name = 'sub/broken, ''quoted''.xml'") == [("failed",)]
    assert query(sqlite_dsn, "SELECT COUNT(*) FROM icsr_master")[0][0] == 3  # the valid file's cases
    warning = next(c for c in result.get_asset_check_evaluations() if c.check_name == "no_rejected_messages")
    assert warning.passed  # a file-level error is not a rejected message; the file history says failed
    # The run fails after the valid file committed; its partition is materialized, the broken file's is failed
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "broken, 'quoted'.xml" in failure.event_specific_data.error.message
    assert instance.get_materialized_partitions(AssetKey("etl_file_history")) == {keys[0]}
    status = get_and_update_asset_status_cache_value(instance, AssetKey("etl_file_history"), icsr_files)
    assert status.deserialize_failed_partition_subsets(icsr_files).get_partition_keys() == {keys[1]}


def test_full_reload_must_cover_every_partition_and_rebuilds_the_tables(sqlite_dsn: str, tmp_path: Path, instance: DagsterInstance) -> None:
    defs, keys = loaded_project(sqlite_dsn, tmp_path, instance, CorpusSpec(files=3, cases_per_file=6, seed=2, follow_up_fraction=0.5))
    before = snapshot(sqlite_dsn)

    partial = materialize_files(defs, instance, keys[:2], job="full_reload")
    assert not partial.success
    assert snapshot(sqlite_dsn) == before  # refused before touching anything

    full = materialize_files(defs, instance, keys, job="full_reload")
    assert full.success
    assert snapshot(sqlite_dsn) == before


def test_backfill_policy_turns_many_dynamic_partitions_into_few_runs(sqlite_dsn: str, tmp_path: Path, instance: DagsterInstance) -> None:
    keys = register(instance, [f"batch-{n:05d}.xml" for n in range(2 * FILES_PER_BACKFILL_RUN + 7)])
    history, master = (icsr_tables.keys_by_output_name[name] for name in ("etl_file_history", "icsr_master"))
    selection = [AssetKeyPartitionKey(history, key) for key in keys[3:]] + [AssetKeyPartitionKey(master, None)]
    graph = project(sqlite_dsn, tmp_path).resolve_asset_graph()

    with partition_loading_context(dynamic_partitions_store=instance):  # as the backfill daemon does
        requests = build_run_requests_with_backfill_policies(selection, graph, instance)

    file_runs = [r for r in requests if ASSET_PARTITION_RANGE_START_TAG in r.tags]
    assert len(file_runs) == 3 and all(r.asset_selection == [history] for r in file_runs)
    ranges = [(r.tags[ASSET_PARTITION_RANGE_START_TAG], r.tags[ASSET_PARTITION_RANGE_END_TAG]) for r in file_runs]
    assert ranges[0] == (keys[3], keys[3 + FILES_PER_BACKFILL_RUN - 1]) and ranges[-1][1] == keys[-1]
    # The unpartitioned tables come last, in a run of their own: it reports and checks them
    assert [r.asset_selection for r in requests if r not in file_runs] == [[master]]


def test_checks_flag_values_outside_the_code_lists(dsn: str, tmp_path: Path, instance: DagsterInstance, write_batch) -> None:  # type: ignore[no-untyped-def]
    path = write_batch("odd.xml", CaseSpec("ODD-SEX", sex="9"), CaseSpec("FINE", sex="2"))
    keys = register(instance, [path.name])

    # On PostgreSQL the per-table queries are spread over two connections: every answer still reaches its check
    result = materialize_files(project(dsn, path.parent), instance, keys)

    assert result.success  # checks report, they do not block the load
    by_name = {c.check_name: c for c in result.get_asset_check_evaluations()}
    failing = by_name["conforms_to_data_dictionary"]
    assert not failing.passed and failing.asset_key.path[-1] == "icsr_master"
    # The failure names its table, rule, row and value; the other tables' rules pass
    listed = " ".join(failing.metadata["failures"].value.split())
    assert "| patient_characteristics | sex: D.5 code list | safetyreportid=ODD-SEX | 9 |" in listed
    assert failing.metadata["rules_failing"].value == {"patient_characteristics": {"sex: D.5 code list": 1}}
    assert failing.metadata["rows_failing"].value == 1 and failing.metadata["rows_checked_by_table"].value["reactions"] > 0
    assert by_name["rows_match_parser"].passed


def test_rejected_messages_warn_for_the_files_checked(sqlite_dsn: str, tmp_path: Path, instance: DagsterInstance, write_batch) -> None:  # type: ignore[no-untyped-def]
    mixed = write_batch("mixed.xml", CaseSpec("GOOD-1"), CaseSpec("BADDATE", most_recent_info="2024-01-15"))
    clean = write_batch("clean.xml", CaseSpec("GOOD-2"))
    keys = register(instance, [mixed.name, clean.name])
    defs = project(sqlite_dsn, mixed.parent)

    def warning(result) -> bool:  # type: ignore[no-untyped-def]
        return next(c for c in result.get_asset_check_evaluations() if c.check_name == "no_rejected_messages").passed

    assert not warning(materialize_files(defs, instance, keys))
    assert warning(materialize_files(defs, instance, keys[1:]))  # a run over the clean file only
    assert warning(materialize_tables_alone(defs, instance))  # nothing loaded since the checks last ran
    assert not warning(materialize_tables_alone(defs, instance, every_row=True))  # checks every file


def test_downstream_asset_reads_tables_through_the_io_manager(
    sqlite_dsn: str, tmp_path: Path, instance: DagsterInstance, write_batch
) -> None:  # type: ignore[no-untyped-def]
    path = write_batch(
        "cases.xml",
        CaseSpec("A", reactions=[ReactionSpec("10019211", "Headache")]),
        CaseSpec("B", reactions=[ReactionSpec("10019211", "Headache"), ReactionSpec("10028813", "Nausea")]),
        CaseSpec("C", reactions=[ReactionSpec("10028813", "Nausea")], nullification=True),
    )
    keys = register(instance, [path.name])
    defs = project(sqlite_dsn, path.parent)
    assert materialize_files(defs, instance, keys).success

    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[AssetKey("reaction_frequencies")]
    )

    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["cases"].value == 2  # the nullified case is left out
    assert "| 10019211 | Headache | 2 |" in " ".join(metadata["top_reactions"].value.split())

    with create_engine(sqlite_dsn).begin() as conn:
        conn.execute(text("UPDATE reactions SET reaction_meddra_code = '123' WHERE safetyreportid = 'A'"))
    broken = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[AssetKey("reaction_frequencies")], raise_on_error=False
    )
    assert not broken.success  # the dagster-pandera input type refuses a table that breaks the dictionary

    # An input naming its columns gets only those, as Dagster's DbIOManager reads them
    manager = LoaderIOManager(database=EudravigDatabase(dsn=sqlite_dsn))
    columns = ["safetyreportid", "reaction_meddra_code"]
    frame = manager.load_input(build_input_context(asset_key=AssetKey("reactions"), definition_metadata={"columns": columns}))
    assert list(frame.columns) == columns and len(frame) == 4
    assert len(manager.load_input(build_input_context(asset_key=AssetKey("reactions"))).columns) > 2


def test_workspace_validates_as_the_dagster_cli_loads_it(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    result = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful for code location eudravig_assets.definitions" in result.stdout + result.stderr


def test_the_catalogue_shows_kinds_owners_row_counts_and_numeric_check_metadata(
    sqlite_dsn: str, tmp_path: Path, instance: DagsterInstance
) -> None:
    corpus = tmp_path / "incoming"
    keys = register(instance, [p.name for p in write_corpus(corpus, CorpusSpec(files=2, cases_per_file=6, seed=3, follow_up_fraction=0.5))])
    settings = CatalogSettings(owners="team:pharmacovigilance", tags="domain=safety")
    defs = build_definitions(
        EudravigDatabase(dsn=sqlite_dsn), EudravigSource(source_uri=str(corpus)), Catalog.of(sqlite_dsn, str(corpus), settings)
    )
    graph = defs.resolve_asset_graph()
    assert graph.get(AssetKey("reactions")).kinds == {"sqlite", "table"}
    assert graph.get(AssetKey("icsr_source_files")).kinds == {"file", "xml"}
    assert graph.get(AssetKey("reaction_frequencies")).kinds == {"sqlite", "pandas"}
    assert all(graph.get(key).owners == ["team:pharmacovigilance"] for key in graph.get_all_asset_keys())
    assert all(graph.get(key).tags.get("domain") == "safety" for key in graph.get_all_asset_keys())

    result = materialize_files(defs, instance, keys)

    assert result.success
    by_table = {e.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events() if e.partition is None}
    for table in ("icsr_master", "reactions", "icsr_audit_log"):
        assert by_table[table]["dagster/row_count"].value == query(sqlite_dsn, f"SELECT COUNT(*) FROM {table}")[0][0]
        assert by_table[table]["dagster/table_name"].value == f"main.{table}"
    # Follow-ups replaced versions: the files gave more reaction rows than the table keeps, and both are shown
    assert by_table["reactions"]["rows_parsed_from_files"].value > by_table["reactions"]["dagster/row_count"].value
    checks = result.get_asset_check_evaluations()
    assert {c.check_name for c in checks} == {"conforms_to_data_dictionary", "rows_match_parser", "no_rejected_messages"}
    for check in checks:
        assert isinstance(check.metadata["rows_checked"].value, int) and check.metadata["rows_failing"].value == 0, check
    conformance = next(c for c in checks if c.check_name == "conforms_to_data_dictionary")
    assert conformance.metadata["rows_checked_by_table"].value["reactions"] == query(sqlite_dsn, "SELECT COUNT(*) FROM reactions")[0][0]
    assert conformance.metadata["rows_checked"].value == sum(conformance.metadata["rows_checked_by_table"].value.values())
    # Source files loaded by a run (not only those a sensor reported) show as materialized
    assert instance.get_materialized_partitions(AssetKey("icsr_source_files")) == set(keys)


def test_signal_statistics_are_requested_after_each_load_and_report_their_signals(
    sqlite_dsn: str, tmp_path: Path, instance: DagsterInstance
) -> None:
    corpus = tmp_path / "incoming"
    spec = CorpusSpec(files=2, cases_per_file=12, seed=8, follow_up_fraction=0.3, nullification_fraction=0.1)
    keys = register(instance, [p.name for p in write_corpus(corpus, spec)])
    defs = project(sqlite_dsn, corpus)
    statistics = AssetKey(STATISTICS_TABLE)

    sensor = defs.resolve_sensor_def("signal_statistics_after_loads")  # on by default, as the arrival sensors are
    assert sensor.default_status == DefaultSensorStatus.RUNNING and statistics in sensor.asset_selection.resolve(defs.resolve_asset_graph())
    before = evaluate_automation_conditions(defs=defs, instance=instance)
    assert before.get_num_requested(statistics) == 0  # nothing loaded yet: nothing to compute from
    assert materialize_files(defs, instance, keys).success
    after = evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
    assert after.get_num_requested(statistics) == 1  # the load updated the tables it reads

    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance, asset_selection=[statistics])

    assert result.success
    expected = brute_force(sqlite_dsn)
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == statistics]
    metadata = event.materialization.metadata
    assert metadata["pairs"].value == metadata["dagster/row_count"].value == len(expected)
    # The first refresh builds the counts in full: every pair is one it changed
    assert metadata["rebuilt"].value and metadata["changed_pairs"].value == len(expected)
    assert metadata["signals_among_changed_pairs"].value == sum(row["signal"] for row in expected.values())
    assert metadata["top_signals"].value.startswith("| drug | event_code | event_name | a |")
    (check,) = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["rows_checked"].value == len(expected) and check.metadata["rows_failing"].value == 0

    # A later load: the next refresh recounts its case only, and reports and checks the one pair it changed
    later = tmp_path / "later"
    later.mkdir()
    new_drug = CaseSpec("LATER-1", drugs=[DrugSpec(name="Zeta", substance="ZETADRUG")], reactions=[ReactionSpec(meddra_code="10000001")])
    (later / "later.xml").write_text(build_batch([build_message(new_drug)], batch_number="later"), encoding="utf-8")
    run_load(later, sqlite_dsn)
    again = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance, asset_selection=[statistics])
    (event,) = [e for e in again.get_asset_materialization_events() if e.asset_key == statistics]
    metadata = event.materialization.metadata
    assert not metadata["rebuilt"].value and (metadata["cases_recounted"].value, metadata["changed_pairs"].value) == (1, 1)
    assert metadata["pairs"].value == len(expected) + 1 and "| ZETADRUG | 10000001 | - | 1 |" in metadata["top_signals"].value
    (check,) = again.get_asset_check_evaluations()
    assert check.passed and check.metadata["rows_checked"].value == 1

    # Children's cases: the top rows flag EMA's SDR within children and show the relative ROR against the others
    zeta, alpha, other_event = DrugSpec(name="Zeta", substance="ZETADRUG"), DrugSpec(name="Alpha", substance="ALPHADRUG"), "10000002"
    reported = [(zeta, "10000001", "9", 6), (zeta, other_event, "9", 1), (alpha, "10000001", "9", 1), (alpha, other_event, "9", 6)]
    reported += [(zeta, other_event, "45", 1), (alpha, "10000001", "45", 1)]
    children = [
        CaseSpec(f"CHILD-{drug.substance}-{event}-{age}-{i}", age=age, drugs=[drug], reactions=[ReactionSpec(meddra_code=event)])
        for drug, event, age, times in reported
        for i in range(times)
    ]
    (later / "later.xml").unlink()
    (later / "children.xml").write_text(build_batch([build_message(case) for case in children], batch_number="children"), encoding="utf-8")
    run_load(later, sqlite_dsn)
    third = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance, asset_selection=[statistics])
    (event,) = [e for e in third.get_asset_materialization_events() if e.asset_key == statistics]
    metadata = event.materialization.metadata
    lines = metadata["top_signals"].value.splitlines()
    columns = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert columns[-4:] == ["ema_sdr_paediatric", "relative_ror_lower95_paediatric", "ema_sdr_geriatric", "relative_ror_lower95_geriatric"]
    row = next(line for line in lines if line.startswith("| ZETADRUG | 10000001 |"))
    cells = dict(zip(columns, (cell.strip() for cell in row.strip("|").split("|")), strict=True))
    # Within children (the corpus has a few too) an SDR; the flags are those the subgroup statistics hold for the row
    ((a, b, c, ema_sdr, lower),) = query(
        sqlite_dsn,
        "SELECT a, b, c, meets_ema_sdr, relative_ror_lower95 FROM drug_event_subgroup_statistics "
        "WHERE subgroup = 'paediatric' AND drug = 'ZETADRUG' AND event_code = '10000001'",
    )
    assert (a, b, c, ema_sdr) == (6, 1, 1, 1) and lower is not None
    assert (cells["a"], cells["ema_sdr_paediatric"], cells["relative_ror_lower95_paediatric"]) == ("7", "yes", f"{lower:.2f}")
    assert (cells["ema_sdr_geriatric"], cells["relative_ror_lower95_geriatric"]) == ("no", "-")  # no elderly case with ZETADRUG
