"""Every query of docs/queries.md runs on both dialects and gives the answer the tables give directly."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.support.db import query
from tests.support.meddra import PTS, SOCS

QUERIES_DOC = Path(__file__).resolve().parents[1] / "docs" / "queries.md"
_QUERY = re.compile(r"^### (\d+)\. (.+?)\n.*?```sql\n(.+?)```", re.S | re.M)


def documented_queries() -> dict[int, str]:
    return {int(number): sql for number, _title, sql in _QUERY.findall(QUERIES_DOC.read_text(encoding="utf-8"))}


def run(dsn: str, number: int, **params: str) -> list[tuple]:
    engine = create_engine(dsn)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(documented_queries()[number]), params)]
    finally:
        engine.dispose()


def test_the_document_holds_at_least_six_queries() -> None:
    assert len(documented_queries()) >= 6


def current_cases(dsn: str) -> set[str]:
    return {case for case, nullified in query(dsn, "SELECT safetyreportid, is_nullified FROM icsr_master") if not nullified}


def pairs(dsn: str) -> list[tuple[str, str, str, str, bool]]:
    """(case, product, role, reaction code, serious) for every drug and reaction of every current case, from the tables."""
    current = current_cases(dsn)
    drugs = defaultdict(list)
    for case, product, role in query(dsn, "SELECT safetyreportid, medicinal_product, drug_role FROM drugs"):
        drugs[case].append((product, role))
    found = []
    for case, code, death, life, hospital, disabling, congenital, other, intervention in query(
        dsn,
        "SELECT safetyreportid, reaction_meddra_code, results_in_death, life_threatening, caused_prolonged_hospitalisation, "
        "disabling_incapacitating, congenital_anomaly_birth_defect, other_medically_important_condition, fda_required_intervention "
        "FROM reactions",
    ):
        serious = any(bool(f) for f in (death, life, hospital, disabling, congenital, other, intervention))
        if case in current:
            found.extend((case, product, role, code, serious) for product, role in drugs[case])
    return found


def test_cases_per_suspect_drug_and_reaction(analyst_dsn: str) -> None:
    expected = defaultdict(set)
    for case, product, role, code, _ in pairs(analyst_dsn):
        if role == "1":
            expected[(product, code)].add(case)
    got = run(analyst_dsn, 1)
    assert {(product, code): cases for product, code, cases in got} == {key: len(cases) for key, cases in expected.items()}
    assert [row[2] for row in got] == sorted((row[2] for row in got), reverse=True)


def test_serious_cases_per_soc(analyst_dsn: str) -> None:
    expected = defaultdict(set)
    for case, _, _, code, serious in pairs(analyst_dsn):
        if serious:
            expected[SOCS[PTS[code][1]][0]].add(case)
    got = dict(run(analyst_dsn, 2))
    assert got == {soc: len(cases) for soc, cases in expected.items()} and got


def test_every_version_of_one_case_in_order(analyst_dsn: str) -> None:
    versions = Counter(case for (case,) in query(analyst_dsn, "SELECT safetyreportid FROM icsr_audit_log"))
    case, count = versions.most_common(1)[0]
    assert count > 1
    got = run(analyst_dsn, 3, case_id=case)
    assert len(got) == count
    received = [str(row[2]) for row in got]
    assert received == sorted(received)


def test_nullified_cases_and_their_reasons(analyst_dsn: str) -> None:
    nullified = {case for (case,) in query(analyst_dsn, "SELECT safetyreportid FROM icsr_master")} - current_cases(analyst_dsn)
    got = run(analyst_dsn, 4)
    assert nullified and {row[0] for row in got} == nullified
    assert {row[1] for row in got} == {"Duplicate report"}


def test_literature_cases(analyst_dsn: str) -> None:
    current = current_cases(analyst_dsn)
    expected = sorted(
        (case, ref)
        for case, ref in query(analyst_dsn, "SELECT safetyreportid, literature_reference FROM literature_references")
        if case in current
    )
    got = run(analyst_dsn, 5)
    assert expected and sorted((case, ref) for case, _, ref in got) == expected
    assert {label for _, label, _ in got} <= {"Spontaneous report", "Report from study", "Other", "Not available to sender (unknown)", None}


def test_cases_received_per_month(analyst_dsn: str) -> None:
    current = current_cases(analyst_dsn)
    months = Counter(
        f"{received[:4]}-{received[4:6]}"
        for case, received in query(analyst_dsn, "SELECT safetyreportid, first_received_date FROM icsr_master")
        if case in current
    )
    got = run(analyst_dsn, 6)
    assert dict(got) == months and len(months) > 1
    assert [month for month, _ in got] == sorted(months)


def pairs_of_drug(dsn: str, drug: str) -> Counter[tuple[str, str]]:
    """(case, product) of each drug-reaction pair of a current case whose drug's product or one of its substances is
    ``drug`` (case and surrounding blanks aside), from the tables."""
    wanted = drug.strip().upper()
    substances = defaultdict(set)
    for case, seq, name in query(dsn, "SELECT safetyreportid, drug_seq, substance_name FROM drug_substances"):
        substances[(case, seq)].add((name or "").strip().upper())
    reactions = Counter(case for (case,) in query(dsn, "SELECT safetyreportid FROM reactions"))
    current = current_cases(dsn)
    found: Counter[tuple[str, str]] = Counter()
    for case, seq, product in query(dsn, "SELECT safetyreportid, drug_seq, medicinal_product FROM drugs"):
        if case in current and ((product or "").strip().upper() == wanted or wanted in substances[(case, seq)]):
            found[(case, product)] += reactions[case]
    return found


def test_drug_reaction_pairs_of_one_drug_by_product_or_substance(analyst_dsn: str) -> None:
    expected = Counter(case for case, product, _, _, _ in pairs(analyst_dsn) if product == "Warfarin")
    got = run(analyst_dsn, 7, drug=" warfarin")
    assert expected and Counter(row[0] for row in got) == expected
    assert Counter((row[0], row[1]) for row in got) == pairs_of_drug(analyst_dsn, "warfarin")
    assert {row[2] for row in got} == {"WARFARIN"}
    assert all(row[5] in {name for name, _, _ in PTS.values()} for row in got)
    assert any(row[7] and "Reporter / Global Introspection / " in row[7] for row in got)


def test_drug_reaction_pairs_of_one_drug_in_the_fda_examples(fda_dsn: str) -> None:
    # A substance of one product among several, a substance alone, a product whose substance has another name
    for drug in ("argemone mexicana seed oil", "TERBINAFINE HYDROCHLORIDE", "rld"):
        got = Counter((row[0], row[1]) for row in run(fda_dsn, 7, drug=drug))
        assert got and got == pairs_of_drug(fda_dsn, drug), drug
    by_substance = run(fda_dsn, 7, drug="Terbinafine hydrochloride")
    assert {row[1:3] for row in by_substance} == {("Drug A", "TERBINAFINE HYDROCHLORIDE; ARGEMONE MEXICANA SEED OIL")}


def test_suspect_drugs_whose_reaction_came_back_on_rechallenge(fda_dsn: str) -> None:
    recurred = {
        (case, drug, xml_id)
        for case, drug, xml_id, recurrence in query(
            fda_dsn, "SELECT safetyreportid, drug_seq, reaction_xml_id, recurrence_on_readministration FROM drug_reaction_matrix"
        )
        if recurrence == "1"
    }
    suspects = {(case, seq) for case, seq, role in query(fda_dsn, "SELECT safetyreportid, drug_seq, drug_role FROM drugs") if role == "1"}
    expected = [
        (case, term)
        for case, drug, xml_id, term in query(
            fda_dsn,
            "SELECT m.safetyreportid, m.drug_seq, m.reaction_xml_id, r.primary_source_reaction FROM drug_reaction_matrix m "
            "JOIN reactions r ON r.safetyreportid = m.safetyreportid AND r.reaction_xml_id = m.reaction_xml_id",
        )
        if (case, drug, xml_id) in recurred and (case, drug) in suspects and case in current_cases(fda_dsn)
    ]
    got = run(fda_dsn, 9)
    assert expected and sorted((row[0], row[3]) for row in got) == sorted(expected)
    assert {row[7] for row in got} == {"Yes - yes (rechallenge was done, reaction recurred)"}
    assert all(row[4] is not None and row[5] for row in got)  # the FDA example gives the time to onset of these


def fatal_or_life_threatening_as_expected(dsn: str) -> None:
    qualification = {}  # of each case's primary source: the one for regulatory purposes, else the first
    for case, _, qualified, _ in sorted(
        query(dsn, "SELECT safetyreportid, reporter_seq, qualification, primary_source_for_regulatory_purposes FROM primary_sources"),
        key=lambda row: (row[0], row[3] != 1, row[1]),
    ):
        qualification.setdefault(case, qualified)
    flags = defaultdict(lambda: [False, False])
    for case, death, life in query(dsn, "SELECT safetyreportid, results_in_death, life_threatening FROM reactions"):
        flags[case][0] |= bool(death)
        flags[case][1] |= bool(life)
    fatal, threatening = defaultdict(set), defaultdict(set)
    for case, product, role, _, _ in set(pairs(dsn)):
        if role == "1" and qualification.get(case) in ("1", "2", "3"):
            if flags[case][0]:
                fatal[product].add(case)
            if flags[case][1]:
                threatening[product].add(case)
    got = {product: (dead, life) for product, dead, life in run(dsn, 10)}
    assert got == {product: (len(fatal[product]), len(threatening[product])) for product in set(fatal) | set(threatening)}
    assert any(dead for dead, _ in got.values())


def test_fatal_or_life_threatening_cases_reported_by_health_professionals(analyst_dsn: str) -> None:
    fatal_or_life_threatening_as_expected(analyst_dsn)


def test_fatal_or_life_threatening_cases_in_the_fda_examples(fda_dsn: str) -> None:
    fatal_or_life_threatening_as_expected(fda_dsn)


def test_cases_per_sex_and_age_group(analyst_dsn: str) -> None:
    got = run(analyst_dsn, 8)
    assert sum(count for _, _, count in got) == len(current_cases(analyst_dsn))
    assert {sex for sex, _, _ in got} <= {"Male", "Female", "not given"}


@pytest.mark.parametrize("number", sorted(documented_queries()))
def test_each_documented_query_has_a_test(number: int) -> None:
    tested = {
        1: test_cases_per_suspect_drug_and_reaction,
        2: test_serious_cases_per_soc,
        3: test_every_version_of_one_case_in_order,
        4: test_nullified_cases_and_their_reasons,
        5: test_literature_cases,
        6: test_cases_received_per_month,
        7: test_drug_reaction_pairs_of_one_drug_by_product_or_substance,
        8: test_cases_per_sex_and_age_group,
        9: test_suspect_drugs_whose_reaction_came_back_on_rechallenge,
        10: test_fatal_or_life_threatening_cases_reported_by_health_professionals,
    }
    assert number in tested, f"query {number} of docs/queries.md has no test comparing its answer"
