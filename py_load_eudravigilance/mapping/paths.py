"""Select the dictionary's paths in one walk per row instead of one XPath call per field.

The dictionary writes almost every path in a small subset of XPath 1.0: child and ``//`` steps,
predicates made of paths, ``=`` against a literal or a variable, ``and``/``or``/``not()``/``starts-with()``,
a position, and a trailing ``/@attribute``. For that subset :class:`PathTrie` merges the paths of
a table into one tree of steps and selects the nodes of all of them in a single walk over the row's
subtree, so shared prefixes are walked once and no XPath context is built per field. A path outside
the subset (other axes, unions, other functions) raises :class:`UnsupportedPath`; the mapper evaluates
those few with lxml's XPath.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from lxml import etree

from py_load_eudravigilance.mapping.dictionary import NAMESPACES

# XPath variables in scope: strings, or node sets (which only lxml's XPath reads; ``= $name`` here compares strings)
Variables = dict[str, str | list[etree._Element]]
Test = Callable[[etree._Element, Variables], bool]
Selection = dict[int, list[etree._Element]]  # trie slot -> selected elements

_VARIABLE_REFERENCE = r"\$[A-Za-z_][\w.\-]*"
_TOKEN = re.compile(
    r"\s*(?:(?P<literal>'[^']*'|\"[^\"]*\")"
    rf"|(?P<variable>{_VARIABLE_REFERENCE})"
    r"|(?P<number>\d+)"
    r"|(?P<name>[A-Za-z_][\w.\-]*(?::[A-Za-z_][\w.\-]*)?)"
    r"|(?P<symbol>//|[/@\[\](),=.]))"
)


class UnsupportedPath(ValueError):
    """The path uses XPath beyond the subset this module evaluates."""


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


Memo = dict[tuple[str | None, tuple[str, ...]], set[tuple[str | None, ...]]]


@dataclass(frozen=True)
class Step:
    """One step: the children (or descendants) named ``tag`` passing every predicate, optionally only the n-th."""

    tag: str
    keys: tuple[AttributeKey, ...]
    tests: tuple[Test, ...]  # the other predicates
    position: int | None
    source: str  # steps written alike select alike, so they share one branch of a trie
    descendant: bool = False  # ``//tag``: descendants at any depth, not only children

    def passes(self, node: etree._Element, variables: Variables, memo: Memo) -> bool:
        """Whether ``node`` passes the predicates; ``memo`` keeps its attribute tuples for other steps."""
        for key in self.keys:
            tuples = memo.get(key.signature)
            if tuples is None:
                tuples = memo[key.signature] = key.tuples_of(node)
            if key.values not in tuples:
                return False
        for test in self.tests:
            if not test(node, variables):
                return False
        return True


@dataclass(frozen=True)
class StepPath:
    steps: tuple[Step, ...]
    attribute: str | None  # Clark name of a trailing ``@attribute``, read from the selected nodes


def _qualified(name: str, default_namespace: str | None) -> str:
    prefix, colon, local = name.rpartition(":")
    if colon:
        if prefix not in NAMESPACES:
            raise UnsupportedPath(f"unknown namespace prefix {prefix!r}")
        return f"{{{NAMESPACES[prefix]}}}{local}"
    return f"{{{default_namespace}}}{name}" if default_namespace else name


def select(node: etree._Element, steps: tuple[Step, ...], variables: Variables) -> list[etree._Element]:
    """The elements ``steps`` select from ``node``, in document order."""
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

    def path(self) -> StepPath:
        steps: list[Step] = []
        descendant = False
        if self.at("symbol", ".") and self.peek(1) in (("symbol", "/"), ("symbol", "//")):
            self.take("symbol", ".")  # ``./x`` is ``x``; ``.//x`` is ``//x`` from the row
            descendant = self.take("symbol") == "//"
        while True:
            if self.at("symbol", "@") and not descendant:
                self.take("symbol", "@")
                return StepPath(tuple(steps), _qualified(self.take("name"), None))
            steps.append(self.step(descendant))
            if self.peek() not in (("symbol", "/"), ("symbol", "//")):
                return StepPath(tuple(steps), None)
            descendant = self.take("symbol") == "//"

    def step(self, descendant: bool = False) -> Step:
        start = self.tokens[self.index][2] if self.index < len(self.tokens) else len(self.text)
        tag = _qualified(self.take("name"), NAMESPACES["h"])
        keys: list[AttributeKey] = []
        tests: list[Test] = []
        position = None
        while self.at("symbol", "["):
            if position is not None:
                raise UnsupportedPath("a predicate after a position")
            self.take("symbol", "[")
            if self.peek()[0] == "number":
                position = int(self.take("number"))
            else:
                predicate = self.or_expression()
                if isinstance(predicate, AttributeKey):
                    keys.append(predicate)
                else:
                    tests.append(predicate)
            self.take("symbol", "]")
        end = self.tokens[self.index - 1][3]
        if descendant and position is not None:
            raise UnsupportedPath("a position on a descendant step")
        source = ("//" if descendant else "") + self.text[start:end]
        return Step(tag, tuple(keys), tuple(tests), position, source, descendant)

    def or_expression(self) -> Test | AttributeKey:
        return self.joined(self.and_expression, "or", any)

    def and_expression(self) -> Test | AttributeKey:
        return self.joined(self.unary, "and", all)

    def joined(self, term: Callable[[], Test | AttributeKey], operator: str, combine: Callable[..., bool]) -> Test | AttributeKey:
        """``term (operator term)*``, the terms combined with ``any`` or ``all``."""
        terms = [term()]
        while self.at("name", operator):
            self.take("name", operator)
            terms.append(term())
        if len(terms) == 1:
            return terms[0]
        tests = [_as_test(t) for t in terms]
        return lambda node, variables: combine(test(node, variables) for test in tests)

    def unary(self) -> Test | AttributeKey:
        function = self.peek()[1] if self.peek()[0] == "name" and self.peek(1) == ("symbol", "(") else None
        if function == "not":
            self.take("name"), self.take("symbol", "(")
            inner = _as_test(self.or_expression())
            self.take("symbol", ")")
            return lambda node, variables: not inner(node, variables)
        if function == "starts-with":
            self.take("name"), self.take("symbol", "(")
            operand = self.path()
            self.take("symbol", ",")
            prefix = self.take("literal")[1:-1]
            self.take("symbol", ")")
            return lambda node, variables: any(v.startswith(prefix) for v in string_values(node, operand, variables))
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
        name = self.take("variable")[1:]
        return lambda node, variables: variables.get(name) in string_values(node, operand, variables)


def _as_test(predicate: Test | AttributeKey) -> Test:
    return predicate.test if isinstance(predicate, AttributeKey) else predicate


def _exists(operand: StepPath) -> Test | AttributeKey:
    """``[path]``: something is selected; ``[c[@a='x']...]`` becomes an :class:`AttributeKey`."""
    if len(operand.steps) == 1 and operand.attribute is None:
        (step,) = operand.steps
        if step.keys and not step.tests and step.position is None and all(k.signature[0] is None for k in step.keys):
            names = tuple(name for key in step.keys for name in key.signature[1])
            values = tuple(value for key in step.keys for value in key.values)
            return AttributeKey((step.tag, names), values)
    if operand.attribute is not None:
        return lambda node, variables: bool(string_values(node, operand, variables))
    return lambda node, variables: bool(select(node, operand.steps, variables))


def _equals(operand: StepPath, literal: str) -> Test | AttributeKey:
    """``[path = 'x']``; ``[@a='x']`` and ``[c/@a='x']`` become an :class:`AttributeKey`."""
    if operand.attribute is not None and not operand.steps:
        return AttributeKey((None, (operand.attribute,)), (literal,))
    if operand.attribute is not None and len(operand.steps) == 1:
        (step,) = operand.steps
        if not step.keys and not step.tests and step.position is None:
            return AttributeKey((step.tag, (operand.attribute,)), (literal,))
    return lambda node, variables: literal in string_values(node, operand, variables)


def parse_path(text: str) -> StepPath:
    """Compile ``text`` (relative to a row, without namespace prefixes) or raise :class:`UnsupportedPath`."""
    if text.strip() == ".":
        return StepPath((), None)
    parser = _Parser(text)
    path = parser.path()
    if parser.index != len(parser.tokens):
        raise UnsupportedPath(f"cannot read {text!r} past token {parser.index}")
    return path


@dataclass
class _Level:
    """Where a trie stands after some steps: the paths ending here, and the steps that follow."""

    slots: list[int] = field(default_factory=list)
    children: dict[str, list[_Branch]] = field(default_factory=dict)  # child steps by tag
    descendants: list[_Branch] = field(default_factory=list)  # ``//`` steps

    def branch(self, step: Step) -> _Branch:
        branches = self.descendants if step.descendant else self.children.setdefault(step.tag, [])
        for branch in branches:
            if branch.step.source == step.source:
                return branch
        branch = _Branch(step, _Level())
        branches.append(branch)
        return branch


@dataclass
class _Branch:
    step: Step
    level: _Level


class PathTrie:
    """Many paths from one row node, selected together in one walk; each path gets a slot number."""

    def __init__(self) -> None:
        self.root = _Level()
        self.size = 0

    def add(self, path: StepPath) -> int:
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


def _walk(node: etree._Element, level: _Level, variables: Variables, found: Selection) -> None:
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


def _found(node: etree._Element, level: _Level, variables: Variables, found: Selection) -> None:
    for slot in level.slots:
        selected = found.get(slot)
        if selected is None:
            found[slot] = [node]
        else:
            selected.append(node)
    if level.children or level.descendants:
        _walk(node, level, variables, found)
