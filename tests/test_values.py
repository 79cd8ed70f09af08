from datetime import datetime, timezone
from pathlib import Path

import pytest

from py_load_eudravigilance.fixtures.generator import CaseSpec, build_batch, build_message
from py_load_eudravigilance.mapping.values import InvalidValueError, parse_int, parse_number, parse_ts
from tests.test_compiled import assert_same_staging
from tests.test_parsing_mapping import staged_rows


@pytest.mark.parametrize(
    ("text", "utc", "precision"),
    [
        ("2024", datetime(2024, 1, 1, tzinfo=timezone.utc), "year"),
        ("202402", datetime(2024, 2, 1, tzinfo=timezone.utc), "month"),
        ("20240201", datetime(2024, 2, 1, tzinfo=timezone.utc), "day"),
        ("20240201230000-0500", datetime(2024, 2, 2, 4, 0, tzinfo=timezone.utc), "second"),
        ("20240202010000+0000", datetime(2024, 2, 2, 1, 0, tzinfo=timezone.utc), "second"),
        ("202402021230+0130", datetime(2024, 2, 2, 11, 0, tzinfo=timezone.utc), "minute"),
        ("20240202123000.5", datetime(2024, 2, 2, 12, 30, 0, 500000, tzinfo=timezone.utc), "second"),
    ],
)
def test_dates_keep_text_and_normalize_to_utc(text: str, utc: datetime, precision: str) -> None:
    parsed = parse_ts(text)
    assert (parsed.text, parsed.utc, parsed.precision) == (text, utc, precision)


def test_offsets_order_by_instant_not_text() -> None:
    # The text comparison puts the first one earlier; it is three hours later in real time
    assert parse_ts("20240201230000-0500").utc > parse_ts("20240202010000+0000").utc


@pytest.mark.parametrize("text", ["2024-02-01", "20241301", "yesterday", "20240230"])
def test_non_dates_are_refused(text: str) -> None:
    with pytest.raises(InvalidValueError):
        parse_ts(text)


# HL7 REAL / PQ.value (xs:decimal or xs:double) and INT (xs:integer), ASCII digits, finite
NUMBERS = [
    ("45", 45.0), (" 45 ", 45.0), ("+7", 7.0), ("-0", 0.0), (".5", 0.5), ("5.", 5.0), ("4.5e1", 45.0), ("1E-2", 0.01), ("1e308", 1e308)
]  # fmt: skip
NOT_NUMBERS = [
    "nan", "NaN", "inf", "-inf", "INF", "Infinity", "1e308000", "1e400", "1_000",
    "٤٥", "４５", "45\u0665", "0x10", "1,5", "", "e5", "+", "1e",
]  # fmt: skip
INTEGERS = [("1", 1), (" 12 ", 12), ("-3", -3), ("+4", 4), ("2147483647", 2147483647)]
NOT_INTEGERS = ["1.0", "1_000", "١", "１", "2147483648", "1e3", ""]


@pytest.mark.parametrize(("text", "value"), NUMBERS)
def test_hl7_numbers_are_read(text: str, value: float) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize("text", NOT_NUMBERS)
def test_numbers_must_be_finite_and_in_ascii_digits(text: str) -> None:
    with pytest.raises(InvalidValueError):
        parse_number(text)


@pytest.mark.parametrize(("text", "value"), INTEGERS)
def test_hl7_integers_are_read(text: str, value: int) -> None:
    assert parse_int(text) == value


@pytest.mark.parametrize("text", NOT_INTEGERS)
def test_integers_must_be_ascii_digits_in_32_bits(text: str) -> None:
    with pytest.raises(InvalidValueError):
        parse_int(text)


def test_both_mappers_store_numbers_and_quarantine_non_numbers_naming_the_element(tmp_path: Path) -> None:
    def with_age(number: int, age: str) -> str:
        return build_message(CaseSpec(f"AGE-{number}")).replace('value="45" unit="a"', f'value="{age}" unit="a"', 1)

    ages = [text for text, _ in NUMBERS] + [text for text in NOT_NUMBERS if text]  # an empty value is no value
    path = tmp_path / "ages.xml"
    path.write_text(build_batch([with_age(n, age) for n, age in enumerate(ages)]), encoding="utf-8")

    assert_same_staging(path, tmp_path / "staged")

    patients = staged_rows(tmp_path / "staged" / "compiled", "patient_characteristics")
    assert [row["age_at_onset"] for row in patients] == [value for _, value in NUMBERS]
    quarantined = staged_rows(tmp_path / "staged" / "compiled", "etl_quarantine")
    assert [row["element"] for row in quarantined] == ["D.2.2a"] * (len(ages) - len(NUMBERS))
