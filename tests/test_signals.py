"""Drug-event statistics: computed in the database, equal to a brute-force computation in Python, on both dialects."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable

import pytest
from sqlalchemy import create_engine, literal, select, union_all

from loaders.registry import get_loader
from py_load_eudravigilance.fixtures.generator import CaseSpec, DrugSpec, ReactionSpec
from py_load_eudravigilance.pipeline import run_load
from py_load_eudravigilance.signals import STATISTICS, STATISTICS_TABLE, cells_check_query, statistics
from tests.support.db import query
from tests.test_analyst import current_case_ids, rows
from tests.test_cli import run_cli

Pair = tuple[str, str]


def normalize_drug_name(name: str) -> str:
    """The documented normalization, in plain Python (the test data is ASCII)."""
    return " ".join(name.split()).upper()


def safe(compute):  # type: ignore[no-untyped-def]
    """The statistic, or None where its formula divides by zero or takes the logarithm of zero."""
    try:
        return compute()
    except (ZeroDivisionError, ValueError, TypeError):  # TypeError: built on a statistic that is None
        return None


def expected_statistics(a: int, b: int, c: int, d: int) -> dict[str, float | None]:
    """The issue's formulas, written out plainly in Python."""
    n = a + b + c + d
    prr = safe(lambda: (a / (a + b)) / (c / (c + d)))
    prr_se = safe(lambda: math.sqrt(1 / a - 1 / (a + b) + 1 / c - 1 / (c + d)))
    ror = safe(lambda: (a * d) / (b * c))
    ror_se = safe(lambda: math.sqrt(1 / a + 1 / b + 1 / c + 1 / d))
    expected = (a + b) * (a + c) / n
    ic = math.log2((a + 0.5) / (expected + 0.5))
    return {
        "prr": prr,
        "prr_lower95": safe(lambda: math.exp(math.log(prr) - 1.96 * prr_se)),
        "prr_upper95": safe(lambda: math.exp(math.log(prr) + 1.96 * prr_se)),
        "ror": ror,
        "ror_lower95": safe(lambda: math.exp(math.log(ror) - 1.96 * ror_se)),
        "ror_upper95": safe(lambda: math.exp(math.log(ror) + 1.96 * ror_se)),
        "chi_square": safe(lambda: n * (abs(a * d - b * c) - n / 2) ** 2 / ((a + b) * (c + d) * (a + c) * (b + d))),
        "ic": ic,
        "ic025": ic - 3.3 * (a + 0.5) ** -0.5 - 2 * (a + 0.5) ** -1.5,
        "ic975": ic + 2.4 * (a + 0.5) ** -0.5 - 0.5 * (a + 0.5) ** -1.5,
    }


def brute_force(dsn: str, roles: Iterable[str] = ("1", "3")) -> dict[Pair, dict]:
    """Every (drug, reaction) row the table must hold, counted case by case from the loaded tables."""
    current = current_case_ids(dsn)
    substances = defaultdict(list)
    for case, drug_seq, name in query(dsn, "SELECT safetyreportid, drug_seq, substance_name FROM drug_substances"):
        if name and normalize_drug_name(name):
            substances[case, drug_seq].append(name)
    drugs_of = defaultdict(set)
    for case, drug_seq, product, role in query(dsn, "SELECT safetyreportid, drug_seq, medicinal_product, drug_role FROM drugs"):
        if case in current and (role or "").strip() in roles:
            for name in substances[case, drug_seq] or [product or ""]:
                if normalize_drug_name(name):
                    drugs_of[case].add(normalize_drug_name(name))
    events_of = defaultdict(set)
    for case, code in query(dsn, "SELECT safetyreportid, reaction_meddra_code FROM reactions"):
        if case in current and code and code.strip():
            events_of[case].add(code.strip())
    population = set(drugs_of) & set(events_of)
    n = len(population)
    together = Counter((drug, event) for case in population for drug in drugs_of[case] for event in events_of[case])
    with_drug = Counter(drug for case in population for drug in drugs_of[case])
    with_event = Counter(event for case in population for event in events_of[case])
    expected = {}
    for (drug, event), a in together.items():
        b, c = with_drug[drug] - a, with_event[event] - a
        d = n - a - b - c
        stats = expected_statistics(a, b, c, d)
        evans = a >= 3 and (stats["prr"] or 0) >= 2 and (stats["chi_square"] or 0) >= 4
        expected[drug, event] = {"a": a, "b": b, "c": c, "d": d, "n": n, **stats, "signal": evans or stats["ic025"] > 0}
    return expected


def table_rows(dsn: str) -> dict[Pair, dict]:
    return {(row.pop("drug"), row.pop("reaction_meddra_code")): row for row in rows(dsn, "SELECT * FROM drug_event_statistics")}


def assert_equal_statistics(actual: dict[Pair, dict], expected: dict[Pair, dict]) -> None:
    assert actual.keys() == expected.keys()
    for pair, want in expected.items():
        got = actual[pair]
        assert {k: got[k] for k in ("a", "b", "c", "d", "n")} == {k: want[k] for k in ("a", "b", "c", "d", "n")}, pair
        assert bool(got["signal"]) == want["signal"], pair
        for name in STATISTICS:
            if want[name] is None:
                assert got[name] is None, (pair, name)
            else:
                assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-12), (pair, name)


def test_every_column_equals_a_brute_force_computation(analyst_dsn: str) -> None:
    summary = get_loader(analyst_dsn).refresh_drug_event_statistics()
    expected = brute_force(analyst_dsn)
    assert summary.pairs == len(expected) > 20
    assert summary.signals == sum(row["signal"] for row in expected.values())
    assert_equal_statistics(table_rows(analyst_dsn), expected)


def test_concomitant_drugs_count_when_configured(analyst_dsn: str) -> None:
    get_loader(analyst_dsn).refresh_drug_event_statistics(["1", "2", "3"])
    expected = brute_force(analyst_dsn, ("1", "2", "3"))
    assert expected != brute_force(analyst_dsn)  # the corpus has concomitant drugs: the setting changes the counts
    assert_equal_statistics(table_rows(analyst_dsn), expected)


def test_follow_ups_and_nullifications_change_the_counts(dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    headache, nausea = ReactionSpec(meddra_code="10019211"), ReactionSpec(meddra_code="10028813")
    warfarin = DrugSpec(name="Coumadin", substance="  warfarin\tsodium  ")
    # The same substance written as another product: one drug after normalization
    also_warfarin = DrugSpec(name="Marevan", substance="WARFARIN   SODIUM")
    no_substance = DrugSpec(name=" Herbal   tea ", substance="", role="3")
    blank_substance = DrugSpec(name="Coumadin", substance="\t \n")  # named by blanks only: its product name counts
    concomitant = DrugSpec(name="Aspirin", substance="ASPIRIN", role="2")
    first = [
        CaseSpec("CASE-A", reactions=[headache, nausea], drugs=[warfarin, concomitant]),
        CaseSpec("CASE-B", reactions=[ReactionSpec(meddra_code="10028813")], drugs=[DrugSpec(name="Marevan", substance="WARFARIN SODIUM")]),
        CaseSpec("CASE-C", reactions=[ReactionSpec(meddra_code="10019211")], drugs=[no_substance]),
        CaseSpec("CASE-D", reactions=[ReactionSpec(meddra_code="10019211")], drugs=[also_warfarin, DrugSpec()]),
        CaseSpec("CASE-E", reactions=[ReactionSpec(meddra_code="10028813")], drugs=[blank_substance]),
    ]
    run_load(write_batch("first.xml", *first).parent, dsn, workers=1)
    loader = get_loader(dsn)
    loader.refresh_drug_event_statistics()
    before = table_rows(dsn)
    assert_equal_statistics(before, brute_force(dsn))
    assert before["WARFARIN SODIUM", "10028813"]["a"] == 2  # CASE-A and CASE-B
    assert before["HERBAL TEA", "10019211"]["a"] == 1  # product name when no substance is given, role interacting
    assert not any(drug == "ASPIRIN" for drug, _ in before)  # concomitant: not counted by default
    assert before["COUMADIN", "10028813"]["a"] == 1
    assert before["WARFARIN SODIUM", "10019211"]["n"] == 5

    # CASE-A's follow-up drops nausea; CASE-B is nullified
    later = [
        CaseSpec("CASE-A", most_recent_info="20240301", reactions=[headache], drugs=[warfarin, concomitant]),
        CaseSpec("CASE-B", most_recent_info="20240301", nullification=True),
    ]
    run_load(write_batch("second.xml", *later).parent, dsn, workers=1)
    loader.refresh_drug_event_statistics()
    after = table_rows(dsn)
    assert_equal_statistics(after, brute_force(dsn))
    assert ("WARFARIN SODIUM", "10028813") not in after  # neither case reports it any more
    assert after["WARFARIN SODIUM", "10019211"]["n"] == 4  # CASE-B counts nowhere


def test_a_published_two_by_two_gives_its_published_statistics(dsn: str) -> None:
    """Agresti's aspirin and myocardial infarction table (Physicians' Health Study; An Introduction to Categorical Data
    Analysis, table 2.3): placebo 189 MI / 10,845 none, aspirin 104 / 10,933. Published: relative risk (the PRR's
    formula) 1.82, odds ratio (the ROR's) 1.83 with 95% interval 1.44 to 2.33, and Yates-corrected chi-square 24.43
    (R's chisq.test on the same table)."""
    counts = select(
        literal("PLACEBO").label("drug"),
        literal("MI").label("reaction_meddra_code"),
        *(literal(value).label(name) for name, value in zip("abcdn", (189, 10845, 104, 10933, 22071), strict=True)),
    )
    get_loader(dsn).create_all_tables()
    engine = create_engine(dsn)
    try:
        with engine.connect() as conn:
            row = conn.execute(statistics(counts)).mappings().one()
    finally:
        engine.dispose()
    assert round(row["prr"], 2) == 1.82
    assert (round(row["ror"], 2), round(row["ror_lower95"], 2), round(row["ror_upper95"], 2)) == (1.83, 1.44, 2.33)
    assert round(row["chi_square"], 2) == 24.43
    # PRR < 2 fails Evans' criteria, but with 189 cases the IC's lower bound is above 0: a signal by the IC rule
    assert row["prr"] < 2 and row["ic025"] > 0 and bool(row["signal"]) is True


def test_statistics_are_null_where_a_cell_is_zero(dsn: str) -> None:
    # b = 0: the drug is only reported with the reaction; c = 0: the reaction only with the drug; d = 0: nothing else
    cells = {"b0": (3, 0, 2, 5), "c0": (3, 2, 0, 5), "d0": (3, 2, 2, 0)}
    counts = union_all(
        *(
            select(
                literal(name).label("drug"),
                literal("R").label("reaction_meddra_code"),
                *(literal(value).label(k) for k, value in zip("abcd", values, strict=True)),
                literal(sum(values)).label("n"),
            )
            for name, values in cells.items()
        )
    )
    engine = create_engine(dsn)
    try:
        with engine.connect() as conn:
            got = {row["drug"]: row for row in conn.execute(statistics(select(counts.subquery()))).mappings()}
    finally:
        engine.dispose()
    for name, values in cells.items():
        want = expected_statistics(*values)
        for statistic in STATISTICS:
            assert (got[name][statistic] is None) == (want[statistic] is None), (name, statistic)
    assert got["b0"]["ror"] is None and got["b0"]["prr"] is not None  # ROR divides by b; the PRR does not
    assert got["c0"]["prr"] is None and got["c0"]["ror"] is None
    assert got["d0"]["ror"] == 0  # a*d = 0: zero, not NULL (nothing divides by zero)
    assert got["d0"]["ror_lower95"] is None  # log of a zero ROR


def test_signals_command_refreshes_and_prints_the_top_pairs(sqlite_dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    headache, nausea = "10019211", "10028813"
    counts = {("PARACETAMOL", headache): 6, ("PARACETAMOL", nausea): 1, ("IBUPROFEN", headache): 1, ("IBUPROFEN", nausea): 6}
    cases = [
        CaseSpec(f"CASE-{code}-{drug}-{i}", reactions=[ReactionSpec(meddra_code=code)], drugs=[DrugSpec(name=drug.title(), substance=drug)])
        for (drug, code), times in counts.items()
        for i in range(times)
    ]
    run_load(write_batch("cases.xml", *cases).parent, sqlite_dsn, workers=1)
    result = run_cli("signals", "--dsn", sqlite_dsn, "--drug", " paracetamol", "--top", "5")
    assert result.returncode == 0, result.stderr
    assert "4 drug-event pairs, 2 signals" in result.stdout
    want = expected_statistics(6, 1, 1, 6)
    line = next(line for line in result.stdout.splitlines() if line.startswith("| PARACETAMOL | 10019211 |"))
    assert line.startswith(f"| PARACETAMOL | 10019211 | 6 | 1 | 1 | 6 | {want['prr']:.2f} | {want['prr_lower95']:.2f} |")
    assert line.endswith("| yes |")
    assert not any(line.startswith("| IBUPROFEN") for line in result.stdout.splitlines())  # --drug keeps one drug
    refused = run_cli("signals", "--dsn", sqlite_dsn, "--drug-roles", "5")
    assert refused.returncode == 1 and "signals.drug_roles" in refused.stderr


def test_the_cells_check_reports_a_broken_two_by_two(sqlite_dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    cases = [CaseSpec(f"CASE-{i}", reactions=[ReactionSpec(meddra_code=code)]) for i, code in enumerate(("10019211", "10028813"))]
    run_load(write_batch("cases.xml", *cases).parent, sqlite_dsn, workers=1)
    loader = get_loader(sqlite_dsn)
    loader.refresh_drug_event_statistics()
    table = loader.table(STATISTICS_TABLE)
    with loader.engine.begin() as conn:
        assert tuple(conn.execute(cells_check_query(table)).one()) == (2, 0)
        conn.execute(table.update().where(table.c.reaction_meddra_code == "10028813").values(c=-1, d=2))  # sums to n, one cell < 0
        assert tuple(conn.execute(cells_check_query(table)).one()) == (2, 1)
