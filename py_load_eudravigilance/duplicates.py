"""Duplicate case groups, which the drug-event statistics count once.

Two current cases are duplicates when they share a worldwide unique case identifier (C.1.8.1: a
sender's case and a regulator's copy of it), or when one names the other in C.1.10.r (identification
number of a linked report: the other's C.1.8.1 or its C.1.1 case key); a group is every case linked
so, transitively. Each group counts by one case, its **representative**: among the members that
the statistics would count (a counted drug and a coded reaction), the one with the most recent
information (C.1.5), then the lowest case key; the others contribute nothing. No probabilistic
matching: cases of one patient under unrelated ids stay apart.

Kept like the counts: ``drug_event_case_identifiers`` holds every current case's C.1.8.1 and
C.1.10.r values, ``drug_event_duplicate_groups`` the members of each group of two or more. A refresh
regroups only the cases linked, before or after, to the cases it recounts (:func:`regroup`); a
rebuild groups every case (:func:`rebuild_groups`); :func:`duplicate_groups` is the grouping both
use, :func:`representative` the choice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    Index,
    MetaData,
    Select,
    Table,
    Text,
    exists,
    func,
    select,
    union,
)
from sqlalchemy.engine import Connection

from py_load_eudravigilance.mapping.catalog import CASE_KEY
from py_load_eudravigilance.views import TableNamed, add_view, current_cases

CASE_IDENTIFIERS = "drug_event_case_identifiers"
DUPLICATE_GROUPS = "drug_event_duplicate_groups"
DUPLICATES_VIEW = "duplicate_case_groups"
IDENTIFIER = "identifier"


class GroupHooks(Protocol):
    """What grouping needs of the loader (a subset of the statistics' refresh hooks)."""

    def table(self, name: str) -> Table: ...

    def case_filters(self, column: Column, case_ids: list[str]) -> Iterator[ColumnElement[bool]]: ...

    def insert_records(self, conn: Connection, table: Table, records: list[dict[str, Any]]) -> None: ...


def case_identifiers(table: TableNamed, *conditions: ColumnElement[bool]) -> Select:
    """(identifier, case) for every current case meeting ``conditions`` (on ``icsr_master``): its C.1.8.1 and each
    C.1.10.r, trimmed, blanks left out."""
    master, linked = table("icsr_master"), table("linked_reports")
    own = func.trim(master.c.worldwide_unique_case_id)
    link = func.trim(linked.c.linked_report_id)
    return union(
        select(own.label(IDENTIFIER), master.c[CASE_KEY]).where(current_cases(master), func.coalesce(own, "") != "", *conditions),
        select(link.label(IDENTIFIER), master.c[CASE_KEY])
        .select_from(master.join(linked, linked.c[CASE_KEY] == master.c[CASE_KEY]))
        .where(current_cases(master), func.coalesce(link, "") != "", *conditions),
    )


def duplicate_groups(cases: Iterable[str], links: Iterable[tuple[str, str]]) -> list[frozenset[str]]:
    """The groups of two or more among ``cases``, from their (identifier, case) rows: a case joins every case holding
    one of its identifiers and every case whose key is one of them, transitively."""
    parent: dict[str, str] = {}

    def root(node: str) -> str:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]  # halve the path: later finds are shorter
            node = parent[node]
        return node

    # Identifiers and case keys are one namespace: an identifier equal to a case's key names that case
    for identifier, case_id in links:
        parent[root(identifier)] = root(case_id)
    members: dict[str, set[str]] = defaultdict(set)
    for case_id in cases:
        members[root(case_id)].add(case_id)
    return [frozenset(group) for group in members.values() if len(group) > 1]


class Member(NamedTuple):
    """What the choice of a group's representative reads of a case."""

    case_id: str
    most_recent_info: datetime  # C.1.5
    counted: bool  # a counted drug and a coded reaction: the statistics would count it


def representative(members: Sequence[Member]) -> str:
    """The case a group counts by: among its counted members (all of them when none is), the most recent C.1.5, then
    the lowest case key."""
    candidates = [member for member in members if member.counted] or list(members)
    latest = max(member.most_recent_info for member in candidates)
    return min(member.case_id for member in candidates if member.most_recent_info == latest)


def linked_closure(conn: Connection, hooks: GroupHooks, cases: Iterable[str]) -> tuple[set[str], set[tuple[str, str]]]:
    """``cases`` and every current case linked to them through the kept identifiers, transitively, with the
    (identifier, case) rows of them all. Reads by key, group by group: its cost follows the groups, not the database."""
    identifiers, master = hooks.table(CASE_IDENTIFIERS), hooks.table("icsr_master")
    found, frontier = set(cases), set(cases)
    rows: set[tuple[str, str]] = set()
    searched: set[str] = set()
    while frontier:
        tokens = set(frontier)  # a case's key: the cases naming it in C.1.10.r
        for clause in hooks.case_filters(identifiers.c[CASE_KEY], sorted(frontier)):
            held = conn.execute(select(identifiers.c[IDENTIFIER], identifiers.c[CASE_KEY]).where(clause)).all()
            rows.update((identifier, case_id) for identifier, case_id in held)
            tokens.update(identifier for identifier, _ in held)
        tokens -= searched
        searched |= tokens
        reached: set[str] = set()
        for clause in hooks.case_filters(identifiers.c[IDENTIFIER], sorted(tokens)):
            held = conn.execute(select(identifiers.c[IDENTIFIER], identifiers.c[CASE_KEY]).where(clause)).all()
            rows.update((identifier, case_id) for identifier, case_id in held)
            reached.update(case_id for _, case_id in held)
        # An identifier that is a current case's key (C.1.10.r naming its C.1.1)
        for clause in hooks.case_filters(master.c[CASE_KEY], sorted(tokens - found - reached)):
            reached.update(conn.scalars(select(master.c[CASE_KEY]).where(clause, current_cases(master))))
        frontier = reached - found
        found |= frontier
    return found, rows


def regroup(conn: Connection, hooks: GroupHooks, queued: Sequence[str]) -> tuple[list[str], list[frozenset[str]]]:
    """Bring the kept identifiers of ``queued`` up to date and find the groups of every case they touch: the cases
    linked to them before (a group a follow-up splits) and after. Returns those cases and their groups (of two or
    more); the groups are written by :func:`write_groups` once the representatives are known."""
    before, _ = linked_closure(conn, hooks, queued)
    identifiers, master = hooks.table(CASE_IDENTIFIERS), hooks.table("icsr_master")
    for clause in hooks.case_filters(identifiers.c[CASE_KEY], sorted(queued)):
        conn.execute(identifiers.delete().where(clause))
    for clause in hooks.case_filters(master.c[CASE_KEY], sorted(queued)):
        rows = conn.execute(case_identifiers(hooks.table, clause)).all()
        hooks.insert_records(conn, identifiers, [{IDENTIFIER: identifier, CASE_KEY: case_id} for identifier, case_id in rows])
    cases, rows = linked_closure(conn, hooks, before)
    # Only current cases group: a nullified one (queued, or named by a link) is in no group
    current: set[str] = set()
    for clause in hooks.case_filters(master.c[CASE_KEY], sorted(cases)):
        current.update(conn.scalars(select(master.c[CASE_KEY]).where(clause, current_cases(master))))
    return sorted(cases), duplicate_groups(current, rows)


def write_groups(
    conn: Connection, hooks: GroupHooks, cases: Sequence[str], groups: Sequence[frozenset[str]], counted: Callable[[str], bool]
) -> set[str]:
    """Replace the kept groups of ``cases`` by ``groups`` (their representatives chosen by :func:`representative`,
    ``counted`` telling which members the statistics would count); returns the members that are not representatives."""
    kept, master = hooks.table(DUPLICATE_GROUPS), hooks.table("icsr_master")
    for clause in hooks.case_filters(kept.c[CASE_KEY], list(cases)):
        conn.execute(kept.delete().where(clause))
    members = sorted(case_id for group in groups for case_id in group)
    dates: dict[str, datetime] = {}
    for clause in hooks.case_filters(master.c[CASE_KEY], members):
        read = select(master.c[CASE_KEY], master.c.most_recent_info_date_utc).where(clause)
        dates.update((case_id, date) for case_id, date in conn.execute(read))
    records, left_out = [], set()
    for group in groups:
        chosen = representative([Member(case_id, dates[case_id], counted(case_id)) for case_id in group])
        group_id = min(group)
        records += [{CASE_KEY: case_id, "group_id": group_id, "representative": case_id == chosen} for case_id in sorted(group)]
        left_out |= group - {chosen}
    hooks.insert_records(conn, kept, records)
    return left_out


def rebuild_groups(conn: Connection, hooks: GroupHooks, counted: Callable[[Connection, list[str]], set[str]]) -> set[str]:
    """Regroup every current case: the kept identifiers from scratch, then the groups from the identifiers that link
    two or more cases (the only ones read into memory). ``counted`` gives which of some cases the statistics would
    count. Returns the members that are not representatives."""
    identifiers, kept, master = hooks.table(CASE_IDENTIFIERS), hooks.table(DUPLICATE_GROUPS), hooks.table("icsr_master")
    conn.execute(identifiers.delete())
    conn.execute(kept.delete())
    conn.execute(identifiers.insert().from_select([IDENTIFIER, CASE_KEY], case_identifiers(hooks.table)))
    shared = select(identifiers.c[IDENTIFIER]).group_by(identifiers.c[IDENTIFIER]).having(func.count() > 1)
    names_another = exists().where(
        master.c[CASE_KEY] == identifiers.c[IDENTIFIER], master.c[CASE_KEY] != identifiers.c[CASE_KEY], current_cases(master)
    )
    links = conn.execute(
        select(identifiers.c[IDENTIFIER], identifiers.c[CASE_KEY]).where(identifiers.c[IDENTIFIER].in_(shared) | names_another)
    ).all()
    named = set(conn.scalars(select(identifiers.c[IDENTIFIER]).where(names_another)))
    cases = {case_id for _, case_id in links} | named
    groups = duplicate_groups(cases, links)
    members = sorted(case_id for group in groups for case_id in group)
    held = counted(conn, members)
    return write_groups(conn, hooks, [], groups, held.__contains__)


def left_out_of_counts(table: TableNamed) -> Select:
    """The cases the statistics leave out as duplicates: the members of a group that are not its representative."""
    kept = table(DUPLICATE_GROUPS)
    return select(kept.c[CASE_KEY]).where(~kept.c.representative)


def groups_view(table: TableNamed) -> Select:
    """``duplicate_case_groups``: every member of every group of two or more, with what chose its representative."""
    kept, master = table(DUPLICATE_GROUPS), table("icsr_master")
    return select(
        kept.c.group_id,
        kept.c[CASE_KEY],
        master.c.worldwide_unique_case_id,
        master.c.most_recent_info_date_utc,
        kept.c.representative.label("counted"),
        func.count().over(partition_by=kept.c.group_id).label("group_size"),
    ).select_from(kept.join(master, master.c[CASE_KEY] == kept.c[CASE_KEY]))


def add_tables(metadata: MetaData, table: TableNamed) -> None:
    """The kept identifiers and groups, and the ``duplicate_case_groups`` view."""
    Table(
        CASE_IDENTIFIERS,
        metadata,
        Column(IDENTIFIER, Text, primary_key=True, comment="C.1.8.1 or a C.1.10.r of the case, trimmed"),
        Column(CASE_KEY, Text, primary_key=True, comment="Case"),
        Index(f"ix_{CASE_IDENTIFIERS}_case", CASE_KEY),
        comment="Every current case's worldwide unique case id and linked report ids, as the duplicate groups read them",
    )
    Table(
        DUPLICATE_GROUPS,
        metadata,
        Column(CASE_KEY, Text, primary_key=True, comment="Case"),
        Column("group_id", Text, nullable=False, comment="The lowest case key of the group"),
        Column("representative", Boolean, nullable=False, comment="The case the drug-event statistics count the group by"),
        Index(f"ix_{DUPLICATE_GROUPS}_group", "group_id"),
        comment="Members of each group of two or more duplicate cases (shared C.1.8.1 or linked by C.1.10.r), as of the last refresh",
    )
    add_view(metadata, DUPLICATES_VIEW, groups_view(table))
