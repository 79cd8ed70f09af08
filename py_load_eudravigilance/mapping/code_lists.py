"""The fixed code lists of ICH E2B(R3) (and the FDA and EU regional elements) that coded data elements use.

One source: schema creation fills the table ``e2b_code_lists`` from it (views show ``_label``
columns from that table), and the data-quality checks (``quality.py``) take the allowed codes from
it. Keys are element numbers as the data dictionary writes them.
"""

from __future__ import annotations

from sqlalchemy import Column, MetaData, Table, Text

from py_load_eudravigilance.mapping import catalog

CODE_LIST_TABLE = "e2b_code_lists"
SEX = {"1": "Male", "2": "Female"}
# UCUM unit codes the guide allows for durations and intervals
DURATION_UNITS = {"s": "Second", "min": "Minute", "h": "Hour", "d": "Day", "wk": "Week", "mo": "Month", "a": "Year"}
GESTATION_UNITS = {"mo": "Month", "wk": "Week", "d": "Day", "{Trimester}": "Trimester"}

CODE_LISTS: dict[str, dict[str, str]] = {
    "N.1.1": {"1": "ichicsr"},
    "C.1.3": {"1": "Spontaneous report", "2": "Report from study", "3": "Other", "4": "Not available to sender (unknown)"},
    "C.1.8.2": {"1": "Regulator", "2": "Other"},
    "C.1.11.1": {"1": "Nullification", "2": "Amendment"},
    "C.2.r.4": {
        "1": "Physician",
        "2": "Pharmacist",
        "3": "Other health professional",
        "4": "Lawyer",
        "5": "Consumer or other non health professional",
    },
    "C.3.1": {
        "1": "Pharmaceutical company",
        "2": "Regulatory authority",
        "3": "Health professional",
        "4": "Regional pharmacovigilance centre",
        "5": "WHO collaborating centre for international drug monitoring",
        "6": "Other (e.g. distributor or other organisation)",
        "7": "Patient / consumer",
    },
    "C.5.4": {
        "1": "Clinical trials",
        "2": "Individual patient use (e.g. compassionate use or named patient basis)",
        "3": "Other studies (e.g. pharmacoepidemiology, pharmacoeconomics, intensive monitoring)",
    },
    "D.2.2b": {"a": "Year", "mo": "Month", "wk": "Week", "d": "Day", "h": "Hour", "10.a": "Decade"},
    "D.2.2.1b": GESTATION_UNITS,
    "D.2.3": {
        "0": "Foetus",
        "1": "Neonate (preterm and term newborns)",
        "2": "Infant",
        "3": "Child",
        "4": "Adolescent",
        "5": "Adult",
        "6": "Elderly",
    },
    "D.5": SEX,
    "D.10.2.2b": {"a": "Year", "10.a": "Decade"},
    "D.10.6": SEX,
    "E.i.3.1": {
        "1": "Yes, highlighted by the reporter, not serious",
        "2": "No, not highlighted by the reporter, not serious",
        "3": "Yes, highlighted by the reporter, serious",
        "4": "No, not highlighted by the reporter, serious",
    },
    "E.i.6b": DURATION_UNITS,
    "E.i.7": {
        "0": "Unknown",
        "1": "Recovered / resolved",
        "2": "Recovering / resolving",
        "3": "Not recovered / not resolved / ongoing",
        "4": "Recovered / resolved with sequelae",
        "5": "Fatal",
    },
    "F.r.3.1": {"1": "Positive", "2": "Negative", "3": "Borderline", "4": "Inconclusive"},
    "G.k.1": {"1": "Suspect", "2": "Concomitant", "3": "Interacting", "4": "Drug not administered"},
    "FDA.G.k.1.a": {"1": "Similar device"},
    "G.k.4.r.3": {
        "a": "Year",
        "mo": "Month",
        "wk": "Week",
        "d": "Day",
        "h": "Hour",
        "min": "Minute",
        "{cyclical}": "Cyclical",
        "{asnecessary}": "As necessary",
        "{total}": "Total",
    },
    "G.k.4.r.6b": DURATION_UNITS,
    "G.k.6b": GESTATION_UNITS,
    "G.k.8": {
        "0": "Unknown",
        "1": "Drug withdrawn",
        "2": "Dose reduced",
        "3": "Dose increased",
        "4": "Dose not changed",
        "9": "Not applicable",
    },
    "G.k.9.i.3.1b": DURATION_UNITS,
    "G.k.9.i.3.2b": DURATION_UNITS,
    "G.k.9.i.4": {
        "1": "Yes - yes (rechallenge was done, reaction recurred)",
        "2": "Yes - no (rechallenge was done, reaction did not recur)",
        "3": "Yes - unknown (rechallenge was done, outcome unknown)",
        "4": "No - not applicable (no rechallenge was done)",
    },
    "G.k.10.r": {
        "1": "Counterfeit",
        "2": "Overdose",
        "3": "Drug taken by the father",
        "4": "Drug taken beyond expiry date",
        "5": "Batch and lot tested and found within specifications",
        "6": "Batch and lot tested and found not within specifications",
        "7": "Medication error",
        "8": "Misuse",
        "9": "Abuse",
        "10": "Occupational exposure",
        "11": "Off label use",
    },
    # FDA regional elements (FDA regional implementation guide)
    "FDA.C.1.7.1": {"1": "15-Day", "2": "Non-Expedited AE", "4": "5-Day", "5": "30-Day", "6": "7-Day"},
    "FDA.D.11.r.1": {
        "C16352": "African American",
        "C41259": "American Indian or Alaska Native",
        "C41260": "Asian",
        "C41219": "Native Hawaiian or Other Pacific Islander",
        "C41261": "White",
    },
    "FDA.D.12": {"C17459": "Hispanic or Latino", "C41222": "Non Hispanic or Latino"},
    "FDA.G.k.10a": {
        "1": "Test",
        "2": "Reference",
        "3": "Bulk ingredient",
        "4": "Bulk ingredient for human prescription compounding",
        "5": "Unapproved drug product manufactured exclusively for private label distributor",
    },
    "FDA.G.k.10.1": {
        "C102834": "Type 1: Convenience kit or co-package",
        "C102835": "Type 2: Prefilled drug delivery device/system",
        "C102836": "Type 3: Prefilled biologic delivery device/system",
        "C102837": "Type 4: Device coated/impregnated/otherwise combined with drug",
        "C102838": "Type 5: Device coated or otherwise combined with biologic",
        "C102839": "Type 6: Drug/biologic combination",
        "C102840": "Type 7: Separate products requiring cross labeling",
        "C102841": "Type 8: Possible combination based on cross labeling of separate products",
        "C102842": "Type 9: Other type of part 3 combination product",
    },
    "FDA.G.k.12.r.2.r": {"1": "Correction", "2": "Additional information", "3": "Response to FDA request", "4": "Device evaluation"},
    "FDA.G.k.12.r.8": {"1": "Initial use of device", "2": "Reuse", "3": "Unknown"},
    "FDA.G.k.12.r.10": {"1": "Health professional", "2": "Lay user/patient", "3": "Other"},
    "FDA.G.k.12.r.11.r": {
        "1": "Recall",
        "2": "Repair",
        "3": "Replacement",
        "4": "Relabeling",
        "5": "Notification",
        "6": "Inspection",
        "7": "Patient monitoring",
        "8": "Modification or adjustment",
        "9": "Other",
    },
    # EU regional elements (EU ICSR implementation guide): EU message types, code system 2.16.840.1.113883.3.989.5.1.1.5.1;
    # a masterichicsr batch holds EMA's master cases from duplicate management. The EU causality lists
    # (G.k.9.i.2.r.*.EU.1) are not listed: their codes could not be confirmed from a public source (docs/eu-regional.md)
    "N.1.1.EU": {"1": "backlog", "2": "masterichicsr"},
    # HL7 null flavours, in every <column>_null_flavor column
    "nullFlavor": {
        "NI": "No information",
        "MSK": "Masked",
        "UNK": "Unknown",
        "ASKU": "Asked but unknown",
        "NASK": "Not asked",
        "NA": "Not applicable",
        "NINF": "Negative infinity",
        "PINF": "Positive infinity",
        "OTH": "Other",
    },
}


def coded_columns() -> dict[str, tuple[str, str]]:
    """Element -> (table, column) of each coded element with a list here (the column its label goes with)."""
    columns = catalog.element_columns()
    return {element: columns[element] for element in CODE_LISTS if element in columns}


def code_list_rows() -> list[dict[str, str]]:
    """Every code of every list, as ``e2b_code_lists`` holds it."""
    return [{"element": element, "code": code, "label": label} for element, codes in CODE_LISTS.items() for code, label in codes.items()]


def add_table(metadata: MetaData) -> None:
    Table(
        CODE_LIST_TABLE,
        metadata,
        Column("element", Text, primary_key=True, comment="E2B(R3) element number, or nullFlavor"),
        Column("code", Text, primary_key=True),
        Column("label", Text, nullable=False),
        comment="The fixed E2B(R3) code lists of coded elements, filled when the schema is created",
    )
