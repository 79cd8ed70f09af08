"""What no column holds is counted and named, never silently dropped (``mapping/unmapped.py``).

A message carrying content this loader does not map (a foreign regional element, an observation of
an unknown code) loads, and its file's account says how many such values it held and where: in
``etl_file_history``, the CLI summary and the Dagster partition metadata, with either mapper. The
C walk and the Python one count the same, on crafted, generated and the FDA's example messages.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from lxml import etree

from py_load_eudravigilance.cli import run_report
from py_load_eudravigilance.fixtures.generator import CaseSpec, CorpusSpec, build_batch, build_message, random_case
from py_load_eudravigilance.mapping.unmapped import REPORTED_PATHS, counter_for
from py_load_eudravigilance.pipeline import run_load
from py_load_eudravigilance.staging.cores import compiled_core_problem
from tests.conftest import SHARED_E2B
from tests.support.db import query

HL7 = "{urn:hl7-org:v3}"
EVENT = "controlActProcess/subject/investigationEvent"
PATIENT = f"{EVENT}/component/adverseEventAssessment/subject1/primaryRole"
# A regional element of a namespace this loader does not know, and an observation of a code it does not map
FOREIGN = '<r:note xmlns:r="urn:example:regional" level="high">kept in the audit XML only</r:note>'
UNKNOWN_OBSERVATION = (
    '<subjectOf2 typeCode="SBJ"><observation classCode="OBS" moodCode="EVN">'
    '<code code="999" codeSystem="2.16.840.1.113883.3.989.2.1.1.19"/><value xsi:type="ST">an unknown finding</value>'
    "</observation></subjectOf2>"
)
FOREIGN_PATHS = [
    f"{PATIENT}/subjectOf2/observation/code/@code",
    f"{PATIENT}/subjectOf2/observation/code/@codeSystem",
    f"{PATIENT}/subjectOf2/observation/value",
    f"{EVENT}/r:note/@level",
    f"{EVENT}/r:note",
]
# The FDA examples' content this version does not map (docs/unmapped.md says why)
FDA_UNMAPPED = {
    f"{PATIENT}/subjectOf2/organizer/component/substanceAdministration/outboundRelationship2/substanceAdministration/effectiveTime/@nullFlavor",
    f"{PATIENT}/subjectOf2/organizer/component/substanceAdministration/outboundRelationship2/substanceAdministration/performer"
    "/assignedEntity/representedOrganization/addr/country",
    f"{PATIENT}/subjectOf2/organizer/component/substanceAdministration/outboundRelationship2/sequenceNumber/@value",
    *(
        f"{PATIENT}/subjectOf2/organizer/component/substanceAdministration/outboundRelationship2/observation/value/@{name}"
        for name in ("code", "codeSystem", "codeSystemVersion", "displayName")
    ),
    f"{PATIENT}/subjectOf2/organizer/component/substanceAdministration/outboundRelationship2/observation/effectiveTime/low/@nullFlavor",
    f"{PATIENT}/player1/role/subjectOf2/organizer/component/substanceAdministration/outboundRelationship2/observation/effectiveTime/low/@nullFlavor",
    f"{PATIENT}/subjectOf2/organizer/component/observation/value/low/@nullFlavor",
    f"{PATIENT}/subjectOf2/organizer/component/observation/value/high/@nullFlavor",
    f"{PATIENT}/subjectOf2/organizer/component/observation/referenceRange/observationRange/value/@unit",
}
COMPILED_BUILT = compiled_core_problem() is None
KINDS = ["python", pytest.param("compiled", marks=pytest.mark.skipif(not COMPILED_BUILT, reason="the compiled mapper is not built"))]


def foreign_message(case_id: str) -> str:
    message = build_message(CaseSpec(case_id))
    return message.replace("</investigationEvent>", f"{FOREIGN}</investigationEvent>", 1).replace(
        "</primaryRole>", f"{UNKNOWN_OBSERVATION}</primaryRole>", 1
    )


def messages_of(document: str | bytes) -> list[etree._Element]:
    root = etree.fromstring(document.encode() if isinstance(document, str) else document)
    return [*root.iter(f"{HL7}PORR_IN049016UV")]


@pytest.mark.parametrize("kind", KINDS)
def test_foreign_elements_and_unknown_codes_are_counted_with_their_paths(kind: str) -> None:
    (message,) = messages_of(build_batch([foreign_message("FOREIGN-1")]))
    count, paths = counter_for(kind)(message)
    assert (count, paths) == (len(FOREIGN_PATHS), FOREIGN_PATHS)
    # The same message without them has nothing unmapped: every value the generator writes has a column
    (plain,) = messages_of(build_batch([build_message(CaseSpec("PLAIN-1"))]))
    assert counter_for(kind)(plain) == (0, [])


@pytest.mark.parametrize("kind", KINDS)
def test_blank_text_empty_attributes_and_structural_codes_are_not_values(kind: str) -> None:
    empty = '<r:note xmlns:r="urn:example:regional" level="" classCode="OBS" moodCode="EVN">\n\t </r:note>'
    message = build_message(CaseSpec("BLANK-1")).replace("</investigationEvent>", f"{empty}</investigationEvent>", 1)
    (element,) = messages_of(build_batch([message]))
    assert counter_for(kind)(element) == (0, [])


def test_a_value_repeated_counts_each_time_and_its_path_once() -> None:
    twice = FOREIGN + FOREIGN
    message = build_message(CaseSpec("TWICE-1")).replace("</investigationEvent>", f"{twice}</investigationEvent>", 1)
    (element,) = messages_of(build_batch([message]))
    expected = (4, [f"{EVENT}/r:note/@level", f"{EVENT}/r:note"])
    assert counter_for("python")(element) == expected
    if COMPILED_BUILT:
        assert counter_for("compiled")(element) == expected


def fda_messages() -> list[tuple[str, etree._Element]]:
    examples = SHARED_E2B / "fda-examples"
    if not examples.is_dir():
        pytest.skip("no ../shared/e2b/fda-examples")
    return [(path.name, message) for path in sorted(examples.glob("*.xml")) for message in messages_of(path.read_bytes())]


@pytest.mark.skipif(not COMPILED_BUILT, reason="the compiled mapper is not built")
def test_the_c_walk_counts_as_the_python_one() -> None:
    rng = random.Random(27)
    generated = [build_message(random_case(rng, f"GEN-{n}", 1, CorpusSpec())) for n in range(60)]
    generated += [foreign_message("FOREIGN-2")]
    messages = messages_of(build_batch(generated))
    if (SHARED_E2B / "fda-examples").is_dir():
        messages += [message for _, message in fda_messages()]
    python, compiled = counter_for("python"), counter_for("compiled")
    for message in messages:
        assert compiled(message) == python(message)


# HL7 names in other namespaces (or none), and an attribute of a read name in a foreign namespace: not HL7's
NAMESAKES = (
    '<r:id xmlns:r="urn:example:regional" extension="not the case id"/>',
    '<code xmlns="" code="no namespace"/>',
    '<statusCode xmlns="urn:example:other" code="active"/>',
    '<id xmlns:r="urn:example:regional" r:extension="foreign attribute" root="2.16.840.1.113883.3.989.2.1.3.2"'
    ' extension="WW-NAMESAKE"/>',
)


@pytest.mark.skipif(not COMPILED_BUILT, reason="the compiled mapper is not built")
def test_the_c_walk_tells_names_apart_by_namespace_in_every_document() -> None:
    # The C walk knows names by libxml2's pointers: each document parsed on its own, in changing orders and
    # mixed with plain ones, must still be counted by name and namespace, as the Python walk does
    plain = build_message(CaseSpec("PLAIN-NAMES"))
    variants = [
        plain.replace("</investigationEvent>", f"{namesake}</investigationEvent>", 1)
        for namesake in (*NAMESAKES, "".join(NAMESAKES), "".join(reversed(NAMESAKES)))
    ]
    python, compiled = counter_for("python"), counter_for("compiled")
    rng = random.Random(3)
    for _ in range(3):
        order = [*variants, plain, foreign_message("FOREIGN-4")]
        rng.shuffle(order)
        for document in order:
            (message,) = messages_of(build_batch([document]))
            assert compiled(message) == python(message)
    (message,) = messages_of(build_batch([variants[-1]]))
    count, paths = python(message)
    assert count == len(NAMESAKES) and f"{EVENT}/id/@{{urn:example:regional}}extension" in paths


def test_the_fda_examples_leave_only_the_documented_content_unmapped() -> None:
    found: set[str] = set()
    for name, message in fda_messages():
        count, paths = counter_for("python")(message)
        assert count >= len(paths), name
        found.update(paths)
    assert found <= FDA_UNMAPPED, sorted(found - FDA_UNMAPPED)


@pytest.mark.parametrize("mapper", KINDS)
def test_the_history_the_summary_and_the_partition_metadata_name_them(dsn: str, tmp_path: Path, mapper: str) -> None:
    source = tmp_path / "in"
    source.mkdir()
    (source / "regional.xml").write_text(
        build_batch([foreign_message("FOREIGN-1"), build_message(CaseSpec("PLAIN-2")), foreign_message("FOREIGN-3")]), encoding="utf-8"
    )
    summary = run_load(source, dsn, workers=1, mapper=mapper)
    assert summary.exit_code == 0, summary.outcomes

    # Every message loaded; the values stay in the audit XML
    assert query(dsn, "SELECT COUNT(*) FROM icsr_master") == [(3,)]
    ((payload,),) = query(dsn, "SELECT payload FROM icsr_audit_log WHERE safetyreportid = 'FOREIGN-1'")
    assert "kept in the audit XML only" in payload and "an unknown finding" in payload
    ((values, paths),) = query(dsn, "SELECT unmapped_values, unmapped_paths FROM etl_file_history")
    assert values == 2 * len(FOREIGN_PATHS)
    assert (json.loads(paths) if isinstance(paths, str) else paths) == FOREIGN_PATHS

    report = "\n".join(run_report(summary))
    assert f"unmapped values (no column holds them; the audit XML keeps them): {values} in 1 files" in report
    assert all(f"  {path}" in report for path in FOREIGN_PATHS)

    assets = pytest.importorskip("eudravig_assets.assets")
    (outcome,) = summary.outcomes
    metadata = assets.file_metadata("regional.xml", outcome)
    assert metadata["unmapped_values"] == values
    assert metadata["unmapped_paths"].value == FOREIGN_PATHS


def test_a_file_lists_the_first_distinct_paths_and_counts_them_all(sqlite_dsn: str, tmp_path: Path) -> None:
    notes = "".join(f'<r:note{n} xmlns:r="urn:example:regional">value {n}</r:note{n}>' for n in range(REPORTED_PATHS + 5))
    message = build_message(CaseSpec("MANY-1")).replace("</investigationEvent>", f"{notes}</investigationEvent>", 1)
    source = tmp_path / "in"
    source.mkdir()
    (source / "many.xml").write_text(build_batch([message]), encoding="utf-8")
    summary = run_load(source, sqlite_dsn, workers=1)
    (outcome,) = summary.outcomes
    assert outcome.unmapped_values == REPORTED_PATHS + 5
    assert outcome.unmapped_paths == [f"{EVENT}/r:note{n}" for n in range(REPORTED_PATHS)]
