"""Conversion of HL7 v3 / E2B(R3) attribute text into typed values, without losing the original."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

# HL7 TS (datatypes-base.xsd: ``[0-9]{1,8}|([0-9]{9,14}|[0-9]{14,14}\.[0-9]+)([+\-][0-9]{1,4})?``), read in whole
# components: YYYY[MM[DD[HH[MM[SS[.S+]]]]]] and a UTC offset of 1 to 4 digits. ASCII digits only: ``\d``
# would take any script's digits, which int() then reads as if they were ASCII.
_TS_PATTERN = re.compile(
    r"(?P<year>[0-9]{4})(?:(?P<month>[0-9]{2})(?:(?P<day>[0-9]{2})(?:(?P<hour>[0-9]{2})"
    r"(?:(?P<minute>[0-9]{2})(?:(?P<second>[0-9]{2})(?:\.(?P<fraction>[0-9]+))?)?)?)?)?)?"
    r"(?:(?P<sign>[+-])(?P<offset>[0-9]{1,4}))?"
)
_PRECISION_BY_PART = ("year", "month", "day", "hour", "minute", "second")
# XML Schema's own bound for a time zone (xs:dateTime): at most 14:00 either side of UTC
MAX_OFFSET_MINUTES = 14 * 60


class InvalidValueError(ValueError):
    """A value that does not follow its HL7 data type."""


@dataclass(frozen=True)
class ParsedTimestamp:
    """An E2B date: the original text, the instant it denotes in UTC, and its precision."""

    text: str
    utc: datetime
    precision: str


def offset_minutes(digits: str) -> int:
    """A TS zone offset's digits as minutes: ``H``, ``HH``, ``HMM`` or ``HHMM`` (``930`` is 09:30)."""
    hours, minutes = (digits, "0") if len(digits) <= 2 else (digits[:-2], digits[-2:])
    if int(minutes) > 59:
        raise InvalidValueError(f"a UTC offset with {minutes} minutes")
    total = int(hours) * 60 + int(minutes)
    if total > MAX_OFFSET_MINUTES:
        raise InvalidValueError(f"a UTC offset beyond 14 hours ({digits})")
    return total


def parse_ts(text: str) -> ParsedTimestamp:
    """Parse an HL7 TS value such as ``20240201230000-0500`` or ``20120720100001+09``.

    A value without a UTC offset is taken as UTC (E2B(R3) leaves the zone to the sender;
    taking UTC makes ordering deterministic). Partial dates denote the start of their period.
    Fractions of a second beyond microseconds are kept in the text and truncated in the instant.
    """
    stripped = text.strip()
    match = _TS_PATTERN.fullmatch(stripped)
    if not match:
        raise InvalidValueError(f"not an HL7 date/time (TS): {text!r}")
    parts = match.groupdict()
    precision = "year"
    for part in _PRECISION_BY_PART:
        if parts[part] is not None:
            precision = part
    try:
        local = datetime(
            int(parts["year"]),
            int(parts["month"] or 1),
            int(parts["day"] or 1),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
            int(parts["second"] or 0),
            int((parts["fraction"] or "0")[:6].ljust(6, "0")),
        )
        offset = offset_minutes(parts["offset"]) if parts["offset"] else 0
    except (ValueError, InvalidValueError) as exc:
        raise InvalidValueError(f"not a valid calendar date/time: {text!r} ({exc})") from None
    if offset:
        sign = 1 if parts["sign"] == "+" else -1
        try:
            local = local - sign * timedelta(minutes=offset)
        except OverflowError:
            raise InvalidValueError(f"outside the years 1 to 9999 once its UTC offset is applied: {text!r}") from None
    return ParsedTimestamp(text=stripped, utc=local.replace(tzinfo=timezone.utc), precision=precision)


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise InvalidValueError(f"not an HL7 boolean (BL): {text!r}")


# HL7 REAL and PQ.value (xs:decimal or xs:double) and INT (xs:integer), in ASCII digits. Python's float()
# and int() also take other scripts' digits, underscores, inf and nan: none of them is an HL7 number.
_REAL_PATTERN = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INT_PATTERN = re.compile(r"[+-]?[0-9]+")


def parse_number(text: str) -> float:
    stripped = text.strip()
    if not _REAL_PATTERN.fullmatch(stripped):
        raise InvalidValueError(f"not a number (HL7 REAL, ASCII digits): {text!r}")
    value = float(stripped)
    if not math.isfinite(value):
        raise InvalidValueError(f"a number too large for a database column: {text!r}")
    return value


# Integer columns are 32-bit in every bundled database
INT_RANGE = range(-(2**31), 2**31)


def parse_int(text: str) -> int:
    stripped = text.strip()
    if not _INT_PATTERN.fullmatch(stripped):
        raise InvalidValueError(f"not an integer (HL7 INT, ASCII digits): {text!r}")
    value = int(stripped)
    if value not in INT_RANGE:
        raise InvalidValueError(f"an integer outside the 32-bit range a database column holds: {text!r}")
    return value


_XML_WHITESPACE = re.compile(r"[ \t\r\n]+")


def collapse_token(text: str) -> str:
    """An ``xs:token`` as the schema reads it (HL7 codes, type ``cs``): XML whitespace runs become one space, none at the ends."""
    return _XML_WHITESPACE.sub(" ", text).strip(" ")
