"""Which screening rules a drug-event pair meets, and the relative ROR of a subgroup: pure functions, no database.

Each rule is named as the signals table and CLI show it; thresholds and sources are in
docs/signal-rules.md:

- ``evans_prr``: a >= 3, PRR >= 2 and chi-square >= 4 (Evans, Waller and Davis 2001);
- ``ic025``: the lower end of the IC's 95% credibility interval above 0 (the Uppsala Monitoring Centre's BCPNN);
- ``ema_sdr``: EudraVigilance's signal of disproportionate reporting (EMA/849944/2016, section 4.1): the
  lower end of the ROR's 95% confidence interval above 1, with at least 3 cases for an active substance
  under additional monitoring and at least 5 for any other, for an event on the EMA's list of important
  medical events (IME) when that list is known;
- ``eb05``: the 5% quantile of the EBGM posterior at least 2 (the MGPS screening threshold; see :mod:`ebgm`).

A statistic that is missing (NULL: a division by zero or the log of zero) never meets a rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EVANS_PRR = "evans_prr"
IC025 = "ic025"
EMA_SDR = "ema_sdr"
EB05 = "eb05"
RULES = (EVANS_PRR, IC025, EMA_SDR, EB05)

# Evans et al. 2001: at least 3 cases, PRR at least 2, chi-square at least 4
EVANS_MIN_CASES = 3
EVANS_MIN_PRR = 2.0
EVANS_MIN_CHI_SQUARE = 4.0
# EMA/849944/2016, 4.1: ROR lower bound > 1 with >= 3 cases (additional monitoring) or >= 5 (other substances)
EMA_MIN_CASES_ADDITIONAL_MONITORING = 3
EMA_MIN_CASES = 5
EMA_MIN_ROR_LOWER = 1.0
EB05_THRESHOLD = 2.0
Z95 = 1.96


@dataclass(frozen=True)
class PairStatistics:
    """What the rules read of one drug-event pair; ``None`` where the statistic is NULL."""

    a: int  # cases with the drug and the event
    prr: float | None = None
    chi_square: float | None = None
    ror_lower95: float | None = None
    ic025: float | None = None
    eb05: float | None = None


def rules_met(pair: PairStatistics, additional_monitoring: bool = False, important_medical_event: bool | None = None) -> frozenset[str]:
    """The names of the rules (of :data:`RULES`) the pair meets.

    ``additional_monitoring``: the drug's active substance is on the EU list of medicines under
    additional monitoring, which lowers the EMA rule's case threshold from 5 to 3.
    ``important_medical_event``: whether the event is on the IME list; ``None`` when no IME list is
    loaded, and then the EMA rule is judged on its statistical criteria alone (docs/signal-rules.md).
    """
    met = set()
    if pair.a >= EVANS_MIN_CASES and _at_least(pair.prr, EVANS_MIN_PRR) and _at_least(pair.chi_square, EVANS_MIN_CHI_SQUARE):
        met.add(EVANS_PRR)
    if pair.ic025 is not None and pair.ic025 > 0:
        met.add(IC025)
    min_cases = EMA_MIN_CASES_ADDITIONAL_MONITORING if additional_monitoring else EMA_MIN_CASES
    ema_event = important_medical_event is not False
    if ema_event and pair.a >= min_cases and pair.ror_lower95 is not None and pair.ror_lower95 > EMA_MIN_ROR_LOWER:
        met.add(EMA_SDR)
    if _at_least(pair.eb05, EB05_THRESHOLD):
        met.add(EB05)
    return frozenset(met)


def _at_least(value: float | None, threshold: float) -> bool:
    return value is not None and value >= threshold


@dataclass(frozen=True)
class TwoByTwo:
    """Case counts of one drug-event pair within a population: a drug and event, b drug only, c event only, d neither."""

    a: int
    b: int
    c: int
    d: int

    def __post_init__(self) -> None:
        if min(self.a, self.b, self.c, self.d) < 0:
            raise ValueError(f"a 2x2 table cannot hold negative counts: {self}")

    def log_ror(self) -> tuple[float, float] | None:
        """ln(ad/bc) and its standard error √(1/a + 1/b + 1/c + 1/d); None when a cell is empty."""
        if min(self.a, self.b, self.c, self.d) == 0:
            return None
        estimate = math.log(self.a) + math.log(self.d) - math.log(self.b) - math.log(self.c)
        return estimate, math.sqrt(1 / self.a + 1 / self.b + 1 / self.c + 1 / self.d)


@dataclass(frozen=True)
class Ratio:
    """A ratio (an ROR, or a ratio of two RORs) with its 95% confidence interval."""

    estimate: float
    lower95: float
    upper95: float


def _ratio(log_estimate: float, error: float) -> Ratio:
    return Ratio(math.exp(log_estimate), math.exp(log_estimate - Z95 * error), math.exp(log_estimate + Z95 * error))


def ror(table: TwoByTwo) -> Ratio | None:
    """The reporting odds ratio ad/bc with its 95% interval exp(ln ROR ∓ 1.96·SE): e.g. within one region.

    The same formula as the signals table's ``ror``, ``ror_lower95``, ``ror_upper95``; None when a cell is empty.
    """
    logged = table.log_ror()
    return None if logged is None else _ratio(*logged)


def relative_ror(subgroup: TwoByTwo, others: TwoByTwo) -> Ratio | None:
    """ROR within the subgroup (e.g. children) divided by ROR within the other cases, with a 95% interval.

    The two RORs come from disjoint sets of cases, so the variance of the log of their ratio is the
    sum of their variances (the ratio of two odds ratios of independent groups: Altman and Bland,
    BMJ 2003;326:219). None when either ROR is undefined (an empty cell).
    """
    inside, outside = subgroup.log_ror(), others.log_ror()
    if inside is None or outside is None:
        return None
    return _ratio(inside[0] - outside[0], math.hypot(inside[1], outside[1]))
