"""The one-walk path evaluator selects exactly what lxml's XPath selects, for every dictionary path."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from lxml import etree

from py_load_eudravigilance.fixtures.generator import CaseSpec, DrugSpec, ReactionSpec, build_batch, build_message
from py_load_eudravigilance.mapping.dictionary import NAMESPACES, hl7_xpath
from py_load_eudravigilance.mapping.mapper import CaseMapper, CompiledTable, _split_path
from py_load_eudravigilance.mapping.paths import PathTrie, UnsupportedPath, keyed_path, parse_path, select
from py_load_eudravigilance.parsing.reader import BatchReader
from tests.conftest import SHARED_E2B

H = NAMESPACES["h"]
SAMPLE = f"""<r xmlns="{H}" xmlns:xsi="{NAMESPACES["xsi"]}">
  <obs><code code="29" codeSystem="A"/><value xsi:type="CE" code="x1"/></obs>
  <!-- a comment is no element -->
  <obs><code code="30" codeSystem="A"/><value code="x2" value="2"/></obs>
  <obs><code code="29" codeSystem="B"/><value code="x3"/></obs>
  <name><given>Ann</given><given>Bea</given><family>Cole</family></name>
  <telecom value="tel:123"/><telecom value="mailto:a@b"/>
  <id root="R1" extension="E1"/><id extension="E2"/>
  <ref typeCode="SAS"><actReference><id root="re-1"/></actReference><pause value="3"/></ref>
  <ref typeCode="SAS"><actReference><id root="re-2"/></actReference><pause value="4"/></ref>
</r>"""

CASES = [
    ("obs[code[@code='29'][@codeSystem='A']]/value/@code", {}, ["x1"]),
    ("obs[code/@code='29']/value/@code", {}, ["x1", "x3"]),
    ("obs[not(code/@codeSystem='A')]/value/@code", {}, ["x3"]),
    ("obs/value[@xsi:type='CE']/@code", {}, ["x1"]),
    ("obs/value[@value]/@code", {}, ["x2"]),
    ("obs[2]/value/@code", {}, ["x2"]),
    ("name/given[2]", {}, ["Bea"]),
    ("telecom[starts-with(@value, 'mailto:')]/@value", {}, ["mailto:a@b"]),
    ("id[not(@root) or @root='R1']/@extension", {}, ["E1", "E2"]),
    ("id[@root='R1' and @extension='E1']/@extension", {}, ["E1"]),
    ("ref[@typeCode='SAS'][actReference/id/@root = $reaction_id]/pause/@value", {"reaction_id": "re-2"}, ["4"]),
    ("ref[actReference/id/@root = $reaction_id]/pause/@value", {"reaction_id": "none"}, []),
    ("missing/step/@value", {}, []),
    ("./@missing", {}, [None]),
    ("name//family", {}, ["Cole"]),
    (".//actReference/id/@root", {}, ["re-1", "re-2"]),
]


def values_of(node: etree._Element, path: str, nodes: list[etree._Element]) -> list[str]:
    attribute = parse_path(path).attribute
    return [n.get(attribute) if attribute else n.text for n in nodes]


@pytest.mark.parametrize(("path", "variables", "expected"), CASES, ids=[c[0] for c in CASES])
def test_paths_select_as_xpath_does(path: str, variables: dict[str, str], expected: list[str]) -> None:
    root = etree.fromstring(SAMPLE)
    compiled = parse_path(path)
    alone = values_of(root, path, select(root, compiled.steps, variables))
    trie = PathTrie()
    trie.add(parse_path("obs/code/@code"))  # a neighbour sharing the first step must not disturb it
    keyed = keyed_path(compiled)
    if keyed is not None:  # a join on a variable is looked up in an index, not walked per row
        together = values_of(root, path, keyed.select(root, variables, {}) or [])
    else:
        slot = trie.add(compiled)
        together = values_of(root, path, trie.select(root, variables).get(slot, []))
    node_path, attribute = _split_path(path)
    xpath = etree.XPath(hl7_xpath(node_path), namespaces=NAMESPACES)
    by_xpath = [n.get(attribute) if attribute else n.text for n in xpath(root, **variables)]
    assert alone == together == by_xpath == expected


@pytest.mark.parametrize("path", ["ancestor::obs/value", "obs | name", "obs[last()]/value", "obs[1][@code='x']", "obs/text()", "x:y"])
def test_paths_beyond_the_subset_are_refused_not_guessed(path: str) -> None:
    with pytest.raises(UnsupportedPath):
        parse_path(path)


def messages_to_check() -> Iterator[tuple[str, etree._Element]]:
    """Generated cases with every repeat the generator makes, and the FDA examples where present."""
    drugs = [DrugSpec(xml_id=f"d{i}", assessments=("Related", "Not related")) for i in range(3)]
    reactions = [ReactionSpec("10019211", "Headache", xml_id=f"r{i}", death=None if i else True) for i in range(3)]
    generated = build_batch(
        [
            build_message(CaseSpec("CASE-P", reactions=reactions, drugs=drugs, padding_paragraphs=2)),
            build_message(CaseSpec("CASE-N", sex=None, nullification=True)),
        ]
    )
    sources = [("generated", generated.encode())]
    sources += [(p.name, p.read_bytes()) for p in sorted((SHARED_E2B / "fda-examples").glob("*.xml"))]
    for name, data in sources:
        for position, message in BatchReader(io.BytesIO(data), name).messages():
            yield f"{name}#{position}", message


def compare_table(table: CompiledTable, parent: etree._Element, variables: dict[str, str], found: dict, where: str) -> int:
    """Check every trie-selected field and child row set of ``table``'s rows against lxml's XPath; count checks."""
    checks = 0
    if table.row_slot is not None:
        by_xpath = [n for n in table.rows(parent, **variables) if isinstance(n, etree._Element)]
        assert found.get(table.row_slot, []) == by_xpath, f"{where}: rows of {table.spec.name}"
        checks += 1
    if table.rows_keyed is not None and (keyed_rows := table.rows_keyed.select(parent, variables, table.memo)) is not None:
        assert keyed_rows == [n for n in table.rows(parent, **variables) if isinstance(n, etree._Element)], (
            f"{where}: rows of {table.spec.name}"
        )
        checks += 1
    for node, scope in table.contexts(parent, variables, found):
        for name, xpath in table.bind.items():  # node sets bound by a keyed path too
            if table.bind_keyed[name] is not None:
                assert scope[name] == xpath(node, **scope), f"{where}: ${name} of {table.spec.name}"
                checks += 1
        selection = table.trie.select(node, scope)
        for slot, compiled in table.by_slot.items():
            node_path, _ = _split_path(compiled.spec.path)
            by_xpath = [n for n in etree.XPath(hl7_xpath(node_path), namespaces=NAMESPACES)(node, **scope) if isinstance(n, etree._Element)]
            assert selection.get(slot, []) == by_xpath, f"{where}: {table.spec.name}.{compiled.spec.column} ({compiled.spec.path})"
            checks += 1
        for compiled in table.unslotted:  # joins on a variable, looked up in their indexes
            if compiled.keyed is not None and compiled.xpath is not None:
                by_xpath = [n for n in compiled.xpath(node, **scope) if isinstance(n, etree._Element)]
                assert compiled.keyed.select(node, scope, table.memo) == by_xpath, f"{where}: {table.spec.name}.{compiled.spec.column}"
                checks += 1
        for child in table.children:
            checks += compare_table(child, node, scope, selection, where)
    return checks


def test_every_dictionary_path_selects_what_xpath_selects_in_real_messages() -> None:
    mapper = CaseMapper()
    checks = {where: compare_table(mapper.master, message, {}, {}, where) for where, message in messages_to_check()}
    # Every message passes through the master, patient, reaction and drug tables' paths at least
    assert min(checks.values()) > 100, f"too few paths were compared, the walk over the tables is broken: {checks}"


def test_nearly_every_dictionary_path_is_walked_not_left_to_xpath() -> None:
    mapper = CaseMapper()

    def tables(table: CompiledTable) -> Iterator[CompiledTable]:
        yield table
        for child in table.children:
            yield from tables(child)

    walked = sum(len(t.by_slot) for t in tables(mapper.master))
    left = [f.spec.path for t in tables(mapper.master) for f in t.unslotted if f.xpath is not None]
    # Only unions, the ancestor axis and node sets bound to a variable are left to XPath, and they are few
    keyed = [f.spec.path for t in tables(mapper.master) for f in t.unslotted if f.keyed is not None]
    assert walked > 230 and len(left) - len(keyed) <= 6, left
    assert all("|" in path or "ancestor::" in path or path.startswith("$") or path in keyed for path in left), left
