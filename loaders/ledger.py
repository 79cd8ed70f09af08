"""Which version of each case wins, and what each file did: the rules of docs/versioning.md as pure code.

Every loader decides with this module, in the loading process, from the staged index and the
versions the database holds; the database is only told which rows to delete and which to insert.
The winner of a case depends on the set of versions received, never on the order they arrive in:
so shards, parts, groups and concurrent loads all end as a sequential load. The counters of each
file are those of loading the transaction's files one by one, in order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import NamedTuple

# A missing N.2.r.4 is older than any
NO_CREATION_TIME = datetime.min.replace(tzinfo=timezone.utc)


class Version(NamedTuple):
    """One version of a case: what decides whether it replaces another."""

    case_id: str
    most_recent_info_utc: datetime  # C.1.5
    message_creation_utc: datetime | None  # N.2.r.4
    file_name: str
    file_sha256: str
    position: int
    is_nullification: bool  # C.1.11.1 = 1


def outranks(a: Version, b: Version) -> bool:
    """Whether ``a`` replaces ``b`` as the case's current version.

    A nullification outranks every ordinary version: a nullified case stays nullified. Otherwise
    the newer C.1.5 instant wins, then the newer N.2.r.4; an exact tie goes to the file whose name
    sorts first (then the smaller SHA-256), and inside one file to the later message.
    """
    if a.is_nullification != b.is_nullification:
        return a.is_nullification
    if a.most_recent_info_utc != b.most_recent_info_utc:
        return a.most_recent_info_utc > b.most_recent_info_utc
    created_a, created_b = a.message_creation_utc or NO_CREATION_TIME, b.message_creation_utc or NO_CREATION_TIME
    if created_a != created_b:
        return created_a > created_b
    if a.file_name != b.file_name:
        return a.file_name < b.file_name
    if a.file_sha256 != b.file_sha256:
        return a.file_sha256 < b.file_sha256
    return a.position > b.position


def best(versions: Iterable[Version]) -> Version:
    winner: Version | None = None
    for version in versions:
        if winner is None or outranks(version, winner):
            winner = version
    if winner is None:
        raise ValueError("no versions")
    return winner


@dataclass
class FileCounts:
    """What loading one file did to its cases, counted as if it were loaded alone after the files before it."""

    inserted: int = 0
    updated: int = 0
    skipped_older: int = 0  # versions not applied: older, identical, or beaten by another version in the file
    nullified: int = 0  # nullifications applied
    after_nullification: int = 0  # newer ordinary versions of a nullified case: kept in the audit log, not applied


class Ledger:
    """The case versions one transaction loads, batch after batch, against what the database held before it."""

    def __init__(self) -> None:
        self.before: dict[str, Version | None] = {}  # as the database held them when first looked up
        self.current: dict[str, Version | None] = {}  # the winner so far
        self.received: list[Version] = []

    def unknown(self, case_ids: Iterable[str]) -> list[str]:
        """Cases the ledger has not looked up yet, sorted (the order loaders lock them in)."""
        return sorted({case for case in case_ids if case not in self.before})

    def know(self, case_ids: Iterable[str], held: dict[str, Version]) -> None:
        """What the database holds for ``case_ids`` (absent from ``held``: no such case)."""
        for case in case_ids:
            self.before[case] = self.current[case] = held.get(case)

    def has_rows(self, case_id: str) -> bool:
        """Whether the case's rows are in the tables now (loaded before, or by this transaction)."""
        return self.current.get(case_id) is not None

    def offer(self, versions: list[tuple[Version, int]]) -> list[tuple[Version, int, bool]]:
        """Take a batch's versions (each with its message number in the batch); return the new winners to write,
        one per case, each with whether the case's current rows must be deleted first."""
        winners: dict[str, tuple[Version, int]] = {}
        for version, message in versions:
            self.received.append(version)
            held = winners.get(version.case_id)
            current = held[0] if held is not None else self.current[version.case_id]
            if current is None or outranks(version, current):
                winners[version.case_id] = (version, message)
        writes = []
        for case, (version, message) in winners.items():
            writes.append((version, message, self.has_rows(case)))
            self.current[case] = version
        return writes

    def touched(self) -> list[str]:
        return sorted(self.before)

    def tally(self, files: list[tuple[str, str]]) -> dict[tuple[str, str], FileCounts]:
        """Counts per ``(file name, SHA-256)``, as if ``files`` were loaded one by one in this order."""
        by_file: dict[tuple[str, str], dict[str, list[Version]]] = {file: {} for file in files}
        for version in self.received:
            by_file.setdefault((version.file_name, version.file_sha256), {}).setdefault(version.case_id, []).append(version)
        state = dict(self.before)
        counts = {file: FileCounts() for file in by_file}
        for file, cases in by_file.items():
            tally = counts[file]
            for case, versions in cases.items():
                winner, prior = best(versions), state.get(case)
                tally.skipped_older += len(versions) - 1
                if prior is None:
                    tally.inserted += 1
                elif outranks(winner, prior):
                    tally.updated += 1
                elif prior.is_nullification and not winner.is_nullification and _newer_dates(winner, prior):
                    tally.after_nullification += 1
                    continue
                else:
                    tally.skipped_older += 1
                    continue
                state[case] = winner
                tally.nullified += winner.is_nullification
        return counts


def _newer_dates(a: Version, b: Version) -> bool:
    """``a`` is newer than ``b`` by its dates alone (C.1.5, then N.2.r.4)."""
    return (a.most_recent_info_utc, a.message_creation_utc or NO_CREATION_TIME) > (
        b.most_recent_info_utc,
        b.message_creation_utc or NO_CREATION_TIME,
    )
