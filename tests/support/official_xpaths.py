"""Evaluate the official XPaths of ``icsr_data_elements.csv`` on an E2B(R3) file.

The published XPaths are written for humans: ``[r]`` marks a repeat, some use typographic quotes
or ``code@code``, a few say "See X-Path Reference" or name a UUID placeholder. This module turns
the evaluable ones into real XPath (every repeat selected) and returns the values they find.
"""

from __future__ import annotations

import base64
import binascii
import csv
import re
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

UNEVALUABLE = ("See X-Path", "UUID of", "TBD")


@dataclass(frozen=True)
class OfficialElement:
    source: str  # ICH or FDA
    number: str
    xpath: str  # normalized, runnable on a namespace-stripped document
    prefix_length: int  # substring(..., n): characters to drop (telecom "tel:")


def load_elements(csv_path: Path) -> list[OfficialElement]:
    with csv_path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    elements = []
    for row in rows[2:]:
        number, xpath = row[2].strip(), row[32].strip()
        if not number or number.startswith("(") or not xpath or any(marker in xpath for marker in UNEVALUABLE):
            continue
        prefix_length = 0
        match = re.match(r"^substring\((.*),\s*(\d+)\)$", xpath, re.S)
        if match:
            xpath, prefix_length = match.group(1), int(match.group(2)) - 1
        xpath = (
            xpath.replace("\u2019", "'")
            .replace("\u2018", "'")
            .replace("[r]", "")
            .replace("[i]", "")
            .replace("code@", "code/@")
            .replace("/ id[", "/id[")
        )
        xpath = re.sub(r"\s+", "", xpath) if "starts-with" not in xpath else xpath.replace("\n", "")
        elements.append(OfficialElement(row[0].strip(), number, xpath, prefix_length))
    return elements


def ich_element_numbers(csv_path: Path) -> set[str]:
    with csv_path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    return {row[2].strip() for row in rows[2:] if row[0].strip() == "ICH" and row[2].strip()[:1] in "CDEFGH"}


def strip_namespaces(path: Path) -> etree._ElementTree:
    tree = etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True))
    for element in tree.iter():
        if isinstance(element.tag, str) and element.tag.startswith("{urn:hl7-org:v3}"):
            element.tag = etree.QName(element).localname
    return tree


def evaluate(tree: etree._ElementTree, element: OfficialElement) -> list[str]:
    """The non-empty values the official XPath selects (every repeat)."""
    try:
        result = tree.xpath(element.xpath, namespaces={"xsi": "http://www.w3.org/2001/XMLSchema-instance"})
    except etree.XPathError:
        return []
    if not isinstance(result, list):
        result = [result]
    values = []
    for item in result:
        text = str(item).strip()
        if element.prefix_length:
            text = text[element.prefix_length :]
        if text:
            values.append(text)
    return values


def matches(expected: str, stored: object) -> bool:
    """Does a stored column value hold the value the official XPath found?"""
    if stored is None:
        return False
    if isinstance(stored, bool) or stored in (0, 1) and expected in ("true", "false"):
        return str(bool(stored)).lower() == expected.lower()
    if isinstance(stored, float | int):
        try:
            return float(expected) == float(stored)
        except ValueError:
            return False
    if isinstance(stored, bytes | memoryview):
        data = bytes(stored)
        try:
            return base64.b64decode("".join(expected.split()), validate=True) == data or expected.encode() == data
        except (binascii.Error, ValueError):
            return "".join(expected.split()).encode() == b"".join(data.split())
    text = str(stored)
    return text == expected or expected in text.split("\n") or " ".join(text.split()) == " ".join(expected.split())
