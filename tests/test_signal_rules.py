"""Screening rules met by a drug-event pair, and the relative ROR of a subgroup (docs/signal-rules.md)."""

from __future__ import annotations

import math

import pytest

from py_load_eudravigilance.signal_rules import (
    EB05,
    EMA_SDR,
    EVANS_PRR,
    IC025,
    RULES,
    PairStatistics,
    TwoByTwo,
    relative_ror,
    ror,
    rules_met,
)


def test_each_rule_at_its_threshold() -> None:
    everything = PairStatistics(a=5, prr=2.0, chi_square=4.0, ror_lower95=1.01, ic025=0.01, eb05=2.0)
    assert rules_met(everything) == frozenset(RULES)
    # Evans: every part is needed, each bound inclusive
    assert EVANS_PRR not in rules_met(PairStatistics(a=2, prr=5.0, chi_square=9.0))
    assert EVANS_PRR not in rules_met(PairStatistics(a=3, prr=1.99, chi_square=9.0))
    assert EVANS_PRR not in rules_met(PairStatistics(a=3, prr=5.0, chi_square=3.99))
    assert rules_met(PairStatistics(a=3, prr=2.0, chi_square=4.0)) == {EVANS_PRR}
    # IC025 and the ROR's lower bound must exceed their thresholds strictly; EB05 may equal 2
    assert rules_met(PairStatistics(a=9, ic025=0.0, ror_lower95=1.0, eb05=1.99)) == frozenset()
    assert rules_met(PairStatistics(a=1, eb05=2.0)) == {EB05}


def test_ema_rule_needs_five_cases_or_three_under_additional_monitoring() -> None:
    four_cases = PairStatistics(a=4, ror_lower95=1.5)
    assert EMA_SDR not in rules_met(four_cases)
    assert EMA_SDR in rules_met(four_cases, additional_monitoring=True)
    assert EMA_SDR in rules_met(PairStatistics(a=5, ror_lower95=1.5))
    assert EMA_SDR not in rules_met(PairStatistics(a=2, ror_lower95=9.0), additional_monitoring=True)


def test_ema_rule_restricted_to_important_medical_events_when_the_list_is_known() -> None:
    pair = PairStatistics(a=7, ror_lower95=2.0)
    assert EMA_SDR in rules_met(pair, important_medical_event=True)
    assert EMA_SDR not in rules_met(pair, important_medical_event=False)
    assert EMA_SDR in rules_met(pair)  # no IME list: the statistical criteria alone


def test_missing_statistics_meet_nothing() -> None:
    assert rules_met(PairStatistics(a=100)) == frozenset()
    assert rules_met(PairStatistics(a=100, prr=None, chi_square=50.0, ror_lower95=None, ic025=None, eb05=None)) == frozenset()
    assert IC025 in rules_met(PairStatistics(a=1, ic025=0.2))


def test_relative_ror_by_hand() -> None:
    # children: ROR = (6·900)/(94·20) = 2.8723; the others: ROR = (30·8000)/(970·400) = 0.61856
    children = TwoByTwo(a=6, b=94, c=20, d=900)
    others = TwoByTwo(a=30, b=970, c=400, d=8000)
    result = relative_ror(children, others)
    assert result is not None
    assert result.estimate == pytest.approx((6 * 900 / (94 * 20)) / (30 * 8000 / (970 * 400)), rel=1e-12)
    error = math.sqrt(1 / 6 + 1 / 94 + 1 / 20 + 1 / 900 + 1 / 30 + 1 / 970 + 1 / 400 + 1 / 8000)
    assert result.lower95 == pytest.approx(result.estimate * math.exp(-1.96 * error), rel=1e-12)
    assert result.upper95 == pytest.approx(result.estimate * math.exp(1.96 * error), rel=1e-12)
    assert round(result.estimate, 3) == 4.644 and round(result.lower95, 3) == 1.692
    children_ror, others_ror = ror(children), ror(others)
    assert children_ror is not None and others_ror is not None
    assert children_ror.estimate / others_ror.estimate == pytest.approx(result.estimate, rel=1e-12)


def test_ror_matches_a_published_table() -> None:
    """Agresti's aspirin and myocardial infarction table (docs/signals.md): odds ratio 1.83, 95% interval 1.44-2.33."""
    result = ror(TwoByTwo(a=189, b=10845, c=104, d=10933))
    assert result is not None
    assert (round(result.estimate, 2), round(result.lower95, 2), round(result.upper95, 2)) == (1.83, 1.44, 2.33)
    assert ror(TwoByTwo(a=3, b=0, c=5, d=100)) is None


def test_relative_ror_symmetry_and_empty_cells() -> None:
    group = TwoByTwo(a=4, b=40, c=10, d=500)
    same = relative_ror(group, group)
    assert same is not None and same.estimate == pytest.approx(1.0) and same.lower95 < 1 < same.upper95
    other = TwoByTwo(a=9, b=300, c=50, d=4000)
    forward, backward = relative_ror(group, other), relative_ror(other, group)
    assert forward is not None and backward is not None
    assert forward.estimate * backward.estimate == pytest.approx(1.0)
    assert forward.lower95 * backward.upper95 == pytest.approx(1.0)
    assert relative_ror(TwoByTwo(a=0, b=40, c=10, d=500), other) is None
    with pytest.raises(ValueError, match="negative"):
        TwoByTwo(a=-1, b=0, c=0, d=0)
