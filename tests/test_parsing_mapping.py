"""Parsing real E2B(R3) structure: batches and single messages, error isolation, hardening."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from lxml import etree

from py_load_eudravigilance.errors import HostileXMLError, MalformedXMLError, NotE2BError
from py_load_eudravigilance.fixtures.generator import CaseSpec, DrugSpec, ReactionSpec, build_batch, build_message, single_message_file
from py_load_eudravigilance.mapping.mapper import CaseMapper, element_to_json
from py_load_eudravigilance.parsing.reader import BatchReader
from py_load_eudravigilance.staging import stage_file


def map_all(xml: str) -> list:
    mapper = CaseMapper()
    reader = BatchReader(io.BytesIO(xml.encode()), "test.xml")
    return [mapper.map_message(message, position) for position, message in reader.messages()]


def test_batch_cases_map_with_repeats_keys_and_null_flavours() -> None:
    reactions = [ReactionSpec("10019211", "Headache", death=None), ReactionSpec("10028813", "Nausea")]
    drug = DrugSpec(name="Warfarin", substance="WARFARIN", role="1", assessments=("Related", "Not related"))
    cases = map_all(build_batch([build_message(CaseSpec("CASE-1", reactions=reactions, drugs=[drug], sex=None))]))
    rows = cases[0].rows
    assert [r["reaction_meddra_code"] for r in rows["reactions"]] == ["10019211", "10028813"]
    assert [r["reaction_seq"] for r in rows["reactions"]] == [1, 2]
    first = rows["reactions"][0]
    assert first["results_in_death"] is None and first["results_in_death_null_flavor"] == "NI"
    assert rows["patient_characteristics"][0]["sex"] is None
    assert rows["patient_characteristics"][0]["sex_null_flavor"] == "MSK"
    assert rows["drugs"][0]["drug_role"] == "1"
    matrix = rows["drug_reaction_matrix"]
    assert [m["reaction_xml_id"] for m in matrix] == [r.xml_id for r in reactions]
    assessments = rows["drug_reaction_assessments"]
    assert [(a["matrix_seq"], a["result_of_assessment"]) for a in assessments] == [(1, "Related"), (2, "Not related")]
    assert all(a["drug_seq"] == 1 and a["safetyreportid"] == "CASE-1" for a in assessments)


def test_audit_document_keeps_every_element_and_attribute() -> None:
    messages = BatchReader(io.BytesIO(build_batch([build_message(CaseSpec("CASE-A"))]).encode()), "test.xml").messages()
    position, element = next(messages)  # the reader frees a message once the next is read
    case = CaseMapper().map_message(element, position)
    audit = json.loads(case.audit_json)

    def rebuild(node: list) -> etree._Element:
        """The JsonML document back into XML: tag, attributes, text, children."""
        tag, *rest = node
        rebuilt = etree.Element(tag)
        for item in rest:
            if isinstance(item, dict):
                rebuilt.attrib.update({k.replace("xsi:", "xsi-"): v for k, v in item.items()})
            elif isinstance(item, str):
                rebuilt.text = item
            else:
                rebuilt.append(rebuild(item))
        return rebuilt

    def plain(node: etree._Element) -> etree._Element:
        """The original without namespaces or comments, whitespace stripped, as the audit keeps it."""
        copy = etree.Element(etree.QName(node).localname)
        for k, v in node.attrib.items():
            copy.set(k.replace("{http://www.w3.org/2001/XMLSchema-instance}", "xsi-"), v)
        copy.text = (node.text or "").strip() or None
        copy.extend(plain(child) for child in node if isinstance(child.tag, str))
        return copy

    assert audit[0] == "PORR_IN049016UV"
    assert etree.tostring(rebuild(audit)) == etree.tostring(plain(element))
    assert '"extension":"CASE-A"' in case.audit_json and '"xsi:type":"BL"' in case.audit_json


def test_audit_document_escapes_what_json_must_escape() -> None:
    awkward = 'He said "stop" \\ then\n\tleft; \x7f \u00c6r\u00f8 \u6771\u4eac \u2028 </end>'
    message = etree.Element("{urn:hl7-org:v3}m")
    message.append(etree.Comment(" not kept "))
    kept = etree.SubElement(message, "{urn:hl7-org:v3}t", {"a": awkward, "{http://www.w3.org/2001/XMLSchema-instance}type": "ST"})
    kept.text = f"  {awkward}  "
    etree.SubElement(message, "{urn:hl7-org:v3}e")
    assert json.loads(element_to_json(message)) == ["m", ["t", {"a": awkward, "xsi:type": "ST"}, awkward.strip()], ["e"]]


@pytest.mark.parametrize("pretty", [True, False])
def test_pretty_printed_one_line_and_commented_files_read_the_same(pretty: bool) -> None:
    xml = build_batch([build_message(CaseSpec(f"C-{i}"), with_comments=True) for i in range(3)])
    if pretty:
        xml = etree.tostring(etree.fromstring(xml.encode()), pretty_print=True, encoding="unicode")
    assert [c.safetyreportid for c in map_all(xml)] == ["C-0", "C-1", "C-2"]


def test_single_message_file_without_batch_wrapper() -> None:
    cases = map_all(single_message_file(CaseSpec("SINGLE-1")))
    assert [c.safetyreportid for c in cases] == ["SINGLE-1"]


def test_bad_messages_are_quarantined_and_the_others_still_come_through(tmp_path: Path) -> None:
    good = build_message(CaseSpec("GOOD-1"))
    case_id_attribute = 'extension="NOID" root="2.16.840.1.113883.3.989.2.1.3.1"'
    no_id = build_message(CaseSpec("NOID")).replace(case_id_attribute, 'root="2.16.840.1.113883.3.989.2.1.3.1"')
    bad_date = build_message(CaseSpec("BADDATE", most_recent_info="2024-01-15"))
    path = tmp_path / "mixed.xml"
    path.write_text(build_batch([good, no_id, bad_date, build_message(CaseSpec("GOOD-2"))]))
    staged = stage_file(path, tmp_path / "stage").files[0]
    assert staged.messages_total == 4 and staged.messages_rejected == 2
    quarantine = (tmp_path / "stage" / "etl_quarantine.csv").read_text()
    assert "file mixed.xml, message #2" in quarantine and "element C.1.1" in quarantine
    assert "message #3, case BADDATE, element C.1.5" in quarantine
    assert staged.row_counts["icsr_master"] == 2


def test_memory_is_released_as_messages_stream() -> None:
    xml = build_batch([build_message(CaseSpec(f"M-{i}")) for i in range(50)])
    reader = BatchReader(io.BytesIO(xml.encode()), "stream.xml")
    alive = [len(reader.root) for _position, _message in reader.messages()]
    # The header plus the parser's read-ahead buffer, never the 50 messages already seen
    assert max(alive) < 20
    assert reader.root.find("{urn:hl7-org:v3}PORR_IN049016UV") is None


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (
            '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><MCCI_IN200100UV01 xmlns="urn:hl7-org:v3">&a;</MCCI_IN200100UV01>',
            HostileXMLError,
        ),
        ('<?xml version="1.0"?><!DOCTYPE x SYSTEM "file:///etc/passwd"><MCCI_IN200100UV01 xmlns="urn:hl7-org:v3"/>', HostileXMLError),
        ('<?xml version="1.0"?><MCCI_IN200100UV01 xmlns="urn:hl7-org:v3"><PORR_IN049016UV>', MalformedXMLError),
        ('<?xml version="1.0"?><invoice><total>3</total></invoice>', NotE2BError),
        ("", MalformedXMLError),
    ],
)
def test_hostile_and_broken_files_get_a_clear_error_naming_the_file(payload: str, error: type[Exception]) -> None:
    reader = BatchReader(io.BytesIO(payload.encode()), "suspect.xml")
    with pytest.raises(error) as raised:
        list(reader.messages())
    assert "suspect.xml" in str(raised.value)
    assert "root:" not in str(raised.value)  # no entity content leaked into the message
