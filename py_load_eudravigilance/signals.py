"""Drug-event disproportionality: the 2x2 counts and signal statistics of every drug and reaction.

The table ``drug_event_statistics`` is computed in the database, by one ``INSERT ... SELECT`` built
here with SQLAlchemy Core, over the current versions of the cases that are not nullified. Counts
are of distinct cases among the ``n`` cases that have at least one counted drug and one coded
reaction: ``a`` with the drug and the reaction, ``b`` the drug without the reaction, ``c`` the
reaction without the drug, ``d`` neither. Each statistic is built as a small expression below
(read them as the formulas in docs/signals.md); one whose formula divides by zero or takes the
logarithm of zero is NULL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    Double,
    Insert,
    MetaData,
    Select,
    Table,
    Text,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    or_,
    select,
)

from py_load_eudravigilance.mapping.catalog import CASE_KEY
from py_load_eudravigilance.views import TableNamed, count_where, current_cases

STATISTICS_TABLE = "drug_event_statistics"
# G.k.1 drug roles counted by default: suspect (1) and interacting (3)
DEFAULT_DRUG_ROLES = ("1", "3")
COUNTS = ("a", "b", "c", "d", "n")
STATISTICS = ("prr", "prr_lower95", "prr_upper95", "ror", "ror_lower95", "ror_upper95", "chi_square", "ic", "ic025", "ic975")
Z95 = 1.96

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


def coded_reactions(table: TableNamed) -> Select:
    """(case, MedDRA code) for every coded reaction of a current case."""
    master, reactions = table("icsr_master"), table("reactions")
    code = func.trim(reactions.c.reaction_meddra_code)
    return (
        select(master.c[CASE_KEY], code.label("reaction_meddra_code"))
        .select_from(master.join(reactions, reactions.c[CASE_KEY] == master.c[CASE_KEY]))
        .where(current_cases(master), func.coalesce(code, "") != "")
    )


def contingency_counts(table: TableNamed, drug_roles: Sequence[str]) -> Select:
    """a, b, c, d and n of every (drug, reaction) pair reported together at least once."""
    drugs = counted_drugs(table, drug_roles).cte("counted_drug")
    reactions = coded_reactions(table).cte("coded_reaction")
    # The cases counted: at least one counted drug and one coded reaction
    with_both = and_(drugs.c.drug != "", drugs.c[CASE_KEY].in_(select(reactions.c[CASE_KEY])))
    population = select(drugs.c[CASE_KEY]).where(with_both).distinct().cte("population")
    in_population = select(population.c[CASE_KEY])
    drug_cases = (
        select(drugs.c[CASE_KEY], drugs.c.drug).where(drugs.c.drug != "", drugs.c[CASE_KEY].in_(in_population)).distinct().cte("drug_case")
    )
    event_cases = (
        select(reactions.c[CASE_KEY], reactions.c.reaction_meddra_code)
        .where(reactions.c[CASE_KEY].in_(in_population))
        .distinct()
        .cte("event_case")
    )
    pairs = (
        select(drug_cases.c.drug, event_cases.c.reaction_meddra_code, func.count().label("a"))
        .select_from(drug_cases.join(event_cases, event_cases.c[CASE_KEY] == drug_cases.c[CASE_KEY]))
        .group_by(drug_cases.c.drug, event_cases.c.reaction_meddra_code)
        .subquery("pair")
    )
    with_drug = select(drug_cases.c.drug, func.count().label("cases")).group_by(drug_cases.c.drug).subquery("with_drug")
    with_event = (
        select(event_cases.c.reaction_meddra_code, func.count().label("cases"))
        .group_by(event_cases.c.reaction_meddra_code)
        .subquery("with_event")
    )
    n = select(func.count()).select_from(population).scalar_subquery()
    return select(
        pairs.c.drug,
        pairs.c.reaction_meddra_code,
        pairs.c.a,
        (with_drug.c.cases - pairs.c.a).label("b"),
        (with_event.c.cases - pairs.c.a).label("c"),
        (n - with_drug.c.cases - with_event.c.cases + pairs.c.a).label("d"),
        n.label("n"),
    ).select_from(
        pairs.join(with_drug, with_drug.c.drug == pairs.c.drug).join(
            with_event, with_event.c.reaction_meddra_code == pairs.c.reaction_meddra_code
        )
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


def point_estimates(counts: Select) -> Select:
    """PRR, ROR, Yates' chi-square and the IC, with the standard errors of log PRR and log ROR."""
    cells = counts.subquery("cells")
    a, b, c, d, n = (real(cells.c[name]) for name in COUNTS)
    expected = (a + b) * (a + c) / func.nullif(n, 0.0)
    yates = func.abs(a * d - b * c) - n / 2.0
    return select(
        *cells.c,
        ratio(ratio(a, a + b), ratio(c, c + d)).label("prr"),
        func.sqrt(ratio(1, a) - ratio(1, a + b) + ratio(1, c) - ratio(1, c + d)).label("prr_se"),
        ratio(a * d, b * c).label("ror"),
        func.sqrt(ratio(1, a) + ratio(1, b) + ratio(1, c) + ratio(1, d)).label("ror_se"),
        ratio(n * yates * yates, (a + b) * (c + d) * (a + c) * (b + d)).label("chi_square"),
        ratio(log(a + 0.5), func.ln(2.0)).label("log2_observed"),
        ratio(log(expected + 0.5), func.ln(2.0)).label("log2_expected"),
    )


def statistics(counts: Select) -> Select:
    """Every column of ``drug_event_statistics``: counts, estimates, their 95% intervals and the signal flag."""
    estimates = point_estimates(counts).subquery("estimates")
    e = estimates.c
    ic = e.log2_observed - e.log2_expected
    half_a = real(e.a) + 0.5
    root = func.sqrt(half_a)
    ic025 = ic - 3.3 / root - 2.0 / (half_a * root)
    ic975 = ic + 2.4 / root - 0.5 / (half_a * root)

    def interval(estimate: ColumnElement, se: ColumnElement, sign: float) -> ColumnElement[float]:
        return func.exp(log(estimate) + sign * Z95 * se)

    evans = and_(e.a >= 3, e.prr >= 2.0, e.chi_square >= 4.0)
    signal = case((or_(evans, ic025 > 0.0), True), else_=false())
    return select(
        e.drug,
        e.reaction_meddra_code,
        *(e[name] for name in COUNTS),
        e.prr,
        interval(e.prr, e.prr_se, -1).label("prr_lower95"),
        interval(e.prr, e.prr_se, 1).label("prr_upper95"),
        e.ror,
        interval(e.ror, e.ror_se, -1).label("ror_lower95"),
        interval(e.ror, e.ror_se, 1).label("ror_upper95"),
        e.chi_square,
        ic.label("ic"),
        ic025.label("ic025"),
        ic975.label("ic975"),
        signal.label("signal"),
    )


def refresh_statements(table: TableNamed, drug_roles: Sequence[str] = DEFAULT_DRUG_ROLES) -> tuple[object, Insert]:
    """The two statements of a refresh, run in one transaction: empty the table, compute it again."""
    target = table(STATISTICS_TABLE)
    query = statistics(contingency_counts(table, drug_roles))
    return target.delete(), target.insert().from_select([column.name for column in query.selected_columns], query)


def top_pairs(target: Table, top: int, drug: str | None = None) -> Select:
    """The rows to show first: signals, then by the lower bound of the IC (the most robust disproportionality)."""
    order = (target.c.signal.desc(), target.c.ic025.desc(), target.c.a.desc(), target.c.drug, target.c.reaction_meddra_code)
    query = select(target).order_by(*order)
    if drug is not None:
        # Normalized by the same SQL as the stored names, so that both agree on every dialect
        query = query.where(target.c.drug == drug_name(literal(drug)))
    return query.limit(top)


# The columns a reader scans first, as the CLI and the Dagster metadata show them
SHOWN_COLUMNS = ("drug", "reaction_meddra_code", "a", "b", "c", "d", "prr", "prr_lower95", "ror", "chi_square", "ic025", "signal")


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """``rows`` of the table as a Markdown table of :data:`SHOWN_COLUMNS` (statistics to 2 decimals, NULL as -)."""

    def shown(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(SHOWN_COLUMNS) + " |", "|" + "---|" * len(SHOWN_COLUMNS)]
    lines += ["| " + " | ".join(shown(row[name]) for name in SHOWN_COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def cells_check_query(target: Table) -> Select:
    """Rows, and rows whose 2x2 table is broken: a cell below zero (``a`` below one), or cells not adding up to ``n``."""
    cells = (target.c.a, target.c.b, target.c.c, target.c.d)
    whole = and_(target.c.a >= 1, *(cell >= 0 for cell in cells[1:]), sum(cells[1:], cells[0]) == target.c.n)
    return select(func.count(), count_where(~whole))


def summary_query(target: Table) -> Select:
    """Pairs and signals in the table."""
    return select(func.count(), count_where(target.c.signal))


@dataclass(frozen=True)
class StatisticsSummary:
    pairs: int
    signals: int


def add_table(metadata: MetaData) -> None:
    Table(
        STATISTICS_TABLE,
        metadata,
        Column("drug", Text, primary_key=True, comment="Active substance (G.k.2.3.r.1), else product name (G.k.2.2); normalized"),
        Column("reaction_meddra_code", Text, primary_key=True, comment="E.i.2.1b MedDRA code as reported"),
        *(Column(name, BigInteger, nullable=False) for name in COUNTS),
        *(Column(name, Double) for name in STATISTICS),
        Column("signal", Boolean, nullable=False, comment="a >= 3, PRR >= 2 and chi-square >= 4 (Evans), or IC025 > 0"),
        comment="Drug-event disproportionality over current, non-nullified cases (eudravigloader signals; docs/signals.md)",
    )
