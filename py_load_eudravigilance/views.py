"""The analyst views, generated with SQLAlchemy Core on the schema's tables and created with them.

``cases`` is one row per case that is not nullified, ``case_drug_reactions`` one row per pair of a
drug and a reaction of such a case (its drug's substances, the case's primary source and the pair's
drug-reaction matrix entry are read without adding rows). Coded columns come with ``_label``
columns read from ``e2b_code_lists``; reactions come with their MedDRA PT, HLT, HLGT and SOC
(primary SOC path) when the reaction's MedDRA version has been loaded with ``eudravigloader meddra load``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from sqlalchemy import ColumnElement, MetaData, Table, and_, case, false, func, literal, literal_column, not_, or_, select
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateView
from sqlalchemy.sql import FromClause, Select

from py_load_eudravigilance.mapping.catalog import AUDIT_LOG, CASE_KEY
from py_load_eudravigilance.mapping.code_lists import CODE_LIST_TABLE, coded_columns
from py_load_eudravigilance.meddra import HIERARCHY_TABLE, LLT_TABLE, VERSION

CASES_VIEW = "cases"
CASE_DRUG_REACTIONS_VIEW = "case_drug_reactions"
AUDIT_LATEST_VIEW = "icsr_audit_latest"
AUDIT_TABLE = AUDIT_LOG.name
DEFINITIONS_TABLE = "etl_view_definitions"

# Seriousness criteria of a reaction (E.i.3.2a-f and the FDA's E.i.3.2h): any true makes it serious
SERIOUSNESS_CRITERIA = (
    "results_in_death",
    "life_threatening",
    "caused_prolonged_hospitalisation",
    "disabling_incapacitating",
    "congenital_anomaly_birth_defect",
    "other_medically_important_condition",
    "fda_required_intervention",
)
MEDDRA_LEVELS = ("pt", "hlt", "hlgt", "soc")

TableNamed = Callable[[str], Table]


def _element_of(table: str, column: str) -> str:
    return next(element for element, place in coded_columns().items() if place == (table, column))


class Labels:
    """The ``_label`` columns of a query's coded values, each read by an outer join of ``e2b_code_lists``: databases
    hash-join the small table, where a subquery per label looked it up again for every row."""

    def __init__(self, codes: Table) -> None:
        self.codes = codes
        self.joins: list[tuple[FromClause, ColumnElement[bool]]] = []

    def of(self, value: ColumnElement, element: str, name: str) -> list[ColumnElement]:
        """``value`` shown as ``name``, and its label in ``element``'s code list as ``<name>_label`` (NULL for a code
        outside the list)."""
        codes = self.codes.alias(f"{name}_code")
        self.joins.append((codes, and_(codes.c.element == element, codes.c.code == value)))
        return [value.label(name), codes.c.label.label(f"{name}_label")]

    def column(self, table: Table, column: str, name: str | None = None) -> list[ColumnElement]:
        """A coded column of the data dictionary and its label, shown as ``name`` (default: the column's)."""
        return self.of(table.c[column], _element_of(table.name, column), name or column)

    def joined(self, source: FromClause) -> FromClause:
        """``source`` with the code lists the labels read joined."""
        for codes, on in self.joins:
            source = source.outerjoin(codes, on)
        return source


def count_where(condition: ColumnElement[bool]) -> ColumnElement[int]:
    """How many rows of a query meet ``condition`` (0, not NULL, when there are none)."""
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def is_serious(reactions: Table) -> ColumnElement[bool]:
    return or_(*(func.coalesce(reactions.c[name], false()) for name in SERIOUSNESS_CRITERIA))


def current_cases(master: Table) -> ColumnElement[bool]:
    """Cases whose newest version is not a nullification (nullified cases keep their rows, for the record)."""
    return not_(func.coalesce(master.c.is_nullified, false()))


def is_primary_source(sources: Table, case_key: ColumnElement) -> ColumnElement[bool]:
    """Join condition: the row of ``sources`` is the case's primary source for regulatory purposes (C.2.r.5 = 1), else
    the first one listed; at most one row per case, so joining it adds no rows."""
    other = sources.alias("other_source")
    first = (
        select(other.c.reporter_seq)
        .where(other.c[CASE_KEY] == case_key)
        .order_by(case((other.c.primary_source_for_regulatory_purposes == 1, 0), else_=1), other.c.reporter_seq)
        .limit(1)
        .correlate_except(other)
        .scalar_subquery()
    )
    return and_(sources.c[CASE_KEY] == case_key, sources.c.reporter_seq == first)


def of_the_pair(rows: FromClause, drugs: Table, reactions: Table) -> ColumnElement[bool]:
    """Join condition: the rows of ``rows`` (keyed by case, drug and reaction XML id) of one drug-reaction pair."""
    return and_(
        rows.c[CASE_KEY] == drugs.c[CASE_KEY],
        rows.c.drug_seq == drugs.c.drug_seq,
        rows.c.reaction_xml_id == reactions.c.reaction_xml_id,
    )


def active_substances(substances: Table, drugs: Table) -> ColumnElement[str]:
    """The drug's active substance names (G.k.2.3.r.1) as reported, ``; ``-separated in the report's order; NULL when
    it names none. One value per drug, so that several substances never multiply the drug's rows."""
    listed = (
        select(substances.c.substance_name)
        .where(
            substances.c[CASE_KEY] == drugs.c[CASE_KEY],
            substances.c.drug_seq == drugs.c.drug_seq,
            func.trim(substances.c.substance_name) != "",
        )
        # Aggregated from a sorted subquery: the form both dialects keep the order of (SQLite before 3.44 has no
        # ORDER BY inside an aggregate)
        .order_by(substances.c.substance_seq)
        .correlate(drugs)
        .subquery("listed")
    )
    return select(func.aggregate_strings(listed.c.substance_name, "; ")).scalar_subquery()


def causality(matrix: Table, assessments: Table) -> Select:
    """Each drug-reaction pair's assessments as one text: ``source / method / result``, ``; ``-separated."""

    def part(name: str) -> ColumnElement:  # an EU assessment (G.k.9.i.2.r.*.EU.1) shows its codes
        return func.coalesce(assessments.c[name], assessments.c[f"eu_{name}"], literal(""))

    assessment = (
        part("source_of_assessment") + literal(" / ") + part("method_of_assessment") + literal(" / ") + part("result_of_assessment")
    )
    keys = (matrix.c[CASE_KEY], matrix.c.drug_seq, matrix.c.reaction_xml_id)
    return (
        select(*keys, func.aggregate_strings(assessment, "; ").label("causality"))
        .select_from(
            matrix.join(
                assessments,
                and_(
                    assessments.c[CASE_KEY] == matrix.c[CASE_KEY],
                    assessments.c.drug_seq == matrix.c.drug_seq,
                    assessments.c.matrix_seq == matrix.c.matrix_seq,
                ),
            )
        )
        .group_by(*keys)
    )


def case_drug_reactions(table: TableNamed) -> Select:
    master, drugs, reactions, matrix = table("icsr_master"), table("drugs"), table("reactions"), table("drug_reaction_matrix")
    sources, llt, hierarchy = table("primary_sources"), table(LLT_TABLE), table(HIERARCHY_TABLE)
    labels = Labels(table(CODE_LIST_TABLE))
    assessed = causality(matrix, table("drug_reaction_assessments")).subquery("assessed")
    joined = (
        master.join(drugs, drugs.c[CASE_KEY] == master.c[CASE_KEY])
        .join(reactions, reactions.c[CASE_KEY] == master.c[CASE_KEY])
        # The pair's matrix entry (G.k.9.i): the mapper writes one per reaction a drug lists, so the grain stays
        .outerjoin(matrix, of_the_pair(matrix, drugs, reactions))
        .outerjoin(assessed, of_the_pair(assessed, drugs, reactions))
        .outerjoin(sources, is_primary_source(sources, master.c[CASE_KEY]))
        .outerjoin(llt, and_(llt.c[VERSION] == reactions.c.reaction_meddra_version, llt.c.llt_code == reactions.c.reaction_meddra_code))
        .outerjoin(
            hierarchy,
            and_(hierarchy.c[VERSION] == llt.c[VERSION], hierarchy.c.pt_code == llt.c.pt_code, hierarchy.c.primary_soc),
        )
    )
    columns = (
        master.c[CASE_KEY],
        drugs.c.drug_seq,
        reactions.c.reaction_seq,
        drugs.c.medicinal_product,
        active_substances(table("drug_substances"), drugs).label("active_substances"),
        *labels.column(drugs, "drug_role"),
        *labels.column(drugs, "action_taken"),
        reactions.c.reaction_meddra_version,
        reactions.c.reaction_meddra_code,
        reactions.c.primary_source_reaction,
        is_serious(reactions).label("serious"),
        *(reactions.c[criterion] for criterion in SERIOUSNESS_CRITERIA),
        *labels.column(reactions, "outcome"),
        # Time to onset is the interval from the start of the drug (G.k.9.i.3.1); from its last dose, G.k.9.i.3.2
        matrix.c.interval_start_to_reaction.label("time_to_onset"),
        *labels.column(matrix, "interval_start_to_reaction_unit", "time_to_onset_unit"),
        matrix.c.interval_last_dose_to_reaction.label("time_from_last_dose"),
        *labels.column(matrix, "interval_last_dose_to_reaction_unit", "time_from_last_dose_unit"),
        *labels.column(matrix, "recurrence_on_readministration", "rechallenge"),
        assessed.c.causality,
        *labels.column(sources, "qualification", "reporter_qualification"),
        *(column for level in MEDDRA_LEVELS for column in (hierarchy.c[f"{level}_code"], hierarchy.c[f"{level}_name"])),
    )
    return select(*columns).select_from(labels.joined(joined)).where(current_cases(master))


def cases(table: TableNamed) -> Select:
    master, patients, reactions, drugs, sources = (
        table(name) for name in ("icsr_master", "patient_characteristics", "reactions", "drugs", "primary_sources")
    )
    labels = Labels(table(CODE_LIST_TABLE))

    def count_of(child: Table) -> ColumnElement[int]:
        return select(func.count()).select_from(child).where(child.c[CASE_KEY] == master.c[CASE_KEY]).scalar_subquery()

    serious = select(reactions.c[CASE_KEY]).where(reactions.c[CASE_KEY] == master.c[CASE_KEY], is_serious(reactions)).exists()
    columns = (
        master.c[CASE_KEY],
        master.c.worldwide_unique_case_id,
        *labels.column(master, "report_type"),
        master.c.first_received_date_utc,
        master.c.most_recent_info_date_utc,
        *labels.column(master, "sender_type"),
        sources.c.reporter_country.label("primary_source_country"),
        *labels.column(patients, "sex"),
        patients.c.age_at_onset,
        *labels.column(patients, "age_at_onset_unit"),
        *labels.column(patients, "age_group"),
        serious.label("serious"),
        count_of(drugs).label("drug_count"),
        count_of(reactions).label("reaction_count"),
        *labels.column(master, "nullification_amendment"),
        master.c.version_count,
    )
    joined = master.outerjoin(patients, patients.c[CASE_KEY] == master.c[CASE_KEY]).outerjoin(
        sources, is_primary_source(sources, master.c[CASE_KEY])
    )
    return select(*columns).select_from(labels.joined(joined)).where(current_cases(master))


def audit_latest(table: TableNamed) -> Select:
    """The latest version of each case in the audit log, ranked as :func:`loaders.ledger.outranks` ranks them."""
    audit = table(AUDIT_TABLE)
    order = (
        case((audit.c.is_nullification, 1), else_=0).desc(),
        audit.c.most_recent_info_date_utc.desc(),
        func.coalesce(audit.c.message_creation_time_utc, literal_column("'0001-01-01 00:00:00'")).desc(),
        audit.c.file_name.asc(),
        audit.c.file_sha256.asc(),
        audit.c.message_position.desc(),
    )
    rank = func.row_number().over(partition_by=audit.c[CASE_KEY], order_by=order).label("version_rank")
    ranked = select(audit, rank).subquery("ranked")
    return select(ranked).where(ranked.c.version_rank == 1)


def add_views(metadata: MetaData) -> None:
    """Register the views on ``metadata``: ``create_all`` creates them after their tables."""

    def table(name: str) -> Table:
        return metadata.tables[f"{metadata.schema}.{name}" if metadata.schema else name]

    for name, query in ((AUDIT_LATEST_VIEW, audit_latest), (CASES_VIEW, cases), (CASE_DRUG_REACTIONS_VIEW, case_drug_reactions)):
        add_view(metadata, name, query(table))


# Where a view's Table keeps the CreateView that makes it (Table.info is SQLAlchemy's place for an application's own data)
CREATE_VIEW = "create_view"


def add_view(metadata: MetaData, name: str, query: Select) -> Table:
    """Register view ``name`` of ``query`` on ``metadata`` (``create_all`` creates it after its tables), keeping its
    CREATE VIEW for :func:`view_definition`."""
    statement = CreateView(query, name, metadata=metadata, schema=metadata.schema)
    statement.table.info[CREATE_VIEW] = statement
    return statement.table


def view_definition(view: Table, dialect: Dialect) -> str:
    """SHA-256 of the CREATE VIEW statement ``create_all`` issues for ``view`` on ``dialect``: what tells a view an
    earlier release made with another query (same columns or not) from this release's."""
    return hashlib.sha256(str(view.info[CREATE_VIEW].compile(dialect=dialect)).encode()).hexdigest()
