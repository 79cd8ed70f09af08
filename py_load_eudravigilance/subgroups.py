"""Subgroups and reference periods of the drug-event statistics, for one substance at a time.

Every case the statistics count keeps its attributes beside its contribution
(``drug_event_case_attributes``, written by the refresh for the cases it recounts): age band,
sex, region of the primary source and C.1.5. The subgroups a case is in (:data:`SUBGROUPS`: at
most one age band, one sex, one region) are part of its contribution: the refresh keeps the
counts within every subgroup as it keeps those of the population (``signals.py``), and the view
``drug_event_subgroup_statistics`` derives from them each pair's ROR within a subgroup (children,
the elderly, a sex, a region), whether EMA's SDR rule holds within it, and the relative ROR of
that subgroup against the other cases (as the eRMR shows for children and the elderly).
:func:`screen` reads that view by key for one substance's events, and counts the cases of a
reference period on request, from the substance's cases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import Column, ColumnElement, DateTime, FromClause, MetaData, Select, Table, Text, case, func, literal, select, union_all
from sqlalchemy.engine import Connection

from py_load_eudravigilance.mapping.catalog import CASE_KEY
from py_load_eudravigilance.views import TableNamed, count_where, current_cases, is_primary_source

CASE_ATTRIBUTES = "drug_event_case_attributes"
PAEDIATRIC, ADULT, GERIATRIC = "paediatric", "adult", "geriatric"
PAEDIATRIC_BELOW_YEARS, GERIATRIC_FROM_YEARS = 18, 65
# D.2.2b units (UCUM) in years
YEARS_PER_UNIT = {"a": 1.0, "10.a": 10.0, "mo": 1 / 12, "wk": 7 / 365.25, "d": 1 / 365.25, "h": 1 / 8766}
# D.2.3 age groups, when no age is given: foetus, neonate, infant, child, adolescent; adult; elderly
AGE_GROUP_BANDS = {"0": PAEDIATRIC, "1": PAEDIATRIC, "2": PAEDIATRIC, "3": PAEDIATRIC, "4": PAEDIATRIC, "5": ADULT, "6": GERIATRIC}
SEXES = {"1": "male", "2": "female"}  # D.5
# Regions of the primary source's country (C.2.r.3, ISO 3166-1): the EEA (the EU, Iceland, Liechtenstein, Norway;
# Greece also as EL), North America (UN M49 Northern America), Japan, Asia (UN M49, without Japan and Cyprus), the rest
EEA = (
    "AT BE BG HR CY CZ DK EE FI FR DE GR EL HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE IS LI NO"
).split()
NORTH_AMERICA = "US CA BM GL PM".split()
JAPAN = ["JP"]
ASIA = (
    "CN HK MO KP KR MN TW BN KH ID LA MY MM PH SG TH TL VN AF BD BT IN IR MV NP PK LK KZ KG TJ TM UZ "
    "AM AZ BH GE IQ IL JO KW LB OM QA SA PS SY TR AE YE"
).split()
REGIONS = {"EEA": EEA, "North America": NORTH_AMERICA, "Japan": JAPAN, "Asia": ASIA}
REST = "rest"
# Subgroups by name, as the CLI takes them: (attribute, value)
SUBGROUPS = {
    PAEDIATRIC: ("age_band", PAEDIATRIC),
    GERIATRIC: ("age_band", GERIATRIC),
    "female": ("sex", "female"),
    "male": ("sex", "male"),
    "eea": ("region", "EEA"),
    "north_america": ("region", "North America"),
    "japan": ("region", "Japan"),
    "asia": ("region", "Asia"),
    "rest_of_world": ("region", REST),
}


def age_band(patients: Table) -> ColumnElement[str]:
    """paediatric (under 18), adult or geriatric (65 and over) from the age at onset (D.2.2a in the unit of D.2.2b),
    else from the age group (D.2.3); NULL when neither is known."""
    unit = func.trim(patients.c.age_at_onset_unit)
    years = patients.c.age_at_onset * case(*((unit == code, factor) for code, factor in YEARS_PER_UNIT.items()), else_=None)
    group = func.trim(patients.c.age_group)
    return case(
        (years < PAEDIATRIC_BELOW_YEARS, PAEDIATRIC),
        (years >= GERIATRIC_FROM_YEARS, GERIATRIC),
        (years.is_not(None), ADULT),
        *((group == code, band) for code, band in AGE_GROUP_BANDS.items()),
        else_=None,
    )


def region(country: ColumnElement[str]) -> ColumnElement[str]:
    """The region of an ISO 3166-1 alpha-2 country code; NULL when none is given."""
    code = func.upper(func.trim(country))
    return case(*((code.in_(codes), literal(name)) for name, codes in REGIONS.items()), (func.coalesce(code, "") != "", REST), else_=None)


def case_attributes(table: TableNamed, *conditions: ColumnElement[bool]) -> Select:
    """(case, age_band, sex, region, most_recent_info) of every current case meeting ``conditions`` (on
    ``icsr_master``)."""
    master, patients, sources = table("icsr_master"), table("patient_characteristics"), table("primary_sources")
    sex = func.trim(patients.c.sex)
    return (
        select(
            master.c[CASE_KEY],
            age_band(patients).label("age_band"),
            case(*((sex == code, name) for code, name in SEXES.items()), else_=None).label("sex"),
            region(sources.c.reporter_country).label("region"),
            master.c.most_recent_info_date_utc.label("most_recent_info"),
        )
        .select_from(
            master.outerjoin(patients, patients.c[CASE_KEY] == master.c[CASE_KEY]).outerjoin(
                sources, is_primary_source(sources, master.c[CASE_KEY])
            )
        )
        .where(current_cases(master), *conditions)
    )


def subgroups_of(attributes: Mapping[str, Any]) -> frozenset[str]:
    """The subgroups of a case with ``attributes`` (a row of :func:`case_attributes`; none when empty)."""
    return frozenset(name for name, (column, value) in SUBGROUPS.items() if attributes.get(column) == value)


def memberships(attributes: FromClause) -> Select:
    """(subgroup, case) for every subgroup each case of ``attributes`` is in: :func:`subgroups_of` in SQL."""
    from py_load_eudravigilance.signals import SUBGROUP  # signals imports this module

    return union_all(
        *(
            select(literal(name).label(SUBGROUP), attributes.c[CASE_KEY]).where(attributes.c[column] == value)
            for name, (column, value) in SUBGROUPS.items()
        )
    )


def add_tables(metadata: MetaData) -> None:
    Table(
        CASE_ATTRIBUTES,
        metadata,
        Column(CASE_KEY, Text, primary_key=True, comment="Case"),
        Column("age_band", Text, comment="paediatric (< 18), adult or geriatric (>= 65) from D.2.2 or D.2.3; NULL: unknown"),
        Column("sex", Text, comment="male or female (D.5); NULL: unknown"),
        Column("region", Text, comment="EEA, North America, Japan, Asia or rest, of the primary source's country (C.2.r.3); NULL: none"),
        Column("most_recent_info", DateTime(timezone=True), comment="C.1.5"),
        comment="What the subgroups and periods of the drug-event statistics read of each case they count",
    )


class ScreenRequestError(ValueError):
    """A screen asked for without its substance, or for a subgroup that does not exist."""


def check_screen(drug: str | None, subgroups: Sequence[str], since: date | None) -> None:
    """Refuse a screen that cannot run: subgroups or a period without a substance, or an unknown subgroup."""
    if (subgroups or since) and not drug:
        raise ScreenRequestError("subgroups and periods screen one substance: give --drug too")
    unknown = sorted(set(subgroups) - set(SUBGROUPS))
    if unknown:
        raise ScreenRequestError(f"no subgroup {', '.join(unknown)}; the subgroups are {', '.join(SUBGROUPS)}")


def screen(
    conn: Connection, table: TableNamed, rows: Sequence[Mapping[str, Any]], subgroups: Sequence[str], since: date | None
) -> list[dict[str, Any]]:
    """``rows`` of ``drug_event_statistics``, each with, per subgroup: ``a_<name>``, the ROR's lower 95% bound within
    it, whether EMA's SDR rule holds within it (``ema_sdr_<name>``), and the relative ROR of the subgroup against the
    other cases with its lower bound (from ``drug_event_subgroup_statistics``; a pair with no case in the subgroup has
    ``a`` 0 and no statistic); and with ``since``, ``a_new``: the pair's cases whose information (C.1.5) is from that
    day on. Screened substance by substance (a product named by ``--drug`` may hold several), in the rows' order."""
    by_drug: dict[str, list[int]] = {}
    for number, row in enumerate(rows):
        by_drug.setdefault(row["drug"], []).append(number)
    screened: dict[int, dict[str, Any]] = {}
    for numbers in by_drug.values():
        found = _screen_substance(conn, table, [rows[number] for number in numbers], subgroups, since)
        screened.update(zip(numbers, found, strict=True))
    return [screened[number] for number in range(len(rows))]


def _screen_substance(
    conn: Connection, table: TableNamed, rows: Sequence[Mapping[str, Any]], subgroups: Sequence[str], since: date | None
) -> list[dict[str, Any]]:
    """:func:`screen` of the rows of one substance (at least one row): the kept statistics of its events within the
    subgroups, read by their key (subgroup, drug, event)."""
    # signals imports this module
    from py_load_eudravigilance.signals import CASE_DRUGS, CASE_REACTIONS, REACTION, SUBGROUP, SUBGROUP_STATISTICS

    drug = rows[0]["drug"]
    events = [row[REACTION] for row in rows]
    within: dict[tuple[str, str], Mapping[str, Any]] = {}
    if subgroups:
        view = table(SUBGROUP_STATISTICS)
        keyed = select(view).where(view.c[SUBGROUP].in_(list(subgroups)), view.c.drug == drug, view.c[REACTION].in_(events))
        within = {(row[SUBGROUP], row[REACTION]): row for row in conn.execute(keyed).mappings()}
    new_cases: dict[str, int] = {}
    if since is not None:
        attributes, case_drugs, case_reactions = table(CASE_ATTRIBUTES), table(CASE_DRUGS), table(CASE_REACTIONS)
        is_new = attributes.c.most_recent_info >= datetime(since.year, since.month, since.day, tzinfo=timezone.utc)
        pairs = case_drugs.join(attributes, attributes.c[CASE_KEY] == case_drugs.c[CASE_KEY]).join(
            case_reactions, case_reactions.c[CASE_KEY] == case_drugs.c[CASE_KEY]
        )
        event = case_reactions.c[REACTION]
        new_of_drug = select(event, count_where(is_new)).select_from(pairs).where(case_drugs.c.drug == drug, event.in_(events))
        new_cases = {code: new for code, new in conn.execute(new_of_drug.group_by(event))}
    screened = []
    for row in rows:
        code, extra = row[REACTION], {}
        for name in subgroups:
            kept = within.get((name, code), {})
            extra |= {
                f"a_{name}": kept.get("a", 0),
                f"ror_lower95_{name}": kept.get("ror_lower95"),
                f"ema_sdr_{name}": bool(kept.get("meets_ema_sdr")),
                f"relative_ror_{name}": kept.get("relative_ror"),
                f"relative_ror_lower95_{name}": kept.get("relative_ror_lower95"),
            }
        if since is not None:
            extra["a_new"] = new_cases.get(code, 0)
        screened.append({**row, **extra})
    return screened


def screen_columns(subgroups: Sequence[str], since: date | None) -> tuple[str, ...]:
    """The columns :func:`screen` adds, in the order the CLI shows them."""
    per_subgroup = ("a_{}", "ror_lower95_{}", "ema_sdr_{}", "relative_ror_{}", "relative_ror_lower95_{}")
    return tuple(column.format(name) for name in subgroups for column in per_subgroup) + (("a_new",) if since else ())
