"""The analyst layer: views, code lists, indexes and MedDRA, on both dialects."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from loaders.registry import get_loader
from py_load_eudravigilance.fixtures.generator import CaseSpec, DrugSpec, ReactionSpec
from py_load_eudravigilance.mapping.code_lists import CODE_LISTS, code_list_rows, coded_columns
from py_load_eudravigilance.meddra import MeddraReleaseError, read_release
from py_load_eudravigilance.pipeline import run_load
from py_load_eudravigilance.views import SERIOUSNESS_CRITERIA
from tests.conftest import ANALYST_MEDDRA_VERSION
from tests.support.db import query
from tests.support.meddra import EXTRA_LLTS, PTS, SOCS, write_release
from tests.test_cli import run_cli


def rows(dsn: str, sql: str) -> list[dict]:
    engine = create_engine(dsn)
    try:
        with engine.connect() as conn:
            return [dict(row) for row in conn.execute(text(sql)).mappings()]
    finally:
        engine.dispose()


def current_case_ids(dsn: str) -> set[str]:
    return {case for case, nullified in query(dsn, "SELECT safetyreportid, is_nullified FROM icsr_master") if not nullified}


def test_case_drug_reactions_pairs_every_drug_with_every_reaction_of_each_current_case(analyst_dsn: str) -> None:
    current = current_case_ids(analyst_dsn)
    nullified = set(c for (c,) in query(analyst_dsn, "SELECT safetyreportid FROM icsr_master")) - current
    assert nullified, "the corpus should hold nullified cases"
    drugs = defaultdict(list)
    for case, seq, role in query(analyst_dsn, "SELECT safetyreportid, drug_seq, drug_role FROM drugs"):
        drugs[case].append((seq, role))
    criteria = ", ".join(SERIOUSNESS_CRITERIA)
    reactions = defaultdict(list)
    for case, seq, outcome, *flags in query(analyst_dsn, f"SELECT safetyreportid, reaction_seq, outcome, {criteria} FROM reactions"):
        reactions[case].append((seq, outcome, any(bool(f) for f in flags)))
    expected = {
        (case, drug, reaction): (role, outcome, serious)
        for case in current
        for drug, role in drugs[case]
        for reaction, outcome, serious in reactions[case]
    }

    view = rows(analyst_dsn, "SELECT * FROM case_drug_reactions")
    assert len(view) == len(expected)
    got = {(r["safetyreportid"], r["drug_seq"], r["reaction_seq"]): r for r in view}
    assert set(got) == set(expected)
    for key, (role, outcome, serious) in expected.items():
        row = got[key]
        assert (row["drug_role"], row["outcome"], bool(row["serious"])) == (role, outcome, serious)
        assert row["drug_role_label"] == CODE_LISTS["G.k.1"][role]
        assert row["outcome_label"] == CODE_LISTS["E.i.7"][outcome]
    assert any(bool(r["serious"]) for r in view) and not all(bool(r["serious"]) for r in view)


def test_causality_is_the_assessments_recorded_for_that_drug_and_reaction(analyst_dsn: str) -> None:
    recorded = defaultdict(list)
    for case, drug, reaction, source, method, result in query(
        analyst_dsn,
        "SELECT a.safetyreportid, a.drug_seq, r.reaction_seq, a.source_of_assessment, a.method_of_assessment, a.result_of_assessment "
        "FROM drug_reaction_assessments a JOIN drug_reaction_matrix m ON m.safetyreportid = a.safetyreportid "
        "AND m.drug_seq = a.drug_seq AND m.matrix_seq = a.matrix_seq "
        "JOIN reactions r ON r.safetyreportid = m.safetyreportid AND r.reaction_xml_id = m.reaction_xml_id",
    ):
        recorded[(case, drug, reaction)].append(f"{source or ''} / {method or ''} / {result or ''}")
    current = current_case_ids(analyst_dsn)
    view = rows(analyst_dsn, "SELECT safetyreportid, drug_seq, reaction_seq, causality FROM case_drug_reactions")
    assert any(r["causality"] for r in view)
    for row in view:
        key = (row["safetyreportid"], row["drug_seq"], row["reaction_seq"])
        assert key[0] in current
        if key in recorded:
            assert sorted(row["causality"].split("; ")) == sorted(recorded[key])
        else:
            assert row["causality"] is None


def expected_pair_fields(dsn: str) -> dict[tuple[str, int, int], dict]:
    """What case_drug_reactions should show of each pair's drug, reaction, matrix entry and primary source, worked out
    in Python from the tables."""
    current = current_case_ids(dsn)
    substances = defaultdict(list)
    for case, drug, _, name in sorted(query(dsn, "SELECT safetyreportid, drug_seq, substance_seq, substance_name FROM drug_substances")):
        if name and name.strip():
            substances[(case, drug)].append(name)
    reporters = defaultdict(list)
    for case, seq, qualification, priority in query(
        dsn, "SELECT safetyreportid, reporter_seq, qualification, primary_source_for_regulatory_purposes FROM primary_sources"
    ):
        reporters[case].append((priority != 1, seq, qualification))
    matrix = {
        (row["safetyreportid"], row["drug_seq"], row["reaction_xml_id"]): row for row in rows(dsn, "SELECT * FROM drug_reaction_matrix")
    }
    drugs = defaultdict(list)
    for row in rows(dsn, "SELECT safetyreportid, drug_seq, action_taken FROM drugs"):
        drugs[row["safetyreportid"]].append(row)
    criteria = ", ".join(SERIOUSNESS_CRITERIA)
    reactions = defaultdict(list)
    for row in rows(dsn, f"SELECT safetyreportid, reaction_seq, reaction_xml_id, {criteria} FROM reactions"):
        reactions[row["safetyreportid"]].append(row)

    def label(element: str, code: str | None) -> str | None:
        return CODE_LISTS[element].get(code) if code is not None else None

    expected = {}
    for case in current:
        qualification = min(reporters[case])[2] if reporters[case] else None
        for drug in drugs[case]:
            for reaction in reactions[case]:
                entry = matrix.get((case, drug["drug_seq"], reaction["reaction_xml_id"]), {})
                expected[(case, drug["drug_seq"], reaction["reaction_seq"])] = {
                    "active_substances": "; ".join(substances[(case, drug["drug_seq"])]) or None,
                    "action_taken": drug["action_taken"],
                    "action_taken_label": label("G.k.8", drug["action_taken"]),
                    **{criterion: reaction[criterion] for criterion in SERIOUSNESS_CRITERIA},
                    "time_to_onset": entry.get("interval_start_to_reaction"),
                    "time_to_onset_unit": entry.get("interval_start_to_reaction_unit"),
                    "time_to_onset_unit_label": label("G.k.9.i.3.1b", entry.get("interval_start_to_reaction_unit")),
                    "time_from_last_dose": entry.get("interval_last_dose_to_reaction"),
                    "time_from_last_dose_unit": entry.get("interval_last_dose_to_reaction_unit"),
                    "time_from_last_dose_unit_label": label("G.k.9.i.3.2b", entry.get("interval_last_dose_to_reaction_unit")),
                    "rechallenge": entry.get("recurrence_on_readministration"),
                    "rechallenge_label": label("G.k.9.i.4", entry.get("recurrence_on_readministration")),
                    "reporter_qualification": qualification,
                    "reporter_qualification_label": label("C.2.r.4", qualification),
                }
    return expected


def pairs_as_expected(dsn: str) -> list[dict]:
    """case_drug_reactions, checked against :func:`expected_pair_fields`: one row per pair, whatever the substances
    and matrix entries, each showing its pair's fields."""
    expected = expected_pair_fields(dsn)
    view = rows(dsn, "SELECT * FROM case_drug_reactions")
    keys = [(row["safetyreportid"], row["drug_seq"], row["reaction_seq"]) for row in view]
    assert len(keys) == len(set(keys)) == len(expected)
    for key, row in zip(keys, view, strict=True):
        shown = {name: row[name] for name in expected[key]}
        shown.update({criterion: None if row[criterion] is None else bool(row[criterion]) for criterion in SERIOUSNESS_CRITERIA})
        assert shown == expected[key], key
    # The data hold what the columns are for, so that the comparison compared something
    assert any(row["time_to_onset_unit_label"] for row in view) and any(row["reporter_qualification_label"] for row in view)
    return view


def test_case_drug_reactions_shows_the_fields_analysts_filter_on_in_generated_cases(analyst_dsn: str) -> None:
    view = pairs_as_expected(analyst_dsn)
    assert {row["active_substances"] for row in view} >= {"PARACETAMOL"}


def test_case_drug_reactions_shows_the_fields_analysts_filter_on_in_the_fda_examples(fda_dsn: str) -> None:
    view = pairs_as_expected(fda_dsn)
    assert "TERBINAFINE HYDROCHLORIDE; ARGEMONE MEXICANA SEED OIL" in {row["active_substances"] for row in view}
    assert {row["rechallenge_label"] for row in view} >= {CODE_LISTS["G.k.9.i.4"]["1"], CODE_LISTS["G.k.9.i.4"]["2"]}
    assert any(row["action_taken_label"] for row in view) and any(row["time_from_last_dose"] for row in view)
    assert any(row["results_in_death"] for row in view) and any(row["other_medically_important_condition"] for row in view)


def drugs_shown(output: str) -> set[str]:
    """The drug cells of the Markdown table ``signals`` prints (its first column)."""
    body = [line for line in output.splitlines() if line.startswith("| ")][1:]  # after the header (the rule is |---)
    return {line.split(" | ")[0].removeprefix("| ") for line in body}


def test_signals_drug_matches_a_substance_or_a_product_as_the_view_shows_both(dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    headache, nausea = ReactionSpec(meddra_code="10019211"), ReactionSpec(meddra_code="10028813")
    drugs = {
        "TYL": DrugSpec(name="Tylenol Extra", substance="Paracetamol"),
        "PAN": DrugSpec(name="Panadol", substance="PARACETAMOL"),
        "ASP": DrugSpec(name="Aspirin Cardio", substance=""),  # names no substance: counted under its product
        "IBU": DrugSpec(name="Nurofen", substance="Ibuprofen"),
    }
    cases = [
        CaseSpec(f"{key}-{i}", reactions=[headache if key != "IBU" else nausea], drugs=[drug])
        for key, drug in drugs.items()
        for i in range(3)
    ]
    assert run_load(write_batch("cases.xml", *cases).parent, dsn, workers=1).exit_code == 0
    pair = rows(dsn, "SELECT medicinal_product, active_substances FROM case_drug_reactions WHERE safetyreportid = 'TYL-0'")
    assert pair == [{"medicinal_product": "Tylenol Extra", "active_substances": "Paracetamol"}]

    def shown(drug: str) -> set[str]:
        result = run_cli("signals", "--dsn", dsn, "--drug", drug)
        assert result.returncode == 0, result.stderr
        return drugs_shown(result.stdout)

    # A product shows its substances' pairs (the statistics count substances); a substance its own
    assert shown(" tylenol   EXTRA") == shown("paracetamol") == shown("Panadol") == {"PARACETAMOL"}
    assert shown("Nurofen") == shown("ibuprofen") == {"IBUPROFEN"}
    assert shown("aspirin cardio") == {"ASPIRIN CARDIO"}
    nothing = run_cli("signals", "--dsn", dsn, "--drug", "Placebo")
    assert nothing.returncode == 0 and "no pairs for drug 'Placebo'" in nothing.stdout


def test_cases_view_is_one_row_per_current_case_with_counts_and_labels(analyst_dsn: str) -> None:
    current = current_case_ids(analyst_dsn)
    drug_counts = Counter(case for (case,) in query(analyst_dsn, "SELECT safetyreportid FROM drugs"))
    reaction_counts = Counter(case for (case,) in query(analyst_dsn, "SELECT safetyreportid FROM reactions"))
    sexes = dict(query(analyst_dsn, "SELECT safetyreportid, sex FROM patient_characteristics"))
    countries = {case: country for case, country in query(analyst_dsn, "SELECT safetyreportid, reporter_country FROM primary_sources")}

    view = {r["safetyreportid"]: r for r in rows(analyst_dsn, "SELECT * FROM cases")}
    assert set(view) == current
    for case, row in view.items():
        assert (row["drug_count"], row["reaction_count"]) == (drug_counts[case], reaction_counts[case])
        assert row["sex"] == sexes.get(case)
        assert row["sex_label"] == (CODE_LISTS["D.5"][row["sex"]] if row["sex"] else None)
        assert row["primary_source_country"] == countries[case]
        assert row["age_at_onset_unit_label"] == "Year"
        assert row["most_recent_info_date_utc"] is not None
    assert {row["sex_label"] for row in view.values()} >= {"Male", "Female", None}


def test_code_lists_table_holds_the_project_code_lists(analyst_dsn: str) -> None:
    stored = sorted(query(analyst_dsn, "SELECT element, code, label FROM e2b_code_lists"))
    assert stored == sorted((r["element"], r["code"], r["label"]) for r in code_list_rows())
    # Every list but the null flavours labels a column of the data dictionary
    assert set(CODE_LISTS) - set(coded_columns()) == {"nullFlavor"}
    for element in ("C.1.3", "C.1.11.1", "C.2.r.4", "C.3.1", "D.2.3", "D.5", "E.i.3.1", "E.i.7", "F.r.3.1", "G.k.1", "G.k.8", "G.k.9.i.4"):
        assert element in CODE_LISTS


def test_reactions_roll_up_to_the_primary_soc_of_their_meddra_version(analyst_dsn: str) -> None:
    view = rows(
        analyst_dsn,
        "SELECT reaction_meddra_version, reaction_meddra_code, pt_code, pt_name, hlt_code, soc_code, soc_name FROM case_drug_reactions",
    )
    assert view and {r["reaction_meddra_version"] for r in view} == {ANALYST_MEDDRA_VERSION}
    for row in view:
        name, primary, _ = PTS[row["reaction_meddra_code"]]
        assert (row["pt_code"], row["pt_name"]) == (row["reaction_meddra_code"], name)
        assert (row["soc_code"], row["soc_name"]) == (primary, SOCS[primary][0])
        assert row["hlt_code"] is not None


def test_analyst_indexes_exist_and_validate_db_schema_reports_what_is_missing(dsn: str, tmp_path: Path) -> None:
    loader = get_loader(dsn)
    loader.create_all_tables()
    inspector = inspect(loader.engine)
    indexed = {tuple(i["column_names"]) for i in inspector.get_indexes("reactions")}
    assert ("reaction_meddra_code",) in indexed
    assert ("medicinal_product",) in {tuple(i["column_names"]) for i in inspector.get_indexes("drugs")}
    assert ("substance_name",) in {tuple(i["column_names"]) for i in inspector.get_indexes("drug_substances")}
    assert ("most_recent_info_date_utc",) in {tuple(i["column_names"]) for i in inspector.get_indexes("icsr_master")}
    assert run_cli("validate-db-schema", "--dsn", dsn).returncode == 0

    with loader.engine.begin() as conn:
        conn.execute(text("DROP VIEW case_drug_reactions"))
        conn.execute(text("DROP INDEX ix_reactions_reaction_meddra_code"))
    result = run_cli("validate-db-schema", "--dsn", dsn)
    assert result.returncode == 1
    assert "missing view: case_drug_reactions" in result.stdout
    assert "missing index: reactions.ix_reactions_reaction_meddra_code" in result.stdout

    assert run_cli("init-db", "--dsn", dsn).returncode == 0
    assert run_cli("validate-db-schema", "--dsn", dsn).returncode == 0


def test_meddra_load_keeps_versions_side_by_side_and_replaces_a_reloaded_one(dsn: str, tmp_path: Path) -> None:
    first = write_release(tmp_path / "v26", "26.1")
    second = write_release(tmp_path / "v27", "27.0", pt_names={"10019211": "Headache (27.0)"})
    for release in (first, second, first):
        result = run_cli("meddra", "load", str(release), "--dsn", dsn)
        assert result.returncode == 0, result.stderr
    assert "MedDRA 26.1 loaded" in result.stdout and f"llt={len(PTS) + len(EXTRA_LLTS)}" in result.stdout

    assert sorted(query(dsn, "SELECT meddra_version, terms_loaded FROM meddra_releases")) == [
        ("26.1", len(PTS) + len(EXTRA_LLTS)),
        ("27.0", len(PTS) + len(EXTRA_LLTS)),
    ]
    assert Counter(v for (v,) in query(dsn, "SELECT meddra_version FROM meddra_llt")) == {"26.1": 9, "27.0": 9}
    names = dict(query(dsn, "SELECT meddra_version, pt_name FROM meddra_pt WHERE pt_code = '10019211'"))
    assert names == {"26.1": "Headache", "27.0": "Headache (27.0)"}
    # The LLT below a PT reaches the PT's primary path, and only that one
    paths = query(
        dsn,
        "SELECT h.soc_code FROM meddra_llt l JOIN meddra_hierarchy h ON h.meddra_version = l.meddra_version AND h.pt_code = l.pt_code "
        "AND h.primary_soc WHERE l.meddra_version = '26.1' AND l.llt_code IN ('10019198', '10002198')",
    )
    assert sorted(paths) == [("10021428",), ("10029205",)]


def test_meddra_release_errors_name_the_file_and_line(tmp_path: Path) -> None:
    release = write_release(tmp_path / "r", "26.1", release_file=False)
    with pytest.raises(MeddraReleaseError, match="meddra_release.asc.*--version"):
        read_release(release)
    assert read_release(release, "26.1").version == "26.1"
    (release / "MedAscii" / "pt.asc").write_text("10019211$Headache$\n", encoding="utf-8")
    with pytest.raises(MeddraReleaseError, match=r"pt\.asc line 1: 3 \$-separated fields, expected at least 4"):
        read_release(release, "26.1")
    (release / "MedAscii" / "pt.asc").unlink()
    result = run_cli("meddra", "load", str(release), "--version", "26.1", "--dsn", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.returncode == 1 and "pt.asc is missing" in result.stderr and "Traceback" not in result.stderr
