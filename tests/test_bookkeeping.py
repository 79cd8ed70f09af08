"""The bookkeeping tables (audit log, file history, quarantine) and the master's tail are declared once, in the catalog:
the SQLAlchemy tables, the staged layout and the Python core's rows all follow that declaration."""

from __future__ import annotations

from py_load_eudravigilance.mapping import catalog
from py_load_eudravigilance.mapping.catalog import AUDIT_LOG, BOOKKEEPING_TABLES, MASTER_TAIL, QUARANTINE, Fact, staged_facts
from py_load_eudravigilance.schema import MASTER_TABLE, METADATA, sql_type
from py_load_eudravigilance.staging.copybinary import FAMILIES
from py_load_eudravigilance.staging.layout import STAGED_COLUMNS, STAGED_FAMILIES
from py_load_eudravigilance.staging.reference import AUDIT_FACTS, MASTER_TAIL_FACTS


def test_the_schema_builds_the_bookkeeping_tables_from_the_declaration() -> None:
    for declared in BOOKKEEPING_TABLES:
        table = METADATA.tables[declared.name]
        assert table.comment == declared.comment
        assert [c.name for c in table.columns] == [c.name for c in declared.columns]
        for column in declared.columns:
            built = table.columns[column.name]
            assert type(built.type) is type(sql_type(column.type)), column.name
            assert built.nullable == (column.nullable and not column.primary_key), column.name
            assert (built.primary_key, built.comment) == (column.primary_key, column.comment), column.name
            assert (built.server_default is not None) == column.load_stamp, column.name
            assert (built.autoincrement is True) == column.identity, column.name


def test_the_staged_layout_is_the_declared_staged_columns_with_their_families() -> None:
    for declared in (AUDIT_LOG, QUARANTINE):
        staged = declared.staged_columns()
        assert STAGED_COLUMNS[declared.name] == tuple(c.name for c in staged)
        assert STAGED_FAMILIES[declared.name] == tuple(c.type.value for c in staged)
        assert set(STAGED_FAMILIES[declared.name]) <= set(FAMILIES)
        assert not any(c.identity or c.load_stamp for c in staged)


def test_staged_audit_and_master_tail_columns_each_name_the_message_fact_that_fills_them() -> None:
    assert AUDIT_FACTS == staged_facts(AUDIT_LOG.columns) == tuple(c.fact for c in AUDIT_LOG.staged_columns())
    assert len(set(AUDIT_FACTS)) == len(AUDIT_FACTS) and Fact.VERSION_COUNT not in AUDIT_FACTS
    assert {Fact.ROW_COUNTS, Fact.PAYLOAD}.isdisjoint(MASTER_TAIL_FACTS.values())  # known only once the rows are written
    assert list(MASTER_TAIL_FACTS.values()).count(Fact.VERSION_COUNT) == 1


def test_the_master_tail_ends_the_master_table_and_its_staged_part_ends_the_staged_row() -> None:
    master = [c.name for c in catalog.case_table_columns()[MASTER_TABLE]]
    assert master[-len(MASTER_TAIL) :] == [c.name for c in MASTER_TAIL]
    staged_tail = [c.name for c in MASTER_TAIL if c.staged]
    assert list(STAGED_COLUMNS[MASTER_TABLE][-len(staged_tail) :]) == staged_tail
    assert catalog.LOAD_STAMPS == {"loaded_at", "quarantined_at"}
