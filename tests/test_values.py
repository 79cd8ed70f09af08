from datetime import datetime, timezone

import pytest

from py_load_eudravigilance.mapping.values import InvalidValueError, parse_ts


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
