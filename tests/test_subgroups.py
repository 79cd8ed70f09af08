"""Subgroups and periods of the drug-event statistics: one substance's events within children, the elderly, a sex or a
region, against the other cases, and the cases of a reference period; on both dialects."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select, text

from loaders.contract import Loader
from loaders.registry import get_loader
from loaders.upkeep import refresh_drug_event_statistics
from py_load_eudravigilance import signal_rules as rules
from py_load_eudravigilance.fixtures.generator import CaseSpec, DrugSpec, ReactionSpec
from py_load_eudravigilance.pipeline import run_load
from py_load_eudravigilance.signals import STATISTICS_TABLE, SUBGROUP_STATISTICS, top_pairs
from py_load_eudravigilance.subgroups import CASE_ATTRIBUTES, case_attributes, screen
from tests.test_cli import run_cli
from tests.test_signals import assert_attributes_kept, assert_same_subgroup_rows, rebuilt_subgroup_rows, subgroup_rows

HEADACHE, NAUSEA = "10019211", "10028813"
# (substance, event, age, country, sex, C.1.5, cases): each case reports one substance and one event
CASES = [
    ("XDRUG", HEADACHE, "10", "JP", "1", "20240110", 5),
    ("XDRUG", HEADACHE, "9", "JP", "2", "20240310", 3),  # in the period from 2024-03-01
    ("XDRUG", HEADACHE, "40", "DE", "1", "20240110", 2),
    ("XDRUG", NAUSEA, "12", "DE", "2", "20240110", 1),
    ("XDRUG", NAUSEA, "40", "DE", "1", "20240110", 4),
    ("YDRUG", HEADACHE, "8", "DE", "1", "20240110", 1),
    ("YDRUG", NAUSEA, "5", "FR", "2", "20240110", 8),
    ("YDRUG", HEADACHE, "40", "US", "1", "20240110", 10),
    ("YDRUG", NAUSEA, "70", "FR", "2", "20240110", 10),
]


def write_cases(write_batch):  # type: ignore[no-untyped-def]
    specs = [
        CaseSpec(
            f"{drug}-{event}-{age}-{i}",
            most_recent_info=day,
            age=age,
            country=country,
            sex=sex,
            drugs=[DrugSpec(name=drug.title(), substance=drug)],
            reactions=[ReactionSpec(meddra_code=event)],
        )
        for drug, event, age, country, sex, day, times in CASES
        for i in range(times)
    ]
    return write_batch("cases.xml", *specs).parent


def brute_force_two_by_two(event: str, inside) -> tuple[rules.TwoByTwo, rules.TwoByTwo]:  # type: ignore[no-untyped-def]
    """XDRUG and ``event`` within the cases ``inside`` selects and within the others, counted from :data:`CASES`."""
    tables = []
    for wanted in (True, False):
        cells = [0, 0, 0, 0]
        for drug, reported, age, country, sex, _, times in CASES:
            if inside(int(age), country, sex) == wanted:
                cells[(drug != "XDRUG") * 2 + (reported != event)] += times
        tables.append(rules.TwoByTwo(*cells))
    return tables[0], tables[1]


def loaded_and_counted(write_batch, dsn: str) -> Loader:  # type: ignore[no-untyped-def]
    """The cases loaded into ``dsn`` and the statistics refreshed: the loader that wrote them."""
    run_load(write_cases(write_batch), dsn)
    loader = get_loader(dsn)
    refresh_drug_event_statistics(loader.engine)
    return loader


def test_a_substances_events_within_children_against_the_others_and_new_in_a_period(dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    loader = loaded_and_counted(write_batch, dsn)
    view = loader.table(STATISTICS_TABLE)
    with loader.engine.connect() as conn:
        rows = conn.execute(top_pairs(view, None, "xdrug")).mappings().all()
        screened = {row["event_code"]: row for row in screen(conn, loader.table, rows, ["paediatric", "japan"], date(2024, 3, 1))}
    children = brute_force_two_by_two(HEADACHE, lambda age, country, sex: age < 18)
    within, relative = rules.ror(children[0]), rules.relative_ror(*children)
    assert within is not None and relative is not None
    headache = screened[HEADACHE]
    assert headache["a_paediatric"] == children[0].a == 8
    assert headache["ror_lower95_paediatric"] == pytest.approx(within.lower95)
    relative_shown = (headache["relative_ror_paediatric"], headache["relative_ror_lower95_paediatric"])
    assert relative_shown == pytest.approx((relative.estimate, relative.lower95))
    # Eight children's cases and an ROR whose lower bound is above 1: an SDR by EMA's rule within children
    assert headache["ema_sdr_paediatric"] and within.lower95 > 1
    assert headache["a_new"] == 3
    japan = brute_force_two_by_two(HEADACHE, lambda age, country, sex: country == "JP")
    assert headache["a_japan"] == 8 and headache["ror_lower95_japan"] is None == rules.ror(japan[0])  # no other drug in Japan
    nausea = screened[NAUSEA]
    assert (nausea["a_paediatric"], nausea["ema_sdr_paediatric"], nausea["a_new"]) == (1, False, 0)


def test_rows_of_several_substances_screen_as_each_substance_alone(sqlite_dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    # A product named by --drug may hold several substances: its rows are screened substance by substance, in order
    loader = loaded_and_counted(write_batch, sqlite_dsn)
    view = loader.table(STATISTICS_TABLE)
    with loader.engine.connect() as conn:
        rows = conn.execute(top_pairs(view, None)).mappings().all()
        assert len({row["drug"] for row in rows}) > 1
        together = screen(conn, loader.table, rows, ["paediatric"], date(2024, 3, 1))
        alone = {
            (row["drug"], row["event_code"]): row
            for drug in {row["drug"] for row in rows}
            for row in screen(conn, loader.table, [r for r in rows if r["drug"] == drug], ["paediatric"], date(2024, 3, 1))
        }
    assert [(row["drug"], row["event_code"]) for row in together] == [(row["drug"], row["event_code"]) for row in rows]
    assert all(row == alone[(row["drug"], row["event_code"])] for row in together)


def test_one_call_answers_which_pts_are_sdrs_overall_in_children_and_new(sqlite_dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    run_load(write_cases(write_batch), sqlite_dsn)
    result = run_cli("signals", "--dsn", sqlite_dsn, "--drug", "xdrug", "--subgroup", "paediatric", "--since", "2024-03-01")
    assert result.returncode == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if line.startswith("| drug |"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    per_subgroup = ["a_", "ror_lower95_", "ema_sdr_", "relative_ror_", "relative_ror_lower95_"]
    assert columns[-6:] == [f"{column}paediatric" for column in per_subgroup] + ["a_new"]
    line = next(line for line in result.stdout.splitlines() if line.startswith(f"| XDRUG | {HEADACHE} |"))
    cells = dict(zip(columns, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
    # Not an SDR over all cases (nor any other rule), an SDR in children, three of its cases new in the period
    assert (cells["a"], cells["rules"], cells["a_paediatric"], cells["ema_sdr_paediatric"], cells["a_new"]) == ("10", "-", "8", "yes", "3")
    refused = run_cli("signals", "--dsn", sqlite_dsn, "--subgroup", "paediatric")
    assert refused.returncode == 1 and "give --drug too" in refused.stderr
    unknown = run_cli("signals", "--dsn", sqlite_dsn, "--drug", "xdrug", "--subgroup", "teenagers")
    assert unknown.returncode == 1 and "no subgroup teenagers" in unknown.stderr


def test_age_bands_come_from_the_age_in_its_unit_else_the_age_group(dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    ages = {"A": ("17", "a", None), "B": ("18", "a", None), "C": ("65", "a", None), "D": ("800", "mo", None), "E": ("2", "10.a", None)}
    ages |= {"F": (None, None, "3"), "G": (None, None, "6"), "H": (None, None, None), "I": ("30", "wk", "6")}
    run_load(write_batch("ages.xml", *(CaseSpec(case_id, country="XK" if case_id == "H" else "DE") for case_id in ages)).parent, dsn)
    loader = get_loader(dsn)
    with loader.engine.begin() as conn:
        for case_id, (age, unit, group) in ages.items():
            conn.execute(
                text(
                    "UPDATE patient_characteristics SET age_at_onset = :age, age_at_onset_unit = :unit, age_group = :group "
                    "WHERE safetyreportid = :id"
                ),
                {"age": None if age is None else float(age), "unit": unit, "group": group, "id": case_id},
            )
        got = {row[0]: (row.age_band, row.region) for row in conn.execute(case_attributes(loader.table))}
    assert {case_id: band for case_id, (band, _) in got.items()} == {
        "A": "paediatric",
        "B": "adult",
        "C": "geriatric",
        "D": "geriatric",  # 800 months: 66.7 years
        "E": "adult",  # two decades
        "F": "paediatric",  # child
        "G": "geriatric",  # elderly
        "H": None,
        "I": "paediatric",  # 30 weeks: the age given wins over the age group
    }
    assert got["A"][1] == "EEA" and got["H"][1] == "rest"


def test_the_refresh_keeps_the_attributes_of_exactly_the_cases_it_counts(dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    loader = loaded_and_counted(write_batch, dsn)
    moved = {"most_recent_info": "20240401", "age": "70", "country": "US"}
    follow_up = CaseSpec("XDRUG-10019211-10-0", **moved, drugs=[DrugSpec(name="X", substance="XDRUG")])
    gone = CaseSpec("YDRUG-10019211-8-0", most_recent_info="20240401", nullification=True)
    run_load(write_batch("later.xml", follow_up, gone, folder="later").parent, dsn)
    assert not refresh_drug_event_statistics(loader.engine).rebuilt
    assert_attributes_kept(loader)
    attributes = loader.table(CASE_ATTRIBUTES)
    with loader.engine.connect() as conn:
        kept = {row[0]: tuple(row[1:4]) for row in conn.execute(select(attributes))}
    assert kept["XDRUG-10019211-10-0"] == ("geriatric", "male", "North America")


def test_a_follow_up_changing_only_the_age_moves_the_case_between_subgroups(dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    """Same drug and reaction, another age: the incremental refresh moves the case from the children's counts to the
    elderly's (the population's counts do not change), as a full rebuild counts it."""
    loader = loaded_and_counted(write_batch, dsn)
    view = loader.table(SUBGROUP_STATISTICS)

    def headache_of_xdrug() -> dict[str, int]:
        with loader.engine.connect() as conn:
            found = conn.execute(select(view.c.subgroup, view.c.a).where(view.c.drug == "XDRUG", view.c.event_code == HEADACHE))
            return {subgroup: a for subgroup, a in found}

    assert headache_of_xdrug() == {"paediatric": 8, "japan": 8, "male": 7, "female": 3, "eea": 2}
    older = CaseSpec(
        "XDRUG-10019211-10-0",
        most_recent_info="20240401",
        age="70",
        country="JP",
        sex="1",
        drugs=[DrugSpec(name="Xdrug", substance="XDRUG")],
        reactions=[ReactionSpec(meddra_code=HEADACHE)],
    )
    run_load(write_batch("older.xml", older, folder="older").parent, dsn)
    summary = refresh_drug_event_statistics(loader.engine)
    assert (summary.rebuilt, summary.cases_recounted, summary.changed_pairs) == (False, 1, 0)
    assert headache_of_xdrug() == {"paediatric": 7, "geriatric": 1, "japan": 8, "male": 7, "female": 3, "eea": 2}
    with loader.engine.connect() as conn:
        kept = subgroup_rows(conn)
    assert_same_subgroup_rows(kept, rebuilt_subgroup_rows(loader))
