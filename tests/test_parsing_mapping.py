"""Parsing real E2B(R3) structure: batches and single messages, error isolation, hardening."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from lxml import etree

from py_load_eudravigilance.errors import HostileXMLError, MalformedXMLError, NotE2BError
from py_load_eudravigilance.fixtures.generator import CaseSpec, DrugSpec, ReactionSpec, build_batch, build_message, single_message_file
from py_load_eudravigilance.mapping.mapper import CaseMapper
from py_load_eudravigilance.parsing.reader import READ_CHUNK, BatchReader
from py_load_eudravigilance.staging import STAGED_COLUMNS, stage_file
from py_load_eudravigilance.staging.copybinary import decode_rows
from py_load_eudravigilance.staging.layout import STAGED_FAMILIES, table_file
from tests.conftest import SHARED_E2B


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


def staged_rows(directory: Path, table: str) -> list[dict]:
    """The rows a staged batch holds for ``table``, as Python values (None for NULL)."""
    path = table_file(directory, table)
    rows = decode_rows(path.read_bytes(), STAGED_FAMILIES[table]) if path.exists() else []
    return [dict(zip(STAGED_COLUMNS[table], values, strict=True)) for values in rows]


def every_node(root: etree._Element) -> list[tuple]:
    """Tag, attributes, text and the text after it (the root's own excepted) of every node, in document order."""
    return [(n.tag, dict(n.attrib), n.text, n.tail if n is not root else None) for n in root.iter()]


ATTACHMENT = "VGhlIHBhdGllbnQ="  # base64 after <reference/>: text that follows a child element


def test_audit_payload_is_the_message_as_received(tmp_path: Path) -> None:
    message = build_message(CaseSpec("CASE-A", narrative="Line one\n\tLine two \\ and a \\. line"))
    document = (
        '<reference typeCode="REFR"><document classCode="DOC" moodCode="EVN">'
        '<code code="1" codeSystem="2.16.840.1.113883.3.989.2.1.1.27"/><title>Report</title>'
        f'<text mediaType="application/pdf" representation="B64"><reference value="r.pdf"/>{ATTACHMENT}</text></document></reference>'
    )
    message = message.replace("<availabilityTime", f"{document}<availabilityTime", 1)
    path = tmp_path / "one.xml"
    path.write_text(build_batch([message]), encoding="utf-8")
    stage_file(path, tmp_path / "stage")
    (audit,) = staged_rows(tmp_path / "stage", "icsr_audit_log")
    payload = etree.fromstring(audit["payload"].encode())  # declares the namespaces it uses: it parses on its own
    (original,) = etree.fromstring(path.read_bytes()).iter("{urn:hl7-org:v3}PORR_IN049016UV")
    assert every_node(payload) == every_node(original)
    assert payload.find(".//{urn:hl7-org:v3}text/{urn:hl7-org:v3}reference").tail == ATTACHMENT
    assert audit["row_counts"]["icsr_master"] == 1 and audit["safetyreportid"] == "CASE-A"


def test_audit_payload_of_an_indented_file_drops_only_the_indentation_between_elements(tmp_path: Path) -> None:
    message = build_message(CaseSpec("CASE-P", narrative="  two leading spaces and a tab\t"))
    message = message.replace(
        "<availabilityTime", '<reference typeCode="REFR"><document><title>   </title></document></reference><availabilityTime', 1
    )
    indented = etree.tostring(etree.fromstring(build_batch([message]).encode()), pretty_print=True, encoding="unicode")
    path = tmp_path / "indented.xml"
    path.write_text(indented, encoding="utf-8")
    stage_file(path, tmp_path / "stage")
    (audit,) = staged_rows(tmp_path / "stage", "icsr_audit_log")
    payload = etree.fromstring(audit["payload"].encode())
    (original,) = etree.fromstring(path.read_bytes()).iter("{urn:hl7-org:v3}PORR_IN049016UV")

    def without_indentation(root: etree._Element) -> list[tuple]:
        def kept(text: str | None, beside_elements: bool) -> str | None:
            return None if beside_elements and text is not None and not text.strip() else text

        return [
            (tag, attrib, kept(text, len(node) > 0), kept(tail, True))
            for node, (tag, attrib, text, tail) in zip(root.iter(), every_node(root), strict=True)
        ]

    assert "\n  " not in audit["payload"] and without_indentation(payload) == without_indentation(original)
    assert payload.find(".//{urn:hl7-org:v3}title").text == "   "  # a whitespace-only value is a value: kept
    assert "  two leading spaces and a tab\t" in audit["payload"]


@pytest.mark.parametrize("shift", [-1, 0, 1, 2])
def test_a_whitespace_only_value_is_kept_wherever_a_read_of_the_file_ends(shift: int, tmp_path: Path) -> None:
    message = build_message(CaseSpec("CASE-W")).replace(
        "<availabilityTime", '<reference typeCode="REFR"><document><title>   </title></document></reference><availabilityTime', 1
    )
    xml = build_batch([message])
    # A comment before the root moves the '<' of </title> to the last byte of the reader's first read (and around it)
    end_of_value = xml.index("<title>   </title>") + len("<title>   ")
    padding = READ_CHUNK - 1 + shift - end_of_value - len("<!---->")
    root_at = xml.index("<MCCI_IN200100UV01")
    path = tmp_path / "boundary.xml"
    path.write_text(f"{xml[:root_at]}<!--{'x' * padding}-->{xml[root_at:]}", encoding="utf-8")
    assert path.read_bytes()[READ_CHUNK - 1 + shift : READ_CHUNK + 1 + shift] == b"</"
    stage_file(path, tmp_path / "stage")
    (audit,) = staged_rows(tmp_path / "stage", "icsr_audit_log")
    assert "<title>   </title>" in audit["payload"]


@pytest.mark.skipif(not (SHARED_E2B / "fda-examples").exists(), reason="needs ../shared/e2b (FDA example instances)")
def test_fda_scenario_4_attachment_text_after_its_reference_is_in_the_audit_payload(tmp_path: Path) -> None:
    source = SHARED_E2B / "fda-examples" / "FAERS2022Scenario4.xml"
    stage_file(source, tmp_path / "stage")
    (audit,) = staged_rows(tmp_path / "stage", "icsr_audit_log")
    texts = etree.fromstring(audit["payload"].encode()).iterfind(".//{urn:hl7-org:v3}document/{urn:hl7-org:v3}text")
    tails = [(text.find("{urn:hl7-org:v3}reference").tail or "").strip() for text in texts]
    assert "VGhlIHBhdGllbnQgd2FzIGEgMzUgeWxlIHdpdGggbm8gc==" in tails


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
    quarantine = [row["reason"] for row in staged_rows(tmp_path / "stage", "etl_quarantine")]
    assert "file mixed.xml, message #2" in quarantine[0] and "element C.1.1" in quarantine[0]
    assert "message #3, case BADDATE, element C.1.5" in quarantine[1]
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


def test_files_read_one_after_another_in_one_process_read_as_each_alone() -> None:
    """A worker reads thousands of files with one parser: a file that failed, one left half read, or two read at once
    leave nothing behind for the next."""
    good = build_batch([build_message(CaseSpec(f"NEXT-{i}")) for i in range(3)])
    broken = '<?xml version="1.0"?><MCCI_IN200100UV01 xmlns="urn:hl7-org:v3"><PORR_IN049016UV>'
    hostile = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><MCCI_IN200100UV01 xmlns="urn:hl7-org:v3">&a;</MCCI_IN200100UV01>'
    for bad in (broken, hostile):
        with pytest.raises((MalformedXMLError, HostileXMLError)):
            list(BatchReader(io.BytesIO(bad.encode()), "bad.xml").messages())
        assert [c.safetyreportid for c in map_all(good)] == ["NEXT-0", "NEXT-1", "NEXT-2"]
    left = BatchReader(io.BytesIO(build_batch([build_message(CaseSpec(f"LEFT-{i}")) for i in range(3)]).encode()), "left.xml").messages()
    next(left)  # abandoned after its first message
    assert [c.safetyreportid for c in map_all(good)] == ["NEXT-0", "NEXT-1", "NEXT-2"]
    mapper = CaseMapper()
    first = BatchReader(io.BytesIO(good.encode()), "first.xml").messages()
    second = BatchReader(io.BytesIO(single_message_file(CaseSpec("OTHER-1")).encode()), "second.xml").messages()
    interleaved = [mapper.map_message(*reversed(next(reader))).safetyreportid for reader in (first, second, first)]
    assert interleaved == ["NEXT-0", "OTHER-1", "NEXT-1"]
    assert [mapper.map_message(m, p).safetyreportid for p, m in first] == ["NEXT-2"] and not list(second)
