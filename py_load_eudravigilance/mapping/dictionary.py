"""The data dictionary: every E2B(R3) data element, the table and column that hold it, and the
XPath (relative to its repeat) that reads it.

This module is the single source of truth: the database schema (``schema.py``), the mapper and
``eudravigloader dictionary`` are all generated from it. Element numbers are written exactly as in
the ICH E2B(R3) implementation guide, the FDA regional guide for ``FDA.*`` elements and the EU ICSR
implementation guide (EMA/51938/2013) for ``*.EU.*`` elements: :func:`element_source` tells the three
sources apart. Paths are written without the HL7 namespace prefix; :func:`hl7_xpath` adds it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from lxml import etree

from py_load_eudravigilance.mapping.spec import Field, Kind, TableSpec

HL7_NS = "urn:hl7-org:v3"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
NAMESPACES = {"h": HL7_NS, "xsi": XSI_NS}

# HL7 OIDs of the E2B(R3) code lists used in predicates
OBS_CODES = "2.16.840.1.113883.3.989.2.1.1.19"
ORGANIZER_CODES = "2.16.840.1.113883.3.989.2.1.1.20"
AUTHOR_CODES = "2.16.840.1.113883.3.989.2.1.1.21"
RELATED_INVESTIGATION_CODES = "2.16.840.1.113883.3.989.2.1.1.22"
CHARACTERISTIC_CODES = "2.16.840.1.113883.3.989.2.1.1.23"
DOCUMENT_CODES = "2.16.840.1.113883.3.989.2.1.1.27"
ADDITIONAL_INFO_CODES = "2.16.840.1.113883.3.989.2.1.1.17"
MEDDRA = "2.16.840.1.113883.6.163"
FDA_OBS_CODES = "2.16.840.1.113883.3.989.5.1.2.2.1.3"
FDA_ADDITIONAL_INFO_CODES = "2.16.840.1.113883.3.989.5.1.2.1.1.7"
FDA_DEVICE_OPERATOR_CODES = "2.16.840.1.113883.3.989.5.1.2.1.1.6"
# The EU regional code systems (EU ICSR implementation guide): N.1.1 message types and EU causality
EU_MESSAGE_TYPE_CODES = "2.16.840.1.113883.3.989.5.1.1.5.1"
EU_METHOD_OF_ASSESSMENT_CODES = "2.16.840.1.113883.3.989.5.1.1.5.2"
EU_RESULT_OF_ASSESSMENT_CODES = "2.16.840.1.113883.3.989.5.1.1.5.3"
EU_SOURCE_OF_ASSESSMENT_CODES = "2.16.840.1.113883.3.989.5.1.1.5.4"
# The IDMP PhPID code system; until ISO IDMP assigns it, senders use this ICH placeholder
PHPID_CODE_SYSTEM = "2.16.840.1.113883.3.989.2.1.3.16"

_TOKEN = re.compile(
    r"""('[^']*'|"[^"]*")"""  # string literal: left alone
    r"""|([@$]?)([A-Za-z_][\w.\-]*(?::[A-Za-z_][\w.\-]*)?)(\s*(?:\(|::))?"""
)
_OPERATORS = {"and", "or", "div", "mod"}


def element_source(element: str) -> str:
    """The guide that defines an element: ``FDA`` (``FDA.*``), ``EU`` (``*.EU.*``) or ``ICH``."""
    if element.startswith("FDA."):
        return "FDA"
    if ".EU." in element or element.endswith(".EU"):
        return "EU"
    return "ICH"


def hl7_xpath(path: str) -> str:
    """Prefix every element name step of ``path`` with ``h:`` (the HL7 v3 namespace)."""

    def prefix(match: re.Match[str]) -> str:
        literal, sigil, name, follower = match.groups()
        if literal is not None:
            return literal
        if sigil or follower or ":" in name or name in _OPERATORS:
            return match.group(0)
        return f"h:{name}"

    return _TOKEN.sub(prefix, path)


def obs(code: str, system: str = OBS_CODES, element: str = "observation") -> str:
    """An HL7 observation selected by its E2B code, e.g. ``observation[code=29]`` (reaction)."""
    return f"{element}[code[@code='{code}'][@codeSystem='{system}']]"


# Anchors, relative to a PORR_IN049016UV message
INVESTIGATION = "controlActProcess/subject/investigationEvent"
ASSESSMENT = f"{INVESTIGATION}/component/adverseEventAssessment"
PRIMARY_ROLE = f"{ASSESSMENT}/subject1/primaryRole"
SENDER = f"{INVESTIGATION}/subjectOf1/controlActEvent/author/assignedEntity"
STUDY = f"{PRIMARY_ROLE}/subjectOf1/researchStudy"
PRODUCT = "consumable/instanceOfKind/kindOfProduct"
APPROVAL = f"{PRODUCT}/asManufacturedProduct/subjectOf/approval"
REPORTER = "relatedInvestigation/subjectOf2/controlActEvent/author/assignedEntity"


def characteristic(code: str) -> str:
    return f"{INVESTIGATION}/subjectOf2/investigationCharacteristic[code[@code='{code}'][@codeSystem='{CHARACTERISTIC_CODES}']]"


def case_observation(code: str, system: str = OBS_CODES) -> str:
    return f"{INVESTIGATION}/component/{obs(code, system, 'observationEvent')}"


def telecom(prefix: str) -> str:
    return f"telecom[starts-with(@value, '{prefix}')]/@value"


def person_name_fields(prefix: str, base: str, numbers: tuple[str, str, str, str], who: str) -> tuple[Field, ...]:
    title, given, middle, family = numbers
    return (
        Field(f"{prefix}_title", title, f"{who}'s Title", f"{base}/name/prefix", null_flavor=True),
        Field(f"{prefix}_given_name", given, f"{who}'s Given Name", f"{base}/name/given[1]", null_flavor=True),
        Field(f"{prefix}_middle_name", middle, f"{who}'s Middle Name", f"{base}/name/given[2]", null_flavor=True),
        Field(f"{prefix}_family_name", family, f"{who}'s Family Name", f"{base}/name/family", null_flavor=True),
    )


def address_fields(prefix: str, base: str, numbers: tuple[str, str, str, str], who: str) -> tuple[Field, ...]:
    street, city, state, postcode = numbers
    return (
        Field(f"{prefix}_street", street, f"{who}'s Street", f"{base}/addr/streetAddressLine", null_flavor=True, join_all=True),
        Field(f"{prefix}_city", city, f"{who}'s City", f"{base}/addr/city", null_flavor=True),
        Field(f"{prefix}_state", state, f"{who}'s State or Province", f"{base}/addr/state", null_flavor=True),
        Field(f"{prefix}_postcode", postcode, f"{who}'s Postcode", f"{base}/addr/postalCode", null_flavor=True),
    )


def meddra_fields(prefix: str, base: str, version_element: str, code_element: str, what: str) -> tuple[Field, ...]:
    return (
        Field(f"{prefix}_meddra_version", version_element, f"MedDRA Version for {what}", f"{base}/@codeSystemVersion"),
        Field(f"{prefix}_meddra_code", code_element, f"{what} (MedDRA code)", f"{base}/@code", Kind.CODE),
    )


def medical_history_table(name: str, number: str, description: str) -> TableSpec:
    """D.7.1.r for the patient, D.10.7.1.r for the parent: the same structure."""
    n = number
    return TableSpec(
        name=name,
        element=f"{n}.r",
        description=description,
        rows=f"subjectOf2/{obs('1', ORGANIZER_CODES, 'organizer')}/component/observation[code/@codeSystem='{MEDDRA}']",
        position_column="history_seq",
        fields=(
            *meddra_fields("disease", "code", f"{n}.r.1a", f"{n}.r.1b", "Medical History (disease / surgical procedure / etc.)"),
            Field("start_date", f"{n}.r.2", "Start Date", "effectiveTime/low/@value", Kind.DATE, null_flavor=True),
            Field("continuing", f"{n}.r.3", "Continuing", f"inboundRelationship/{obs('13')}/value/@value", Kind.BOOL, null_flavor=True),
            Field("end_date", f"{n}.r.4", "End Date", "effectiveTime/high/@value", Kind.DATE, null_flavor=True),
            Field("comments", f"{n}.r.5", "Comments", f"outboundRelationship2/{obs('10')}/value"),
            *(
                (Field("family_history", f"{n}.r.6", "Family History", f"outboundRelationship2/{obs('38')}/value/@value", Kind.BOOL),)
                if n == "D.7.1"
                else ()
            ),
        ),
    )


def product_identifier_fields(mpid: tuple[str, str], phpid: tuple[str, str]) -> tuple[Field, ...]:
    """MPID and PhPID of a product (D.8.r.2-3, D.10.8.r.2-3, G.k.2.1): told apart by code system."""
    is_phpid = f"@codeSystem='{PHPID_CODE_SYSTEM}'"
    return (
        Field("mpid_version", mpid[0], "MPID Version Date / Number", f"{PRODUCT}/code[not({is_phpid})]/@codeSystemVersion"),
        Field("mpid", mpid[1], "Medicinal Product Identifier (MPID)", f"{PRODUCT}/code[not({is_phpid})]/@code", Kind.CODE, code_system=True),
        Field("phpid_version", phpid[0], "PhPID Version Date/Number", f"{PRODUCT}/code[{is_phpid}]/@codeSystemVersion"),
        Field("phpid", phpid[1], "Pharmaceutical Product Identifier (PhPID)", f"{PRODUCT}/code[{is_phpid}]/@code", Kind.CODE),
    )


# EU name parts of a medicinal product (G.k.2.2.EU.1-8, D.8.r.1.EU.1-8, D.10.8.r.1.EU.1-8), in the guide's order,
# with the HL7 EntityNamePartQualifier of each part (the pharmaceutical qualifiers of ISO IDMP's name parts)
EU_NAME_PARTS = (
    ("invented", "INV", "Invented name"),
    ("scientific", "SCI", "Scientific name"),
    ("trademark", "TMK", "Trademark name"),
    ("strength", "STR", "Strength name"),
    ("form", "FRM", "Form name"),
    ("container", "CON", "Container name"),
    ("device", "DEV", "Device name"),
    ("intended_use", "USE", "Intended use name"),
)
# The HL7 v3 (R1) name part element that carries the qualifier: which of the five (delimiter, family, given, prefix,
# suffix) EudraVigilance uses is not confirmed from a public source (docs/eu-regional.md). A suffix is HL7's part for
# qualified parts of non-person names; reading all five as a union would cost about a third more mapping time.
NAME_PART_ELEMENT = "suffix"


def eu_name_part_fields(number: str) -> tuple[Field, ...]:
    """``<number>.EU.1-8``: the parts of the product name at ``{PRODUCT}/name`` (``number`` names the whole name)."""
    return tuple(
        Field(
            f"eu_{stem}_name",
            f"{number}.EU.{position}",
            f"Name part - {label}",
            f"{PRODUCT}/name/{NAME_PART_ELEMENT}[@qualifier='{qualifier}']",
        )
        for position, (stem, qualifier, label) in enumerate(EU_NAME_PARTS, start=1)
    )


def substance_fields(number: str) -> tuple[Field, ...]:
    """A product's substance and strength: G.k.2.3.r (ICH), D.8.r.EU.r and D.10.8.r.EU.r (EU past drugs)."""
    n = number
    return (
        Field("substance_name", f"{n}.1", "Substance / Specified Substance Name", "ingredientSubstance/name"),
        Field("substance_termid_version", f"{n}.2a", "Substance/Specified Substance TermID Version Date/Number", "ingredientSubstance/code/@codeSystemVersion"),
        Field("substance_termid", f"{n}.2b", "Substance/Specified Substance TermID", "ingredientSubstance/code/@code", Kind.CODE, code_system=True),
        Field("strength", f"{n}.3a", "Strength (number)", "quantity/numerator/@value", Kind.NUMBER),
        Field("strength_unit", f"{n}.3b", "Strength (unit)", "quantity/numerator/@unit", Kind.CODE),
    )


def past_drug_table(name: str, number: str, description: str) -> TableSpec:
    """D.8.r for the patient, D.10.8.r for the parent."""
    n = number
    return TableSpec(
        name=name,
        element=f"{n}.r",
        description=description,
        rows=f"subjectOf2/{obs('2', ORGANIZER_CODES, 'organizer')}/component/substanceAdministration",
        position_column="drug_history_seq",
        fields=(
            Field("drug_name", f"{n}.r.1", "Name of Drug as Reported", f"{PRODUCT}/name", null_flavor=True),
            *product_identifier_fields((f"{n}.r.2a", f"{n}.r.2b"), (f"{n}.r.3a", f"{n}.r.3b")),
            Field("start_date", f"{n}.r.4", "Start Date", "effectiveTime/low/@value", Kind.DATE, null_flavor=True),
            Field("end_date", f"{n}.r.5", "End Date", "effectiveTime/high/@value", Kind.DATE, null_flavor=True),
            *meddra_fields("indication", f"outboundRelationship2[@typeCode='RSON']/{obs('19')}/value", f"{n}.r.6a", f"{n}.r.6b", "Indication"),
            *meddra_fields("reaction", f"outboundRelationship2[@typeCode='CAUS']/{obs('29')}/value", f"{n}.r.7a", f"{n}.r.7b", "Reaction"),
            *eu_name_part_fields(f"{n}.r.1"),
        ),
        children=(
            TableSpec(
                name=f"eu_{name}_substances",
                element=f"{n}.r.EU.r",
                description=f"EU regional: substances and strength of a drug of {description[0].lower()}{description[1:-1]}.",
                rows=f"{PRODUCT}/ingredient",
                position_column="substance_seq",
                fields=substance_fields(f"{n}.r.EU.r"),
            ),
        ),
    )


def _test_result_qualifier(value: etree._Element) -> str | None:
    """F.r.3.2 qualifier: '=' for a point value, '<', '<=', '>', '>=' for open intervals."""
    nodes = value.xpath("h:value", namespaces=NAMESPACES)
    if not nodes:
        return None
    interval = nodes[0]
    center = interval.find(f"{{{HL7_NS}}}center")
    low = interval.find(f"{{{HL7_NS}}}low")
    high = interval.find(f"{{{HL7_NS}}}high")
    if center is not None and center.get("value") is not None:
        return "="
    if low is not None and low.get("value") is not None:
        return ">=" if low.get("inclusive", "true") == "true" else ">"
    if high is not None and high.get("value") is not None:
        return "<=" if high.get("inclusive", "true") == "true" else "<"
    return None


_RESULT_BOUND = "(value/center | value/low[@value] | value/high[@value])"

DEVICE_CHARACTERISTIC = "asManufacturedProduct/subjectOf/characteristic"

DRUG_REACTION_ASSESSMENTS = TableSpec(
    name="drug_reaction_assessments",
    element="G.k.9.i.2.r",
    description="Assessments of relatedness of a drug to a reaction (source, method, result).",
    rows=f"$drug_assessments[code[@code='39'][@codeSystem='{OBS_CODES}']][subject1/adverseEffectReference/id/@root = $reaction_id]",
    position_column="assessment_seq",
    fields=(
        Field("source_of_assessment", "G.k.9.i.2.r.1", "Source of Assessment", "author/assignedEntity/code/originalText"),
        Field("method_of_assessment", "G.k.9.i.2.r.2", "Method of Assessment", "methodCode/originalText"),
        Field("result_of_assessment", "G.k.9.i.2.r.3", "Result of Assessment", "value"),
        *(
            field
            for stem, number, label, path, system in (
                ("source", "1", "Source", "author/assignedEntity/code", EU_SOURCE_OF_ASSESSMENT_CODES),
                ("method", "2", "Method", "methodCode", EU_METHOD_OF_ASSESSMENT_CODES),
                ("result", "3", "Result", "value", EU_RESULT_OF_ASSESSMENT_CODES),
            )
            for field in (
                Field(f"eu_{stem}_of_assessment", f"G.k.9.i.2.r.{number}.EU.1", f"EU {label} of Assessment", f"{path}[@codeSystem='{system}']/@code", Kind.CODE),
                Field(
                    f"eu_{stem}_of_assessment_version",
                    f"G.k.9.i.2.r.{number}.EU.1.CSV",
                    f"EU {label} of Assessment Code System Version",
                    f"{path}[@codeSystem='{system}']/@codeSystemVersion",
                ),
            )
        ),
    ),
)

DRUG_REACTION_MATRIX = TableSpec(
    name="drug_reaction_matrix",
    element="G.k.9.i",
    description="Drug-reaction matrix: one row per reaction assessed for the drug, keyed by the reaction's XML id.",
    rows=".",
    row_values=(
        "outboundRelationship1/actReference/id/@root"
        f" | outboundRelationship2/{obs('31')}/outboundRelationship1/actReference/id/@root"
        " | $drug_assessments/subject1/adverseEffectReference/id/@root"
    ),
    row_variable="reaction_id",
    position_column="matrix_seq",
    fields=(
        Field("reaction_xml_id", "G.k.9.i.1", "Reaction(s) / Event(s) Assessed", "$reaction_id"),
        Field("interval_start_to_reaction", "G.k.9.i.3.1a", "Time Interval between Beginning of Drug Administration and Start of Reaction / Event (number)", "outboundRelationship1[@typeCode='SAS'][actReference/id/@root = $reaction_id]/pauseQuantity/@value", Kind.NUMBER),
        Field("interval_start_to_reaction_unit", "G.k.9.i.3.1b", "Time Interval between Beginning of Drug Administration and Start of Reaction / Event (unit)", "outboundRelationship1[@typeCode='SAS'][actReference/id/@root = $reaction_id]/pauseQuantity/@unit", Kind.CODE),
        Field("interval_last_dose_to_reaction", "G.k.9.i.3.2a", "Time Interval between Last Dose of Drug and Start of Reaction / Event (number)", "outboundRelationship1[@typeCode='SAE'][actReference/id/@root = $reaction_id]/pauseQuantity/@value", Kind.NUMBER),
        Field("interval_last_dose_to_reaction_unit", "G.k.9.i.3.2b", "Time Interval between Last Dose of Drug and Start of Reaction / Event (unit)", "outboundRelationship1[@typeCode='SAE'][actReference/id/@root = $reaction_id]/pauseQuantity/@unit", Kind.CODE),
        Field("recurrence_on_readministration", "G.k.9.i.4", "Did Reaction Recur on Re-administration?", f"outboundRelationship2/{obs('31')}[outboundRelationship1/actReference/id/@root = $reaction_id]/value/@code", Kind.CODE),
    ),
    children=(DRUG_REACTION_ASSESSMENTS,),
)

DRUG_DOSAGES = TableSpec(
    name="drug_dosages",
    element="G.k.4.r",
    description="Dosage and relevant information of a drug.",
    rows="outboundRelationship2[@typeCode='COMP']/substanceAdministration",
    position_column="dosage_seq",
    fields=(
        Field("dose", "G.k.4.r.1a", "Dose (number)", "doseQuantity/@value", Kind.NUMBER),
        Field("dose_unit", "G.k.4.r.1b", "Dose (unit)", "doseQuantity/@unit", Kind.CODE),
        Field("interval_units", "G.k.4.r.2", "Number of Units in the Interval", "effectiveTime//period/@value", Kind.NUMBER),
        Field("interval_unit", "G.k.4.r.3", "Definition of the Time Interval Unit", "effectiveTime//period/@unit", Kind.CODE),
        Field("start_date", "G.k.4.r.4", "Date and Time of Start of Drug", "(effectiveTime[low] | effectiveTime/comp[low])/low/@value", Kind.DATE, null_flavor=True),
        Field("last_administration_date", "G.k.4.r.5", "Date and Time of Last Administration", "(effectiveTime[high] | effectiveTime/comp[high])/high/@value", Kind.DATE, null_flavor=True),
        Field("duration", "G.k.4.r.6a", "Duration of Drug Administration (number)", "effectiveTime//width/@value", Kind.NUMBER),
        Field("duration_unit", "G.k.4.r.6b", "Duration of Drug Administration (unit)", "effectiveTime//width/@unit", Kind.CODE),
        Field("batch_lot_number", "G.k.4.r.7", "Batch / Lot Number", "consumable/instanceOfKind/productInstanceInstance/lotNumberText"),
        Field("dosage_text", "G.k.4.r.8", "Dosage Text", "text"),
        Field("dose_form_text", "G.k.4.r.9.1", "Pharmaceutical Dose Form (free text)", f"{PRODUCT}/formCode/originalText", null_flavor=True),
        Field("dose_form_termid_version", "G.k.4.r.9.2a", "Pharmaceutical Dose Form TermID Version Date/Number", f"{PRODUCT}/formCode/@codeSystemVersion"),
        Field("dose_form_termid", "G.k.4.r.9.2b", "Pharmaceutical Dose Form TermID", f"{PRODUCT}/formCode/@code", Kind.CODE, code_system=True),
        Field("route_text", "G.k.4.r.10.1", "Route of Administration (free text)", "routeCode/originalText", null_flavor=True),
        Field("route_termid_version", "G.k.4.r.10.2a", "Route of Administration TermID Version Date / Number", "routeCode/@codeSystemVersion"),
        Field("route_termid", "G.k.4.r.10.2b", "Route of Administration TermID", "routeCode/@code", Kind.CODE, code_system=True),
        Field("parent_route_text", "G.k.4.r.11.1", "Parent Route of Administration (free text)", f"inboundRelationship/{obs('28')}/value/originalText", null_flavor=True),
        Field("parent_route_termid_version", "G.k.4.r.11.2a", "Parent Route of Administration TermID Version Date / Number", f"inboundRelationship/{obs('28')}/value/@codeSystemVersion"),
        Field("parent_route_termid", "G.k.4.r.11.2b", "Parent Route of Administration TermID", f"inboundRelationship/{obs('28')}/value/@code", Kind.CODE, code_system=True),
    ),
)


def device_code_table(name: str, element: str, characteristic_code: str, column: str, label: str) -> TableSpec:
    return TableSpec(
        name=name,
        element=element,
        description=f"FDA device {label} (repeat).",
        rows=f"{DEVICE_CHARACTERISTIC}[code/@code='{characteristic_code}']/value",
        position_column="code_seq",
        fields=(Field(column, element, label, "@code", Kind.CODE),),
    )


FDA_DRUG_DEVICES = TableSpec(
    name="fda_drug_devices",
    element="FDA.G.k.12.r",
    description="FDA regional: device information of a combination product.",
    rows="consumable/instanceOfKind/kindOfProduct/part/partProduct",
    position_column="device_seq",
    fields=(
        Field("malfunction", "FDA.G.k.12.r.1", "Malfunction", f"{DEVICE_CHARACTERISTIC}[code/@code='C54026']/value/@value", Kind.BOOL, null_flavor=True),
        Field("brand_name", "FDA.G.k.12.r.4", "Device Brand Name", "name", null_flavor=True),
        Field("common_device_name", "FDA.G.k.12.r.5", "Common Device Name", "code/@displayName", null_flavor=True),
        Field("device_product_code", "FDA.G.k.12.r.6", "Device Product Code", "code/@code", Kind.CODE, code_system=True),
        Field("manufacturer_name", "FDA.G.k.12.r.7.1a", "Device Manufacturer Name", "asManufacturedProduct/manufacturerOrganization/name"),
        Field("manufacturer_address", "FDA.G.k.12.r.7.1b", "Device Manufacturer Address", "asManufacturedProduct/manufacturerOrganization/addr/streetAddressLine", join_all=True),
        Field("manufacturer_city", "FDA.G.k.12.r.7.1c", "Device Manufacturer City", "asManufacturedProduct/manufacturerOrganization/addr/city"),
        Field("manufacturer_state", "FDA.G.k.12.r.7.1d", "Device Manufacturer State", "asManufacturedProduct/manufacturerOrganization/addr/state"),
        Field("manufacturer_country", "FDA.G.k.12.r.7.1e", "Device Manufacturer Country", "asManufacturedProduct/manufacturerOrganization/addr/country"),
        Field("device_usage", "FDA.G.k.12.r.8", "Device Usage", f"{DEVICE_CHARACTERISTIC}[code/@code='C54595']/value/@code", Kind.CODE),
        Field("device_lot_number", "FDA.G.k.12.r.9", "Device Lot Number", "instanceOfKind/productInstanceInstance/lotNumberText"),
        Field("device_operator", "FDA.G.k.12.r.10", "Operator of the Device", f"{DEVICE_CHARACTERISTIC}/code[@codeSystem='{FDA_DEVICE_OPERATOR_CODES}']/@code", Kind.CODE),
    ),
    children=(
        device_code_table("fda_device_followup_types", "FDA.G.k.12.r.2.r", "C54592", "followup_type", "If follow-up, what type?"),
        device_code_table("fda_device_problem_codes", "FDA.G.k.12.r.3.r", "C54451", "device_problem_code", "Device Problem Code"),
        device_code_table("fda_device_remedial_actions", "FDA.G.k.12.r.11.r", "C54594", "remedial_action", "Remedial Action Initiated"),
    ),
)

EU_DEVICE_COMPONENTS = TableSpec(
    name="eu_drug_device_components",
    element="G.k.2.2.EU.9.r",
    description="EU regional: device components of a drug (name, term ID, lot or serial number).",
    # The guide places them in the product instance of a dosage (G.k.4.r), next to its batch / lot number (G.k.4.r.7)
    rows="outboundRelationship2[@typeCode='COMP']/substanceAdministration/consumable/instanceOfKind/productInstanceInstance/part/partDeviceInstance",
    position_column="component_seq",
    fields=(
        Field("device_component_name", "G.k.2.2.EU.9.r.1", "Device Component Name (free text)", "asInstanceOfKind/kindOfMaterialKind/name"),
        Field("device_component_termid_version", "G.k.2.2.EU.9.r.2", "Device Component TermID Version Date/Number", "asInstanceOfKind/kindOfMaterialKind/code/@codeSystemVersion"),
        Field("device_component_termid", "G.k.2.2.EU.9.r.3", "Device Component TermID", "asInstanceOfKind/kindOfMaterialKind/code/@code", Kind.CODE, code_system=True),
        Field("device_batch_lot_number", "G.k.2.2.EU.9.r.4", "Device Batch / Lot / Serial Number", "lotNumberText"),
    ),
)

CAUSALITY_ROLE = f"$drug_assessments[code[@code='20'][@codeSystem='{OBS_CODES}']]"

DRUGS = TableSpec(
    name="drugs",
    element="G.k",
    description="Drug information: one row per drug (suspect, concomitant, interacting, not administered).",
    rows=f"subjectOf2/{obs('4', ORGANIZER_CODES, 'organizer')}/component/substanceAdministration",
    position_column="drug_seq",
    # The case's assessments of this drug, found once per drug: its role (G.k.1) and causality (G.k.9.i.2.r) are read from them
    bind={
        "drug_id": "string(id/@root)",
        "drug_assessments": "ancestor::adverseEventAssessment/component/causalityAssessment[subject2/productUseReference/id/@root = $drug_id]",
    },
    fields=(
        Field("drug_xml_id", "G.k (id)", "XML id of the drug, referenced by the drug-reaction matrix", "id/@root"),
        Field("drug_role", "G.k.1", "Characterisation of Drug Role", f"{CAUSALITY_ROLE}/value[@codeSystem='2.16.840.1.113883.3.989.2.1.1.13']/@code", Kind.CODE),
        Field("fda_other_drug_role", "FDA.G.k.1.a", "FDA Other Characterisation of Drug Role", f"{CAUSALITY_ROLE}/value[not(@codeSystem='2.16.840.1.113883.3.989.2.1.1.13')]/@code", Kind.CODE),
        *product_identifier_fields(("G.k.2.1.1a", "G.k.2.1.1b"), ("G.k.2.1.2a", "G.k.2.1.2b")),
        Field("medicinal_product", "G.k.2.2", "Medicinal Product Name as Reported by the Primary Source", f"{PRODUCT}/name"),
        *eu_name_part_fields("G.k.2.2"),
        Field("obtain_drug_country", "G.k.2.4", "Identification of the Country Where the Drug Was Obtained", "consumable/instanceOfKind/subjectOf/productEvent/performer/assignedEntity/representedOrganization/addr/country"),
        Field("investigational_product_blinded", "G.k.2.5", "Investigational Product Blinded", f"outboundRelationship2/{obs('6')}/value/@value", Kind.BOOL),
        Field("authorisation_number", "G.k.3.1", "Authorisation / Application Number", f"{APPROVAL}/id/@extension"),
        Field("authorisation_country", "G.k.3.2", "Country of Authorisation / Application", f"{APPROVAL}/author/territorialAuthority/territory/code/@code", Kind.CODE),
        Field("authorisation_holder", "G.k.3.3", "Name of Holder / Applicant", f"{APPROVAL}/holder/role/playingOrganization/name"),
        Field("cumulative_dose", "G.k.5a", "Cumulative Dose to First Reaction (number)", f"outboundRelationship2/{obs('14')}/value/@value", Kind.NUMBER),
        Field("cumulative_dose_unit", "G.k.5b", "Cumulative Dose to First Reaction (unit)", f"outboundRelationship2/{obs('14')}/value/@unit", Kind.CODE),
        Field("gestation_period_at_exposure", "G.k.6a", "Gestation Period at Time of Exposure (number)", f"outboundRelationship2/{obs('16')}/value/@value", Kind.NUMBER),
        Field("gestation_period_at_exposure_unit", "G.k.6b", "Gestation Period at Time of Exposure (unit)", f"outboundRelationship2/{obs('16')}/value/@unit", Kind.CODE),
        Field("action_taken", "G.k.8", "Action(s) Taken with Drug", "inboundRelationship[@typeCode='CAUS']/act/code/@code", Kind.CODE),
        Field("fda_additional_info_coded", "FDA.G.k.10a", "FDA Additional Information on Drug (coded)", f"outboundRelationship2/observation/value[@codeSystem='{FDA_ADDITIONAL_INFO_CODES}']/@code", Kind.CODE, null_flavor=True),
        Field("fda_specialized_product_category", "FDA.G.k.10.1", "FDA Specialized Product Category", f"{PRODUCT}/asManufacturedProduct/subjectOf/characteristic[code/@code='C94031']/value/@code", Kind.CODE),
        Field("additional_info_text", "G.k.11", "Additional Information on Drug (free text)", f"outboundRelationship2/{obs('2')}/value"),
    ),
    children=(
        TableSpec(
            name="drug_substances",
            element="G.k.2.3.r",
            description="Active substances of a drug, with strength.",
            rows=f"{PRODUCT}/ingredient",
            position_column="substance_seq",
            fields=substance_fields("G.k.2.3.r"),
        ),
        DRUG_DOSAGES,
        TableSpec(
            name="drug_indications",
            element="G.k.7.r",
            description="Indications for use in the case.",
            rows=f"inboundRelationship[@typeCode='RSON']/{obs('19')}",
            position_column="indication_seq",
            fields=(
                Field("indication_text", "G.k.7.r.1", "Indication as Reported by the Primary Source", "value/originalText", null_flavor=True),
                *meddra_fields("indication", "value", "G.k.7.r.2a", "G.k.7.r.2b", "Indication"),
            ),
        ),
        DRUG_REACTION_MATRIX,
        TableSpec(
            name="drug_additional_info",
            element="G.k.10.r",
            description="Additional information on drug (coded), repeatable.",
            rows=f"outboundRelationship2/{obs('9')}/value[@codeSystem='{ADDITIONAL_INFO_CODES}']",
            position_column="info_seq",
            fields=(Field("additional_info_code", "G.k.10.r", "Additional Information on Drug (coded)", "@code", Kind.CODE),),
        ),
        FDA_DRUG_DEVICES,
        EU_DEVICE_COMPONENTS,
    ),
)

SERIOUSNESS = (
    ("results_in_death", "E.i.3.2a", "Results in Death", "34", OBS_CODES),
    ("life_threatening", "E.i.3.2b", "Life Threatening", "21", OBS_CODES),
    ("caused_prolonged_hospitalisation", "E.i.3.2c", "Caused / Prolonged Hospitalisation", "33", OBS_CODES),
    ("disabling_incapacitating", "E.i.3.2d", "Disabling / Incapacitating", "35", OBS_CODES),
    ("congenital_anomaly_birth_defect", "E.i.3.2e", "Congenital Anomaly / Birth Defect", "12", OBS_CODES),
    ("other_medically_important_condition", "E.i.3.2f", "Other Medically Important Condition", "26", OBS_CODES),
    ("fda_required_intervention", "FDA.E.i.3.2h", "Required Intervention", "7", FDA_OBS_CODES),
)

REACTIONS = TableSpec(
    name="reactions",
    element="E.i",
    description="Reactions / events, one row per reaction, with seriousness criteria and outcome.",
    rows=f"subjectOf2/{obs('29')}",
    position_column="reaction_seq",
    fields=(
        Field("reaction_xml_id", "E.i (id)", "XML id of the reaction, referenced by the drug-reaction matrix (G.k.9.i.1)", "id/@root"),
        Field("primary_source_reaction", "E.i.1.1a", "Reaction / Event as Reported by the Primary Source in Native Language", "value/originalText"),
        Field("primary_source_reaction_language", "E.i.1.1b", "Reaction / Event as Reported by the Primary Source Language", "value/originalText/@language", Kind.CODE),
        Field("reaction_for_translation", "E.i.1.2", "Reaction / Event as Reported by the Primary Source for Translation", f"outboundRelationship2/{obs('30')}/value"),
        *meddra_fields("reaction", "value", "E.i.2.1a", "E.i.2.1b", "Reaction / Event"),
        Field("term_highlighted", "E.i.3.1", "Term Highlighted by the Reporter", f"outboundRelationship2/{obs('37')}/value/@code", Kind.CODE),
        *(
            Field(column, element, name, f"outboundRelationship2/{obs(code, system)}/value/@value", Kind.BOOL, null_flavor=True)
            for column, element, name, code, system in SERIOUSNESS
        ),
        Field("start_date", "E.i.4", "Date of Start of Reaction / Event", "effectiveTime//low/@value", Kind.DATE, null_flavor=True),
        Field("end_date", "E.i.5", "Date of End of Reaction / Event", "effectiveTime//high/@value", Kind.DATE, null_flavor=True),
        Field("duration", "E.i.6a", "Duration of Reaction / Event (number)", "effectiveTime//width/@value", Kind.NUMBER),
        Field("duration_unit", "E.i.6b", "Duration of Reaction / Event (unit)", "effectiveTime//width/@unit", Kind.CODE),
        Field("outcome", "E.i.7", "Outcome of Reaction / Event at the Time of Last Observation", f"outboundRelationship2/{obs('27')}/value/@code", Kind.CODE),
        Field("medical_confirmation", "E.i.8", "Medical Confirmation by Healthcare Professional", f"outboundRelationship2/{obs('24')}/value/@value", Kind.BOOL),
        Field("reaction_country", "E.i.9", "Identification of the Country Where the Reaction / Event Occurred", "location/locatedEntity/locatedPlace/code/@code", Kind.CODE),
    ),
)

TESTS_PROCEDURES = TableSpec(
    name="tests_procedures",
    element="F.r",
    description="Results of tests and procedures relevant to the investigation of the patient.",
    rows=f"subjectOf2/{obs('3', ORGANIZER_CODES, 'organizer')}/component/observation",
    position_column="test_seq",
    fields=(
        Field("test_date", "F.r.1", "Test Date", "effectiveTime/@value", Kind.DATE, null_flavor=True),
        Field("test_name", "F.r.2.1", "Test Name (free text)", "code/originalText"),
        *meddra_fields("test_name", "code", "F.r.2.2a", "F.r.2.2b", "Test Name"),
        Field("test_result_code", "F.r.3.1", "Test Result (code)", "interpretationCode/@code", Kind.CODE),
        Field("test_result_value", "F.r.3.2", "Test Result (value / qualifier)", f"{_RESULT_BOUND}/@value", Kind.NUMBER),
        Field("test_result_qualifier", "F.r.3.2 (qualifier)", "Test Result qualifier: =, <, <=, >, >=", ".", compute=_test_result_qualifier),
        Field("test_result_unit", "F.r.3.3", "Test Result (unit)", f"{_RESULT_BOUND}/@unit", Kind.CODE),
        Field("result_unstructured", "F.r.3.4", "Result Unstructured Data (free text)", "value[@xsi:type='ED']"),
        Field("normal_low_value", "F.r.4", "Normal Low Value", "referenceRange/observationRange[interpretationCode/@code='L']/value/@value"),
        Field("normal_high_value", "F.r.5", "Normal High Value", "referenceRange/observationRange[interpretationCode/@code='H']/value/@value"),
        Field("comments", "F.r.6", "Comments (free text)", f"outboundRelationship2/{obs('10')}/value"),
        Field("more_information_available", "F.r.7", "More Information Available", f"outboundRelationship2/{obs('25')}/value/@value", Kind.BOOL),
    ),
)


def death_cause_table(name: str, rows: str, number: str, label: str) -> TableSpec:
    return TableSpec(
        name=name,
        element=f"{number}.r",
        description=f"{label} (repeat).",
        rows=rows,
        position_column="cause_seq",
        fields=(
            *meddra_fields("cause", "value", f"{number}.r.1a", f"{number}.r.1b", label),
            Field("cause_text", f"{number}.r.2", f"{label} (free text)", "value/originalText"),
        ),
    )


PARENT = TableSpec(
    name="parent_characteristics",
    element="D.10",
    description="Parent information for a parent-child / foetus report.",
    rows="player1/role[code/@code='PRN']",
    fields=(
        Field("parent_identification", "D.10.1", "Parent Identification", "associatedPerson/name", null_flavor=True),
        Field("parent_birth_date", "D.10.2.1", "Date of Birth of Parent", "associatedPerson/birthTime/@value", Kind.DATE, null_flavor=True),
        Field("parent_age", "D.10.2.2a", "Age of Parent (number)", f"subjectOf2/{obs('3')}/value/@value", Kind.NUMBER),
        Field("parent_age_unit", "D.10.2.2b", "Age of Parent (unit)", f"subjectOf2/{obs('3')}/value/@unit", Kind.CODE),
        Field("parent_last_menstrual_period_date", "D.10.3", "Last Menstrual Period Date of Parent", f"subjectOf2/{obs('22')}/value/@value", Kind.DATE, null_flavor=True),
        Field("parent_body_weight_kg", "D.10.4", "Body Weight (kg) of Parent", f"subjectOf2/{obs('7')}/value/@value", Kind.NUMBER),
        Field("parent_height_cm", "D.10.5", "Height (cm) of Parent", f"subjectOf2/{obs('17')}/value/@value", Kind.NUMBER),
        Field("parent_sex", "D.10.6", "Sex of Parent", "associatedPerson/administrativeGenderCode/@code", Kind.CODE, null_flavor=True),
        Field("parent_medical_history_text", "D.10.7.2", "Text for Relevant Medical History and Concurrent Conditions of Parent", f"subjectOf2/{obs('1', ORGANIZER_CODES, 'organizer')}/component/{obs('18')}/value", null_flavor=True),
    ),
    children=(
        medical_history_table("parent_medical_history", "D.10.7.1", "Structured relevant medical history of the parent."),
        past_drug_table("parent_past_drug_history", "D.10.8", "Relevant past drug history of the parent."),
    ),
)

PATIENT = TableSpec(
    name="patient_characteristics",
    element="D",
    description="Patient characteristics: one row per case.",
    rows=PRIMARY_ROLE,
    fields=(
        Field("patient_name", "D.1", "Patient (name or initials)", "player1/name", null_flavor=True),
        *(
            Field(column, element, name, f"player1/asIdentifiedEntity/id[@root='2.16.840.1.113883.3.989.2.1.3.{root}']/@extension", null_flavor=True)
            for column, element, name, root in (
                ("gp_medical_record_number", "D.1.1.1", "Patient Medical Record Number(s) and Source(s) of the Record Number (GP Medical Record Number)", 7),
                ("specialist_record_number", "D.1.1.2", "Patient Medical Record Number(s) and Source(s) of the Record Number (Specialist Record Number)", 8),
                ("hospital_record_number", "D.1.1.3", "Patient Medical Record Number(s) and Source(s) of the Record Number (Hospital Record Number)", 9),
                ("investigation_number", "D.1.1.4", "Patient Medical Record Number(s) and Source(s) of the Record Number (Investigation Number)", 10),
            )
        ),
        Field("birth_date", "D.2.1", "Date of Birth", "player1/birthTime/@value", Kind.DATE, null_flavor=True),
        Field("age_at_onset", "D.2.2a", "Age at Time of Onset of Reaction / Event (number)", f"subjectOf2/{obs('3')}/value/@value", Kind.NUMBER),
        Field("age_at_onset_unit", "D.2.2b", "Age at Time of Onset of Reaction / Event (unit)", f"subjectOf2/{obs('3')}/value/@unit", Kind.CODE),
        Field("gestation_period", "D.2.2.1a", "Gestation Period When Reaction / Event Was Observed in the Foetus (number)", f"subjectOf2/{obs('16')}/value/@value", Kind.NUMBER),
        Field("gestation_period_unit", "D.2.2.1b", "Gestation Period When Reaction / Event Was Observed in the Foetus (unit)", f"subjectOf2/{obs('16')}/value/@unit", Kind.CODE),
        Field("age_group", "D.2.3", "Patient Age Group (as per reporter)", f"subjectOf2/{obs('4')}/value/@code", Kind.CODE, null_flavor=True),
        Field("body_weight_kg", "D.3", "Body Weight (kg)", f"subjectOf2/{obs('7')}/value/@value", Kind.NUMBER),
        Field("height_cm", "D.4", "Height (cm)", f"subjectOf2/{obs('17')}/value/@value", Kind.NUMBER),
        Field("sex", "D.5", "Sex", "player1/administrativeGenderCode/@code", Kind.CODE, null_flavor=True),
        Field("last_menstrual_period_date", "D.6", "Last Menstrual Period Date", f"subjectOf2/{obs('22')}/value/@value", Kind.DATE, null_flavor=True),
        Field("medical_history_text", "D.7.2", "Text for Relevant Medical History and Concurrent Conditions (not including reaction / event)", f"subjectOf2/{obs('1', ORGANIZER_CODES, 'organizer')}/component/{obs('18')}/value", null_flavor=True),
        Field("concomitant_therapies", "D.7.3", "Concomitant Therapies", f"subjectOf2/{obs('1', ORGANIZER_CODES, 'organizer')}/component/{obs('11')}/value/@value", Kind.BOOL, null_flavor=True),
        Field("death_date", "D.9.1", "Date of Death", "player1/deceasedTime/@value", Kind.DATE, null_flavor=True),
        Field("autopsy_done", "D.9.3", "Was Autopsy Done?", f"subjectOf2/{obs('5')}/value/@value", Kind.BOOL, null_flavor=True),
        Field("fda_ethnicity", "FDA.D.12", "Patient Ethnicity Code", "subjectOf2/observation[code/@code='C16564']/value/@code", Kind.CODE, null_flavor=True),
    ),
    children=(
        medical_history_table("medical_history", "D.7.1", "Structured relevant medical history and concurrent conditions."),
        past_drug_table("past_drug_history", "D.8", "Relevant past drug history."),
        death_cause_table("death_causes_reported", f"subjectOf2/{obs('32')}", "D.9.2", "Reported Cause(s) of Death"),
        death_cause_table("death_causes_autopsy", f"subjectOf2/{obs('5')}/outboundRelationship2/{obs('8')}", "D.9.4", "Autopsy-determined Cause(s) of Death"),
        TableSpec(
            name="fda_patient_races",
            element="FDA.D.11.r",
            description="FDA regional: patient race codes (repeat).",
            rows="subjectOf2/observation[code/@code='C17049']/value",
            position_column="race_seq",
            fields=(Field("race_code", "FDA.D.11.r.1", "Patient Race Code", "@code", Kind.CODE, null_flavor=True),),
        ),
        PARENT,
        REACTIONS,
        TESTS_PROCEDURES,
        DRUGS,
    ),
)

NARRATIVE = TableSpec(
    name="case_summary_narrative",
    element="H",
    description="Narrative case summary and further information: one row per case.",
    rows=INVESTIGATION,
    fields=(
        Field("case_narrative", "H.1", "Case Narrative Including Clinical Course, Therapeutic Measures, Outcome and Additional Relevant Information", "text"),
        Field("reporter_comments", "H.2", "Reporter's Comments", f"component/adverseEventAssessment/component1/observationEvent[code/@code='10'][author/assignedEntity/code[@code='3'][@codeSystem='{AUTHOR_CODES}']]/value"),
        Field("sender_comments", "H.4", "Sender's Comments", f"component/adverseEventAssessment/component1/observationEvent[code/@code='10'][author/assignedEntity/code[@code='1'][@codeSystem='{AUTHOR_CODES}']]/value"),
    ),
    children=(
        TableSpec(
            name="sender_diagnoses",
            element="H.3.r",
            description="Sender's diagnosis / syndrome and / or reclassification of reaction / event.",
            rows=f"component/adverseEventAssessment/component1/{obs('15', OBS_CODES, 'observationEvent')}/value",
            position_column="diagnosis_seq",
            fields=meddra_fields("diagnosis", ".", "H.3.r.1a", "H.3.r.1b", "Sender's Diagnosis / Syndrome and / or Reclassification of Reaction / Event"),
        ),
        TableSpec(
            name="case_summaries",
            element="H.5.r",
            description="Case summary and reporter's comments in native language.",
            rows=f"component/{obs('36', OBS_CODES, 'observationEvent')}/value",
            position_column="summary_seq",
            fields=(
                Field("summary_text", "H.5.r.1a", "Case Summary and Reporter's Comments Text", "."),
                Field("summary_language", "H.5.r.1b", "Case Summary and Reporter's Comments Language", "@language", Kind.CODE),
            ),
        ),
    ),
)

ICSR_MASTER = TableSpec(
    name="icsr_master",
    element="C",
    description="One row per case (C.1.1): the newest version received, message header, report identification, sender and study.",
    rows=".",
    fields=(
        Field("safetyreportid", "C.1.1", "Sender's (case) Safety Report Unique Identifier", f"{INVESTIGATION}/id[@root='2.16.840.1.113883.3.989.2.1.3.1']/@extension"),
        Field("message_id", "N.2.r.1", "Message Identifier", "id/@extension"),
        Field("message_sender_id", "N.2.r.2", "Message Sender Identifier", "sender/device/id/@extension"),
        Field("message_receiver_id", "N.2.r.3", "Message Receiver Identifier", "receiver/device/id/@extension"),
        Field("message_creation_time", "N.2.r.4", "Date of Message Creation", "creationTime/@value", Kind.DATE),
        Field("creation_date", "C.1.2", "Date of Creation", "controlActProcess/effectiveTime/@value", Kind.DATE),
        Field("report_type", "C.1.3", "Type of Report", f"{characteristic('1')}/value/@code", Kind.CODE),
        Field("first_received_date", "C.1.4", "Date Report Was First Received from Source", f"{INVESTIGATION}/effectiveTime/low/@value", Kind.DATE),
        Field("most_recent_info_date", "C.1.5", "Date of Most Recent Information for This Report", f"{INVESTIGATION}/availabilityTime/@value", Kind.DATE),
        Field("additional_documents_available", "C.1.6.1", "Are Additional Documents Available?", f"{case_observation('1')}/value/@value", Kind.BOOL, null_flavor=True),
        Field("expedited_report_criteria_met", "C.1.7", "Does This Case Fulfil the Local Criteria for an Expedited Report?", f"{case_observation('23')}/value/@value", Kind.BOOL, null_flavor=True),
        Field("fda_local_criteria_report_type", "FDA.C.1.7.1", "Local Criteria Report Type", f"{INVESTIGATION}/component/observationEvent[code/@code='C54588']/value/@code", Kind.CODE),
        Field("worldwide_unique_case_id", "C.1.8.1", "Worldwide Unique Case Identification Number", f"{INVESTIGATION}/id[@root='2.16.840.1.113883.3.989.2.1.3.2']/@extension"),
        Field("first_sender_type", "C.1.8.2", "First Sender of This Case", f"{INVESTIGATION}/outboundRelationship/relatedInvestigation[code[@code='1'][@codeSystem='{RELATED_INVESTIGATION_CODES}']]/subjectOf2/controlActEvent/author/assignedEntity/code/@code", Kind.CODE),
        Field("other_case_ids_in_previous_transmissions", "C.1.9.1", "Other Case Identifiers in Previous Transmissions", f"{characteristic('2')}/value/@value", Kind.BOOL, null_flavor=True),
        Field("nullification_amendment", "C.1.11.1", "Report Nullification / Amendment", f"{characteristic('3')}/value/@code", Kind.CODE),
        Field("nullification_amendment_reason", "C.1.11.2", "Reason for Nullification / Amendment", f"{characteristic('4')}/value/originalText"),
        Field("fda_combination_product_indicator", "FDA.C.1.12", "Combination Product Report Indicator", f"{INVESTIGATION}/component/observationEvent[code/@code='C156384']/value/@value", Kind.BOOL, null_flavor=True),
        Field("sender_type", "C.3.1", "Sender Type", f"{SENDER}/code/@code", Kind.CODE),
        Field("sender_organisation", "C.3.2", "Sender's Organisation", f"{SENDER}/representedOrganization/assignedEntity/representedOrganization/name"),
        Field("sender_department", "C.3.3.1", "Sender's Department", f"{SENDER}/representedOrganization/name"),
        *person_name_fields("sender", f"{SENDER}/assignedPerson", ("C.3.3.2", "C.3.3.3", "C.3.3.4", "C.3.3.5"), "Sender"),
        *address_fields("sender", SENDER, ("C.3.4.1", "C.3.4.2", "C.3.4.3", "C.3.4.4"), "Sender"),
        Field("sender_country", "C.3.4.5", "Sender's Country Code", f"{SENDER}/assignedPerson/asLocatedEntity/location/code/@code", Kind.CODE),
        Field("sender_telephone", "C.3.4.6", "Sender's Telephone", f"{SENDER}/{telecom('tel:')}", strip_prefix="tel:"),
        Field("sender_fax", "C.3.4.7", "Sender's Fax", f"{SENDER}/{telecom('fax:')}", strip_prefix="fax:"),
        Field("sender_email", "C.3.4.8", "Sender's E-mail Address", f"{SENDER}/{telecom('mailto:')}", strip_prefix="mailto:"),
        Field("study_name", "C.5.2", "Study Name", f"{STUDY}/title", null_flavor=True),
        Field("sponsor_study_number", "C.5.3", "Sponsor Study Number", f"{STUDY}/id[@root='2.16.840.1.113883.3.989.2.1.3.5']/@extension", null_flavor=True),
        Field("study_type", "C.5.4", "Study Type Where Reaction(s) / Event(s) Were Observed", f"{STUDY}/code/@code", Kind.CODE),
        Field("fda_ind_number", "FDA.C.5.5a", "IND Number where AE Occurred", f"{STUDY}/authorization/studyRegistration/id[@root='2.16.840.1.113883.3.989.5.1.2.2.1.2.1']/@extension"),
        Field("fda_pre_anda_number", "FDA.C.5.5b", "Pre-ANDA Number where AE Occurred", f"{STUDY}/authorization/studyRegistration/id[@root='2.16.840.1.113883.3.989.5.1.2.2.1.2.2']/@extension"),
    ),
    children=(
        TableSpec(
            name="documents_held_by_sender",
            element="C.1.6.1.r",
            description="Documents held by sender, with included documents decoded.",
            rows=f"{INVESTIGATION}/reference/document[code[@code='1'][@codeSystem='{DOCUMENT_CODES}']]",
            position_column="document_seq",
            fields=(
                Field("document_title", "C.1.6.1.r.1", "Documents Held by Sender", "title"),
                Field("included_document", "C.1.6.1.r.2", "Included Documents", "text", Kind.ATTACHMENT),
            ),
        ),
        TableSpec(
            name="other_case_identifiers",
            element="C.1.9.1.r",
            description="Source(s) and identifier(s) of the case in previous transmissions.",
            rows=f"{INVESTIGATION}/subjectOf1/controlActEvent/id[@root='2.16.840.1.113883.3.989.2.1.3.3']",
            position_column="identifier_seq",
            fields=(
                Field("identifier_source", "C.1.9.1.r.1", "Source(s) of the Case Identifier", "@assigningAuthorityName"),
                Field("case_identifier", "C.1.9.1.r.2", "Case Identifier(s)", "@extension"),
            ),
        ),
        TableSpec(
            name="linked_reports",
            element="C.1.10.r",
            description="Identification numbers of reports linked to this report.",
            rows=f"{INVESTIGATION}/outboundRelationship/relatedInvestigation[code/@nullFlavor='NA']/subjectOf2/controlActEvent/id",
            position_column="link_seq",
            fields=(Field("linked_report_id", "C.1.10.r", "Identification Number of the Report Which Is Linked to This Report", "@extension"),),
        ),
        TableSpec(
            name="primary_sources",
            element="C.2.r",
            description="Primary sources (reporters) of the information.",
            rows=f"{INVESTIGATION}/outboundRelationship[relatedInvestigation/code[@code='2'][@codeSystem='{RELATED_INVESTIGATION_CODES}']]",
            position_column="reporter_seq",
            fields=(
                *person_name_fields("reporter", f"{REPORTER}/assignedPerson", ("C.2.r.1.1", "C.2.r.1.2", "C.2.r.1.3", "C.2.r.1.4"), "Reporter"),
                Field("reporter_organisation", "C.2.r.2.1", "Reporter's Organisation", f"{REPORTER}/representedOrganization/assignedEntity/representedOrganization/name", null_flavor=True),
                Field("reporter_department", "C.2.r.2.2", "Reporter's Department", f"{REPORTER}/representedOrganization/name", null_flavor=True),
                *address_fields("reporter", REPORTER, ("C.2.r.2.3", "C.2.r.2.4", "C.2.r.2.5", "C.2.r.2.6"), "Reporter"),
                # Masked (GVP Module VI Addendum II) or otherwise null, the telephone is a telecom with a nullFlavor and no value
                Field(
                    "reporter_telephone",
                    "C.2.r.2.7",
                    "Reporter's Telephone",
                    f"{REPORTER}/telecom[starts-with(@value, 'tel:') or @nullFlavor]/@value",
                    null_flavor=True,
                    strip_prefix="tel:",
                ),
                Field("fda_reporter_email", "FDA.C.2.r.2.8", "Reporter's Email", f"{REPORTER}/{telecom('mailto:')}", strip_prefix="mailto:"),
                Field("reporter_country", "C.2.r.3", "Reporter's Country Code", f"{REPORTER}/assignedPerson/asLocatedEntity/location/code/@code", Kind.CODE, null_flavor=True),
                Field("qualification", "C.2.r.4", "Qualification", f"{REPORTER}/assignedPerson/asQualifiedEntity/code/@code", Kind.CODE, null_flavor=True, code_system=True),
                Field("primary_source_for_regulatory_purposes", "C.2.r.5", "Primary Source for Regulatory Purposes", "priorityNumber/@value", Kind.INTEGER),
            ),
        ),
        TableSpec(
            name="literature_references",
            element="C.4.r",
            description="Literature references, with included documents decoded.",
            rows=f"{INVESTIGATION}/reference/document[code[@code='2'][@codeSystem='{DOCUMENT_CODES}']]",
            position_column="literature_seq",
            fields=(
                Field("literature_reference", "C.4.r.1", "Literature Reference(s)", "bibliographicDesignationText", null_flavor=True),
                Field("included_document", "C.4.r.2", "Included Documents", "text", Kind.ATTACHMENT),
            ),
        ),
        TableSpec(
            name="study_registrations",
            element="C.5.1.r",
            description="Study registration numbers and countries.",
            rows=f"{STUDY}/authorization/studyRegistration[id[not(@root) or @root='2.16.840.1.113883.3.989.2.1.3.6']]",
            position_column="registration_seq",
            fields=(
                Field("registration_number", "C.5.1.r.1", "Study Registration Number", "id/@extension", null_flavor=True),
                Field("registration_country", "C.5.1.r.2", "Study Registration Country", "author/territorialAuthority/governingPlace/code/@code", Kind.CODE, null_flavor=True),
            ),
        ),
        TableSpec(
            name="fda_cross_reported_inds",
            element="FDA.C.5.6.r",
            description="FDA regional: IND numbers of cross-reported INDs.",
            rows=f"{STUDY}/authorization/studyRegistration/id[@root='2.16.840.1.113883.3.989.5.1.2.2.1.2.3']",
            position_column="ind_seq",
            fields=(Field("cross_reported_ind_number", "FDA.C.5.6.r", "IND number of cross reported IND", "@extension", null_flavor=True),),
        ),
        PATIENT,
        NARRATIVE,
    ),
)

# Batch wrapper (N.1): one row per file, read from the root after its messages were streamed.
BATCH_HEADER = TableSpec(
    name="message_batches",
    element="N.1",
    description="ICH ICSR transmission identification (batch wrapper), one row per loaded file.",
    rows=".",
    fields=(
        # ICH and EU message types share the element and are told apart by code system (EMA's master cases: EU type 2)
        Field("batch_message_type", "N.1.1", "Types of Message in Batch", f"name[not(@codeSystem='{EU_MESSAGE_TYPE_CODES}')]/@code", Kind.CODE),
        Field("eu_batch_message_type", "N.1.1.EU", "EU Types of Message in Batch", f"name[@codeSystem='{EU_MESSAGE_TYPE_CODES}']/@code", Kind.CODE),
        Field("eu_batch_message_type_version", "N.1.1.EU.CSV", "EU Types of Message in Batch Code System Version", f"name[@codeSystem='{EU_MESSAGE_TYPE_CODES}']/@codeSystemVersion"),
        Field("batch_number", "N.1.2", "Batch Number", "id/@extension"),
        Field("batch_sender_id", "N.1.3", "Batch Sender Identifier", "sender/device/id/@extension"),
        Field("batch_receiver_id", "N.1.4", "Batch Receiver Identifier", "receiver/device/id/@extension"),
        Field("batch_transmission_date", "N.1.5", "Date of Batch Transmission", "creationTime/@value", Kind.DATE),
    ),
)


def iter_tables(root: TableSpec = ICSR_MASTER) -> Iterator[tuple[TableSpec, tuple[TableSpec, ...]]]:
    """Every table under ``root`` (depth first) with the chain of its ancestors."""

    def walk(table: TableSpec, ancestors: tuple[TableSpec, ...]) -> Iterator[tuple[TableSpec, tuple[TableSpec, ...]]]:
        yield table, ancestors
        for child in table.children:
            yield from walk(child, (*ancestors, table))

    yield from walk(root, ())


CASE_TABLES: dict[str, TableSpec] = {table.name: table for table, _ in iter_tables()}
