"""Duplicate case groups: cases sharing C.1.8.1 or linked by C.1.10.r count once in the drug-event statistics."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import select

from loaders.registry import get_loader
from loaders.upkeep import refresh_drug_event_statistics
from py_load_eudravigilance.duplicates import Member, duplicate_groups, representative
from py_load_eudravigilance.fixtures.generator import CaseSpec, DrugSpec, ReactionSpec
from py_load_eudravigilance.pipeline import run_load
from py_load_eudravigilance.signals import STATISTICS_TABLE, recomputed_statistics
from tests.conftest import SHARED_E2B
from tests.support.db import query
from tests.test_signals import assert_same_rows, brute_force_groups, kept_groups, statistics_rows, table_rows


def test_cases_group_through_shared_identifiers_and_links_to_their_keys() -> None:
    links = [("WW-1", "A"), ("WW-1", "B"), ("C", "D"), ("WW-2", "E"), ("X", "F"), ("X", "G"), ("WW-9", "H")]
    groups = duplicate_groups(["A", "B", "C", "D", "E", "F", "G", "H"], links)
    # A and B share C.1.8.1; D names C's key; F and G name one report (no case of it needed); E and H stand alone
    assert sorted(sorted(group) for group in groups) == [["A", "B"], ["C", "D"], ["F", "G"]]
    # Transitively: B links C, so A, B, C and D are one group
    assert sorted(map(sorted, duplicate_groups(["A", "B", "C", "D"], [*links, ("C", "B")]))) == [["A", "B", "C", "D"]]


def test_the_representative_is_the_counted_member_with_the_latest_information_then_the_lowest_key() -> None:
    old, new = datetime(2024, 1, 1), datetime(2024, 3, 1)
    assert representative([Member("B", new, True), Member("A", old, True)]) == "B"
    assert representative([Member("B", new, True), Member("A", new, True)]) == "A"
    # A member the statistics would not count (no coded reaction) is passed over, however recent
    assert representative([Member("A", new, False), Member("B", old, True)]) == "B"
    assert representative([Member("B", new, False), Member("A", old, False)]) == "B"


def test_a_group_counts_once_and_its_representative_follows_follow_ups_and_nullifications(dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    headache = [ReactionSpec(meddra_code="10019211")]
    sender = CaseSpec("US-APHARMA-1", most_recent_info="20240110", reactions=headache)
    # A regulator's copy of the sender's case: its own case key, the same worldwide unique case id
    copy = CaseSpec("US-APHARMA-1-COPY", most_recent_info="20240120", worldwide_id="US-APHARMA-1", reactions=headache)
    linked = CaseSpec("EU-99", most_recent_info="20240105", linked_reports=("US-APHARMA-1-COPY",), reactions=headache)
    other = CaseSpec("OTHER-1", reactions=[ReactionSpec(meddra_code="10028813")])
    run_load(write_batch("first.xml", sender, copy, linked, other).parent, dsn)
    loader = get_loader(dsn)
    summary = refresh_drug_event_statistics(loader.engine)
    assert summary.cases == 2  # one group of three, and OTHER-1
    assert table_rows(dsn)["PARACETAMOL", "10019211"]["a"] == 1
    groups = query(dsn, "SELECT group_id, safetyreportid, counted, group_size FROM duplicate_case_groups ORDER BY safetyreportid")
    assert groups == [
        ("EU-99", "EU-99", False, 3),
        ("EU-99", "US-APHARMA-1", False, 3),
        ("EU-99", "US-APHARMA-1-COPY", True, 3),  # the most recent information
    ]

    # The copy is nullified: the sender's case, now the most recent, counts for the group of two left
    nullified = CaseSpec("US-APHARMA-1-COPY", most_recent_info="20240201", nullification=True)
    run_load(write_batch("second.xml", nullified, folder="b").parent, dsn)
    assert refresh_drug_event_statistics(loader.engine).cases == 3  # EU-99 linked only through the copy: on its own again
    assert kept_groups(loader) == set() == brute_force_groups(dsn)
    # A follow-up of EU-99 links the sender's case again, without a reaction: the sender's case counts for both
    follow_up = CaseSpec("EU-99", most_recent_info="20240301", linked_reports=("US-APHARMA-1",), reactions=[])
    run_load(write_batch("third.xml", follow_up, folder="c").parent, dsn)
    refreshed = refresh_drug_event_statistics(loader.engine)
    assert not refreshed.rebuilt and refreshed.cases == 2
    assert query(dsn, "SELECT safetyreportid FROM duplicate_case_groups WHERE counted") == [("US-APHARMA-1",)]
    oracle = statistics_rows(loader, recomputed_statistics(loader.table))
    assert_same_rows(statistics_rows(loader, select(loader.table(STATISTICS_TABLE))), oracle)


@pytest.mark.skipif(not (SHARED_E2B / "fda-examples").is_dir(), reason="needs ../shared/e2b/fda-examples")
def test_the_fda_examples_copy_of_a_case_counts_once(sqlite_dsn: str) -> None:
    assert run_load(SHARED_E2B / "fda-examples", sqlite_dsn, workers=1).exit_code == 0
    summary = refresh_drug_event_statistics(get_loader(sqlite_dsn).engine)
    group = query(sqlite_dsn, "SELECT safetyreportid, counted FROM duplicate_case_groups ORDER BY safetyreportid")
    # Same C.1.8.1 and the same C.1.5: the lower case key counts
    assert group == [("US-APHARMA-8744554B", True), ("US-APHARMA-8744554B-UPDATE-TESTING222", False)]
    assert summary.cases == len(query(sqlite_dsn, "SELECT DISTINCT safetyreportid FROM drug_event_case_drugs")) == 3


def test_duplicate_groups_are_listed_with_what_chose_their_representative(sqlite_dsn: str, write_batch) -> None:  # type: ignore[no-untyped-def]
    twins = [CaseSpec(f"TWIN-{i}", worldwide_id="WW-7", most_recent_info=f"2024010{i}", drugs=[DrugSpec()]) for i in (1, 2)]
    run_load(write_batch("twins.xml", *twins).parent, sqlite_dsn)
    refresh_drug_event_statistics(get_loader(sqlite_dsn).engine)
    rows = query(sqlite_dsn, "SELECT * FROM duplicate_case_groups ORDER BY safetyreportid")
    assert [(row[1], row[2], row[4]) for row in rows] == [("TWIN-1", "WW-7", False), ("TWIN-2", "WW-7", True)]
