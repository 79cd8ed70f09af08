"""Drug-event statistics: computed in the database, equal to a brute-force computation in Python, on both dialects."""

from __future__ import annotations

import math
import random
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, inspect, literal, select, text, union_all

from loaders.dialect import dialect_for
from loaders.registry import get_loader
from loaders.upkeep import RefreshTarget, load_meddra, refresh_drug_event_statistics
from py_load_eudravigilance import signals
from py_load_eudravigilance.fixtures.generator import CaseSpec, DrugSpec, ReactionSpec, build_batch, build_message
from py_load_eudravigilance.meddra import read_release
from py_load_eudravigilance.pipeline import run_load
from py_load_eudravigilance.signal_rules import PairStatistics, rules_met
from py_load_eudravigilance.signals import (
    COUNTS,
    COUNTS_STATE,
    DEFAULT_DRUG_ROLES,
    DRUG_COUNTS,
    FLAGGED_RULES,
    NOTHING,
    PENDING_CASES,
    REACTION_COUNTS,
    STATISTICS,
    STATISTICS_TABLE,
    Contribution,
    CountChanges,
    CountsOutOfStep,
    cells_check_query,
    contribution,
    count_changes,
    recomputed_statistics,
    statistics,
    updated,
)
from py_load_eudravigilance.subgroups import CASE_ATTRIBUTES, SUBGROUPS, case_attributes
from tests.support.db import query
from tests.support.meddra import write_release
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
    # With MedDRA loaded, each reported code counts as the PT its LLT code has in the latest version
    versions = [version for (version,) in query(dsn, "SELECT meddra_version FROM meddra_releases")]
    latest = max(versions, key=lambda version: [int(part) for part in version.split(".")], default=None)
    pt_of = dict(query(dsn, f"SELECT llt_code, pt_code FROM meddra_llt WHERE meddra_version = '{latest}'")) if latest else {}
    events_of = defaultdict(set)
    for case, code in query(dsn, "SELECT safetyreportid, reaction_meddra_code FROM reactions"):
        if case in current and code and code.strip():
            events_of[case].add(pt_of.get(code.strip(), code.strip()))
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
    return {(row.pop("drug"), row.pop("event_code")): row for row in rows(dsn, "SELECT * FROM drug_event_statistics")}


def assert_equal_statistics(actual: dict[Pair, dict], expected: dict[Pair, dict]) -> None:
    assert actual.keys() == expected.keys()
    for pair, want in expected.items():
        got = actual[pair]
        assert {k: got[k] for k in ("a", "b", "c", "d", "n")} == {k: want[k] for k in ("a", "b", "c", "d", "n")}, pair
        assert bool(got["signal"]) == want["signal"], pair
        # The view's rule flags are the pure rules of signal_rules applied to the same statistics
        judged = PairStatistics(want["a"], want["prr"], want["chi_square"], want["ror_lower95"], want["ic025"])
        assert {rule for rule in FLAGGED_RULES if got[f"meets_{rule}"]} == rules_met(judged), pair
        for name in STATISTICS:
            if want[name] is None:
                assert got[name] is None, (pair, name)
            else:
                assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-12), (pair, name)


def test_every_column_equals_a_brute_force_computation(analyst_dsn: str) -> None:
    summary = refresh_drug_event_statistics(get_loader(analyst_dsn).engine, rebuild=True)
    expected = brute_force(analyst_dsn)
    assert summary.rebuilt and summary.pairs == summary.changed_pairs == len(expected) > 20
    assert summary.changed_pair_signals == sum(row["signal"] for row in expected.values())
    assert summary.cases == next(iter(expected.values()))["n"]
    assert_equal_statistics(table_rows(analyst_dsn), expected)


def test_concomitant_drugs_count_when_configured(analyst_dsn: str) -> None:
    refresh_drug_event_statistics(get_loader(analyst_dsn).engine, ["1", "2", "3"])
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
    refresh_drug_event_statistics(loader.engine)
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
    refresh_drug_event_statistics(loader.engine)
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
        literal("MI").label("event_code"),
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
                literal("R").label("event_code"),
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
    assert "events: the reported MedDRA codes, no MedDRA release loaded" in result.stdout
    line = next(line for line in result.stdout.splitlines() if line.startswith("| PARACETAMOL | 10019211 |"))
    shown = f"| PARACETAMOL | 10019211 | - | 6 | 1 | 1 | 6 | {want['prr']:.2f} | {want['ror']:.2f} | {want['ror_lower95']:.2f} |"
    assert line.startswith(shown)
    assert line.endswith("| yes | evans_prr, ema_sdr |")  # IC025 is below 0 in so few cases
    ema = run_cli("signals", "--dsn", sqlite_dsn, "--rule", "ema_sdr", "--ebgm")
    table = [line.split(" | ")[:2] for line in ema.stdout.splitlines() if line.startswith("| ") and line[2:6] not in ("drug", "---|")]
    assert ema.returncode == 0 and sorted(table) == [["| IBUPROFEN", "10028813"], ["| PARACETAMOL", "10019211"]]
    assert "EBGM prior (two-gamma mixture" in ema.stdout and "| ebgm | eb05 | eb95 |" in ema.stdout
    assert not any(line.startswith("| IBUPROFEN") for line in result.stdout.splitlines())  # --drug keeps one drug
    refused = run_cli("signals", "--dsn", sqlite_dsn, "--drug-roles", "5")
    assert refused.returncode == 1 and "signals.drug_roles" in refused.stderr


def test_the_cells_check_reports_a_broken_two_by_two(sqlite_dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    cases = [CaseSpec(f"CASE-{i}", reactions=[ReactionSpec(meddra_code=code)]) for i, code in enumerate(("10019211", "10028813"))]
    run_load(write_batch("cases.xml", *cases).parent, sqlite_dsn, workers=1)
    loader = get_loader(sqlite_dsn)
    refresh_drug_event_statistics(loader.engine)
    view, reactions = loader.table(STATISTICS_TABLE), loader.table(REACTION_COUNTS)
    with loader.engine.begin() as conn:
        assert tuple(conn.execute(cells_check_query(view)).one()) == (2, 0)
        # A reaction count below its pair's a: c = -1 and d one more, so the cells still sum to n but one is below zero
        conn.execute(reactions.update().where(reactions.c.event_code == "10028813").values(cases=0))
        assert tuple(conn.execute(cells_check_query(view)).one()) == (2, 1)


# -- kept incrementally ---------------------------------------------------------------------------------------------


def counts_from_scratch(contributions: dict[str, Contribution], subgroup: str | None = None) -> tuple[Counter, Counter, Counter, int]:
    """Pair counts, cases per drug, cases per reaction and n, counted plainly from every case's contribution (of the
    cases in ``subgroup`` when given)."""
    counted = [part for part in contributions.values() if part != NOTHING and (subgroup is None or subgroup in part.subgroups)]
    pairs = Counter((drug, reaction) for part in counted for drug in part.drugs for reaction in part.reactions)
    return pairs, Counter(d for part in counted for d in part.drugs), Counter(r for part in counted for r in part.reactions), len(counted)


def test_a_case_contributes_only_with_a_named_drug_and_a_coded_reaction() -> None:
    assert contribution(["WARFARIN", "WARFARIN", None, ""], ["R1", ""]) == Contribution(frozenset({"WARFARIN"}), frozenset({"R1"}))
    assert contribution(["WARFARIN"], [None, ""]) == NOTHING  # no coded reaction: outside the population
    assert contribution(["", None], ["R1"]) == NOTHING


def test_count_changes_of_inserts_follow_ups_and_nullifications() -> None:
    both = contribution(["D1", "D2"], ["R1"])
    inserted = count_changes({}, {"C1": both})
    assert inserted == CountChanges(pairs={("D1", "R1"): 1, ("D2", "R1"): 1}, drugs={"D1": 1, "D2": 1}, reactions={"R1": 1}, cases=1)
    # A follow-up that swaps a reaction and keeps the drugs: the drugs' and n's counts do not change
    swapped = count_changes({"C1": both}, {"C1": contribution(["D1", "D2"], ["R2"])})
    assert swapped.pairs == {("D1", "R1"): -1, ("D2", "R1"): -1, ("D1", "R2"): 1, ("D2", "R2"): 1}
    assert (swapped.drugs, swapped.reactions, swapped.cases) == ({}, {"R1": -1, "R2": 1}, 0)
    nullified = count_changes({"C1": both}, {"C1": NOTHING})
    assert nullified == CountChanges(pairs={("D1", "R1"): -1, ("D2", "R1"): -1}, drugs={"D1": -1, "D2": -1}, reactions={"R1": -1}, cases=-1)
    assert count_changes({"C1": both}, {"C1": both}) == CountChanges({}, {}, {}, 0)  # reloaded unchanged: nothing


def test_a_follow_up_giving_only_another_age_moves_the_case_between_subgroups() -> None:
    child = contribution(["D1"], ["R1", "R2"], {"paediatric", "female"})
    elderly = contribution(["D1"], ["R1", "R2"], {"geriatric", "female"})
    moved = count_changes({"C1": child}, {"C1": elderly})
    # The population's counts and the subgroup the case stays in do not change; it leaves one age band for the other
    assert (moved.pairs, moved.drugs, moved.reactions, moved.cases) == ({}, {}, {}, 0)
    assert moved.within == {
        "paediatric": CountChanges({("D1", "R1"): -1, ("D1", "R2"): -1}, {"D1": -1}, {"R1": -1, "R2": -1}, -1),
        "geriatric": CountChanges({("D1", "R1"): 1, ("D1", "R2"): 1}, {"D1": 1}, {"R1": 1, "R2": 1}, 1),
    }
    # Nullified: it leaves the population and its subgroups; a case outside the population is in no subgroup
    assert count_changes({"C1": child}, {"C1": NOTHING}).within["female"].cases == -1
    assert contribution(["D1"], [], {"paediatric"}) == NOTHING


def test_counts_kept_by_changes_equal_counts_from_scratch() -> None:
    """Random histories of contributions: the counts kept by applying each step's changes are always those counted
    from scratch."""
    rng = random.Random(5)
    drugs, reactions = ["D1", "D2", "D3", "D4", ""], ["R1", "R2", "R3", ""]
    # A case is in at most one age band, one sex and one region (or none of them)
    dimensions = [["paediatric", "geriatric", None], ["female", "male", None], ["eea", "japan", None]]
    for _ in range(20):
        current: dict[str, Contribution] = {}
        kept: dict[str | None, list[dict]] = defaultdict(lambda: [{}, {}, {}, {}])  # None: the population
        for _ in range(15):
            cases = rng.sample([f"C{i}" for i in range(8)], rng.randint(1, 4))
            new = {
                c: contribution(
                    rng.sample(drugs, rng.randint(0, 3)),
                    rng.sample(reactions, rng.randint(0, 2)),
                    [subgroup for choices in dimensions if (subgroup := rng.choice(choices))],
                )
                for c in cases
            }
            changes = count_changes({c: current.get(c, NOTHING) for c in cases}, new)
            for scope, part in ((None, changes), *changes.within.items()):
                for held, change in zip(kept[scope], (part.pairs, part.drugs, part.reactions, {"n": part.cases}), strict=True):
                    held.update(updated(held, change))
                    for key in [key for key, value in held.items() if value == 0]:
                        del held[key]
            current.update(new)
            for scope in (None, *(subgroup for choices in dimensions for subgroup in choices if subgroup)):
                pairs, with_drug, with_reaction, cases_counted = counts_from_scratch(current, scope)
                assert kept[scope] == [dict(pairs), dict(with_drug), dict(with_reaction), {"n": cases_counted} if cases_counted else {}]


def test_a_count_below_zero_is_refused() -> None:
    assert updated({"D1": 2}, {"D1": -2, "D2": 1}) == {"D1": 0, "D2": 1}  # 0: the row goes
    with pytest.raises(CountsOutOfStep):
        updated({"D1": 1}, {"D1": -2})


CODES = ("10019211", "10028813", "10012735", "10047700", "")
DRUG_CHOICES = (
    ("Coumadin", "  warfarin\tsodium ", "1"),
    ("Marevan", "WARFARIN   SODIUM", "1"),
    (" Herbal   tea ", "", "3"),
    ("Aspirin", "ASPIRIN", "2"),  # concomitant: not counted by default
    ("Paracetamol", "PARACETAMOL", "1"),
    ("Ibuprofen", "IBUPROFEN", "3"),
)


def random_version(rng: random.Random, case_id: str, day: date, cases: int = 14) -> CaseSpec:
    """A version of a case: any drugs (none, or only uncounted ones, included) and reactions (none or uncoded
    included), now and then a nullification; dated ``day``. Now and then a duplicate: a worldwide unique case id
    another case may share, or links (C.1.10.r) to other cases' keys or to ids no case has."""
    dated = {"most_recent_info": day.strftime("%Y%m%d"), "message_created": day.strftime("%Y%m%d") + "120000+0000"}
    if rng.random() < 0.1:
        return CaseSpec(case_id, nullification=True, **dated)
    drugs = [DrugSpec(name=name, substance=substance, role=role) for name, substance, role in rng.sample(DRUG_CHOICES, rng.randint(0, 3))]
    reactions = [ReactionSpec(meddra_code=code) for code in rng.sample(CODES, rng.randint(0, 3))]
    worldwide_id = rng.choice(["WW-1", "WW-2"]) if rng.random() < 0.25 else None
    links = tuple(rng.choice([f"CASE-{rng.randrange(cases)}", "WW-3", "ELSEWHERE-1"]) for _ in range(rng.choice([0, 0, 0, 1, 2])))
    # Subgroups: an age band, a sex and a region each version may change (a follow-up moves the case between them)
    attributes = {"age": rng.choice(["9", "45", "70"]), "sex": rng.choice(["1", "2", None]), "country": rng.choice(["DE", "US", "JP"])}
    return CaseSpec(case_id, drugs=drugs, reactions=reactions, worldwide_id=worldwide_id, linked_reports=links, **attributes, **dated)


def brute_force_groups(dsn: str) -> set[frozenset[str]]:
    """The duplicate groups of two or more current cases, by a search over the loaded identifiers."""
    current = current_case_ids(dsn)
    ids_of = defaultdict(set)  # every case's identifiers, its own key among them (a link may name it)
    for case, worldwide in query(dsn, "SELECT safetyreportid, worldwide_unique_case_id FROM icsr_master"):
        if case in current:
            ids_of[case] |= {case, *([worldwide.strip()] if worldwide and worldwide.strip() else [])}
    for case, linked in query(dsn, "SELECT safetyreportid, linked_report_id FROM linked_reports"):
        if case in current and linked and linked.strip():
            ids_of[case].add(linked.strip())
    groups, seen = set(), set()
    for start in ids_of:
        if start in seen:
            continue
        group, todo = {start}, [start]
        while todo:
            case = todo.pop()
            linked = {other for other in ids_of if other not in group and ids_of[other] & ids_of[case]}
            group |= linked
            todo += linked
        seen |= group
        if len(group) > 1:
            groups.add(frozenset(group))
    return groups


def assert_attributes_kept(loader) -> None:  # type: ignore[no-untyped-def]
    """The subgroups' attributes are kept for exactly the cases the counts hold, equal to the cases' current ones."""
    attributes = loader.table(CASE_ATTRIBUTES)
    with loader.engine.connect() as conn:
        kept = {row[0]: tuple(row[1:]) for row in conn.execute(select(attributes))}
        counted = set(conn.scalars(select(loader.table(signals.CASE_DRUGS).c.safetyreportid)))
        current = {row[0]: tuple(row[1:]) for row in conn.execute(case_attributes(loader.table))}
    assert set(kept) == counted and kept == {case_id: current[case_id] for case_id in counted}


def kept_groups(loader) -> set[frozenset[str]]:  # type: ignore[no-untyped-def]
    members = defaultdict(set)
    with loader.engine.connect() as conn:
        for group_id, case in conn.execute(text("SELECT group_id, safetyreportid FROM duplicate_case_groups")):
            members[group_id].add(case)
    return {frozenset(group) for group in members.values()}


def statistics_rows(loader, query) -> dict[Pair, dict]:  # type: ignore[no-untyped-def]
    with loader.engine.connect() as conn:
        return {(row.pop("drug"), row.pop("event_code")): row for row in map(dict, conn.execute(query).mappings())}


def assert_same_rows(kept: dict[Pair, dict], oracle: dict[Pair, dict]) -> None:
    assert kept.keys() == oracle.keys()
    for pair, want in oracle.items():
        got = kept[pair]
        assert {k: got[k] for k in COUNTS} == {k: want[k] for k in COUNTS}, pair
        assert bool(got["signal"]) == bool(want["signal"]), pair
        for name in STATISTICS:
            assert got[name] == (None if want[name] is None else pytest.approx(want[name], rel=1e-12)), (pair, name)


SUBGROUP_STATISTICS_SHOWN = ("ror", "ror_lower95", "relative_ror", "relative_ror_lower95")


def subgroup_rows(conn) -> dict[tuple[str, str, str], dict]:  # type: ignore[no-untyped-def]
    """Every row of drug_event_subgroup_statistics by (subgroup, drug, event)."""
    view = signals.SUBGROUP_STATISTICS
    found = conn.execute(text(f"SELECT * FROM {view}")).mappings()
    return {(row["subgroup"], row["drug"], row["event_code"]): dict(row) for row in found}


def rebuilt_subgroup_rows(loader) -> dict[tuple[str, str, str], dict]:  # type: ignore[no-untyped-def]
    """The subgroup statistics after a full rebuild, the oracle of the kept counts, in a transaction rolled back: the
    counts stay as the refreshes left them."""
    with loader.engine.connect() as conn:
        transaction = conn.begin()
        try:
            assert signals.refresh(conn, RefreshTarget(loader.table, dialect_for(loader.engine)), DEFAULT_DRUG_ROLES, rebuild=True).rebuilt
            return subgroup_rows(conn)
        finally:
            transaction.rollback()


def assert_same_subgroup_rows(kept: dict, oracle: dict) -> None:  # type: ignore[type-arg]
    assert kept.keys() == oracle.keys()
    for key, want in oracle.items():
        got = kept[key]
        assert {k: got[k] for k in COUNTS} == {k: want[k] for k in COUNTS}, key
        assert bool(got["meets_ema_sdr"]) == bool(want["meets_ema_sdr"]), key
        for name in SUBGROUP_STATISTICS_SHOWN:
            assert got[name] == (None if want[name] is None else pytest.approx(want[name], rel=1e-12)), (key, name)


def test_incremental_statistics_equal_the_full_computation_after_any_history(dsn: str, tmp_path: Path) -> None:
    """A random history of loads (new cases, follow-ups that add and drop drugs and reactions, older versions,
    nullifications), with a file loaded again, the same messages in a file of another name, two loads before one
    refresh and a full reload: after each refresh every row of the view equals the one-query computation, and the
    refresh changed exactly the pairs whose a differs; every row of the subgroup statistics equals that of a full
    rebuild (versions change the age, sex and country too). Cases share worldwide ids and link each other now and then: the
    duplicate groups always equal a search over the loaded identifiers, and the full rebuild leaves the same rows."""
    rng = random.Random(3)
    loader = get_loader(dsn)
    view = loader.table(STATISTICS_TABLE)
    files: list[Path] = []
    shown = {}  # the oracle's rows at the last refresh
    grouped_at_least_once = False
    subgroups_seen: set[str] = set()
    latest: dict[str, CaseSpec] = {}  # the last version sent of each case
    full_reload_at, age_only_follow_ups_at = 6, 5
    for step in range(9):
        folder = tmp_path / f"step{step}"
        folder.mkdir()
        if step == 3:
            # The same messages again in a file whose name sorts first: they win the ties, and nothing changes
            (folder / "again.xml").write_bytes(files[2].read_bytes())
        day = date(2024, 2, 1) + timedelta(days=step * 2 - rng.randint(0, 3))  # now and then older than what is held
        cases = [random_version(rng, f"CASE-{i}", day) for i in rng.sample(range(14), rng.randint(3, 7))]
        if step == age_only_follow_ups_at:
            # Follow-ups that change only the age, sex and country of cases: they move between subgroups alone
            later = {"most_recent_info": "20240301", "message_created": "20240301120000+0000"}
            sent = {case.case_id for case in cases}
            others = [spec for case_id, spec in sorted(latest.items()) if not spec.nullification and case_id not in sent]
            moved = [{"age": "9" if spec.age != "9" else "70", "country": "JP" if spec.country != "JP" else "US"} for spec in others[:4]]
            cases += [replace(spec, **attributes, **later) for spec, attributes in zip(others, moved, strict=False)]
        latest.update((case.case_id, case) for case in cases)
        path = folder / f"step{step}.xml"
        path.write_text(build_batch([build_message(case) for case in cases], batch_number=path.name), encoding="utf-8")
        files.append(path)
        run_load(folder, loader, mode="full" if step == full_reload_at else "delta")
        if step == 4:
            run_load(files[1].parent, loader)  # a file loaded before: skipped, changes nothing
        if step in (2, 7):
            continue  # the next refresh takes the cases of two loads
        summary = refresh_drug_event_statistics(loader.engine)
        groups = kept_groups(loader)
        assert groups == brute_force_groups(dsn), (step, summary.rebuilt, groups ^ brute_force_groups(dsn))
        grouped_at_least_once |= bool(groups)
        assert_attributes_kept(loader)
        oracle = statistics_rows(loader, recomputed_statistics(loader.table))
        assert_same_rows(statistics_rows(loader, select(view)), oracle)
        with loader.engine.connect() as conn:
            within = subgroup_rows(conn)
        assert_same_subgroup_rows(within, rebuilt_subgroup_rows(loader))
        subgroups_seen |= {subgroup for subgroup, _, _ in within}
        assert summary.pairs == len(oracle)
        assert summary.cases == (next(iter(oracle.values()))["n"] if oracle else summary.cases)
        assert summary.rebuilt == (step in (0, full_reload_at))
        if not summary.rebuilt:
            changed = {pair for pair in shown.keys() | oracle.keys() if shown.get(pair, {}).get("a") != oracle.get(pair, {}).get("a")}
            assert summary.changed_pairs == len(changed)
            assert summary.changed_pair_signals == sum(bool(oracle[pair]["signal"]) for pair in changed if pair in oracle)
        shown = oracle
    with loader.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(loader.table(PENDING_CASES))) == 0
    assert grouped_at_least_once
    assert {"paediatric", "geriatric", "female", "male", "eea", "japan", "north_america"} <= subgroups_seen <= set(SUBGROUPS)
    # The full rebuild, the incremental refreshes' oracle, leaves the same rows and groups
    kept = statistics_rows(loader, select(view))
    with loader.engine.connect() as conn:
        kept_within = subgroup_rows(conn)
    assert refresh_drug_event_statistics(loader.engine, rebuild=True).rebuilt
    assert_same_rows(statistics_rows(loader, select(view)), kept)
    with loader.engine.connect() as conn:
        assert_same_subgroup_rows(subgroup_rows(conn), kept_within)
    assert kept_groups(loader) == brute_force_groups(dsn)


def test_other_drug_roles_a_long_queue_and_a_request_rebuild(dsn: str, write_batch, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    aspirin = DrugSpec(name="Aspirin", substance="ASPIRIN", role="2")
    run_load(write_batch("first.xml", CaseSpec("CASE-A", drugs=[DrugSpec(), aspirin])).parent, dsn)
    loader = get_loader(dsn)
    assert refresh_drug_event_statistics(loader.engine).rebuilt  # no counts yet
    assert not refresh_drug_event_statistics(loader.engine, ["3", "1"]).rebuilt  # the same roles in another order
    with_concomitant = refresh_drug_event_statistics(loader.engine, ["1", "2", "3"])
    assert with_concomitant.rebuilt and with_concomitant.pairs == 2
    assert refresh_drug_event_statistics(loader.engine, ["1", "2", "3"], rebuild=True).rebuilt
    unchanged = refresh_drug_event_statistics(loader.engine, ["1", "2", "3"])
    assert (unchanged.rebuilt, unchanged.cases_recounted, unchanged.changed_pairs, unchanged.pairs) == (False, 0, 0, 2)
    monkeypatch.setattr(signals, "MOST_QUEUED_ROWS", 1)
    run_load(write_batch("second.xml", CaseSpec("CASE-B"), CaseSpec("CASE-C"), folder="second").parent, dsn)
    long_queue = refresh_drug_event_statistics(loader.engine, ["1", "2", "3"])
    assert long_queue.rebuilt and long_queue.cases == 3


def test_a_database_of_an_earlier_release_gets_the_view(dsn: str) -> None:
    """drug_event_statistics used to be a table: the schema's creation replaces it by the view."""
    loader = get_loader(dsn)
    loader.create_all_tables()
    with loader.engine.begin() as conn:
        loader.table(signals.SUBGROUP_STATISTICS).drop(conn)  # came later than the kept counts
        loader.table(STATISTICS_TABLE).drop(conn)
        loader.table(COUNTS_STATE).drop(conn)
        conn.execute(text("CREATE TABLE drug_event_statistics (drug TEXT, reaction_meddra_code TEXT, a BIGINT)"))
    loader.create_all_tables()
    assert STATISTICS_TABLE in inspect(loader.engine).get_view_names()
    assert loader.schema_report().ok


def test_a_load_committing_during_a_refresh_is_counted_by_the_next(postgres_dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    """A load that commits while a refresh runs: the refresh neither waits for it nor takes its cases off the queue,
    and the next refresh counts them."""
    run_load(write_batch("first.xml", CaseSpec("CASE-A")).parent, postgres_dsn)
    refresher, loading = get_loader(postgres_dsn), get_loader(postgres_dsn)
    refresh_drug_event_statistics(refresher.engine)
    written, committed = threading.Event(), threading.Event()
    finish = loading.update_version_counts

    def hold_the_transaction(conn, run):  # type: ignore[no-untyped-def]
        # Every row of the load is written and its cases queued; its transaction stays open until told
        written.set()
        assert committed.wait(60)
        finish(conn, run)

    loading.update_version_counts = hold_the_transaction  # type: ignore[method-assign]
    follow_up = CaseSpec("CASE-A", most_recent_info="20240301", reactions=[ReactionSpec(meddra_code="10028813")])
    folder = write_batch("second.xml", follow_up, CaseSpec("CASE-B"), folder="second").parent
    load = threading.Thread(target=run_load, args=(folder, loading))
    load.start()
    try:
        assert written.wait(60)
        during = refresh_drug_event_statistics(refresher.engine)
    finally:
        committed.set()
        load.join()
    assert (during.rebuilt, during.cases_recounted, during.changed_pairs) == (False, 0, 0)
    after = refresh_drug_event_statistics(refresher.engine)
    assert (after.cases_recounted, after.cases) == (2, 2)
    oracle = statistics_rows(refresher, recomputed_statistics(refresher.table))
    assert_same_rows(statistics_rows(refresher, select(refresher.table(STATISTICS_TABLE))), oracle)
    assert set(oracle) == {("PARACETAMOL", "10028813"), ("PARACETAMOL", "10019211")}


def test_counts_out_of_step_with_their_cases_are_rebuilt(dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    run_load(write_batch("first.xml", CaseSpec("CASE-A"), CaseSpec("CASE-B")).parent, dsn)
    loader = get_loader(dsn)
    refresh_drug_event_statistics(loader.engine)
    drugs = loader.table(DRUG_COUNTS)
    with loader.engine.begin() as conn:
        conn.execute(drugs.update().values(cases=0))  # damaged: fewer cases than the pairs hold
    follow_up = CaseSpec("CASE-A", most_recent_info="20240301", drugs=[DrugSpec(name="Ibuprofen", substance="IBUPROFEN")])
    run_load(write_batch("second.xml", follow_up, folder="second").parent, dsn)
    summary = refresh_drug_event_statistics(loader.engine)  # PARACETAMOL's count would fall below zero
    assert summary.rebuilt and summary.cases == 2
    assert_same_rows(
        statistics_rows(loader, select(loader.table(STATISTICS_TABLE))), statistics_rows(loader, recomputed_statistics(loader.table))
    )


# -- events at MedDRA PT level ------------------------------------------------------------------------------------


def test_events_are_pts_of_the_latest_meddra_release_with_their_names(dsn: str, write_batch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Reported LLTs count as their PT in the latest MedDRA release loaded (a release loaded after the cases makes the
    next refresh rebuild), with the PT's name; a code the release does not hold stays as reported."""
    warfarin = [DrugSpec(name="Coumadin", substance="WARFARIN")]
    head_pain, headache, unknown = "10019198", "10019211", "10099999"  # an LLT of Headache, its PT, no MedDRA code
    codes = (head_pain, headache, unknown)
    cases = [CaseSpec(f"CASE-{code}", drugs=warfarin, reactions=[ReactionSpec(meddra_code=code)]) for code in codes]
    run_load(write_batch("first.xml", *cases).parent, dsn)
    loader = get_loader(dsn)
    reported = refresh_drug_event_statistics(loader.engine)
    assert reported.meddra_version is None and set(table_rows(dsn)) == {("WARFARIN", code) for code in (head_pain, headache, unknown)}

    load_meddra(loader.engine, read_release(write_release(tmp_path / "26.1", "26.1")))
    load_meddra(loader.engine, read_release(write_release(tmp_path / "27.0", "27.0", pt_names={headache: "Headache (27.0)"})))
    by_pt = refresh_drug_event_statistics(loader.engine)
    assert by_pt.rebuilt and by_pt.meddra_version == "27.0"  # 27.0 sorts after 26.1
    got = table_rows(dsn)
    assert {pair: (row["a"], row["event_name"], row["meddra_version"]) for pair, row in got.items()} == {
        ("WARFARIN", headache): (2, "Headache (27.0)", "27.0"),
        ("WARFARIN", unknown): (1, None, "27.0"),
    }
    assert_equal_statistics(got, brute_force(dsn))

    # A follow-up reporting the LLT: counted incrementally under its PT
    follow_up = CaseSpec(f"CASE-{unknown}", most_recent_info="20240301", drugs=warfarin, reactions=[ReactionSpec(meddra_code=head_pain)])
    run_load(write_batch("second.xml", follow_up, folder="second").parent, dsn)
    incremental = refresh_drug_event_statistics(loader.engine)
    assert not incremental.rebuilt and incremental.cases_recounted == 1
    oracle = statistics_rows(loader, recomputed_statistics(loader.table, meddra_version="27.0"))
    assert_same_rows(statistics_rows(loader, select(loader.table(STATISTICS_TABLE))), oracle)
    assert table_rows(dsn)["WARFARIN", headache]["a"] == 3

    # An earlier version asked for: rebuilt with its names; a version not loaded is refused
    older = refresh_drug_event_statistics(loader.engine, meddra_version="26.1")
    assert older.rebuilt and table_rows(dsn)["WARFARIN", headache]["event_name"] == "Headache"
    with pytest.raises(signals.MeddraVersionNotLoaded, match="9.0 is not loaded"):
        refresh_drug_event_statistics(loader.engine, meddra_version="9.0")
    shown = run_cli("signals", "--dsn", dsn, "--drug", "warfarin")
    assert shown.returncode == 0, shown.stderr
    assert "events: PTs of MedDRA 27.0" in shown.stdout and f"| WARFARIN | {headache} | Headache (27.0) | 3 |" in shown.stdout
    refused = run_cli("signals", "--dsn", dsn, "--meddra-version", "9.0")
    assert refused.returncode == 1 and "MedDRA 9.0 is not loaded" in refused.stderr


def test_counts_an_earlier_release_kept_otherwise_are_rebuilt(dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    """Kept counts whose columns differ from this release's are dropped when the schema is created, then rebuilt."""
    run_load(write_batch("first.xml", CaseSpec("CASE-A")).parent, dsn)
    loader = get_loader(dsn)
    refresh_drug_event_statistics(loader.engine)
    with loader.engine.begin() as conn:
        for view in (signals.SUBGROUP_STATISTICS, STATISTICS_TABLE):
            conn.execute(text(f"DROP VIEW {view}"))
        conn.execute(text(f"ALTER TABLE {COUNTS_STATE} DROP COLUMN meddra_version"))
    loader.create_all_tables()
    assert loader.schema_report().ok
    summary = refresh_drug_event_statistics(loader.engine)
    assert summary.rebuilt and summary.pairs == 1
