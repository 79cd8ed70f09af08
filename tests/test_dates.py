"""Every value HL7 v3's TS type allows is read, by both mappers alike; anything else quarantines its message.

datatypes-base.xsd gives TS as ``[0-9]{1,8}|([0-9]{9,14}|[0-9]{14,14}\\.[0-9]+)([+\\-][0-9]{1,4})?``: whole
components from the year to fractions of a second of any length, and a UTC offset of one to four digits
(``+H``, ``+HH``, ``+HMM``, ``+HHMM``). The ICH implementation guide's example 1-1 sends ``20120720100001+09``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from py_load_eudravigilance.fixtures.generator import CaseSpec, build_batch, build_message
from py_load_eudravigilance.mapping.values import InvalidValueError, parse_ts
from py_load_eudravigilance.pipeline import run_load
from tests.support.db import query
from tests.test_compiled import assert_same_staging
from tests.test_parsing_mapping import staged_rows


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)  # type: ignore[misc]


# (text, UTC instant, precision): one of each component count, fraction length and offset width
TS_FORMS = [
    ("2012", utc(2012, 1, 1), "year"),
    ("201207", utc(2012, 7, 1), "month"),
    ("20120720", utc(2012, 7, 20), "day"),
    ("2012072010", utc(2012, 7, 20, 10), "hour"),
    ("201207201005", utc(2012, 7, 20, 10, 5), "minute"),
    ("20120720100001", utc(2012, 7, 20, 10, 0, 1), "second"),
    ("20120720100001.5", utc(2012, 7, 20, 10, 0, 1, 500000), "second"),
    ("20120720100001.123456", utc(2012, 7, 20, 10, 0, 1, 123456), "second"),
    ("20120720100001.123456789", utc(2012, 7, 20, 10, 0, 1, 123456), "second"),  # past microseconds: in the text only
    ("20120720100001+09", utc(2012, 7, 20, 1, 0, 1), "second"),  # ICH example 1-1, N.2.r.4
    ("20120720100001+9", utc(2012, 7, 20, 1, 0, 1), "second"),  # H
    ("20120720100001-930", utc(2012, 7, 20, 19, 30, 1), "second"),  # H + MM: 09:30
    ("20120720100001+0930", utc(2012, 7, 20, 0, 30, 1), "second"),  # HH + MM
    ("20120720100001.25-0500", utc(2012, 7, 20, 15, 0, 1, 250000), "second"),
    ("20120720100001+0", utc(2012, 7, 20, 10, 0, 1), "second"),
    ("20120720100001-00", utc(2012, 7, 20, 10, 0, 1), "second"),
    ("2012072010+01", utc(2012, 7, 20, 9), "hour"),
    ("201207201005-1400", utc(2012, 7, 21, 0, 5), "minute"),  # XML Schema's widest offset
    ("20120720+0100", utc(2012, 7, 19, 23), "day"),  # an offset on a date: read as before
    ("20120101000000+14", utc(2011, 12, 31, 10), "second"),  # the offset moves it into the year before
    (" 20120720 ", utc(2012, 7, 20), "day"),
]

# Outside the pattern, or a component or offset out of range
NOT_TS = [
    "2012-07-20",
    "20120720T100001",
    "20120720100001Z",
    "201",
    "2012072",  # half a component
    "2012.5",  # a fraction of anything but a second
    "20120720100001.",
    "20120733",  # day 33
    "20130229",  # no 29 February in 2013
    "2012072025",  # hour 25
    "201207201060",
    "20120720100060",
    "20120720100001+",
    "20120720100001+09300",  # five digits
    "20120720100001+0975",  # minute offset 75
    "20120720100001+1401",
    "20120720100001+15",
    "20120720100001+2400",
    "２０１２０７２０",  # full-width digits
    "٢٠١٢٠٧٢٠",  # Arabic-Indic digits
    "00010101000000+0100",  # before the year 1 in UTC
]


@pytest.mark.parametrize(("text", "instant", "precision"), TS_FORMS, ids=[t for t, _, _ in TS_FORMS])
def test_every_ts_form_is_read(text: str, instant: datetime, precision: str) -> None:
    parsed = parse_ts(text)
    assert (parsed.text, parsed.utc, parsed.precision) == (text.strip(), instant, precision)


@pytest.mark.parametrize("text", NOT_TS)
def test_values_outside_ts_are_refused(text: str) -> None:
    with pytest.raises(InvalidValueError):
        parse_ts(text)


def most_recent(case_id: str, text: str) -> str:
    """A message whose C.1.5 is ``text``."""
    return build_message(CaseSpec(case_id)).replace('<availabilityTime value="20240115"/>', f'<availabilityTime value="{text}"/>', 1)


def test_both_mappers_read_every_form_and_quarantine_the_rest_naming_the_element(tmp_path: Path) -> None:
    forms = [text for text, _, _ in TS_FORMS]
    path = tmp_path / "dates.xml"
    path.write_text(build_batch([most_recent(f"TS-{n}", text) for n, text in enumerate(forms + NOT_TS)]), encoding="utf-8")

    reference = assert_same_staging(path, tmp_path / "staged")  # identical bytes, every table

    master = staged_rows(tmp_path / "staged" / "python", "icsr_master")
    assert [(row["most_recent_info_date"], row["most_recent_info_date_utc"]) for row in master] == [
        (text, instant) for text, instant, _ in TS_FORMS
    ]
    quarantined = staged_rows(tmp_path / "staged" / "python", "etl_quarantine")
    assert [row["element"] for row in quarantined] == ["C.1.5"] * len(NOT_TS)
    assert reference["account"].messages_rejected == len(NOT_TS)  # type: ignore[attr-defined]


def test_the_ich_example_creation_time_loads_without_rejection(dsn: str, tmp_path: Path) -> None:
    message = build_message(CaseSpec("ICH-1-1", message_created="20120720100001+09"))
    path = tmp_path / "in" / "ich-example.xml"
    path.parent.mkdir()
    path.write_text(build_batch([message]), encoding="utf-8")

    summary = run_load(path, dsn, workers=1)

    assert summary.exit_code == 0 and [o.status for o in summary.outcomes] == ["completed"], summary.outcomes
    assert query(dsn, "SELECT COUNT(*) FROM etl_quarantine") == [(0,)]
    ((text, instant, precision),) = query(
        dsn, "SELECT message_creation_time, message_creation_time_utc, message_creation_time_precision FROM icsr_master"
    )
    assert (text, precision) == ("20120720100001+09", "second")
    assert str(instant).startswith("2012-07-20 01:00:01")
