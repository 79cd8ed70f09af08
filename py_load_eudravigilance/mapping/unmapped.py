"""What no column holds: the elements and attributes of a message with a value that the dictionary maps nowhere.

The data dictionary's paths (rows, fields, bound variables and the predicates that choose between
them) are compiled once into one automaton over element names from the message root. Walking a
message, each element's state says whether its text is read and which of its attributes are; a
non-blank text or a non-empty attribute that nothing reads is counted, with its path (element
names from the message root, positions left out). The value itself stays in the audit XML.

The automaton follows the paths' steps and their code predicates (``observation[code[@code='29']]``:
an observation of another code is not the reaction's), so a known element carrying an unknown code is
reported too. Other predicates (positions, comparisons with variables, ``not()``) are not told
apart: what such a step could select counts as read. Staging counts each message it staged with
:func:`counter_for`: this module's walk with the Python mapper, ``_unmapped.pyx``'s (the same automaton,
walked in C) with the compiled one; ``tests/test_unmapped.py`` checks that both count the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache

from lxml import etree

from py_load_eudravigilance.mapping.dictionary import HL7_NS, ICSR_MASTER, XSI_NS, obs
from py_load_eudravigilance.mapping.paths import (
    ANCESTOR,
    DESCENDANT,
    AllOf,
    AnyOf,
    AttributeKey,
    Equals,
    Exists,
    Expression,
    Not,
    Predicate,
    StartsWith,
    Step,
    StepPath,
    StringOf,
    Union,
    UnsupportedPath,
    VariableStart,
    parse_expression,
    variable_name,
)
from py_load_eudravigilance.mapping.spec import Field, Kind, TableSpec

MAX_KEYS = 64  # code predicates on the steps to one child name from one state (the C walk keeps a 64-bit mask)
XML_SPACE = " \t\r\n"  # blank text is made of these (XML's white space, not Unicode's)
# The distinct paths a file's account lists (the count covers all of them)
REPORTED_PATHS = 20

# HL7 structural attributes: they fix what an element is (its class, mood, relationship), fixed by the
# E2B(R3) schema for each element, so they carry no data of the case
STRUCTURAL_ATTRIBUTES = frozenset(
    {
        "classCode",
        "moodCode",
        "typeCode",
        "determinerCode",
        "contextConductionInd",
        "contextControlCode",
        "inversionInd",
        "ITSVersion",
        "operator",  # how a dosage's time sets combine (``A``: intersect), fixed by the guide
        f"{{{XSI_NS}}}type",
        f"{{{XSI_NS}}}schemaLocation",
    }
)
# Attributes that qualify a value, read with it wherever it is read: a code's system, version and label,
# the scheme an identifier's ``root`` names, the media type of a text
_QUALIFIERS = {
    "code": ("codeSystem", "codeSystemVersion", "displayName"),
    "extension": ("root",),
    "": ("mediaType",),  # the element's text
}
# Values the E2B(R3) guide fixes (constants of the message's structure, not data of the case), from the message
_FIXED_READS = (
    "interactionId/@root",
    "interactionId/@extension",
    "processingCode/@code",
    "processingModeCode/@code",
    "acceptAckCode/@code",
    "controlActProcess/code/@code",
    "controlActProcess/subject/investigationEvent/code/@code",
    "controlActProcess/subject/investigationEvent/statusCode/@code",
    ".//productEvent/code[@code='1']/@code",  # G.k.2.4's act: 1 = retail supply
    ".//inboundRelationship/observation/performer/assignedEntity/code[@code='3']/@code",  # G.k.7.r's source: 3 = reporter
    ".//ingredient/quantity/denominator[@value='1']/@value",  # G.k.2.3.r.3's strength is the numerator's: per 1
    ".//ingredient/quantity/denominator[@value='1'][@unit='1']/@unit",
    ".//observationEvent/author/assignedEntity/code/@code",  # H.3.r's and H.5.r's author: the sender
    ".//asIdentifiedEntity/code/@code",  # D.1.1.x: the kind of record number, which its id's root names too
    f".//{obs('7')}/value[@unit='kg']/@unit",  # D.3 and D.10.4 are in kg: another unit is reported
    f".//{obs('17')}/value[@unit='cm']/@unit",  # D.4 and D.10.5 in cm
)

# Fields computed by Python code read what their path cannot say: the paths they read, relative to the row
_COMPUTED_READS: dict[str, tuple[str, ...]] = {
    "test_result_qualifier": (
        "value/center/@value",
        "value/low/@value",
        "value/low/@inclusive",
        "value/high/@value",
        "value/high/@inclusive",
    ),
}


@dataclass(eq=False)
class _Node:
    """A place in the automaton: the element some steps reach, what of it is read, and the steps on from it."""

    tag: str | None = None  # Clark tag of the step that reaches it (None: the message)
    parent: _Node | None = None
    text: bool = False  # its string-value is read: its own text and every descendant's
    attributes: set[str] = field(default_factory=set)
    children: dict[tuple[str, tuple[AttributeKey, ...]], _Node] = field(default_factory=dict)
    descendants: dict[tuple[str, tuple[AttributeKey, ...]], _Node] = field(default_factory=dict)

    def child(self, tag: str, keys: tuple[AttributeKey, ...] = (), descendant: bool = False) -> _Node:
        edges = self.descendants if descendant else self.children
        node = edges.get((tag, keys))
        if node is None:
            node = edges[(tag, keys)] = _Node(tag, self)
        return node

    def read_attribute(self, name: str) -> None:
        self.attributes.add(name)
        self.attributes.update(_QUALIFIERS.get(name, ()))

    def read_text(self) -> None:
        self.text = True
        self.attributes.update(_QUALIFIERS[""])


Contexts = list[_Node]
# A bound node set: the contexts it was bound from and the steps that select it
Binding = tuple[Contexts, tuple[Step, ...]]


class _Builder:
    """Compiles the dictionary's tables into the automaton's nodes."""

    def __init__(self) -> None:
        self.root = _Node()

    def table(self, spec: TableSpec, contexts: Contexts, bindings: dict[str, Binding]) -> None:
        if spec.row_values:
            for part in _parts(spec.row_values):
                self.read(part, contexts, bindings)
            rows = contexts
        else:
            rows = self.nodes(_parse(spec.rows), contexts, bindings)
        scope = dict(bindings)
        for name, path in spec.bind.items():
            expression = _parse(path)
            if isinstance(expression, StepPath) and expression.start is None:
                scope[name] = (rows, expression.steps)
            self.read(expression, rows, scope)  # a bound string (``string(id/@root)``) is read; a node set is not yet
        for spec_field in spec.fields:
            self.field(spec_field, rows, scope)
        for child in spec.children:
            self.table(child, rows, scope)

    def field(self, spec: Field, rows: Contexts, bindings: dict[str, Binding]) -> None:
        for path in _COMPUTED_READS.get(spec.column, ()):
            self.read(_parse(path), rows, bindings)
        if spec.compute is not None or variable_name(spec.path) is not None:
            return
        expression = _parse(spec.path)
        for path in _parts_of(expression):
            for node in self.nodes(path, rows, bindings):
                if spec.null_flavor:
                    node.attributes.add("nullFlavor")
                if spec.code_system:
                    node.attributes.update(_QUALIFIERS["code"])
                if spec.kind is Kind.ATTACHMENT:
                    node.text = True
                    node.attributes.update(("mediaType", "compression", "representation"))
                    node.child(f"{{{HL7_NS}}}reference").attributes.add("value")
                elif path.attribute is not None:
                    node.read_attribute(path.attribute)
                else:
                    node.read_text()

    def read(self, expression: Expression, contexts: Contexts, bindings: dict[str, Binding]) -> None:
        """What ``expression`` selects is read: its attribute, or its elements' text."""
        for path in _parts_of(expression):
            for node in self.nodes(path, contexts, bindings):
                if path.attribute is not None:
                    node.read_attribute(path.attribute)
                else:
                    node.read_text()

    def nodes(self, path: StepPath, contexts: Contexts, bindings: dict[str, Binding]) -> Contexts:
        """The nodes ``path``'s elements (its trailing attribute aside) are at, from ``contexts``."""
        steps = path.steps
        if isinstance(path.start, VariableStart):
            bound_from, bound_steps = bindings[path.start.name]
            filters = path.start.filters
            if bound_steps:  # the filters are predicates of the bound set's last step
                last = bound_steps[-1]
                keys = tuple(f for f in filters if isinstance(f, AttributeKey))
                tests = tuple(f for f in filters if not isinstance(f, AttributeKey))
                last = dataclasses.replace(last, keys=last.keys + keys, tests=last.tests + tests)
                steps = (*bound_steps[:-1], last, *steps)
            contexts = bound_from
        elif isinstance(path.start, Union):
            starts = [node for part in path.start.paths for node in self.nodes(part, contexts, bindings)]
            return self.steps(steps, starts, bindings)
        return self.steps(steps, contexts, bindings)

    def steps(self, steps: Iterable[Step], contexts: Contexts, bindings: dict[str, Binding]) -> Contexts:
        nodes = list(dict.fromkeys(contexts))
        for step in steps:
            reached: Contexts = []
            for node in nodes:
                if step.axis == ANCESTOR:
                    ancestor = node.parent
                    while ancestor is not None and ancestor.tag != step.tag:
                        ancestor = ancestor.parent
                    if ancestor is None:
                        raise UnsupportedPath(f"{step.source}: no such ancestor on the dictionary's paths")
                    target = ancestor
                else:
                    target = node.child(step.tag, step.keys, step.axis == DESCENDANT)
                for predicate in (*step.keys, *step.tests):
                    self.predicate(predicate, target, bindings)
                reached.append(target)
            nodes = list(dict.fromkeys(reached))
        return nodes

    def predicate(self, predicate: Predicate, node: _Node, bindings: dict[str, Binding]) -> None:
        """What a predicate tests is read (it decides what the path selects)."""
        if isinstance(predicate, AttributeKey):
            child, names = predicate.signature
            target = node if child is None else node.child(child)
            for name in names:
                target.read_attribute(name)
        elif isinstance(predicate, Exists | Equals | StartsWith):
            self.read(predicate.path, [node], bindings)
        elif isinstance(predicate, Not):
            self.predicate(predicate.term, node, bindings)
        elif isinstance(predicate, AllOf | AnyOf):
            for term in predicate.terms:
                self.predicate(term, node, bindings)


def _parse(text: str) -> Expression:
    return parse_expression(text)


def _parts(text: str) -> list[StepPath]:
    return _parts_of(_parse(text))


def _parts_of(expression: Expression) -> list[StepPath]:
    if isinstance(expression, StringOf):
        return [expression.path]
    if isinstance(expression, Union):
        return list(expression.paths)
    return [expression]


class _State:
    """The automaton's nodes an element is at: what of the element is read, and its children's states (cached)."""

    __slots__ = ("nodes", "pending", "own_text", "inherited_text", "attributes", "known", "_next", "_keys", "_elsewhere")

    def __init__(self, nodes: frozenset[_Node], pending: frozenset[tuple[str, tuple[AttributeKey, ...], _Node]], inherited: bool) -> None:
        self.nodes = nodes
        self.pending = pending  # ``//`` steps in force below here
        self.inherited_text = inherited or any(n.text for n in nodes)  # the children's text is read
        self.own_text = self.inherited_text
        self.attributes = STRUCTURAL_ATTRIBUTES.union(*(n.attributes for n in nodes))
        # The child names a step goes on from here with; every other name goes to one state, so that a hostile
        # file's million distinct names costs no memory here
        self.known = frozenset(t for n in nodes for (t, _) in n.children) | frozenset(t for (t, _, _) in self._pending_edges())
        self._next: dict[object, _State] = {}
        self._keys: dict[str, tuple[AttributeKey, ...]] = {}
        self._elsewhere: _State | None = None

    @property
    def empty(self) -> bool:
        return not self.nodes and not self.pending and not self.inherited_text

    def keys_for(self, tag: str) -> tuple[AttributeKey, ...]:
        """The code predicates that decide where a child named ``tag`` goes from here."""
        keys = self._keys.get(tag)
        if keys is None:
            keys = self._keys[tag] = tuple(
                dict.fromkeys(k for n in self.nodes for (t, ks) in n.children if t == tag for k in ks)
                | dict.fromkeys(k for (t, ks, _) in self._pending_edges() if t == tag for k in ks)
            )
            if len(keys) > MAX_KEYS:
                raise UnsupportedPath(f"more than {MAX_KEYS} code predicates on one step to {tag}")
        return keys

    def elsewhere(self, states: dict[object, _State]) -> _State:
        """The state of a child whose name no step from here goes on with."""
        if self._elsewhere is None:
            self._elsewhere = self._transition("", frozenset(), states)
        return self._elsewhere

    def step(self, element: etree._Element, states: dict[object, _State]) -> _State:
        tag = element.tag
        if tag not in self.known:
            return self.elsewhere(states)
        keys = self.keys_for(tag)
        passed = frozenset(k for k in keys if k.values in k.tuples_of(element)) if keys else frozenset()
        return self.next(tag, passed, states)

    def next(self, tag: str, passed: frozenset[AttributeKey], states: dict[object, _State]) -> _State:
        """The state of a child named ``tag`` that passes the keys ``passed``."""
        memo_key = (tag, passed)
        found = self._next.get(memo_key)
        if found is None:
            found = self._next[memo_key] = self._transition(tag, passed, states)
        return found

    def _pending_edges(self) -> frozenset[tuple[str, tuple[AttributeKey, ...], _Node]]:
        return self.pending | frozenset((t, ks, target) for n in self.nodes for (t, ks), target in n.descendants.items())

    def _transition(self, tag: str, passed: frozenset[AttributeKey], states: dict[object, _State]) -> _State:
        pending = self._pending_edges()
        targets = [target for n in self.nodes for (t, ks), target in n.children.items() if t == tag and passed.issuperset(ks)]
        targets += [target for (t, ks, target) in pending if t == tag and passed.issuperset(ks)]
        identity = (frozenset(targets), pending, self.inherited_text)
        state = states.get(identity)
        if state is None:
            state = states[identity] = _State(*identity)
        return state


class UnmappedCounter:
    """Counts one message's unmapped values; compile once, use for many messages."""

    def __init__(self, table: TableSpec = ICSR_MASTER) -> None:
        builder = _Builder()
        builder.table(table, [builder.root], {})
        for path in _FIXED_READS:
            builder.read(_parse(path), [builder.root], {})
        self._states: dict[object, _State] = {}
        self.start = _State(frozenset({builder.root}), frozenset(), False)

    @property
    def states(self) -> dict[object, _State]:
        """The states reached so far, by identity (the C walk asks :meth:`_State.next` with it)."""
        return self._states

    def count(self, message: etree._Element) -> tuple[int, list[str]]:
        """How many values of ``message`` no column holds, and their distinct paths in document order."""
        found = _Found(message)
        self._walk(message, self.start, found)
        return found.result()

    def _walk(self, element: etree._Element, state: _State, found: _Found) -> None:
        if state.empty:
            _everything(element, found)
            return
        attributes = state.attributes
        for name, value in element.items():
            if value and name not in attributes:
                found.note(element, name)
        if not state.own_text and _has_text(element):
            found.note(element, None)
        states = self._states
        for child in element:
            if isinstance(child.tag, str):
                self._walk(child, state.step(child, states), found)


def _has_text(element: etree._Element) -> bool:
    """A non-blank text node directly in ``element`` (its text, or a child's tail)."""
    text = element.text
    if text and text.strip(XML_SPACE):
        return True
    return any(child.tail and child.tail.strip(XML_SPACE) for child in element)


def _everything(element: etree._Element, found: _Found) -> None:
    """Every value under ``element`` (which nothing maps), counted."""
    for node in element.iter():
        if not isinstance(node.tag, str):
            continue
        for name, value in node.items():
            if value and name not in STRUCTURAL_ATTRIBUTES:
                found.note(node, name)
        if _has_text(node):
            found.note(node, None)


class _Found:
    """A message's unmapped values by path (element names from the message, ``@name`` for an attribute)."""

    def __init__(self, message: etree._Element) -> None:
        self.message = message
        self.paths: dict[str, int] = {}

    def note(self, element: etree._Element, attribute: str | None) -> None:
        """An unmapped value: ``element``'s text, or its attribute of Clark name ``attribute``."""
        names = [f"@{_name(attribute)}"] if attribute else []
        node = element
        while node is not None and node is not self.message:
            names.append(_name(node.tag, node.prefix))
            node = node.getparent()
        path = "/".join(reversed(names)) or "."
        self.paths[path] = self.paths.get(path, 0) + 1

    def result(self) -> tuple[int, list[str]]:
        return sum(self.paths.values()), list(self.paths)


def _name(clark: str, prefix: str | None = None) -> str:
    """``local`` for HL7 and unqualified names, ``prefix:local`` for others (``{namespace}local`` without a prefix)."""
    if not clark.startswith("{"):
        return clark
    namespace, local = clark[1:].split("}", 1)
    if namespace == HL7_NS:
        return local
    if namespace == XSI_NS:
        return f"xsi:{local}"
    return f"{prefix}:{local}" if prefix else clark


@cache
def counter_for(core: str) -> Callable[[etree._Element], tuple[int, list[str]]]:
    """The counter a staging core uses, compiled once per process: the C walk with the compiled mapper (when
    built), else this module's."""
    reference = UnmappedCounter()
    if core != "python":
        try:
            from py_load_eudravigilance.mapping._unmapped import Counter
        except ImportError:
            return reference.count
        return Counter(reference, STRUCTURAL_ATTRIBUTES).count
    return reference.count
