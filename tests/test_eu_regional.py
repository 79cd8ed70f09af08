"""The EU regional elements (EU ICSR implementation guide, EMA/51938/2013 Rev 2) reach their own columns.

One crafted instance carries every EU element the data dictionary maps: EU causality, the name parts of
a drug and of past drugs (patient and parent), the substances of past drugs, device components, an EU
message type (an EMA master-case batch), EDQM dose form and route term IDs, and masked (``MSK``)
personal data. Both mappers must write the same bytes for it, and both dialects must load it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lxml import etree
from sqlalchemy import create_engine

from loaders.readback import TableReader
from py_load_eudravigilance.fixtures.generator import CaseSpec, DrugSpec, ReactionSpec, build_batch, build_message
from py_load_eudravigilance.mapping import catalog
from py_load_eudravigilance.mapping.code_lists import CODE_LISTS
from py_load_eudravigilance.mapping.dictionary import (
    EU_MESSAGE_TYPE_CODES,
    EU_METHOD_OF_ASSESSMENT_CODES,
    EU_NAME_PARTS,
    EU_RESULT_OF_ASSESSMENT_CODES,
    EU_SOURCE_OF_ASSESSMENT_CODES,
    HL7_NS,
    NAME_PART_ELEMENT,
    element_source,
    iter_tables,
)
from py_load_eudravigilance.mapping.mapper import CaseMapper
from py_load_eudravigilance.pipeline import run_load
from py_load_eudravigilance.quality import CheckScope, check_table
from py_load_eudravigilance.schema import CASE_TABLE_NAMES
from py_load_eudravigilance.staging.cores import compiled_core_problem
from tests.conftest import SHARED_E2B
from tests.support.db import query
from tests.test_cli import run_cli

H = f"{{{HL7_NS}}}"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
EDQM_DOSE_FORMS = "0.4.0.127.0.16.1.1.2.1"
EDQM_ROUTES = "0.4.0.127.0.16.1.1.2.6"
ORGANIZER_CODES = "2.16.840.1.113883.3.989.2.1.1.20"
OBS_CODES = "2.16.840.1.113883.3.989.2.1.1.19"
# Each name part as the drug carries it
PART_VALUES = {
    "INV": "Paracetamol Pharma",
    "SCI": "paracetamol",
    "TMK": "PharmaTM",
    "STR": "500 mg",
    "FRM": "film-coated tablets",
    "CON": "blister",
    "DEV": "pen",
    "USE": "paediatric",
}


def element(tag: str, attributes: dict[str, str] | None = None, text: str | None = None, *children: etree._Element) -> etree._Element:
    node = etree.Element(H + tag, attributes or {})
    node.text = text
    node.extend(children)
    return node


def named_parts(full_name: str, parts: dict[str, str]) -> etree._Element:
    """A product name with its EU name parts, each an HL7 name part qualified by its kind."""
    name = element("name", None, full_name)
    for qualifier, value in parts.items():
        name.append(element(NAME_PART_ELEMENT, {"qualifier": qualifier}, value))
    return name


def past_drug(name: str, substance: str, strength: str) -> etree._Element:
    """A D.8.r / D.10.8.r drug with EU name parts and one EU substance (D.8.r.EU.r)."""
    product = element(
        "kindOfProduct",
        {"classCode": "MMAT", "determinerCode": "KIND"},
        None,
        named_parts(name, {"INV": name.split()[0], "STR": f"{strength} mg"}),
        element(
            "ingredient",
            {"classCode": "ACTI"},
            None,
            element("quantity", None, None, element("numerator", {"value": strength, "unit": "mg"})),
            element(
                "ingredientSubstance",
                {"classCode": "MMAT", "determinerCode": "KIND"},
                None,
                element("code", {"code": "SUB12345", "codeSystem": "2.16.840.1.113883.3.989.5.1.1.3", "codeSystemVersion": "2024-01"}),
                element("name", None, substance),
            ),
        ),
    )
    administration = element(
        "substanceAdministration",
        {"classCode": "SBADM", "moodCode": "EVN"},
        None,
        element("consumable", None, None, element("instanceOfKind", None, None, product)),
    )
    return element(
        "subjectOf2",
        {"typeCode": "SBJ"},
        None,
        element(
            "organizer",
            {"classCode": "CATEGORY", "moodCode": "EVN"},
            None,
            element("code", {"code": "2", "codeSystem": ORGANIZER_CODES}),
            element("component", None, None, administration),
        ),
    )


def add_eu_elements(message: etree._Element, reaction: ReactionSpec, drug: DrugSpec) -> None:
    """Give a message of the generator every EU element the dictionary maps."""
    # G.k.2.2.EU.1-8: the name parts of the drug
    product = message.find(f".//{H}organizer/{H}component/{H}substanceAdministration/{H}consumable/{H}instanceOfKind/{H}kindOfProduct")
    old_name = product.find(H + "name")
    product.replace(old_name, named_parts(old_name.text, PART_VALUES))
    # G.k.4.r.9.2 and G.k.4.r.10.2 in EDQM terms; G.k.2.2.EU.9.r: a device component in the dosage's product instance
    dosage = message.find(f".//{H}organizer/{H}component/{H}substanceAdministration/{H}outboundRelationship2/{H}substanceAdministration")
    route = dosage.find(H + "routeCode")
    route.attrib.update({"code": "20053000", "codeSystem": EDQM_ROUTES, "codeSystemVersion": "2022-06"})
    component = element(
        "part",
        {"classCode": "PART"},
        None,
        element(
            "partDeviceInstance",
            {"classCode": "DEV"},
            None,
            element("lotNumberText", None, "SN-0042"),
            element(
                "asInstanceOfKind",
                None,
                None,
                element(
                    "kindOfMaterialKind",
                    None,
                    None,
                    element("code", {"code": "DEV-77", "codeSystem": "2.16.840.1.113883.3.989.5.1.1.9", "codeSystemVersion": "1.0"}),
                    element("name", None, "Pre-filled pen"),
                ),
            ),
        ),
    )
    dosage.append(
        element(
            "consumable",
            None,
            None,
            element(
                "instanceOfKind",
                None,
                None,
                element("productInstanceInstance", None, None, element("lotNumberText", None, "LOT-1"), component),
                element(
                    "kindOfProduct",
                    None,
                    None,
                    element(
                        "formCode",
                        {"code": "10219000", "codeSystem": EDQM_DOSE_FORMS, "codeSystemVersion": "2022-06"},
                        None,
                        element("originalText", None, "Tablet"),
                    ),
                ),
            ),
        )
    )
    # G.k.9.i.2.r.*.EU.1: an EU causality assessment, beside the ICH one the generator wrote
    assessment = element(
        "causalityAssessment",
        {"classCode": "OBS", "moodCode": "EVN"},
        None,
        element("code", {"code": "39", "codeSystem": OBS_CODES}),
        element("value", {XSI_TYPE: "CE", "code": "1", "codeSystem": EU_RESULT_OF_ASSESSMENT_CODES, "codeSystemVersion": "1.0"}),
        element("methodCode", {"code": "1", "codeSystem": EU_METHOD_OF_ASSESSMENT_CODES, "codeSystemVersion": "1.1"}),
        element(
            "author",
            {"typeCode": "AUT"},
            None,
            element(
                "assignedEntity",
                {"classCode": "ASSIGNED"},
                None,
                element("code", {"code": "6", "codeSystem": EU_SOURCE_OF_ASSESSMENT_CODES, "codeSystemVersion": "1.2"}),
            ),
        ),
        element("subject1", None, None, element("adverseEffectReference", None, None, element("id", {"root": reaction.xml_id}))),
        element("subject2", None, None, element("productUseReference", None, None, element("id", {"root": drug.xml_id}))),
    )
    message.find(f".//{H}adverseEventAssessment").append(element("component", {"typeCode": "COMP"}, None, assessment))
    # D.8.r with D.8.r.1.EU.* and D.8.r.EU.r; a parent (D.10) with D.10.8.r likewise, and masked identification (D.10.1)
    role = message.find(f".//{H}primaryRole")
    role.append(past_drug("Ibuprofen Pharma 400 mg tablets", "IBUPROFEN", "400"))
    parent = element(
        "role",
        {"classCode": "PRS"},
        None,
        element("code", {"code": "PRN", "codeSystem": "2.16.840.1.113883.5.111"}),
        element("associatedPerson", None, None, element("name", {"nullFlavor": "MSK"})),
        past_drug("Valproate Pharma 300 mg tablets", "VALPROIC ACID", "300"),
    )
    role.find(H + "player1").append(parent)
    # C.2.r.2.7 masked as GVP Module VI Addendum II asks (the generator already masks the reporter's names)
    reporter = message.find(f".//{H}relatedInvestigation/{H}subjectOf2/{H}controlActEvent/{H}author/{H}assignedEntity")
    reporter.insert(0, element("telecom", {"nullFlavor": "MSK"}))


def eu_batch(case_id: str = "EU-CASE-1") -> bytes:
    """An EMA master-case batch (N.1.1 coded in the EU message types) of one message with every EU element."""
    reaction, drug = ReactionSpec(), DrugSpec(name="Paracetamol Pharma 500 mg film-coated tablets")
    root = etree.fromstring(build_batch([build_message(CaseSpec(case_id, reactions=[reaction], drugs=[drug]))]).encode())
    add_eu_elements(root.find(H + "PORR_IN049016UV"), reaction, drug)
    name = root.find(H + "name")
    name.attrib.clear()
    name.attrib.update({"code": "2", "codeSystem": EU_MESSAGE_TYPE_CODES, "codeSystemVersion": "1.0", "displayName": "masterichicsr"})
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


@pytest.fixture
def eu_file(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "eu-master.xml"
    path.parent.mkdir()
    path.write_bytes(eu_batch())
    return path


def mapped(path: Path) -> tuple[dict[str, list[dict]], dict]:
    root = etree.parse(str(path)).getroot()
    mapper = CaseMapper()
    (message,) = root.iter(H + "PORR_IN049016UV")
    return mapper.map_message(message, 1).rows, mapper.map_batch_header(root)


def test_every_eu_element_lands_in_its_column(eu_file: Path) -> None:
    rows, batch = mapped(eu_file)
    (drug,) = rows["drugs"]
    assert drug["medicinal_product"].startswith("Paracetamol Pharma 500 mg film-coated tablets")
    for stem, qualifier, _label in EU_NAME_PARTS:
        assert drug[f"eu_{stem}_name"] == PART_VALUES[qualifier]
    ich, eu = rows["drug_reaction_assessments"]
    assert ich["result_of_assessment"] == "Related" and ich["eu_result_of_assessment"] is None
    assert (eu["source_of_assessment"], eu["method_of_assessment"], eu["result_of_assessment"]) == (None, None, None)
    assert (eu["eu_source_of_assessment"], eu["eu_method_of_assessment"], eu["eu_result_of_assessment"]) == ("6", "1", "1")
    versions = (eu["eu_source_of_assessment_version"], eu["eu_method_of_assessment_version"], eu["eu_result_of_assessment_version"])
    assert versions == ("1.2", "1.1", "1.0")
    (component,) = rows["eu_drug_device_components"]
    assert component | {"safetyreportid": None} == {
        "safetyreportid": None,
        "drug_seq": 1,
        "component_seq": 1,
        "device_component_name": "Pre-filled pen",
        "device_component_termid_version": "1.0",
        "device_component_termid": "DEV-77",
        "device_component_termid_code_system": "2.16.840.1.113883.3.989.5.1.1.9",
        "device_batch_lot_number": "SN-0042",
    }
    (dosage,) = rows["drug_dosages"]
    assert (dosage["batch_lot_number"], dosage["dose_form_termid"], dosage["dose_form_termid_version"]) == ("LOT-1", "10219000", "2022-06")
    route = (dosage["route_termid"], dosage["route_termid_code_system"])
    assert (dosage["dose_form_termid_code_system"], *route) == (EDQM_DOSE_FORMS, "20053000", EDQM_ROUTES)
    for table, name, substance, strength in (
        ("past_drug_history", "Ibuprofen", "IBUPROFEN", 400.0),
        ("parent_past_drug_history", "Valproate", "VALPROIC ACID", 300.0),
    ):
        (history,) = rows[table]
        parts = (history["eu_invented_name"], history["eu_strength_name"], history["eu_scientific_name"])
        assert parts == (name, f"{int(strength)} mg", None)
        (eu_substance,) = rows[f"eu_{table}_substances"]
        assert (eu_substance["substance_name"], eu_substance["strength"], eu_substance["strength_unit"]) == (substance, strength, "mg")
        assert (eu_substance["substance_termid"], eu_substance["substance_termid_version"]) == ("SUB12345", "2024-01")
    (reporter,) = rows["primary_sources"]
    assert (reporter["reporter_telephone"], reporter["reporter_telephone_null_flavor"]) == (None, "MSK")
    assert rows["parent_characteristics"][0]["parent_identification_null_flavor"] == "MSK"
    assert (batch["batch_message_type"], batch["eu_batch_message_type"], batch["eu_batch_message_type_version"]) == (None, "2", "1.0")
    assert CODE_LISTS["N.1.1.EU"][batch["eu_batch_message_type"]] == "masterichicsr"


def test_an_ich_batch_keeps_its_message_type_apart_from_the_eu_one(tmp_path: Path) -> None:
    path = tmp_path / "ich.xml"
    path.write_text(build_batch([build_message(CaseSpec("ICH-1"))]), encoding="utf-8")
    _rows, batch = mapped(path)
    assert (batch["batch_message_type"], batch["eu_batch_message_type"]) == ("1", None)


@pytest.mark.skipif(compiled_core_problem() is not None, reason="the compiled mapper is not built")
def test_both_mappers_stage_the_eu_instance_identically(eu_file: Path, tmp_path: Path) -> None:
    from tests.test_compiled import assert_same_staging

    assert_same_staging(eu_file, tmp_path / "staged")


def null_flavor_count(dsn: str, flavour: str) -> int:
    """How many values of every ``_null_flavor`` column of the case tables carry ``flavour``."""
    columns = [(c.table, c.name) for c in catalog.all_columns() if c.name.endswith("_null_flavor") and c.table != "message_batches"]
    return sum(query(dsn, f'SELECT count(*) FROM "{table}" WHERE "{column}" = \'{flavour}\'')[0][0] for table, column in columns)


def test_eu_instance_loads_on_both_dialects(dsn: str, eu_file: Path) -> None:
    assert not run_load(eu_file.parent, dsn).failures
    eu_assessments = query(
        dsn,
        "SELECT eu_source_of_assessment, eu_method_of_assessment, eu_result_of_assessment, eu_result_of_assessment_version"
        " FROM drug_reaction_assessments WHERE eu_result_of_assessment IS NOT NULL",
    )
    assert eu_assessments == [("6", "1", "1", "1.0")]
    assert query(dsn, "SELECT eu_invented_name, eu_intended_use_name FROM drugs") == [("Paracetamol Pharma", "paediatric")]
    assert query(dsn, "SELECT device_component_termid, device_batch_lot_number FROM eu_drug_device_components") == [("DEV-77", "SN-0042")]
    assert query(dsn, "SELECT substance_name FROM eu_parent_past_drug_history_substances") == [("VALPROIC ACID",)]
    # Cases of EMA's master-case batches are selected (or excluded) through the batch they came in
    masters = query(
        dsn,
        "SELECT m.safetyreportid FROM icsr_master m JOIN message_batches b ON b.file_sha256 = m.source_file_sha256"
        " WHERE b.eu_batch_message_type = '2'",
    )
    assert masters == [("EU-CASE-1",)]
    assert query(dsn, "SELECT label FROM e2b_code_lists WHERE element = 'N.1.1.EU' AND code = '2'") == [("masterichicsr",)]
    (causality,) = query(dsn, "SELECT causality FROM case_drug_reactions")[0]
    assert sorted(causality.split("; ")) == ["6 / 1 / 1", "Reporter / Global Introspection / Related"]
    # MSK is kept like any null flavour: reporter's given and family names and telephone, parent identification
    assert null_flavor_count(dsn, "MSK") == 4
    # The data-quality rules (code lists included) hold on every table the EU instance fills
    reader = TableReader(create_engine(dsn))
    try:
        with reader.engine.connect() as conn:
            for table in (*CASE_TABLE_NAMES, "message_batches"):
                assert check_table(conn, reader.table, table, CheckScope.everything()).rows_failing == 0, table
    finally:
        reader.engine.dispose()


def test_every_eu_element_is_declared_as_the_eu_source() -> None:
    elements = {spec.element for table, _ in iter_tables() for spec in table.fields}
    eu = {e for e in elements if element_source(e) == "EU"}
    assert {"G.k.2.2.EU.1", "G.k.2.2.EU.8", "D.8.r.1.EU.1", "D.10.8.r.1.EU.8", "D.8.r.EU.r.1", "D.10.8.r.EU.r.3b"} <= eu
    assert {"G.k.2.2.EU.9.r.1", "G.k.2.2.EU.9.r.4", "G.k.9.i.2.r.1.EU.1", "G.k.9.i.2.r.3.EU.1.CSV"} <= eu
    assert element_source("FDA.G.k.12.r.1") == "FDA" and element_source("G.k.2.2") == "ICH" and element_source("N.1.1.EU") == "EU"
    # EU columns of shared tables are prefixed, as FDA ones are
    shared = [f for table, _ in iter_tables() for f in table.fields if element_source(f.element) == "EU" and table.name[:3] != "eu_"]
    assert shared and all(f.column.startswith("eu_") for f in shared)


def test_dictionary_command_names_each_column_source() -> None:
    entries = json.loads(run_cli("dictionary", "--format", "json").stdout)
    sources = {(e["table"], e["column"]): e["source"] for e in entries}
    assert sources[("drugs", "eu_invented_name")] == "EU"
    assert sources[("drugs", "fda_additional_info_coded")] == "FDA"
    assert sources[("drugs", "medicinal_product")] == "ICH"
    assert sources[("message_batches", "eu_batch_message_type")] == "EU"


@pytest.mark.skipif(not (SHARED_E2B / "fda-examples").exists(), reason="needs ../shared/e2b (FDA example instances)")
def test_fda_examples_fill_no_eu_column() -> None:
    """The FDA examples carry no EU element: every EU column stays empty and every ICH N.1.1 stays ICH."""
    eu_columns = {(c.table, c.name) for c in catalog.all_columns() if c.element and element_source(c.element) == "EU"}
    eu_columns -= {(c.table, c.name) for c in catalog.all_columns() if c.name in (catalog.CASE_KEY, "drug_seq", "drug_history_seq")}
    for path in sorted((SHARED_E2B / "fda-examples").glob("*.xml")):
        root = etree.parse(str(path)).getroot()
        mapper = CaseMapper()
        batch = mapper.map_batch_header(root)
        assert (batch["batch_message_type"], batch["eu_batch_message_type"]) == ("1", None)
        for position, message in enumerate(root.iter(H + "PORR_IN049016UV"), start=1):
            for table, rows in mapper.map_message(message, position).rows.items():
                filled = {column for row in rows for column, value in row.items() if value is not None and (table, column) in eu_columns}
                assert not filled, f"{path.name}: {table} {sorted(filled)}"
