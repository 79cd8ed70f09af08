"""The analyst views, generated with SQLAlchemy Core on the schema's tables and created with them.

``cases`` is one row per case that is not nullified, ``case_drug_reactions`` one row per pair of a
drug and a reaction of such a case. Coded columns come with ``_label`` columns read from
``e2b_code_lists``; reactions come with their MedDRA PT, HLT, HLGT and SOC (primary SOC path) when
the reaction's MedDRA version has been loaded with ``eudravigloader meddra load``.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import ColumnElement, MetaData, Table, and_, case, false, func, literal, literal_column, not_, or_, select
from sqlalchemy.schema import CreateView
from sqlalchemy.sql import Select

from py_load_eudravigilance.mapping.catalog import CASE_KEY
from py_load_eudravigilance.mapping.code_lists import CODE_LIST_TABLE, coded_columns
from py_load_eudravigilance.meddra import HIERARCHY_TABLE, LLT_TABLE, VERSION

CASES_VIEW = "cases"
CASE_DRUG_REACTIONS_VIEW = "case_drug_reactions"
AUDIT_LATEST_VIEW = "icsr_audit_latest"
AUDIT_TABLE = "icsr_audit_log"

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


def label_of(codes: Table, column: ColumnElement, element: str) -> ColumnElement:
    """The label of ``column``'s code in ``element``'s code list (NULL for a code outside it)."""
    return select(codes.c.label).where(codes.c.element == element, codes.c.code == column).scalar_subquery()


def with_label(codes: Table, table: Table, column: str) -> list[ColumnElement]:
    """A coded column and its ``_label`` column."""
    return [table.c[column], label_of(codes, table.c[column], _element_of(table.name, column)).label(f"{column}_label")]


def count_where(condition: ColumnElement[bool]) -> ColumnElement[int]:
    """How many rows of a query meet ``condition`` (0, not NULL, when there are none)."""
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def is_serious(reactions: Table) -> ColumnElement[bool]:
    return or_(*(func.coalesce(reactions.c[name], false()) for name in SERIOUSNESS_CRITERIA))


def current_cases(master: Table) -> ColumnElement[bool]:
    """Cases whose newest version is not a nullification (nullified cases keep their rows, for the record)."""
    return not_(func.coalesce(master.c.is_nullified, false()))


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
    master, drugs, reactions = table("icsr_master"), table("drugs"), table("reactions")
    codes, llt, hierarchy = table(CODE_LIST_TABLE), table(LLT_TABLE), table(HIERARCHY_TABLE)
    assessed = causality(table("drug_reaction_matrix"), table("drug_reaction_assessments")).subquery("assessed")
    joined = (
        master.join(drugs, drugs.c[CASE_KEY] == master.c[CASE_KEY])
        .join(reactions, reactions.c[CASE_KEY] == master.c[CASE_KEY])
        .outerjoin(
            assessed,
            and_(
                assessed.c[CASE_KEY] == drugs.c[CASE_KEY],
                assessed.c.drug_seq == drugs.c.drug_seq,
                assessed.c.reaction_xml_id == reactions.c.reaction_xml_id,
            ),
        )
        .outerjoin(llt, and_(llt.c[VERSION] == reactions.c.reaction_meddra_version, llt.c.llt_code == reactions.c.reaction_meddra_code))
        .outerjoin(
            hierarchy,
            and_(hierarchy.c[VERSION] == llt.c[VERSION], hierarchy.c.pt_code == llt.c.pt_code, hierarchy.c.primary_soc),
        )
    )
    return (
        select(
            master.c[CASE_KEY],
            drugs.c.drug_seq,
            reactions.c.reaction_seq,
            drugs.c.medicinal_product,
            *with_label(codes, drugs, "drug_role"),
            reactions.c.reaction_meddra_version,
            reactions.c.reaction_meddra_code,
            reactions.c.primary_source_reaction,
            is_serious(reactions).label("serious"),
            *with_label(codes, reactions, "outcome"),
            assessed.c.causality,
            *(column for level in MEDDRA_LEVELS for column in (hierarchy.c[f"{level}_code"], hierarchy.c[f"{level}_name"])),
        )
        .select_from(joined)
        .where(current_cases(master))
    )


def primary_source_country(sources: Table, master: Table) -> ColumnElement[str]:
    """C.2.r.3 of the case's primary source for regulatory purposes (C.2.r.5 = 1), else of the first one listed."""
    return (
        select(sources.c.reporter_country)
        .where(sources.c[CASE_KEY] == master.c[CASE_KEY])
        .order_by(case((sources.c.primary_source_for_regulatory_purposes == 1, 0), else_=1), sources.c.reporter_seq)
        .limit(1)
        .scalar_subquery()
    )


def cases(table: TableNamed) -> Select:
    master, patients, reactions, drugs, sources = (
        table(name) for name in ("icsr_master", "patient_characteristics", "reactions", "drugs", "primary_sources")
    )
    codes = table(CODE_LIST_TABLE)
    primary_source = primary_source_country(sources, master)

    def count_of(child: Table) -> ColumnElement[int]:
        return select(func.count()).select_from(child).where(child.c[CASE_KEY] == master.c[CASE_KEY]).scalar_subquery()

    serious = select(reactions.c[CASE_KEY]).where(reactions.c[CASE_KEY] == master.c[CASE_KEY], is_serious(reactions)).exists()
    return (
        select(
            master.c[CASE_KEY],
            master.c.worldwide_unique_case_id,
            *with_label(codes, master, "report_type"),
            master.c.first_received_date_utc,
            master.c.most_recent_info_date_utc,
            *with_label(codes, master, "sender_type"),
            primary_source.label("primary_source_country"),
            *with_label(codes, patients, "sex"),
            patients.c.age_at_onset,
            *with_label(codes, patients, "age_at_onset_unit"),
            *with_label(codes, patients, "age_group"),
            serious.label("serious"),
            count_of(drugs).label("drug_count"),
            count_of(reactions).label("reaction_count"),
            *with_label(codes, master, "nullification_amendment"),
            master.c.version_count,
        )
        .select_from(master.outerjoin(patients, patients.c[CASE_KEY] == master.c[CASE_KEY]))
        .where(current_cases(master))
    )


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
        CreateView(query(table), name, metadata=metadata, schema=metadata.schema)
