"""The compiled staging core: the plan it runs, built from the Python mapper's own compiled tables.

The data dictionary stays the one source. The Python mapper compiles it (``mapping/mapper.py``):
each table's field paths and its child tables' row paths into one trie of slots. This module hands
those tries, slot for slot, to the C core (``mapping/_core.pyx``), and the paths the Python mapper
leaves to lxml's XPath (unions, ``ancestor::``, node sets bound to variables) as parsed by
:func:`paths.parse_expression`. Fields the core does not do itself (computed ones, attachments)
call back into the Python mapper's code for that field, and so do values its fast conversions
do not cover: the bytes are the same either way, and ``tests/test_compiled.py`` checks it. The
staged audit row and the master row's tail reach the core as data too: the catalog's columns, as
the codes of the message facts that fill them (:func:`fact_codes`). A plan the core cannot run
raises :class:`PlanMismatch`, and ``auto`` mode then maps with the Python mapper, warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from lxml import etree

from py_load_eudravigilance.errors import MappingError
from py_load_eudravigilance.mapping import _core  # type: ignore[attr-defined]
from py_load_eudravigilance.mapping.catalog import (
    AUDIT_LOG,
    CASE_KEY,
    MASTER_TAIL,
    MAX_CASE_ID_BYTES,
    BookkeepingColumn,
    field_columns,
    staged_column_facts,
)
from py_load_eudravigilance.mapping.dictionary import BATCH_HEADER
from py_load_eudravigilance.mapping.mapper import (
    MAX_CASE_ID_LENGTH,
    NO_CASE_ID,
    NO_MOST_RECENT,
    NULLIFICATION_CODE,
    CaseMapper,
    CompiledField,
    CompiledTable,
    check_case_id,
)
from py_load_eudravigilance.mapping.paths import (
    ANCESTOR,
    DESCENDANT,
    AllOf,
    AnyOf,
    AttributeKey,
    Equals,
    Exists,
    Level,
    Not,
    PathTrie,
    Predicate,
    StartsWith,
    Step,
    StepPath,
    StringOf,
    Union,
    UnsupportedPath,
    VariableStart,
    keyed_path,
    parse_expression,
)
from py_load_eudravigilance.mapping.spec import Kind
from py_load_eudravigilance.schema import CASE_TABLE_NAMES
from py_load_eudravigilance.staging.copybinary import encode_row, encode_value, microseconds
from py_load_eudravigilance.staging.layout import INDEXED_TABLES, STAGED_COLUMNS, STAGED_FAMILIES, STAGED_TABLES, MessageKey, StagedMessages
from py_load_eudravigilance.staging.reference import audit_payload

CODES: dict[str, int] = _core.PLAN_CODES
ROLES = {
    CASE_KEY: "role_case_id",
    "most_recent_info_date": "role_most_recent",
    "message_creation_time": "role_creation",
    "nullification_amendment": "role_nullification",
}


class PlanMismatch(RuntimeError):
    """The compiled core cannot write what this release's catalog declares (a build from other sources)."""


def fact_codes(table: str, columns: Sequence[BookkeepingColumn]) -> list[int]:
    """The core's codes of the message facts filling ``columns``' staged ones, in row order; a fact the core does not
    write, or writes in another binary form than the column's type, is a :class:`PlanMismatch` naming the column."""
    written: dict[str, tuple[int, str]] = getattr(_core, "MESSAGE_FACTS", {})  # none: a core built before facts were data
    codes = []
    for column, declared in staged_column_facts(columns):
        fact = declared.value
        if fact not in written:
            raise PlanMismatch(f"the compiled core writes no message fact {fact!r}, which fills {table}.{column.name}")
        code, family = written[fact]
        if family != column.type.value:
            raise PlanMismatch(f"{table}.{column.name} is {column.type.value}, but the compiled core writes {fact!r} as {family}")
        codes.append(code)
    return codes


@dataclass
class Fallbacks:
    """The Python mapper's code for single fields, which the C core calls for what it does not do itself."""

    fields: list[CompiledField] = field(default_factory=list)
    columns: list[list[str]] = field(default_factory=list)
    families: list[list[str]] = field(default_factory=list)
    variable_names: list[str] = field(default_factory=list)

    def read(self, number: int, node: etree._Element, variables: dict[str, Any], selected: list[etree._Element] | None) -> list[bytes]:
        """Every column of field ``number`` read from ``node``, each an encoded binary COPY field."""
        row: dict[str, Any] = {}
        self.fields[number].read(node, variables, row, selected)
        return [encode_value(row.get(column), family) for column, family in zip(self.columns[number], self.families[number], strict=True)]

    check_case_id = staticmethod(check_case_id)

    def convert(self, number: int, raw: str) -> tuple[list[bytes], int | None]:
        """The main column of ``raw`` (a date's: with its UTC instant and precision, and that instant in
        microseconds since 2000), or the MappingError the Python mapper raises."""
        compiled = self.fields[number]
        row: dict[str, Any] = {}
        compiled.convert(raw, row)
        width = 3 if compiled.spec.kind is Kind.DATE else 1
        columns, families = self.columns[number][:width], self.families[number][:width]
        fields = [encode_value(row.get(column), family) for column, family in zip(columns, families, strict=True)]
        utc = row.get(columns[1]) if width == 3 else None
        return fields, microseconds(utc) if utc is not None else None


class PlanBuilder:
    """Turns the Python mapper's compiled tables into the C core's objects."""

    def __init__(self) -> None:
        self.fallbacks = Fallbacks()
        self.variables: dict[str, int] = {}

    def variable(self, name: str) -> int:
        if name not in self.variables:
            self.variables[name] = len(self.variables)
            self.fallbacks.variable_names.append(name)
        return self.variables[name]

    def predicate(self, predicate: Predicate) -> Any:
        if isinstance(predicate, AttributeKey):
            child, names = predicate.signature
            return _core.AttributeKey(child, names, predicate.values)
        if isinstance(predicate, Exists):
            return _core.Exists(self.path(predicate.path))
        if isinstance(predicate, Equals):
            variable = self.variable(predicate.variable) if predicate.variable is not None else -1
            return _core.Equals(self.path(predicate.path), predicate.literal, variable)
        if isinstance(predicate, StartsWith):
            return _core.StartsWith(self.path(predicate.path), predicate.prefix)
        if isinstance(predicate, Not):
            return _core.Not(self.predicate(predicate.term))
        if isinstance(predicate, AllOf | AnyOf):
            return _core.Combination([self.predicate(term) for term in predicate.terms], isinstance(predicate, AnyOf))
        raise UnsupportedPath(f"no compiled form of {type(predicate).__name__}")

    def step(self, step: Step) -> Any:
        axis = CODES["ancestor"] if step.axis == ANCESTOR else CODES["descendant"] if step.axis == DESCENDANT else CODES["child"]
        predicates = [self.predicate(p) for p in (*step.keys, *step.tests)]
        return _core.Step(axis, step.tag, predicates, step.position)

    def path(self, path: StepPath) -> Any:
        start, variable, filters, union = CODES["start_context"], -1, [], []
        if isinstance(path.start, VariableStart):
            start, variable = CODES["start_variable"], self.variable(path.start.name)
            filters = [self.predicate(p) for p in path.start.filters]
        elif isinstance(path.start, Union):
            start, union = CODES["start_union"], [self.path(p) for p in path.start.paths]
        compiled = _core.Path(start, variable, filters, union, [self.step(s) for s in path.steps], path.attribute)
        keyed = keyed_path(path)
        if keyed is not None:  # looked up by the key's value in an index built once per anchor, as the Python mapper does
            assert keyed.key.variable is not None
            if keyed.keyed_step < 0:
                others = [self.predicate(p) for p in keyed.others]
            else:
                step = path.steps[keyed.keyed_step]
                others = [_core.Step(CODES["child"], step.tag, [self.predicate(p) for p in keyed.others], None)]
            compiled.set_key(keyed.keyed_step, self.path(keyed.key.path), self.variable(keyed.key.variable), others)
        return compiled

    def trie(self, trie: PathTrie) -> Any:
        return _core.Trie(self.level(trie.root), trie.size)

    def level(self, level: Level) -> Any:
        counters = 0
        groups = []
        for tag, branches in level.children.items():
            compiled = []
            for branch in branches:
                counter = -1
                if branch.step.position is not None:
                    counter, counters = counters, counters + 1
                compiled.append(_core.Branch(self.step(branch.step), self.level(branch.level), counter))
            groups.append(_core.TagGroup(tag, compiled))
        descendants = [_core.Branch(self.step(branch.step), self.level(branch.level), -1) for branch in level.descendants]
        return _core.Level(level.slots, groups, descendants, counters)

    def field(self, table: str, compiled: CompiledField) -> Any:
        spec = compiled.spec
        number = len(self.fallbacks.fields)
        self.fallbacks.fields.append(compiled)
        columns = field_columns(table, spec)
        self.fallbacks.columns.append([c.name for c in columns])
        self.fallbacks.families.append([c.type.value for c in columns])
        kind = CODES[spec.kind.value]
        role = CODES[ROLES.get(spec.column, "role_none")] if table == "icsr_master" else CODES["role_none"]
        mode, slot, path, variable, attribute = CODES["field_python"], -1, None, -1, None
        if spec.compute is not None:
            pass
        elif compiled.variable is not None:
            mode, variable = CODES["field_variable"], self.variable(compiled.variable)
        elif compiled.slot is not None:
            mode, slot, attribute = CODES["field_slot"], compiled.slot, compiled.attribute
        else:
            try:
                expression = parse_expression(spec.path)
            except UnsupportedPath:
                expression = None
            if isinstance(expression, StepPath):
                mode, path, attribute = CODES["field_expression"], self.path(expression), expression.attribute
        options = (spec.null_flavor, spec.code_system, spec.join_all, spec.strip_prefix)
        return _core.Field(mode, slot, path, variable, kind, attribute, *options, number, role, compiled.max_bytes)

    def table(self, compiled: CompiledTable, is_master: bool = False) -> Any:
        spec = compiled.spec
        rows, row_slot, row_path, value_paths, row_variable = CODES["rows_root"], -1, None, [], -1
        if is_master:
            pass
        elif compiled.row_values is not None and spec.row_values and spec.row_variable:
            expression = parse_expression(spec.row_values)
            paths = expression.paths if isinstance(expression, Union) else (expression,)
            rows, row_variable = CODES["rows_values"], self.variable(spec.row_variable)
            value_paths = [self.path(p) for p in paths]  # type: ignore[arg-type]
        elif compiled.row_slot is not None:
            rows, row_slot = CODES["rows_slot"], compiled.row_slot
        else:
            expression = parse_expression(spec.rows)
            if not isinstance(expression, StepPath) or expression.attribute is not None:
                raise UnsupportedPath(f"rows of {spec.name}: {spec.rows}")
            rows, row_path = CODES["rows_expression"], self.path(expression)
        binds = []
        for name, text in spec.bind.items():
            expression = parse_expression(text)
            variable = self.variable(name)
            if isinstance(expression, StringOf):
                binds.append(_core.Bind(variable, True, self.path(expression.path)))
            elif isinstance(expression, StepPath):
                binds.append(_core.Bind(variable, False, self.path(expression)))
            else:
                raise UnsupportedPath(f"bound variable {name} of {spec.name}: {text}")
        fields = [self.field(spec.name, f) for f in _fields_in_order(compiled)]
        children = [self.table(child) for child in compiled.children]
        return _core.Table(
            CASE_TABLE_NAMES.index(spec.name),
            rows,
            row_slot,
            row_path,
            value_paths,
            row_variable,
            spec.position_column is not None,
            binds,
            self.trie(compiled.trie),
            fields,
            children,
            is_master,
        )


def _fields_in_order(compiled: CompiledTable) -> list[CompiledField]:
    """The table's compiled fields in the dictionary's order (its columns' order)."""
    by_spec = {id(f.spec): f for f in (*compiled.by_slot.values(), *compiled.unslotted)}
    return [by_spec[id(spec)] for spec in compiled.spec.fields]


@dataclass(frozen=True)
class Plan:
    mapper: CaseMapper
    master: Any
    fallbacks: Fallbacks
    variables: int
    audit_layout: list[int]
    master_tail: list[int]


@cache
def build_plan() -> Plan:
    """Compiled once per process (a worker's first file pays a few milliseconds)."""
    mapper = CaseMapper()
    builder = PlanBuilder()
    master = builder.table(mapper.master, is_master=True)
    audit_layout = fact_codes(AUDIT_LOG.name, AUDIT_LOG.columns)
    master_tail = fact_codes(mapper.master.spec.name, MASTER_TAIL)
    return Plan(mapper, master, builder.fallbacks, len(builder.variables), audit_layout, master_tail)


class CompiledCore(_core.Core):  # type: ignore[misc]
    """The staging core of ``staging.StagingCore``, in C."""

    name = "compiled"

    def __init__(self) -> None:
        plan = build_plan()
        super().__init__(
            plan.master,
            plan.fallbacks,
            STAGED_TABLES,
            len(INDEXED_TABLES),
            plan.variables,
            min(MAX_CASE_ID_LENGTH, MAX_CASE_ID_BYTES),  # a case id of at most this many bytes passes check_case_id
            MessageKey,
            audit_payload,
            MappingError,
            NO_CASE_ID,
            NO_MOST_RECENT,
            NULLIFICATION_CODE,
            plan.audit_layout,
            plan.master_tail,
        )
        self.mapper = plan.mapper
        self.begin_part()

    @property
    def row_counts(self) -> dict[str, int]:
        return self.staged_counts()

    def begin_part(self) -> None:
        self.reset_part(StagedMessages())

    def begin_file(self, name: str, sha256: str) -> None:
        self.file_name, self.file_sha256 = name, sha256
        self.set_file(name, sha256, len(self.index.files))
        self.index.files.append((name, sha256))

    def stage_message(self, message: etree._Element, position: int) -> None:
        self.stage(message, position)

    def stage_batch_header(self, root: etree._Element) -> None:
        header = self.mapper.map_batch_header(root)
        header.update(file_sha256=self.file_sha256, file_name=self.file_name)
        self.append(BATCH_HEADER.name, header)

    def append(self, table: str, row: dict[str, Any]) -> None:
        self.append_encoded(STAGED_TABLES.index(table), encode_row([row.get(c) for c in STAGED_COLUMNS[table]], STAGED_FAMILIES[table]))


def self_test() -> str | None:
    """None when the compiled core stages a rich test message exactly as the Python mapper does, else what differs."""
    import io

    from py_load_eudravigilance.fixtures.generator import CaseSpec, DrugSpec, ReactionSpec, build_batch, build_message
    from py_load_eudravigilance.parsing.reader import BatchReader
    from py_load_eudravigilance.staging.reference import ReferenceCore

    reactions = [ReactionSpec(xml_id=f"r{i}", death=None if i else True) for i in range(2)]
    drugs = [DrugSpec(xml_id=f"d{i}", assessments=("Related", "Not related")) for i in range(2)]
    document = build_batch([build_message(CaseSpec("SELF-TEST", reactions=reactions, drugs=drugs, padding_paragraphs=1))])
    outputs = []
    try:
        for core in (ReferenceCore(build_plan().mapper), CompiledCore()):
            core.begin_file("self-test.xml", "0" * 64)
            for position, message in BatchReader(io.BytesIO(document.encode()), "self-test.xml").messages():
                core.stage_message(message, position)
            outputs.append(core.take())
    except PlanMismatch as exc:
        return f"the compiled mapper does not match this release's catalog: {exc}"
    except Exception as exc:  # noqa: BLE001 - any failure means: use the Python mapper
        return f"the compiled mapper failed its self-test ({type(exc).__name__}: {exc})"
    if outputs[0] != outputs[1]:
        differing = sorted(t for t in set(outputs[0]) | set(outputs[1]) if outputs[0].get(t) != outputs[1].get(t))
        return f"the compiled mapper disagrees with the Python mapper on its self-test (tables {', '.join(differing)})"
    return None
