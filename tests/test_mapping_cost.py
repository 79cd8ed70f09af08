"""Mapping a message costs work in proportion to its size, whatever its shape.

A drug's reactions and their assessments are joined by XML id (G.k.9.i): read row by row, each of n
reactions scanned all n assessments and intervals of the drug, and 4,000 assessed reactions took two
minutes. The work is counted, not timed: function calls for the Python mapper (lxml's calls included),
nodes looked at for the compiled one. Four times the message may cost four times the work, not sixteen.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable

import pytest
from lxml import etree

from py_load_eudravigilance.fixtures.generator import CaseSpec, DrugSpec, ReactionSpec, build_batch, build_message
from py_load_eudravigilance.parsing.reader import BatchReader
from py_load_eudravigilance.staging.cores import compiled_core_problem, create_core

SLACK = 1.25  # fixed costs per message shrink, per element stay: a linear mapper stays well within this


def one_drug_many_reactions(n: int) -> CaseSpec:
    reactions = [ReactionSpec(xml_id=f"r{i}") for i in range(n)]
    return CaseSpec("WIDE", reactions=reactions, drugs=[DrugSpec(xml_id="d0", assessments=("Related",))])


def many_drugs_one_reaction(n: int) -> CaseSpec:
    return CaseSpec("LONG", reactions=[ReactionSpec(xml_id="r0")], drugs=[DrugSpec(xml_id=f"d{i}") for i in range(n)])


def python_calls(stage: Callable[[], None]) -> int:
    calls = 0

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        calls += 1

    sys.setprofile(count)
    try:
        stage()
    finally:
        sys.setprofile(None)
    return calls


def compiled_visits(stage: Callable[[], None]) -> int:
    from py_load_eudravigilance.mapping import _core  # type: ignore[attr-defined]

    before = _core.node_visits()
    stage()
    return _core.node_visits() - before


def work_and_size(case: CaseSpec, kind: str) -> tuple[int, int]:
    """The work of staging ``case`` with one core, and the number of elements of its message."""
    document = build_batch([build_message(case)]).encode()
    core = create_core(kind)
    core.begin_file("cost.xml", "0" * 64)
    counter = python_calls if kind == "python" else compiled_visits
    for position, message in BatchReader(io.BytesIO(document), "cost.xml").messages():  # the reader frees each after it
        size = sum(1 for _ in message.iter(etree.Element))
        work = counter(lambda: core.stage_message(message, position))  # noqa: B023 - called at once
    assert core.take()["icsr_master"]
    return work, size


@pytest.mark.parametrize("shape", [one_drug_many_reactions, many_drugs_one_reaction])
@pytest.mark.parametrize("kind", ["python", "compiled"])
def test_mapping_work_grows_linearly_with_the_message(kind: str, shape: Callable[[int], CaseSpec]) -> None:
    if kind == "compiled" and (problem := compiled_core_problem()) is not None:
        pytest.skip(problem)
    small_work, small_size = work_and_size(shape(50), kind)
    large_work, large_size = work_and_size(shape(200), kind)
    assert large_work / small_work <= SLACK * large_size / small_size, (small_work, large_work, small_size, large_size)
