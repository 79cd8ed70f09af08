"""The dictionary's XPath, parsed once into data, and selected in one walk per row instead of one XPath call per field.

The dictionary writes almost every path in a small subset of XPath 1.0: child and ``//`` steps,
predicates made of paths, ``=`` against a literal or a variable, ``and``/``or``/``not()``/``starts-with()``,
a position, and a trailing ``/@attribute``. :func:`parse_path` reads that subset into a tree of
dataclasses (steps and predicates); :class:`PathTrie` merges the paths of a table into one tree of
steps and selects the nodes of all of them in a single walk over the row's subtree, so shared
prefixes are walked once and no XPath context is built per field.

A few paths go further: unions, the ``ancestor::`` axis, node sets bound to a variable and
``string()``. :func:`parse_expression` reads those too, for the compiled mapper (``_core.pyx``),
which evaluates the same dataclasses in C; the Python mapper leaves them to lxml's XPath, so the
two mappers are checked against an independent implementation. Anything else raises
:class:`UnsupportedPath`. Paths that join on a variable (:func:`keyed_path`) are looked up in an
index built once per message by both mappers (``tests/test_paths.py`` checks them against XPath).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from lxml import etree

from py_load_eudravigilance.mapping.dictionary import NAMESPACES

# XPath variables in scope: strings, or node sets (which only lxml's XPath reads; ``= $name`` here compares strings)
Variables = dict[str, str | list[etree._Element]]
Selection = dict[int, list[etree._Element]]  # trie slot -> selected elements

_VARIABLE_REFERENCE = r"\$[A-Za-z_][\w.\-]*"
_TOKEN = re.compile(
    r"\s*(?:(?P<literal>'[^']*'|\"[^\"]*\")"
    rf"|(?P<variable>{_VARIABLE_REFERENCE})"
    r"|(?P<number>\d+)"
    r"|(?P<axis>[A-Za-z][\w\-]*::)"
    r"|(?P<name>[A-Za-z_][\w.\-]*(?::[A-Za-z_][\w.\-]*)?)"
    r"|(?P<symbol>//|[/@\[\](),=.|]))"
)
CHILD, DESCENDANT, ANCESTOR = "child", "descendant", "ancestor"


class UnsupportedPath(ValueError):
    """The path uses XPath beyond the subset this module reads."""


class Predicate(Protocol):
    def test(self, node: etree._Element, variables: Variables) -> bool: ...


@dataclass(frozen=True)
class AttributeKey:
    """A predicate ``[@a='x']``, ``[c/@a='x']`` or ``[c[@a='x'][@b='y']]``: the node itself, or one
    of its children named ``c``, has these attribute values.

    Most of the dictionary's predicates are E2B codes of this form; a walk computes the attribute
    tuples of a node once per (child, names) and every branch tests membership in that set.
    """

    signature: tuple[str | None, tuple[str, ...]]  # (Clark tag of the child or None, attribute names)
    values: tuple[str, ...]

    def tuples_of(self, node: etree._Element) -> set[tuple[str | None, ...]]:
        child, names = self.signature
        if child is None:
            return {tuple(node.get(name) for name in names)}
        return {tuple(c.get(name) for name in names) for c in node.iterchildren(child)}

    def test(self, node: etree._Element, variables: Variables) -> bool:
        return self.values in self.tuples_of(node)


@dataclass(frozen=True)
class Exists:
    """``[path]``: the path selects something (with a trailing ``@a``: an element that has it)."""

    path: StepPath

    def test(self, node: etree._Element, variables: Variables) -> bool:
        if self.path.attribute is not None:
            return bool(string_values(node, self.path, variables))
        return bool(select(node, self.path.steps, variables))


@dataclass(frozen=True)
class Equals:
    """``[path = 'literal']`` or ``[path = $variable]``: some selected node's string-value is that string."""

    path: StepPath
    literal: str | None = None
    variable: str | None = None

    def test(self, node: etree._Element, variables: Variables) -> bool:
        value = self.literal if self.variable is None else variables.get(self.variable)
        return value in string_values(node, self.path, variables)


@dataclass(frozen=True)
class StartsWith:
    path: StepPath
    prefix: str

    def test(self, node: etree._Element, variables: Variables) -> bool:
        return any(v.startswith(self.prefix) for v in string_values(node, self.path, variables))


@dataclass(frozen=True)
class Not:
    term: Predicate

    def test(self, node: etree._Element, variables: Variables) -> bool:
        return not self.term.test(node, variables)


@dataclass(frozen=True)
class AllOf:
    """``a and b and ...``"""

    terms: tuple[Predicate, ...]

    def test(self, node: etree._Element, variables: Variables) -> bool:
        return all(term.test(node, variables) for term in self.terms)


@dataclass(frozen=True)
class AnyOf:
    """``a or b or ...``"""

    terms: tuple[Predicate, ...]

    def test(self, node: etree._Element, variables: Variables) -> bool:
        return any(term.test(node, variables) for term in self.terms)


Memo = dict[tuple[str | None, tuple[str, ...]], set[tuple[str | None, ...]]]


@dataclass(frozen=True)
class Step:
    """One step: the children (descendants, ancestors) named ``tag`` passing every predicate, optionally only the n-th."""

    tag: str
    keys: tuple[AttributeKey, ...]
    tests: tuple[Predicate, ...]  # the other predicates
    position: int | None
    source: str  # steps written alike select alike, so they share one branch of a trie
    axis: str = CHILD

    @property
    def descendant(self) -> bool:
        return self.axis == DESCENDANT

    def passes(self, node: etree._Element, variables: Variables, memo: Memo) -> bool:
        """Whether ``node`` passes the predicates; ``memo`` keeps its attribute tuples for other steps."""
        for key in self.keys:
            tuples = memo.get(key.signature)
            if tuples is None:
                tuples = memo[key.signature] = key.tuples_of(node)
            if key.values not in tuples:
                return False
        for test in self.tests:
            if not test.test(node, variables):
                return False
        return True


@dataclass(frozen=True)
class StepPath:
    """Steps from the row node, or from where ``start`` says, and an optional trailing ``@attribute``."""

    steps: tuple[Step, ...]
    attribute: str | None  # Clark name of a trailing ``@attribute``, read from the selected nodes
    start: VariableStart | Union | None = None  # None: the row node

    @property
    def is_plain(self) -> bool:
        """Within the subset :class:`PathTrie` walks: from the row node, child and descendant steps only."""
        return self.start is None and all(step.axis != ANCESTOR for step in self.steps)


@dataclass(frozen=True)
class VariableStart:
    """``$name[filter]...``: a node set bound to a variable, filtered by predicates."""

    name: str
    filters: tuple[Predicate, ...] = ()


@dataclass(frozen=True)
class Union:
    """``a | b | ...``: the nodes (or attribute values) of every path, in document order."""

    paths: tuple[StepPath, ...]


@dataclass(frozen=True)
class StringOf:
    """``string(path)``: the string-value of the first node the path selects ('' when none)."""

    path: StepPath


Expression = StepPath | Union | StringOf


def _qualified(name: str, default_namespace: str | None) -> str:
    prefix, colon, local = name.rpartition(":")
    if colon:
        if prefix not in NAMESPACES:
            raise UnsupportedPath(f"unknown namespace prefix {prefix!r}")
        return f"{{{NAMESPACES[prefix]}}}{local}"
    return f"{{{default_namespace}}}{name}" if default_namespace else name


def select(node: etree._Element, steps: tuple[Step, ...], variables: Variables) -> list[etree._Element]:
    """The elements plain ``steps`` select from ``node``, in document order."""
    nodes = [node]
    for step in steps:
        selected = []
        for parent in nodes:
            count = 0
            candidates = parent.iterdescendants(step.tag) if step.descendant else parent.iterchildren(step.tag)
            for child in candidates:
                if step.passes(child, variables, {}):
                    count += 1
                    if step.position is None or count == step.position:
                        selected.append(child)
        if not selected:
            return selected
        if step.descendant and len(nodes) > 1:
            selected = list(dict.fromkeys(selected))  # nested parents reach the same descendants
        nodes = selected
    return nodes


def string_values(node: etree._Element, path: StepPath, variables: Variables) -> list[str]:
    """XPath string-values of what ``path`` selects: attribute values, or elements' text content."""
    nodes = select(node, path.steps, variables)
    if path.attribute is not None:
        return [value for n in nodes if (value := n.get(path.attribute)) is not None]
    return [string_value(n) for n in nodes]


def variable_name(path: str) -> str | None:
    """``name`` when ``path`` is just ``$name`` (a field holding a bound variable's value), else None."""
    return path[1:] if re.fullmatch(_VARIABLE_REFERENCE, path) else None


def string_value(node: etree._Element) -> str:
    """XPath string-value of an element: the text of all its descendants, in document order."""
    if len(node) == 0:  # most elements hold text only, and itertext() costs ~2 us to set up
        return node.text or ""
    return "".join(node.itertext())


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int, int]] = []
        position = 0
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None or match.end() == position:
                if text[position:].strip():
                    raise UnsupportedPath(f"cannot read {text[position:]!r}")
                break
            kind = match.lastgroup or ""
            self.tokens.append((kind, match.group(kind), match.start(kind), match.end(kind)))
            position = match.end()
        self.index = 0

    def peek(self, offset: int = 0) -> tuple[str, str]:
        if self.index + offset < len(self.tokens):
            kind, value, _, _ = self.tokens[self.index + offset]
            return kind, value
        return "", ""

    def take(self, kind: str, value: str | None = None) -> str:
        found_kind, found_value = self.peek()
        if found_kind != kind or (value is not None and found_value != value):
            raise UnsupportedPath(f"expected {value or kind} in {self.text!r}")
        self.index += 1
        return found_value

    def at(self, kind: str, value: str) -> bool:
        return self.peek() == (kind, value)

    def done(self) -> None:
        if self.index != len(self.tokens):
            raise UnsupportedPath(f"cannot read {self.text!r} past token {self.index}")

    # -- the extended grammar: unions, variables, the ancestor axis, string() ---------------------
    def expression(self) -> Expression:
        if self.peek() == ("name", "string") and self.peek(1) == ("symbol", "("):
            self.take("name"), self.take("symbol", "(")
            path = self.start_path()
            self.take("symbol", ")")
            return StringOf(path)
        union = self.union()
        return union.paths[0] if len(union.paths) == 1 else union

    def union(self) -> Union:
        paths = [self.start_path()]
        while self.at("symbol", "|"):
            self.take("symbol", "|")
            paths.append(self.start_path())
        return Union(tuple(paths))

    def start_path(self) -> StepPath:
        """A path that may start from a variable, a parenthesized union or an ancestor step."""
        start: VariableStart | Union | None = None
        if self.peek()[0] == "variable":
            name = self.take("variable")[1:]
            start = VariableStart(name, tuple(self.predicates()[1]))
        elif self.at("symbol", "("):
            self.take("symbol", "(")
            start = self.union()
            self.take("symbol", ")")
        if start is None:
            return self.path(allow_ancestor=True)
        if self.peek() not in (("symbol", "/"), ("symbol", "//")):
            return StepPath((), None, start)
        rest = self.path(descendant=self.take("symbol") == "//")
        return StepPath(rest.steps, rest.attribute, start)

    # -- the subset ----------------------------------------------------------------------------
    def path(self, descendant: bool = False, allow_ancestor: bool = False) -> StepPath:
        steps: list[Step] = []
        if not descendant and self.at("symbol", ".") and self.peek(1) in (("symbol", "/"), ("symbol", "//")):
            self.take("symbol", ".")  # ``./x`` is ``x``; ``.//x`` is ``//x`` from the row
            descendant = self.take("symbol") == "//"
        while True:
            if self.at("symbol", "@") and not descendant:
                self.take("symbol", "@")
                return StepPath(tuple(steps), _qualified(self.take("name"), None))
            axis = DESCENDANT if descendant else CHILD
            if self.peek()[0] == "axis":
                if self.take("axis") != "ancestor::" or descendant or steps or not allow_ancestor:
                    raise UnsupportedPath(f"an axis other than a leading ancestor:: in {self.text!r}")
                axis = ANCESTOR
            steps.append(self.step(axis))
            if self.peek() not in (("symbol", "/"), ("symbol", "//")):
                return StepPath(tuple(steps), None)
            descendant = self.take("symbol") == "//"

    def predicates(self) -> tuple[int | None, list[Predicate]]:
        """``[...]*``: an optional position (last) and the other predicates."""
        position = None
        found: list[Predicate] = []
        while self.at("symbol", "["):
            if position is not None:
                raise UnsupportedPath("a predicate after a position")
            self.take("symbol", "[")
            if self.peek()[0] == "number":
                position = int(self.take("number"))
            else:
                found.append(self.or_expression())
            self.take("symbol", "]")
        return position, found

    def step(self, axis: str = CHILD) -> Step:
        start = self.tokens[self.index][2] if self.index < len(self.tokens) else len(self.text)
        tag = _qualified(self.take("name"), NAMESPACES["h"])
        position, predicates = self.predicates()
        end = self.tokens[self.index - 1][3]
        if axis != CHILD and position is not None:
            raise UnsupportedPath(f"a position on a {axis} step")
        keys = tuple(p for p in predicates if isinstance(p, AttributeKey))
        tests = tuple(p for p in predicates if not isinstance(p, AttributeKey))
        source = {DESCENDANT: "//", ANCESTOR: "ancestor::"}.get(axis, "") + self.text[start:end]
        return Step(tag, keys, tests, position, source, axis)

    def or_expression(self) -> Predicate:
        return self.joined(self.and_expression, "or", AnyOf)

    def and_expression(self) -> Predicate:
        return self.joined(self.unary, "and", AllOf)

    def joined(self, term: Callable[[], Predicate], operator: str, combination: type[AllOf] | type[AnyOf]) -> Predicate:
        """``term (operator term)*``."""
        terms = [term()]
        while self.at("name", operator):
            self.take("name", operator)
            terms.append(term())
        return terms[0] if len(terms) == 1 else combination(tuple(terms))

    def unary(self) -> Predicate:
        function = self.peek()[1] if self.peek()[0] == "name" and self.peek(1) == ("symbol", "(") else None
        if function == "not":
            self.take("name"), self.take("symbol", "(")
            inner = self.or_expression()
            self.take("symbol", ")")
            return Not(inner)
        if function == "starts-with":
            self.take("name"), self.take("symbol", "(")
            operand = self.path()
            self.take("symbol", ",")
            prefix = self.take("literal")[1:-1]
            self.take("symbol", ")")
            return StartsWith(operand, prefix)
        if function is not None:
            raise UnsupportedPath(f"function {function}()")
        operand = self.path()
        if not self.at("symbol", "="):
            return _exists(operand)
        self.take("symbol", "=")
        kind, value = self.peek()
        if kind == "literal":
            self.take("literal")
            return _equals(operand, value[1:-1])
        return Equals(operand, variable=self.take("variable")[1:])


def _exists(operand: StepPath) -> Predicate:
    """``[path]``; ``[c[@a='x']...]`` becomes an :class:`AttributeKey`."""
    if len(operand.steps) == 1 and operand.attribute is None:
        (step,) = operand.steps
        if step.keys and not step.tests and step.position is None and all(k.signature[0] is None for k in step.keys):
            names = tuple(name for key in step.keys for name in key.signature[1])
            values = tuple(value for key in step.keys for value in key.values)
            return AttributeKey((step.tag, names), values)
    return Exists(operand)


def _equals(operand: StepPath, literal: str) -> Predicate:
    """``[path = 'x']``; ``[@a='x']`` and ``[c/@a='x']`` become an :class:`AttributeKey`."""
    if operand.attribute is not None and not operand.steps:
        return AttributeKey((None, (operand.attribute,)), (literal,))
    if operand.attribute is not None and len(operand.steps) == 1:
        (step,) = operand.steps
        if not step.keys and not step.tests and step.position is None:
            return AttributeKey((step.tag, (operand.attribute,)), (literal,))
    return Equals(operand, literal=literal)


def parse_path(text: str) -> StepPath:
    """Compile ``text`` (relative to a row, without namespace prefixes) within the walked subset, or raise :class:`UnsupportedPath`."""
    return _parse(text, _Parser.path)  # type: ignore[return-value]


def parse_expression(text: str) -> Expression:
    """Compile ``text`` in the extended grammar (unions, ``$variable`` starts, ``ancestor::``, ``string()``)."""
    return _parse(text, _Parser.expression)


def _parse(text: str, grammar: Callable[[_Parser], Expression]) -> Expression:
    if text.strip() == ".":
        return StepPath((), None)
    parser = _Parser(text)
    parsed = grammar(parser)
    parser.done()
    return parsed


@dataclass
class Level:
    """Where a trie stands after some steps: the paths ending here, and the steps that follow."""

    slots: list[int] = field(default_factory=list)
    children: dict[str, list[Branch]] = field(default_factory=dict)  # child steps by tag
    descendants: list[Branch] = field(default_factory=list)  # ``//`` steps

    def branch(self, step: Step) -> Branch:
        branches = self.descendants if step.descendant else self.children.setdefault(step.tag, [])
        for branch in branches:
            if branch.step.source == step.source:
                return branch
        branch = Branch(step, Level())
        branches.append(branch)
        return branch


@dataclass
class Branch:
    step: Step
    level: Level


class PathTrie:
    """Many paths from one row node, selected together in one walk; each path gets a slot number."""

    def __init__(self) -> None:
        self.root = Level()
        self.size = 0

    def add(self, path: StepPath) -> int:
        if not path.is_plain:
            raise UnsupportedPath("only paths from the row node with child and descendant steps are walked")
        if keyed_path(path) is not None:  # a walk per row would scan what the key selects from: looked up instead
            raise UnsupportedPath("a keyed path is looked up, not walked")
        slot, self.size = self.size, self.size + 1
        level = self.root
        for step in path.steps:
            level = level.branch(step).level
        level.slots.append(slot)
        return slot

    def select(self, node: etree._Element, variables: Variables) -> Selection:
        """Slot -> the elements its path selects from ``node``, in document order; empty slots left out."""
        found: Selection = {slot: [node] for slot in self.root.slots}
        _walk(node, self.root, variables, found)
        return found


def _walk(node: etree._Element, level: Level, variables: Variables, found: Selection) -> None:
    children = level.children
    if children:
        counts: dict[int, int] | None = None
        for child in node:
            branches = children.get(child.tag)  # comments and processing instructions have no str tag: no match
            if branches is None:
                continue
            memo: Memo = {}
            for branch in branches:
                step = branch.step
                if (step.keys or step.tests) and not step.passes(child, variables, memo):
                    continue
                if step.position is not None:
                    counts = counts if counts is not None else {}
                    count = counts[id(branch)] = counts.get(id(branch), 0) + 1
                    if count != step.position:
                        continue
                _found(child, branch.level, variables, found)
    for branch in level.descendants:
        step = branch.step
        for descendant in node.iterdescendants(step.tag):
            if step.passes(descendant, variables, {}):
                _found(descendant, branch.level, variables, found)


def _found(node: etree._Element, level: Level, variables: Variables, found: Selection) -> None:
    for slot in level.slots:
        selected = found.get(slot)
        if selected is None:
            found[slot] = [node]
        else:
            selected.append(node)
    if level.children or level.descendants:
        _walk(node, level, variables, found)


# -- keyed paths: a join on a variable, evaluated once per anchor -----------------------------------
#
# ``$drug_assessments[...][subject1/.../@root = $reaction_id]`` or ``outboundRelationship1[...][actReference/id/@root
# = $reaction_id]/pauseQuantity``, read once per drug-reaction row, scan every assessment (interval) of the drug
# for each of its reactions: quadratic in the size of the message (4,000 assessed reactions took minutes). A path
# whose one variable reference is such a key is evaluated instead once per anchor (the row node, the node its
# leading ``ancestor::`` step reaches, or the bound node set) into an index of the keyed step's nodes by their
# key values; each row then looks its value up. Both mappers follow :func:`keyed_path`.

KeyMemo = dict[tuple[int, int], tuple[object, dict[Any, Any]]]  # per message: (path, anchor) -> (anchor, index)


def _references(item: object) -> int:
    """How many variable references ``item`` (a path, start or predicate) holds."""
    if isinstance(item, StepPath):
        return _references(item.start) + sum(_references(p) for s in item.steps for p in (*s.keys, *s.tests))
    if isinstance(item, VariableStart):
        return 1 + sum(_references(p) for p in item.filters)
    if isinstance(item, Union):
        return sum(_references(p) for p in item.paths)
    if isinstance(item, Equals):
        return (item.variable is not None) + _references(item.path)
    if isinstance(item, Exists | StartsWith):
        return _references(item.path)
    if isinstance(item, Not):
        return _references(item.term)
    if isinstance(item, AllOf | AnyOf):
        return sum(_references(t) for t in item.terms)
    return 0  # AttributeKey, None


def _keys(predicates: tuple[Predicate, ...]) -> list[Equals]:
    """The ``[plain path = $variable]`` among ``predicates``."""
    return [p for p in predicates if isinstance(p, Equals) and p.variable is not None and _references(p.path) == 0 and p.path.is_plain]


@dataclass(frozen=True)
class KeyedPath:
    """A path whose only variable reference (besides a start ``$set``) is one ``[path = $variable]`` key."""

    path: StepPath
    key: Equals
    keyed_step: int  # index in path.steps of the step the key filters; -1: the key filters the ``$set`` start
    others: tuple[Predicate, ...]  # the keyed step's (or the start's) predicates but the key

    def select(self, context: etree._Element, variables: Variables, memo: KeyMemo) -> list[etree._Element] | None:
        """The elements the path selects (its trailing attribute aside), in document order; None when an
        ``ancestor::`` step reaches more than one node (then XPath decides)."""
        steps, first = self.path.steps, 0
        anchor: object = context
        if self.keyed_step < 0:
            assert isinstance(self.path.start, VariableStart)
            source = variables.get(self.path.start.name)
            if not isinstance(source, list):
                return []
            anchor = source
        elif steps[0].axis == ANCESTOR:
            reached = [a for a in context.iterancestors(steps[0].tag) if steps[0].passes(a, variables, {})]
            if len(reached) != 1:
                return None
            anchor, first = reached[0], 1
        entry = memo.get((id(self), id(anchor)))
        if entry is None:  # the anchor is kept in the entry: its id stays its own for the message
            entry = memo[(id(self), id(anchor))] = (anchor, self._index(anchor, steps[first : max(self.keyed_step, 0)]))
        value = variables.get(self.key.variable or "")
        nodes = entry[1].get(value, []) if isinstance(value, str) else []
        after = steps[self.keyed_step + 1 :] if self.keyed_step >= 0 else ()
        return [n for node in nodes for n in select(node, after, {})] if after else list(nodes)

    def _index(self, anchor: object, before: tuple[Step, ...]) -> dict[str, list[etree._Element]]:
        """The keyed step's nodes (or the set's members) that pass the other predicates, by their key values."""
        if isinstance(anchor, list):
            candidates = [n for n in anchor if all(p.test(n, {}) for p in self.others)]
        else:
            assert isinstance(anchor, etree._Element)
            keyed = self.path.steps[self.keyed_step]
            parents = select(anchor, before, {})
            candidates = [c for parent in parents for c in parent.iterchildren(keyed.tag) if all(p.test(c, {}) for p in self.others)]
        index: dict[str, list[etree._Element]] = {}
        for node in candidates:
            for value in dict.fromkeys(string_values(node, self.key.path, {})):
                index.setdefault(value, []).append(node)
        return index


def keyed_path(expression: Expression) -> KeyedPath | None:
    """The keyed form of ``expression``, or None when it is not a path of that shape: one key (a top-level
    ``[plain path = $variable]``) on a ``$set`` start without steps, or on a child step of a path from the row
    node whose steps are child steps (after one leading ``ancestor::`` step at most) and have no position."""
    if not isinstance(expression, StepPath) or _references(expression) != (2 if isinstance(expression.start, VariableStart) else 1):
        return None
    path = expression
    if isinstance(path.start, VariableStart):
        keys = _keys(path.start.filters)
        if path.steps or len(keys) != 1:
            return None
        return KeyedPath(path, keys[0], -1, tuple(p for p in path.start.filters if p is not keys[0]))
    if path.start is not None:
        return None
    for number, step in enumerate(path.steps):
        if step.axis == ANCESTOR and number == 0:
            continue
        if step.axis != CHILD or step.position is not None:
            return None
    for number, step in enumerate(path.steps):
        keys = _keys(step.tests)
        if keys and step.axis == CHILD:
            others = (*step.keys, *(p for p in step.tests if p is not keys[0]))
            return KeyedPath(path, keys[0], number, others)
    return None
