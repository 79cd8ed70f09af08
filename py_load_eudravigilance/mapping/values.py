"""Conversion of HL7 v3 / E2B(R3) attribute text into typed values, without losing the original."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

# HL7 TS: YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]
_TS_PATTERN = re.compile(
    r"^(?P<year>\d{4})(?P<month>\d{2})?(?P<day>\d{2})?(?P<hour>\d{2})?(?P<minute>\d{2})?"
    r"(?P<second>\d{2})?(?:\.(?P<fraction>\d{1,6}))?(?P<offset>[+-]\d{4})?$"
)
_PRECISION_BY_PART = ("year", "month", "day", "hour", "minute", "second")


class InvalidValueError(ValueError):
    """A value that does not follow its HL7 data type."""


@dataclass(frozen=True)
class ParsedTimestamp:
    """An E2B date: the original text, the instant it denotes in UTC, and its precision."""

    text: str
    utc: datetime
    precision: str


def parse_ts(text: str) -> ParsedTimestamp:
    """Parse an HL7 TS value such as ``20240201230000-0500``.

    A value without a UTC offset is taken as UTC (E2B(R3) leaves the zone to the sender;
    taking UTC makes ordering deterministic). Partial dates denote the start of their period.
    """
    match = _TS_PATTERN.match(text.strip())
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
            int((parts["fraction"] or "0").ljust(6, "0")),
        )
    except ValueError as exc:
        raise InvalidValueError(f"not a valid calendar date/time: {text!r} ({exc})") from None
    offset = parts["offset"]
    if offset:
        sign = 1 if offset[0] == "+" else -1
        delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
        try:
            local = local - sign * delta
        except OverflowError:
            raise InvalidValueError(f"outside the years 1 to 9999 once its UTC offset is applied: {text!r}") from None
    return ParsedTimestamp(text=text.strip(), utc=local.replace(tzinfo=timezone.utc), precision=precision)


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise InvalidValueError(f"not an HL7 boolean (BL): {text!r}")


def parse_number(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise InvalidValueError(f"not a number: {text!r}") from None


# Integer columns are 32-bit in every bundled database
INT_RANGE = range(-(2**31), 2**31)


def parse_int(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise InvalidValueError(f"not an integer: {text!r}") from None
    if value not in INT_RANGE:
        raise InvalidValueError(f"an integer outside the 32-bit range a database column holds: {text!r}")
    return value


_XML_WHITESPACE = re.compile(r"[ \t\r\n]+")


def collapse_token(text: str) -> str:
    """An ``xs:token`` as the schema reads it (HL7 codes, type ``cs``): XML whitespace runs become one space, none at the ends."""
    return _XML_WHITESPACE.sub(" ", text).strip(" ")
