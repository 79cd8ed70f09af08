"""Drug-event disproportionality: the 2x2 counts and signal statistics of every drug and reaction.

``drug_event_statistics`` is a view over counts the database keeps up to date case by case. Counts
are of distinct cases among the ``n`` cases that have at least one counted drug and one coded
reaction (the population), one per group of duplicates (:mod:`duplicates`): ``a`` with the drug
and the event, ``b`` the drug without the event, ``c`` the event without the drug, ``d`` neither.
The event is the reaction's MedDRA PT in the reference version, else its reported code
(:func:`coded_reactions`). Each statistic is built as a small expression below (read them as the
formulas in docs/signals.md); one whose formula divides by zero or takes the logarithm of zero is
NULL.

Kept incrementally: every load queues the cases it wrote (``drug_event_pending_cases``, in its own
transaction). A refresh takes the queued cases and those in their duplicate groups, reads what each
contributed to the counts (its counted drugs and events, kept per case) and what it contributes now, and applies the
difference (:func:`count_changes`, pure) to the pair counts ``a``, the cases per drug, the cases
per reaction and ``n``; the view derives ``b``, ``c``, ``d`` and the statistics from them. The same
counts are kept within each subgroup of :data:`subgroups.SUBGROUPS` (the subgroups a case is in are
part of its contribution), and ``drug_event_subgroup_statistics`` derives from them the ROR, EMA's
SDR rule and the relative ROR against the other cases within each subgroup. Its cost follows the
queued cases, not the database. A full rebuild recomputes everything from the current
cases; :func:`recomputed_statistics` (the former one-query computation) is the oracle the tests
compare both with.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol, TypeVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    Double,
    FromClause,
    Index,
    Integer,
    MetaData,
    Select,
    Table,
    Text,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    inspect,
    literal,
    or_,
    select,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.engine import Connection
from sqlalchemy.schema import DropView

from py_load_eudravigilance import duplicates, markdown, subgroups
from py_load_eudravigilance import signal_rules as rules
from py_load_eudravigilance.mapping.catalog import CASE_KEY
from py_load_eudravigilance.meddra import LLT_TABLE, PT_TABLE, RELEASES_TABLE, VERSION
from py_load_eudravigilance.views import TableNamed, add_view, count_where, current_cases

logger = logging.getLogger(__name__)

STATISTICS_TABLE = "drug_event_statistics"  # a view since the counts are kept incrementally
PENDING_CASES = "drug_event_pending_cases"
CASE_DRUGS = "drug_event_case_drugs"
CASE_REACTIONS = "drug_event_case_reactions"
PAIR_COUNTS = "drug_event_pair_counts"
DRUG_COUNTS = "drug_event_drug_counts"
REACTION_COUNTS = "drug_event_reaction_counts"
COUNTS_STATE = "drug_event_counts_state"
CHANGED_PAIRS = "drug_event_changed_pairs"
# The same counts within each subgroup of subgroups.SUBGROUPS, and the view of their statistics
SUBGROUP = "subgroup"
SUBGROUP_PAIR_COUNTS = "drug_event_subgroup_pair_counts"
SUBGROUP_DRUG_COUNTS = "drug_event_subgroup_drug_counts"
SUBGROUP_REACTION_COUNTS = "drug_event_subgroup_reaction_counts"
SUBGROUP_SIZES = "drug_event_subgroup_sizes"
SUBGROUP_CHANGED_PAIRS = "drug_event_subgroup_changed_pairs"
SUBGROUP_STATISTICS = "drug_event_subgroup_statistics"
SUBGROUP_COUNTS_OF = {DRUG_COUNTS: SUBGROUP_DRUG_COUNTS, REACTION_COUNTS: SUBGROUP_REACTION_COUNTS}
# The event of a pair: the PT code in the reference MedDRA version, else the reported code (coded_reactions)
REACTION = "event_code"
EVENT_NAME = "event_name"
STATE_VERSION = "meddra_version"
# G.k.1 drug roles counted by default: suspect (1) and interacting (3)
DEFAULT_DRUG_ROLES = ("1", "3")
COUNTS = ("a", "b", "c", "d", "n")
STATISTICS = ("prr", "prr_lower95", "prr_upper95", "ror", "ror_lower95", "ror_upper95", "chi_square", "ic", "ic025", "ic975")
Z95 = 1.96
# The one row of the counts' state
STATE_ID = 1
# Queued rows above which a refresh rebuilds instead: the rebuild reads the same cases in SQL, without holding them in
# memory (a queue nobody refreshed for long, or the first load of a large database)
MOST_QUEUED_ROWS = 500_000

# Whitespace runs collapse to one space with three REPLACEs that every SQL dialect has: each space
# becomes a pair of markers, every marker pair between two spaces of a run drops out, the pair left
# becomes a space. The markers are control characters removed from the name first.
_OPEN, _CLOSE = "\x01", "\x02"
_WHITESPACE = ("\t", "\n", "\r", "\f", "\v")


def drug_name(value: ColumnElement[str]) -> ColumnElement[str]:
    """A substance or product name as the statistics count it: upper-cased, trimmed, inner whitespace collapsed."""
    for character in (_OPEN, _CLOSE):
        value = func.replace(value, literal(character), literal(""))
    for character in _WHITESPACE:
        value = func.replace(value, literal(character), literal(" "))
    value = func.replace(value, literal(" "), literal(_OPEN + _CLOSE))
    value = func.replace(value, literal(_CLOSE + _OPEN), literal(""))
    value = func.replace(value, literal(_OPEN + _CLOSE), literal(" "))
    return func.upper(func.trim(value))


def counted_drugs(table: TableNamed, drug_roles: Sequence[str]) -> Select:
    """(case, drug) for every counted drug of a current case: each of its active substances (G.k.2.3.r.1), or its
    product name (G.k.2.2) when it names none."""
    master, drugs, substances = table("icsr_master"), table("drugs"), table("drug_substances")
    # Only substances with a name join: one given by its code alone (G.k.2.3.r.2b) or as blanks names no drug, and a
    # drug whose substances are all like that counts under its product name
    named = and_(
        substances.c[CASE_KEY] == drugs.c[CASE_KEY],
        substances.c.drug_seq == drugs.c.drug_seq,
        drug_name(substances.c.substance_name) != "",
    )
    name = drug_name(func.coalesce(substances.c.substance_name, drugs.c.medicinal_product))
    joined = master.join(drugs, drugs.c[CASE_KEY] == master.c[CASE_KEY]).outerjoin(substances, named)
    return (
        select(master.c[CASE_KEY], name.label("drug"))
        .select_from(joined)
        .where(current_cases(master), func.trim(drugs.c.drug_role).in_(list(drug_roles)))
    )


def coded_reactions(table: TableNamed, meddra_version: str | None = None) -> Select:
    """(case, event) for every coded reaction of a current case. The event is the PT that the reported code (E.i.2.1b:
    an LLT or a PT code, of any version; LLT codes are never reused) maps to through the LLT table of
    ``meddra_version``, non-current LLTs included; the reported code itself without a MedDRA version, or for a code
    that version does not hold."""
    master, reactions = table("icsr_master"), table("reactions")
    code = func.trim(reactions.c.reaction_meddra_code)
    event = code
    if meddra_version is not None:
        llt = table(LLT_TABLE)
        pt_code = select(llt.c.pt_code).where(llt.c[VERSION] == meddra_version, llt.c.llt_code == code).scalar_subquery()
        event = func.coalesce(pt_code, code)
    return (
        select(master.c[CASE_KEY], event.label(REACTION))
        .select_from(master.join(reactions, reactions.c[CASE_KEY] == master.c[CASE_KEY]))
        .where(current_cases(master), func.coalesce(code, "") != "")
    )


def version_order(version: str) -> tuple[tuple[int, int, str], ...]:
    """A MedDRA version as it sorts: ``27.1`` after ``9.0`` (numbers as numbers)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in version.strip().split("."))


class MeddraVersionNotLoaded(ValueError):
    """The MedDRA version asked for as the statistics' reference is not loaded."""


def reference_meddra_version(conn: Connection, table: TableNamed, wanted: str | None = None) -> str | None:
    """The MedDRA version whose PTs the statistics count: ``wanted`` (refused unless loaded), else the latest release
    loaded, else None (reported codes)."""
    loaded = list(conn.scalars(select(table(RELEASES_TABLE).c[VERSION])))
    if wanted is not None:
        if wanted not in loaded:
            held = ", ".join(sorted(loaded, key=version_order)) or "none"
            raise MeddraVersionNotLoaded(f"MedDRA {wanted} is not loaded (loaded: {held}); load it with `eudravigloader meddra load`")
        return wanted
    return max(loaded, key=version_order, default=None)


def contingency_counts(table: TableNamed, drug_roles: Sequence[str], meddra_version: str | None = None) -> Select:
    """a, b, c, d and n of every (drug, event) pair reported together at least once."""
    drugs = counted_drugs(table, drug_roles).cte("counted_drug")
    reactions = coded_reactions(table, meddra_version).cte("coded_reaction")
    # The cases counted: at least one counted drug and one coded reaction, one case per group of duplicates (the
    # groups as the last refresh left them)
    with_both = and_(
        drugs.c.drug != "",
        drugs.c[CASE_KEY].in_(select(reactions.c[CASE_KEY])),
        drugs.c[CASE_KEY].not_in(duplicates.left_out_of_counts(table)),
    )
    population = select(drugs.c[CASE_KEY]).where(with_both).distinct().cte("population")
    in_population = select(population.c[CASE_KEY])
    drug_cases = (
        select(drugs.c[CASE_KEY], drugs.c.drug).where(drugs.c.drug != "", drugs.c[CASE_KEY].in_(in_population)).distinct().cte("drug_case")
    )
    event_cases = (
        select(reactions.c[CASE_KEY], reactions.c[REACTION]).where(reactions.c[CASE_KEY].in_(in_population)).distinct().cte("event_case")
    )
    pairs = (
        select(drug_cases.c.drug, event_cases.c[REACTION], func.count().label("a"))
        .select_from(drug_cases.join(event_cases, event_cases.c[CASE_KEY] == drug_cases.c[CASE_KEY]))
        .group_by(drug_cases.c.drug, event_cases.c[REACTION])
        .subquery("pair")
    )
    with_drug = select(drug_cases.c.drug, func.count().label("cases")).group_by(drug_cases.c.drug).subquery("with_drug")
    with_event = select(event_cases.c[REACTION], func.count().label("cases")).group_by(event_cases.c[REACTION]).subquery("with_event")
    n = select(func.count()).select_from(population).scalar_subquery()
    return select(pairs.c.drug, pairs.c[REACTION], *contingency(pairs.c.a, with_drug.c.cases, with_event.c.cases, n)).select_from(
        pairs.join(with_drug, with_drug.c.drug == pairs.c.drug).join(with_event, with_event.c[REACTION] == pairs.c[REACTION])
    )


def real(value: ColumnElement | float) -> ColumnElement[float]:
    """Floating point, so that no product of counts overflows an integer and no division truncates."""
    return cast(value, Double)


def ratio(numerator: ColumnElement, denominator: ColumnElement) -> ColumnElement[float]:
    """numerator / denominator, NULL when the denominator is zero."""
    return real(numerator) / func.nullif(real(denominator), 0.0)


def log(value: ColumnElement) -> ColumnElement[float]:
    """Natural logarithm, NULL for zero or NULL."""
    return func.ln(func.nullif(value, 0.0))


def odds_ratio(a: ColumnElement, b: ColumnElement, c: ColumnElement, d: ColumnElement) -> tuple[ColumnElement[float], ColumnElement[float]]:
    """The reporting odds ratio ad/bc of a 2x2 table and the standard error of its logarithm."""
    a, b, c, d = (real(cell) for cell in (a, b, c, d))
    return ratio(a * d, b * c), func.sqrt(ratio(1, a) + ratio(1, b) + ratio(1, c) + ratio(1, d))


def confidence_bound(estimate: ColumnElement, se: ColumnElement, sign: float) -> ColumnElement[float]:
    """The lower (``sign`` -1) or upper (+1) end of a ratio's 95% interval, from the standard error of its log."""
    return func.exp(log(estimate) + sign * Z95 * se)


def point_estimates(counts: Select) -> Select:
    """PRR, ROR, Yates' chi-square and the IC, with the standard errors of log PRR and log ROR."""
    cells = counts.subquery("cells")
    a, b, c, d, n = (real(cells.c[name]) for name in COUNTS)
    expected = (a + b) * (a + c) / func.nullif(n, 0.0)
    yates = func.abs(a * d - b * c) - n / 2.0
    ror, ror_se = odds_ratio(a, b, c, d)
    return select(
        *cells.c,
        ratio(ratio(a, a + b), ratio(c, c + d)).label("prr"),
        func.sqrt(ratio(1, a) - ratio(1, a + b) + ratio(1, c) - ratio(1, c + d)).label("prr_se"),
        ror.label("ror"),
        ror_se.label("ror_se"),
        ratio(n * yates * yates, (a + b) * (c + d) * (a + c) * (b + d)).label("chi_square"),
        ratio(log(a + 0.5), func.ln(2.0)).label("log2_observed"),
        ratio(log(expected + 0.5), func.ln(2.0)).label("log2_expected"),
    )


def statistics(counts: Select) -> Select:
    """Every column of ``drug_event_statistics``: the keys of ``counts`` (every column but the counts), the counts,
    estimates, their 95% intervals, the signal flag and the rules met."""
    estimates = point_estimates(counts).subquery("estimates")
    e = estimates.c
    ic = e.log2_observed - e.log2_expected
    half_a = real(e.a) + 0.5
    root = func.sqrt(half_a)
    ic025 = ic - 3.3 / root - 2.0 / (half_a * root)
    ic975 = ic + 2.4 / root - 0.5 / (half_a * root)
    evans = and_(e.a >= rules.EVANS_MIN_CASES, e.prr >= rules.EVANS_MIN_PRR, e.chi_square >= rules.EVANS_MIN_CHI_SQUARE)
    ror_lower95 = confidence_bound(e.ror, e.ror_se, -1)
    # EMA's SDR at the threshold of substances not under additional monitoring (EMA/849944/2016, 4.1), events
    # judged without the IME list (docs/signal-rules.md)
    ema_sdr = and_(e.a >= rules.EMA_MIN_CASES, ror_lower95 > rules.EMA_MIN_ROR_LOWER)

    def flag(condition: ColumnElement[bool]) -> ColumnElement[bool]:
        return case((condition, True), else_=false())

    signal = flag(or_(evans, ic025 > 0.0))
    keys = [column for column in counts.selected_columns if column.name not in COUNTS]
    return select(
        *(e[column.name] for column in keys),
        *(e[name] for name in COUNTS),
        e.prr,
        confidence_bound(e.prr, e.prr_se, -1).label("prr_lower95"),
        confidence_bound(e.prr, e.prr_se, 1).label("prr_upper95"),
        e.ror,
        ror_lower95.label("ror_lower95"),
        confidence_bound(e.ror, e.ror_se, 1).label("ror_upper95"),
        e.chi_square,
        ic.label("ic"),
        ic025.label("ic025"),
        ic975.label("ic975"),
        signal.label("signal"),
        flag(evans).label("meets_evans_prr"),
        flag(ic025 > 0.0).label("meets_ic025"),
        flag(ema_sdr).label("meets_ema_sdr"),
    )


def contingency(
    a: ColumnElement[int], drug_cases: ColumnElement[int], event_cases: ColumnElement[int], n: ColumnElement[int]
) -> tuple[ColumnElement[int], ...]:
    """A pair's 2x2 table (a, b, c, d, n) from its cases ``a``, the cases of its drug and of its event, and all ``n``."""
    return (
        a.label("a"),
        (drug_cases - a).label("b"),
        (event_cases - a).label("c"),
        (n - drug_cases - event_cases + a).label("d"),
        n.label("n"),
    )


def recomputed_statistics(table: TableNamed, drug_roles: Sequence[str] = DEFAULT_DRUG_ROLES, meddra_version: str | None = None) -> Select:
    """Every row of ``drug_event_statistics`` computed from scratch in one query: the oracle of the kept counts."""
    return statistics(contingency_counts(table, drug_roles, meddra_version))


# -- the counts, kept incrementally ---------------------------------------------------------------------------------


class Contribution(NamedTuple):
    """What one case adds to the counts: its distinct counted drugs and coded reactions (both empty outside the
    population), and the subgroups (of :data:`subgroups.SUBGROUPS`) whose counts it adds to as well."""

    drugs: frozenset[str]
    reactions: frozenset[str]
    subgroups: frozenset[str] = frozenset()


NOTHING = Contribution(frozenset(), frozenset())


def same_drugs_and_reactions(old: Contribution, new: Contribution) -> bool:
    """Whether two contributions add the same to the counts of the population (their subgroups aside)."""
    return (old.drugs, old.reactions) == (new.drugs, new.reactions)


def contribution(drugs: Iterable[str | None], reactions: Iterable[str | None], subgroups: Iterable[str] = ()) -> Contribution:
    """A case's contribution from its counted drug names and coded reactions (blanks and NULLs named nothing), in
    ``subgroups``: nothing unless it has at least one drug and one reaction."""
    named = frozenset(drug for drug in drugs if drug)
    coded = frozenset(reaction for reaction in reactions if reaction)
    return Contribution(named, coded, frozenset(subgroups)) if named and coded else NOTHING


@dataclass(frozen=True)
class CountChanges:
    """How the counts change: ``a`` per (drug, reaction), cases per drug, cases per reaction and ``n``; and ``within``
    each subgroup, the same changes of its own counts. Only keys (and subgroups) whose count changes are present."""

    pairs: dict[tuple[str, str], int]
    drugs: dict[str, int]
    reactions: dict[str, int]
    cases: int
    within: dict[str, CountChanges] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.pairs or self.drugs or self.reactions or self.cases or self.within)


def count_changes(before: Mapping[str, Contribution], after: Mapping[str, Contribution]) -> CountChanges:
    """The change of every count when the cases of ``before`` contribute ``after`` instead (a case absent from one
    side contributes nothing there). Within a subgroup the changes are those of its members on either side: a case
    that moves to another subgroup (a follow-up giving its age) leaves the counts of one and joins the other's."""
    members_before, members_after = _members_by_subgroup(before), _members_by_subgroup(after)
    within = {}
    for subgroup in sorted(members_before.keys() | members_after.keys()):
        changes = _changes_of_drugs_and_reactions(members_before.get(subgroup, {}), members_after.get(subgroup, {}))
        if changes:
            within[subgroup] = changes
    return replace(_changes_of_drugs_and_reactions(before, after), within=within)


def _members_by_subgroup(side: Mapping[str, Contribution]) -> dict[str, dict[str, Contribution]]:
    """The cases of ``side`` in each subgroup, read in one pass (not once per subgroup)."""
    members: dict[str, dict[str, Contribution]] = defaultdict(dict)
    for case_id, part in side.items():
        for subgroup in part.subgroups:
            members[subgroup][case_id] = part
    return members


def _changes_of_drugs_and_reactions(before: Mapping[str, Contribution], after: Mapping[str, Contribution]) -> CountChanges:
    """:func:`count_changes` of the drugs and reactions alone (the subgroups left aside)."""
    pairs: Counter[tuple[str, str]] = Counter()
    drugs: Counter[str] = Counter()
    reactions: Counter[str] = Counter()
    cases = 0
    for case_id in before.keys() | after.keys():
        old, new = before.get(case_id, NOTHING), after.get(case_id, NOTHING)
        if same_drugs_and_reactions(old, new):
            continue
        for sign, part in ((-1, old), (1, new)):
            if not part.drugs:  # nothing (a contribution has drugs and reactions, or neither)
                continue
            cases += sign
            for drug in part.drugs:
                drugs[drug] += sign
                for reaction in part.reactions:
                    pairs[drug, reaction] += sign
            for reaction in part.reactions:
                reactions[reaction] += sign

    def changed(counter: Counter) -> dict:
        return {key: change for key, change in counter.items() if change}

    return CountChanges(changed(pairs), changed(drugs), changed(reactions), cases)


Key = TypeVar("Key", bound=Hashable)


class CountsOutOfStep(ValueError):
    """A kept count would fall below zero: the counts no longer match the contributions they were built from."""


def updated(held: Mapping[Key, int], changes: Mapping[Key, int]) -> dict[Key, int]:
    """The new count of every changed key (0: its row goes), from the counts held (absent: 0)."""
    values = {key: held.get(key, 0) + change for key, change in changes.items()}
    negative = [key for key, value in values.items() if value < 0]
    if negative:
        raise CountsOutOfStep(f"{len(negative)} counts would fall below zero, e.g. {negative[0]!r}")
    return values


def role_key(drug_roles: Sequence[str]) -> str:
    """The drug roles the counts were built with, as the state row keeps them: ``1,3`` whatever their order."""
    return ",".join(sorted({role.strip() for role in drug_roles}))


@dataclass(frozen=True)
class Basis:
    """What the counts count by: the G.k.1 roles of the drugs counted, and the MedDRA version whose PTs the events are
    (None: the reported codes). Counts held on another basis are rebuilt."""

    drug_roles: Sequence[str]
    meddra_version: str | None = None

    def holds(self, state: Mapping[str, Any]) -> bool:
        """Whether the counts of this state row were built on this basis."""
        return state["drug_roles"] == role_key(self.drug_roles) and state[STATE_VERSION] == self.meddra_version


def stored_counts(table: TableNamed, changed_only: bool = False) -> Select:
    """a, b, c, d and n of every pair from the kept counts, with the event's PT name and the MedDRA version the events
    are PTs of (both NULL when the events are reported codes); ``changed_only``: of the pairs the last refresh changed."""
    pairs, drugs, reactions = table(PAIR_COUNTS), table(DRUG_COUNTS), table(REACTION_COUNTS)
    joined = pairs.join(drugs, drugs.c.drug == pairs.c.drug).join(reactions, reactions.c[REACTION] == pairs.c[REACTION])
    joined, state, event_name = with_state_and_event_names(table, joined, pairs.c[REACTION])
    counts = select(
        pairs.c.drug,
        pairs.c[REACTION],
        event_name,
        state.c[STATE_VERSION],
        *contingency(pairs.c.a, drugs.c.cases, reactions.c.cases, state.c.cases),
    ).select_from(joined)
    return counts.where(among_changed_pairs(table)) if changed_only else counts


def with_state_and_event_names(
    table: TableNamed, joined: FromClause, event: ColumnElement[str]
) -> tuple[FromClause, FromClause, ColumnElement]:
    """``joined`` with the counts' state row (``n`` as ``cases``, the MedDRA version) and the PT of ``event`` in
    that version, and the PT's name as ``event_name``."""
    state, pts = table(COUNTS_STATE), table(PT_TABLE)
    # The state row by its key, so that the planner knows it is one row (a table it has no statistics of yet is guessed
    # at a thousand, and PostgreSQL spent seconds compiling the view with its JIT for the rows that guess promised)
    one_row = select(state.c.cases, state.c[STATE_VERSION]).where(state.c.id == STATE_ID).subquery("state")
    named = joined.join(one_row, true()).outerjoin(pts, and_(pts.c[VERSION] == one_row.c[STATE_VERSION], pts.c.pt_code == event))
    return named, one_row, pts.c.pt_name.label(EVENT_NAME)


def stored_subgroup_counts(table: TableNamed) -> Select:
    """Of every pair reported together within a subgroup: a, b, c, d and n within it (``n`` its size), and the 2x2
    table of the other cases of the population (``others_a`` ... ``others_d``: the pair's overall counts less the
    subgroup's), from the kept counts."""
    pairs, drugs, reactions = table(SUBGROUP_PAIR_COUNTS), table(SUBGROUP_DRUG_COUNTS), table(SUBGROUP_REACTION_COUNTS)
    sizes, all_pairs, all_drugs, all_reactions = table(SUBGROUP_SIZES), table(PAIR_COUNTS), table(DRUG_COUNTS), table(REACTION_COUNTS)
    drug, event, subgroup = pairs.c.drug, pairs.c[REACTION], pairs.c[SUBGROUP]
    joined = (
        pairs.join(drugs, and_(drugs.c[SUBGROUP] == subgroup, drugs.c.drug == drug))
        .join(reactions, and_(reactions.c[SUBGROUP] == subgroup, reactions.c[REACTION] == event))
        .join(sizes, sizes.c[SUBGROUP] == subgroup)
        .join(all_pairs, and_(all_pairs.c.drug == drug, all_pairs.c[REACTION] == event))
        .join(all_drugs, all_drugs.c.drug == drug)
        .join(all_reactions, all_reactions.c[REACTION] == event)
    )
    joined, state, event_name = with_state_and_event_names(table, joined, event)
    others = contingency(
        all_pairs.c.a - pairs.c.a,
        all_drugs.c.cases - drugs.c.cases,
        all_reactions.c.cases - reactions.c.cases,
        state.c.cases - sizes.c.cases,
    )
    return select(
        subgroup,
        drug,
        event,
        event_name,
        *(cell.label(f"others_{cell.name}") for cell in others[:4]),
        *contingency(pairs.c.a, drugs.c.cases, reactions.c.cases, sizes.c.cases),
    ).select_from(joined)


# The columns of drug_event_subgroup_statistics
SUBGROUP_STATISTICS_COLUMNS = (
    *(SUBGROUP, "drug", REACTION, EVENT_NAME, *COUNTS),
    *("ror", "ror_lower95", "meets_ema_sdr", "relative_ror", "relative_ror_lower95"),
)


def subgroup_statistics(counts: Select) -> Select:
    """Every column of ``drug_event_subgroup_statistics``: of each pair within each subgroup, the counts, ROR and EMA's
    SDR rule within the subgroup (:func:`statistics` of its own 2x2 table), and the relative ROR of the subgroup
    against the other cases, with its lower 95% bound, as :func:`signal_rules.relative_ror` defines them: the ratio
    of both RORs, the variance of its log the sum of theirs (NULL when a cell of either table is zero)."""
    within = statistics(counts).subquery("within")
    w = within.c
    inside_ror, inside_se = odds_ratio(w.a, w.b, w.c, w.d)
    others_ror, others_se = odds_ratio(w.others_a, w.others_b, w.others_c, w.others_d)
    relative = func.exp(log(inside_ror) - log(others_ror))
    relative_se = func.sqrt(inside_se * inside_se + others_se * others_se)
    computed = {"relative_ror": relative, "relative_ror_lower95": confidence_bound(relative, relative_se, -1)}
    return select(*(computed[name].label(name) if name in computed else w[name] for name in SUBGROUP_STATISTICS_COLUMNS))


def among_changed_pairs(table: TableNamed) -> ColumnElement[bool]:
    """Pair counts of the pairs ``drug_event_changed_pairs`` names."""
    return among_changed(table(PAIR_COUNTS), table(CHANGED_PAIRS))


def among_changed(counts: Table, changed: Table) -> ColumnElement[bool]:
    """Rows of ``counts`` whose key ``changed`` names (the columns of its primary key). An IN over the key, which
    PostgreSQL (with :meth:`keyed_lookups`) and SQLite both drive from the changed keys through the primary key;
    SQLite would scan the counts for a join."""
    keys = list(changed.primary_key.columns)
    return tuple_(*(counts.c[key.name] for key in keys)).in_(select(*keys))


def changed_statistics(table: TableNamed) -> Select:
    """The rows of ``drug_event_statistics`` whose ``a`` the last refresh changed (every row after a rebuild)."""
    return statistics(stored_counts(table, changed_only=True))


class RefreshHooks(Protocol):
    """What a refresh (and a load queueing its cases) needs: the schema's tables and the database dialect's hooks
    (``loaders.upkeep.RefreshTarget``)."""

    def table(self, name: str) -> Table: ...

    def case_filters(self, column: Column, case_ids: list[str]) -> Iterator[ColumnElement[bool]]: ...

    def insert_records(self, conn: Connection, table: Table, records: list[dict[str, Any]]) -> None: ...

    def lock_for_refresh(self, conn: Connection, table: Table) -> None: ...

    def keyed_lookups(self, conn: Connection) -> None: ...


@dataclass(frozen=True)
class StatisticsSummary:
    """What a refresh left and what it changed. Nothing here scans the statistics: the totals are kept with the counts,
    the rest is counted over the pairs the refresh changed."""

    pairs: int  # drug-event pairs in drug_event_statistics
    cases: int  # n: cases with a counted drug and a coded reaction
    rebuilt: bool  # recomputed in full (first refresh, after a full reload or a MedDRA load, another basis, or asked for)
    cases_recounted: int  # cases whose contribution was read again (every case of the population after a rebuild)
    changed_pairs: int  # pairs whose a changed (added, changed or gone; every pair after a rebuild)
    changed_pair_signals: int  # signals among the changed pairs still present
    meddra_version: str | None  # the MedDRA version whose PTs the events are; None: the reported codes


def refresh(
    conn: Connection, hooks: RefreshHooks, drug_roles: Sequence[str], rebuild: bool = False, meddra_version: str | None = None
) -> StatisticsSummary:
    """Bring the counts up to date in ``conn``'s transaction: incrementally from the queued cases, or in full when
    asked, when no counts exist yet, after a full reload or a MedDRA load, when they were built on another basis
    (other drug roles, or PTs of another MedDRA version: ``meddra_version``, by default the latest loaded), or when
    more than :data:`MOST_QUEUED_ROWS` cases are queued.

    Concurrent loads are never lost: the queued cases are taken off the queue before their data is read, so a load
    committing meanwhile either is seen by that read or leaves its queue rows for the next refresh (recounting a
    case is idempotent)."""
    state = hooks.table(COUNTS_STATE)
    hooks.lock_for_refresh(conn, state)
    held = conn.execute(select(state).where(state.c.id == STATE_ID)).mappings().first()
    basis = Basis(drug_roles, reference_meddra_version(conn, hooks.table, meddra_version))
    if rebuild or held is None or held["rebuild"] or not basis.holds(held):
        return rebuild_counts(conn, hooks, basis)
    if queued_rows(conn, hooks, up_to=MOST_QUEUED_ROWS + 1) > MOST_QUEUED_ROWS:
        return rebuild_counts(conn, hooks, basis)
    try:
        # In a savepoint: when the counts are out of step, its writes and its planner settings go before the rebuild
        with conn.begin_nested():
            return update_counts(conn, hooks, basis, held)
    except CountsOutOfStep as error:
        logger.warning("drug-event counts out of step with their cases (%s): rebuilding them", error)
        return rebuild_counts(conn, hooks, basis)


def queued_rows(conn: Connection, hooks: RefreshHooks, up_to: int) -> int:
    """Rows in the queue, counted up to ``up_to`` (reads no more of a long queue)."""
    pending = hooks.table(PENDING_CASES)
    return int(conn.scalar(select(func.count()).select_from(select(pending.c[CASE_KEY]).limit(up_to).subquery())))


def take_pending_cases(conn: Connection, hooks: RefreshHooks) -> list[str]:
    """The queued cases, taken off the queue (only the rows read: those of loads committing meanwhile stay)."""
    pending = hooks.table(PENDING_CASES)
    cases = sorted(set(conn.scalars(select(pending.c[CASE_KEY]))))
    for clause in hooks.case_filters(pending.c[CASE_KEY], cases):
        conn.execute(pending.delete().where(clause))
    return cases


def stored_contributions(conn: Connection, hooks: RefreshHooks, cases: list[str]) -> dict[str, Contribution]:
    """What ``cases`` contribute to the kept counts, in the subgroups of their kept attributes."""
    drugs_of: dict[str, set[str]] = defaultdict(set)
    reactions_of: dict[str, set[str]] = defaultdict(set)
    for name, column, found in ((CASE_DRUGS, "drug", drugs_of), (CASE_REACTIONS, REACTION, reactions_of)):
        kept = hooks.table(name)
        for clause in hooks.case_filters(kept.c[CASE_KEY], cases):
            for case_id, value in conn.execute(select(kept.c[CASE_KEY], kept.c[column]).where(clause)):
                found[case_id].add(value)
    attributes = hooks.table(subgroups.CASE_ATTRIBUTES)
    subgroups_of: dict[str, frozenset[str]] = {}
    for clause in hooks.case_filters(attributes.c[CASE_KEY], cases):
        kept = conn.execute(select(attributes).where(clause)).mappings()
        subgroups_of.update((row[CASE_KEY], subgroups.subgroups_of(row)) for row in kept)
    return {case_id: contribution(drugs_of[case_id], reactions_of[case_id], subgroups_of.get(case_id, ())) for case_id in cases}


class CurrentCases(NamedTuple):
    """What the recounted cases contribute now, and the subgroups' attributes their contributions were read with."""

    contributions: dict[str, Contribution]
    attributes: dict[str, dict[str, Any]]


def current_contributions(conn: Connection, hooks: RefreshHooks, cases: list[str], basis: Basis) -> CurrentCases:
    """What ``cases`` contribute now, by the queries of the full computation restricted to them: drugs and reactions
    in one statement, so that both come from the same version of a case; the subgroups from the attributes read
    next (a load committing in between queues the case again for the next refresh)."""
    master = hooks.table("icsr_master")
    drugs_of: dict[str, list[str]] = defaultdict(list)
    reactions_of: dict[str, list[str]] = defaultdict(list)
    attributes: dict[str, dict[str, Any]] = {}
    for clause in hooks.case_filters(master.c[CASE_KEY], cases):
        drugs = counted_drugs(hooks.table, basis.drug_roles).where(clause).add_columns(literal(True).label("is_drug"))
        reactions = coded_reactions(hooks.table, basis.meddra_version).where(clause).add_columns(literal(False).label("is_drug"))
        for case_id, value, is_drug in conn.execute(union_all(drugs, reactions)):
            (drugs_of if is_drug else reactions_of)[case_id].append(value)
        attributes.update((row[CASE_KEY], dict(row)) for row in conn.execute(subgroups.case_attributes(hooks.table, clause)).mappings())
    contributions = {
        case_id: contribution(drugs_of[case_id], reactions_of[case_id], subgroups.subgroups_of(attributes.get(case_id, {})))
        for case_id in cases
    }
    return CurrentCases(contributions, attributes)


def held_counts(conn: Connection, hooks: RefreshHooks, name: str, key: str, keys: list[Key], **fixed: str) -> dict[Key, int]:
    """The kept ``cases`` of ``keys`` in the counts table ``name`` (within ``fixed`` values of its other key
    columns: a subgroup's)."""
    counts = hooks.table(name)
    within = [counts.c[column] == value for column, value in fixed.items()]
    held: dict[Key, int] = {}
    for clause in hooks.case_filters(counts.c[key], keys):
        held.update((value, cases) for value, cases in conn.execute(select(counts.c[key], counts.c.cases).where(clause, *within)))
    return held


def write_counts(conn: Connection, hooks: RefreshHooks, name: str, key: str, values: Mapping[Key, int], **fixed: str) -> None:
    """Replace the rows of the changed keys of the counts table ``name`` (within ``fixed``) by their non-zero
    ``values``."""
    counts = hooks.table(name)
    within = [counts.c[column] == value for column, value in fixed.items()]
    for clause in hooks.case_filters(counts.c[key], list(values)):
        conn.execute(counts.delete().where(clause, *within))
    hooks.insert_records(conn, counts, [{**fixed, key: value, "cases": cases} for value, cases in sorted(values.items()) if cases])


def held_pair_counts(conn: Connection, counts: Table, changed: Table) -> dict[tuple[str, ...], int]:
    """The kept ``a`` of the pairs ``changed`` names (keyed as its primary key)."""
    keys = [counts.c[key.name] for key in changed.primary_key.columns]
    return {tuple(row[:-1]): row[-1] for row in conn.execute(select(*keys, counts.c.a).where(among_changed(counts, changed)))}


def write_pair_counts(conn: Connection, hooks: RefreshHooks, counts: Table, changed: Table, values: Mapping[tuple[str, ...], int]) -> None:
    """Replace the rows of the pairs ``changed`` names by their non-zero ``values``."""
    keys = [key.name for key in changed.primary_key.columns]
    conn.execute(counts.delete().where(among_changed(counts, changed)))
    hooks.insert_records(conn, counts, [{**dict(zip(keys, pair, strict=True)), "a": a} for pair, a in sorted(values.items()) if a])


def update_counts(conn: Connection, hooks: RefreshHooks, basis: Basis, held: Mapping[str, Any]) -> StatisticsSummary:
    """Apply the changes of the queued cases, and of the cases in their duplicate groups (before or after: a group's
    representative may change), to the counts and to those within each subgroup; raises :class:`CountsOutOfStep`
    before writing any count that would fall below zero."""
    table = hooks.table
    hooks.keyed_lookups(conn)  # every statement below reads or writes the rows of a few keys
    cases, groups = duplicates.regroup(conn, hooks, take_pending_cases(conn, hooks))
    before = stored_contributions(conn, hooks, cases)
    current = current_contributions(conn, hooks, cases, basis)
    left_out = duplicates.write_groups(conn, hooks, cases, groups, lambda case_id: current.contributions[case_id] != NOTHING)
    after = {case_id: NOTHING if case_id in left_out else part for case_id, part in current.contributions.items()}
    changes = count_changes(before, after)
    # The changed pairs, kept for the reports of this refresh, also name the pair counts to read and replace; within
    # the subgroups too (a case moving between subgroups changes their pairs, not the population's)
    pairs, changed = table(PAIR_COUNTS), table(CHANGED_PAIRS)
    subgroup_pairs, subgroup_changed = table(SUBGROUP_PAIR_COUNTS), table(SUBGROUP_CHANGED_PAIRS)
    within_pairs = {(subgroup, *pair): a for subgroup, part in changes.within.items() for pair, a in part.pairs.items()}
    for kept, keys in ((changed, changes.pairs), (subgroup_changed, within_pairs)):
        conn.execute(kept.delete())
        names = [key.name for key in kept.primary_key.columns]
        hooks.insert_records(conn, kept, [dict(zip(names, key, strict=True)) for key in sorted(keys)])
    held_pairs = held_pair_counts(conn, pairs, changed)
    new_pairs = updated(held_pairs, changes.pairs)
    new_subgroup_pairs = updated(held_pair_counts(conn, subgroup_pairs, subgroup_changed), within_pairs)
    # Cases per drug and per reaction, overall (no subgroup) and within each subgroup; the subgroups' sizes
    new_counts: list[tuple[str, str, dict, dict[str, str]]] = []
    for subgroup, part in ((None, changes), *changes.within.items()):
        fixed = {} if subgroup is None else {SUBGROUP: subgroup}
        for overall, key, values in ((DRUG_COUNTS, "drug", part.drugs), (REACTION_COUNTS, REACTION, part.reactions)):
            name = overall if subgroup is None else SUBGROUP_COUNTS_OF[overall]
            new_counts.append((name, key, updated(held_counts(conn, hooks, name, key, list(values), **fixed), values), fixed))
    sizes = {subgroup: part.cases for subgroup, part in changes.within.items() if part.cases}
    new_counts.append((SUBGROUP_SIZES, SUBGROUP, updated(held_counts(conn, hooks, SUBGROUP_SIZES, SUBGROUP, list(sizes)), sizes), {}))

    # The cases' contributions, then the counts: rows of changed keys deleted, their non-zero values inserted
    changed_cases = [case_id for case_id in cases if not same_drugs_and_reactions(before[case_id], after[case_id])]
    for name, column, values in ((CASE_DRUGS, "drug", "drugs"), (CASE_REACTIONS, REACTION, "reactions")):
        kept = table(name)
        for clause in hooks.case_filters(kept.c[CASE_KEY], changed_cases):
            conn.execute(kept.delete().where(clause))
        rows = [{CASE_KEY: case_id, column: value} for case_id in changed_cases for value in sorted(getattr(after[case_id], values))]
        hooks.insert_records(conn, kept, rows)
    # A case nullified by a load between the statement reading its drugs and the one reading its attributes has no
    # attributes: it counted in no subgroup, and that load queued it again
    counted = [current.attributes[case_id] for case_id in cases if after[case_id] != NOTHING and case_id in current.attributes]
    write_attributes(conn, hooks, counted, cases)
    write_pair_counts(conn, hooks, pairs, changed, new_pairs)
    write_pair_counts(conn, hooks, subgroup_pairs, subgroup_changed, new_subgroup_pairs)
    for name, key, values, fixed in new_counts:
        write_counts(conn, hooks, name, key, values, **fixed)

    added = sum(1 for pair, a in new_pairs.items() if a and not held_pairs.get(pair))
    gone = sum(1 for pair, a in new_pairs.items() if not a and held_pairs.get(pair))
    total_pairs, total_cases = held["pairs"] + added - gone, held["cases"] + changes.cases
    state = table(COUNTS_STATE)
    conn.execute(state.update().where(state.c.id == STATE_ID).values(pairs=total_pairs, cases=total_cases))
    return StatisticsSummary(
        pairs=total_pairs,
        cases=total_cases,
        rebuilt=False,
        cases_recounted=len(cases),
        changed_pairs=len(changes.pairs),
        changed_pair_signals=changed_signal_count(conn, table),
        meddra_version=basis.meddra_version,
    )


def write_attributes(conn: Connection, hooks: RefreshHooks, counted: list[dict[str, Any]], recounted: list[str]) -> None:
    """Replace the subgroups' attributes of the ``recounted`` cases by those read with their contributions, of the
    cases ``counted`` (a follow-up may change a case's age or country without changing its drugs or reactions)."""
    attributes = hooks.table(subgroups.CASE_ATTRIBUTES)
    for clause in hooks.case_filters(attributes.c[CASE_KEY], recounted):
        conn.execute(attributes.delete().where(clause))
    hooks.insert_records(conn, attributes, counted)


def changed_signal_count(conn: Connection, table: TableNamed) -> int:
    changed = changed_statistics(table).subquery("changed")
    return int(conn.scalar(select(count_where(changed.c.signal))))


def rebuild_counts(conn: Connection, hooks: RefreshHooks, basis: Basis) -> StatisticsSummary:
    """Recompute the contributions and the counts, overall and within the subgroups, from every current case; empties
    the queue."""
    table = hooks.table
    # First off the queue: a load committing later is either seen by the statements below or stays queued
    conn.execute(table(PENDING_CASES).delete())
    case_drugs, case_reactions = table(CASE_DRUGS), table(CASE_REACTIONS)
    pairs, drugs, reactions, changed, state = (
        table(name) for name in (PAIR_COUNTS, DRUG_COUNTS, REACTION_COUNTS, CHANGED_PAIRS, COUNTS_STATE)
    )
    subgroup_tables = [table(name) for name in (SUBGROUP_PAIR_COUNTS, SUBGROUP_DRUG_COUNTS, SUBGROUP_REACTION_COUNTS, SUBGROUP_SIZES)]
    subgroup_changed = table(SUBGROUP_CHANGED_PAIRS)
    for emptied in (case_drugs, case_reactions, pairs, drugs, reactions, changed, state, *subgroup_tables, subgroup_changed):
        conn.execute(emptied.delete())
    counted = counted_drugs(table, basis.drug_roles).subquery("counted_drug")
    coded = coded_reactions(table, basis.meddra_version).subquery("coded_reaction")
    with_reaction = select(coded.c[CASE_KEY])
    conn.execute(
        case_drugs.insert().from_select(
            [CASE_KEY, "drug"],
            select(counted.c[CASE_KEY], counted.c.drug).where(counted.c.drug != "", counted.c[CASE_KEY].in_(with_reaction)).distinct(),
        )
    )
    conn.execute(
        case_reactions.insert().from_select(
            [CASE_KEY, REACTION],
            select(coded.c[CASE_KEY], coded.c[REACTION]).where(coded.c[CASE_KEY].in_(select(case_drugs.c[CASE_KEY]))).distinct(),
        )
    )
    # Each statement reads the cases as committed when it starts: a case that lost its last reaction in between
    # leaves the population (its load queued it for the next refresh)
    reacted = exists().where(case_reactions.c[CASE_KEY] == case_drugs.c[CASE_KEY])
    conn.execute(case_drugs.delete().where(~reacted))

    def counted_of(conn: Connection, members: list[str]) -> set[str]:
        found: set[str] = set()
        for clause in hooks.case_filters(case_drugs.c[CASE_KEY], members):
            found.update(conn.scalars(select(case_drugs.c[CASE_KEY]).where(clause).distinct()))
        return found

    # Duplicates count once: the members of a group other than its representative leave the population
    duplicates.rebuild_groups(conn, hooks, counted_of)
    for kept in (case_drugs, case_reactions):
        conn.execute(kept.delete().where(kept.c[CASE_KEY].in_(duplicates.left_out_of_counts(table))))
    attributes, master = table(subgroups.CASE_ATTRIBUTES), table("icsr_master")
    conn.execute(attributes.delete())
    counted_cases = subgroups.case_attributes(table, master.c[CASE_KEY].in_(select(case_drugs.c[CASE_KEY])))
    conn.execute(attributes.insert().from_select([column.name for column in counted_cases.selected_columns], counted_cases))
    # The counts overall, then within each subgroup: the same statements over the cases of each subgroup
    members = subgroups.memberships(attributes).subquery("member")
    for scope, (pair_counts, drug_counts, reaction_counts) in ((None, (pairs, drugs, reactions)), (members, subgroup_tables[:3])):
        drug_cases: FromClause = case_drugs
        keys: list[ColumnElement] = []
        if scope is not None:
            drug_cases, keys = case_drugs.join(scope, scope.c[CASE_KEY] == case_drugs.c[CASE_KEY]), [scope.c[SUBGROUP]]
        key_names = [key.name for key in keys]
        together = drug_cases.join(case_reactions, case_reactions.c[CASE_KEY] == case_drugs.c[CASE_KEY])
        pair = (case_drugs.c.drug, case_reactions.c[REACTION])
        conn.execute(
            pair_counts.insert().from_select(
                [*key_names, "drug", REACTION, "a"], select(*keys, *pair, func.count()).select_from(together).group_by(*keys, *pair)
            )
        )
        reaction_cases = case_reactions if scope is None else case_reactions.join(scope, scope.c[CASE_KEY] == case_reactions.c[CASE_KEY])
        for counts, kept, joined, key in (
            (drug_counts, case_drugs, drug_cases, "drug"),
            (reaction_counts, case_reactions, reaction_cases, REACTION),
        ):
            conn.execute(
                counts.insert().from_select(
                    [*key_names, key, "cases"], select(*keys, kept.c[key], func.count()).select_from(joined).group_by(*keys, kept.c[key])
                )
            )
    sizes = subgroup_tables[3]
    conn.execute(sizes.insert().from_select([SUBGROUP, "cases"], select(members.c[SUBGROUP], func.count()).group_by(members.c[SUBGROUP])))
    # Every pair changed, for the reports; the subgroup pairs changed only name what an incremental refresh rewrites
    conn.execute(changed.insert().from_select(["drug", REACTION], select(pairs.c.drug, pairs.c[REACTION])))
    total_cases = int(conn.scalar(select(func.count(case_drugs.c[CASE_KEY].distinct()))))
    total_pairs = int(conn.scalar(select(func.count()).select_from(pairs)))
    conn.execute(
        state.insert().values(
            id=STATE_ID,
            drug_roles=role_key(basis.drug_roles),
            **{STATE_VERSION: basis.meddra_version},
            cases=total_cases,
            pairs=total_pairs,
            rebuild=False,
        )
    )
    return StatisticsSummary(
        pairs=total_pairs,
        cases=total_cases,
        rebuilt=True,
        cases_recounted=total_cases,
        changed_pairs=total_pairs,
        changed_pair_signals=changed_signal_count(conn, table),
        meddra_version=basis.meddra_version,
    )


def queue_cases(conn: Connection, hooks: RefreshHooks, case_ids: Iterable[str]) -> None:
    """Queue cases a load wrote for the next refresh, in the load's transaction (bulk, through the loader's hook)."""
    hooks.insert_records(conn, hooks.table(PENDING_CASES), [{CASE_KEY: case_id} for case_id in case_ids])


def rebuild_on_next_refresh(conn: Connection, table: TableNamed, meddra_version: str | None = None) -> None:
    """After a full reload, or a MedDRA load of ``meddra_version`` when the counts count the PTs of that version (its
    PTs may have changed): the next refresh recomputes the counts in full (the view shows the old ones until then). A
    release of another version changes the counts' basis only if it becomes the reference, which :class:`Basis` sees."""
    state = table(COUNTS_STATE)
    update = state.update().values(rebuild=True)
    if meddra_version is not None:
        update = update.where(state.c[STATE_VERSION] == meddra_version)
    conn.execute(update)


KEPT_TABLES = (
    PENDING_CASES,
    CASE_DRUGS,
    CASE_REACTIONS,
    PAIR_COUNTS,
    DRUG_COUNTS,
    REACTION_COUNTS,
    COUNTS_STATE,
    CHANGED_PAIRS,
    SUBGROUP_PAIR_COUNTS,
    SUBGROUP_DRUG_COUNTS,
    SUBGROUP_REACTION_COUNTS,
    SUBGROUP_SIZES,
    SUBGROUP_CHANGED_PAIRS,
    duplicates.CASE_IDENTIFIERS,
    duplicates.DUPLICATE_GROUPS,
    subgroups.CASE_ATTRIBUTES,
)


def retire_earlier_counts(conn: Connection, metadata: MetaData) -> None:
    """Drop what an earlier release kept of the statistics when its columns differ from this release's (all of it is
    derived from the cases): ``drug_event_statistics`` as a table (before the counts were kept), or kept counts keyed
    otherwise. The schema's creation makes them again, empty, and the first refresh rebuilds the counts."""
    schema = metadata.schema
    inspector = inspect(conn)
    present = set(inspector.get_table_names(schema=schema))
    if COUNTS_STATE not in present:
        if STATISTICS_TABLE in present:
            Table(STATISTICS_TABLE, MetaData(schema=schema)).drop(conn)
        return
    qualified = (lambda name: f"{schema}.{name}") if schema else (lambda name: name)
    wanted = {name: set(metadata.tables[qualified(name)].columns.keys()) for name in KEPT_TABLES}
    held = {name: {column["name"] for column in inspector.get_columns(name, schema=schema)} for name in KEPT_TABLES if name in present}
    if all(held.get(name) == columns for name, columns in wanted.items()):
        return
    for view in set(inspector.get_view_names(schema=schema)) & {STATISTICS_TABLE, SUBGROUP_STATISTICS, duplicates.DUPLICATES_VIEW}:
        conn.execute(DropView(Table(view, MetaData(schema=schema))))
    for name in held:
        Table(name, MetaData(schema=schema)).drop(conn)


# The rules the view flags (meets_<rule>); EB05 needs the EBGM prior, fitted over all pairs when asked
FLAGGED_RULES = (rules.EVANS_PRR, rules.IC025, rules.EMA_SDR)


def top_pairs(target: FromClause, top: int | None, drug: str | None = None, rule: str | None = None) -> Select:
    """The rows to show first: signals, then by the lower bound of the IC (the most robust disproportionality);
    only the pairs meeting ``rule`` (one of :data:`FLAGGED_RULES`) when given."""
    order = (target.c.signal.desc(), target.c.ic025.desc(), target.c.a.desc(), target.c.drug, target.c[REACTION])
    query = select(target).order_by(*order)
    if drug is not None:
        # Normalized by the same SQL as the stored names, so that both agree on every dialect
        query = query.where(target.c.drug == drug_name(literal(drug)))
    if rule is not None:
        query = query.where(target.c[f"meets_{rule}"])
    return query if top is None else query.limit(top)


def rules_of(row: Mapping[str, Any]) -> str:
    """The rules a row of the view (with ``eb05`` when EBGM was computed) meets, comma-separated."""
    met = [rule for rule in FLAGGED_RULES if row.get(f"meets_{rule}")]
    if row.get("eb05") is not None and row["eb05"] >= rules.EB05_THRESHOLD:
        met.append(rules.EB05)
    return ", ".join(met) or "-"


# The columns a reader scans first, as the CLI and the Dagster metadata show them
SHOWN_COLUMNS = ("drug", REACTION, EVENT_NAME, "a", "b", "c", "d", "prr", "ror", "ror_lower95", "chi_square", "ic025", "signal", "rules")
EBGM_COLUMNS = ("ebgm", "eb05", "eb95")


def markdown_table(rows: Sequence[Mapping[str, Any]], extra: Sequence[str] = ()) -> str:
    """``rows`` of the table as a Markdown table of :data:`SHOWN_COLUMNS` (with EBGM's when computed, then ``extra``;
    statistics to 2 decimals, NULL as -)."""
    columns = SHOWN_COLUMNS + (EBGM_COLUMNS if rows and "eb05" in rows[0] else ()) + tuple(extra)

    def shown(row: Mapping[str, Any], name: str) -> str:
        value = rules_of(row) if name == "rules" else row[name]
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    return markdown.markdown_table(columns, [[shown(row, name) for name in columns] for row in rows])


def with_ebgm(rows: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], Any]:
    """Every pair's EBGM, EB05 and EB95 added to ``rows`` (all pairs of the view: the prior is fitted over them by
    maximum likelihood, DuMouchel's gamma-Poisson shrinker), and the fitted prior."""
    from py_load_eudravigilance import ebgm

    if not rows:
        return [], None
    a = [row["a"] for row in rows]
    expected = ebgm.expected_count([row["a"] + row["b"] for row in rows], [row["a"] + row["c"] for row in rows], [row["n"] for row in rows])
    fit = ebgm.fit_prior(a, expected)
    geometric_mean, lower, upper = ebgm.scores(a, expected, fit.prior)
    scored = [
        {**row, "ebgm": float(g), "eb05": float(low), "eb95": float(high)}
        for row, g, low, high in zip(rows, geometric_mean, lower, upper, strict=True)
    ]
    return scored, fit


def cells_check_query(target: FromClause) -> Select:
    """Rows, and rows whose 2x2 table is broken: a cell below zero (``a`` below one), or cells not adding up to ``n``."""
    cells = (target.c.a, target.c.b, target.c.c, target.c.d)
    whole = and_(target.c.a >= 1, *(cell >= 0 for cell in cells[1:]), sum(cells[1:], cells[0]) == target.c.n)
    return select(func.count(), count_where(~whole)).select_from(target)


def summary_query(target: FromClause) -> Select:
    """Pairs and signals in ``target`` (a scan of it)."""
    return select(func.count(), count_where(target.c.signal)).select_from(target)


def add_tables(metadata: MetaData) -> None:
    """The kept counts, their queue and state, and the ``drug_event_statistics`` view over them."""
    drug = "Active substance (G.k.2.3.r.1), else product name (G.k.2.2); normalized"
    reaction = "The event: PT code in the counts' MedDRA version (E.i.2.1b mapped through its LLT code), else as reported"

    def key(name: str, comment: str) -> Column:
        return Column(name, Text, primary_key=True, comment=comment)

    def cases(comment: str) -> Column:
        return Column("cases", BigInteger, nullable=False, comment=comment)

    Table(
        PENDING_CASES,
        metadata,
        Column(CASE_KEY, Text, nullable=False),
        comment="Cases loads wrote since the last refresh of the drug-event counts (a case may be queued more than once)",
    )
    population = "of each case with a counted drug and a coded reaction, as the drug-event counts hold them"
    Table(
        CASE_DRUGS,
        metadata,
        key(CASE_KEY, "Case"),
        key("drug", drug),
        # A subgroup screen's reference period reads one substance's cases (subgroups.screen)
        Index(f"ix_{CASE_DRUGS}_drug", "drug", CASE_KEY),
        comment=f"The counted drugs {population}",
    )
    Table(CASE_REACTIONS, metadata, key(CASE_KEY, "Case"), key(REACTION, reaction), comment=f"The coded reactions {population}")
    Table(
        PAIR_COUNTS,
        metadata,
        key("drug", drug),
        key(REACTION, reaction),
        Column("a", BigInteger, nullable=False, comment="Cases with the drug and the reaction"),
        comment="a of every drug-event pair reported together (drug_event_statistics derives the rest)",
    )
    Table(DRUG_COUNTS, metadata, key("drug", drug), cases("Cases with the drug (a + b)"), comment="Cases per drug")
    Table(REACTION_COUNTS, metadata, key(REACTION, reaction), cases("Cases with the reaction (a + c)"), comment="Cases per reaction")
    Table(
        COUNTS_STATE,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("drug_roles", Text, nullable=False, comment="G.k.1 roles the counts were built with, e.g. 1,3"),
        Column(STATE_VERSION, Text, comment="MedDRA version whose PTs the events are; NULL: the reported codes (no MedDRA loaded)"),
        cases("n: cases with a counted drug and a coded reaction"),
        Column("pairs", BigInteger, nullable=False, comment="Rows of drug_event_pair_counts"),
        Column("rebuild", Boolean, nullable=False, comment="A full reload emptied the cases: the next refresh rebuilds"),
        comment="The drug-event counts' one state row; no row: the next refresh builds them in full",
    )
    Table(
        CHANGED_PAIRS,
        metadata,
        key("drug", drug),
        key(REACTION, reaction),
        comment="The pairs whose a the last refresh changed (all pairs after a rebuild): what its reports cover",
    )

    # Within each subgroup the same counts, keyed by the subgroup first (a refresh reads and writes them by key)
    subgroup = "Subgroup of subgroups.SUBGROUPS (paediatric, geriatric, female, male, eea, ...): its counted cases only"
    Table(
        SUBGROUP_PAIR_COUNTS,
        metadata,
        key(SUBGROUP, subgroup),
        key("drug", drug),
        key(REACTION, reaction),
        Column("a", BigInteger, nullable=False, comment="Cases of the subgroup with the drug and the reaction"),
        comment="a of every drug-event pair reported together within a subgroup",
    )
    Table(
        SUBGROUP_DRUG_COUNTS,
        metadata,
        key(SUBGROUP, subgroup),
        key("drug", drug),
        cases("Cases of the subgroup with the drug"),
        comment="Cases per drug within a subgroup",
    )
    Table(
        SUBGROUP_REACTION_COUNTS,
        metadata,
        key(SUBGROUP, subgroup),
        key(REACTION, reaction),
        cases("Cases of the subgroup with the reaction"),
        comment="Cases per reaction within a subgroup",
    )
    Table(SUBGROUP_SIZES, metadata, key(SUBGROUP, subgroup), cases("n within the subgroup"), comment="Counted cases per subgroup")
    Table(
        SUBGROUP_CHANGED_PAIRS,
        metadata,
        key(SUBGROUP, subgroup),
        key("drug", drug),
        key(REACTION, reaction),
        comment="The pairs within a subgroup whose a the last incremental refresh changed (none after a rebuild)",
    )

    def table(name: str) -> Table:
        return metadata.tables[f"{metadata.schema}.{name}" if metadata.schema else name]

    duplicates.add_tables(metadata, table)
    subgroups.add_tables(metadata)
    add_view(metadata, STATISTICS_TABLE, statistics(stored_counts(table)))
    add_view(metadata, SUBGROUP_STATISTICS, subgroup_statistics(stored_subgroup_counts(table)))
