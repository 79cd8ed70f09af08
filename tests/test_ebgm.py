"""EBGM by the gamma-Poisson shrinker, against openEBGM's published example and against the formulas.

Published figures: openEBGM 0.9.1 (Canida and Ihrie, CRAN; <https://cran.r-project.org/package=openEBGM>),
on its example data `caers` (FDA CAERS 2012 dietary supplement reports; tests/data/README.md):

- vignette "Hyperparameter Estimation with openEBGM", `autoHyper(data = processed, ..., squashed = FALSE)`:
  the full-data estimate (alpha1, beta1, alpha2, beta2, P) = (3.25596685, 0.39998994, 2.02376139,
  1.90614108, 0.06530755) at the negative log-likelihood 4162.456, from the starting points
  (0.2, 0.1, 2, 4, 1/3), (0.1, 0.2, 10, 10, 0.2) and (0.3, 0.5, 6, 6, 0.5);
- vignette "Empirical Bayes Metrics with openEBGM", with the estimate theta_hat = (3.25379356,
  0.39988854, 2.02612692, 1.90807970, 0.06534557): Qn, EBGM, QUANT_05 and QUANT_95 of the first six
  pairs and of the five with the highest QUANT_05, the summary of Qn over all pairs, and 131 of the
  17,189 pairs with QUANT_05 >= 2.

openEBGM prints EBGM and quantiles rounded to 2 decimals. Qn and EBGM match to every digit printed.
Its quantiles come from a bisection that stops short: 6 of its 20 distinct printed quantiles differ from
the exact ones by 0.0057 to 0.0067 (ours agree with mpmath's incomplete gamma to 1e-10 and, here, with
brute-force integration), more than rounding explains, so quantiles are compared to within one unit of
the last printed digit (0.01).
"""

from __future__ import annotations

import csv
import gzip
import math
from pathlib import Path

import numpy as np
import pytest

from py_load_eudravigilance import ebgm
from py_load_eudravigilance.ebgm import Prior

CAERS = Path(__file__).parent / "data" / "caers_2012_pairs.csv.gz"
CAERS_REPORTS = 3356
THETA_HAT = Prior(3.25379356, 0.39988854, 2.02612692, 1.90807970, 0.06534557)
FULL_DATA_ESTIMATE = Prior(3.25596685, 0.39998994, 2.02376139, 1.90614108, 0.06530755)
FULL_DATA_NEGATIVE_LOG_LIKELIHOOD = 4162.456

# (N, E, Qn or None, EBGM, QUANT_05, QUANT_95) as printed in "Empirical Bayes Metrics with openEBGM"
HEAD = [
    (1, 0.0360548272, 0.2819737, 2.23, 0.49, 13.85),
    (1, 0.0038736591, 0.3409653, 2.58, 0.52, 15.78),
    (1, 0.0002979738, 0.3482317, 2.63, 0.52, 16.02),
    (1, 0.0360548272, 0.2819737, 2.23, 0.49, 13.85),
    (1, 0.0765792610, 0.2226356, 1.92, 0.47, 11.77),
    (1, 0.0527413588, 0.2556670, 2.09, 0.48, 12.95),
]
HIGHEST_QUANT_05 = [
    (16, 0.40643623, None, 23.26, 15.68, 33.48),
    (19, 0.89690107, None, 16.78, 11.65, 23.55),
    (6, 0.07866508, None, 18.28, 10.16, 30.83),
    (8, 0.30482718, None, 15.25, 9.00, 24.52),
    (11, 0.56317044, None, 14.28, 8.98, 21.78),
]


def caers_pairs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with gzip.open(CAERS, "rt", newline="") as file:
        rows = [(int(row["n"]), int(row["margin_product"]), int(row["pairs"])) for row in csv.DictReader(file)]
    n, margins, pairs = (np.array(column, dtype=float) for column in zip(*rows, strict=True))
    return n, margins / CAERS_REPORTS, pairs


def within_last_printed_digit(value: float, published: float) -> bool:
    return abs(value - published) <= 0.01


@pytest.mark.parametrize(("n", "e", "qn", "score", "quant05", "quant95"), HEAD + HIGHEST_QUANT_05)
def test_posterior_scores_match_openebgm(n: int, e: float, qn: float | None, score: float, quant05: float, quant95: float) -> None:
    if qn is not None:
        assert round(ebgm.posterior_weight(n, e, THETA_HAT), 7) == qn
    assert round(ebgm.ebgm(n, e, THETA_HAT), 2) == score
    assert within_last_printed_digit(ebgm.quantile(n, e, THETA_HAT, 0.05), quant05)
    assert within_last_printed_digit(ebgm.quantile(n, e, THETA_HAT, 0.95), quant95)


def test_whole_example_matches_openebgm_counts_and_summary() -> None:
    n, e, pairs = caers_pairs()
    assert pairs.sum() == 17189
    eb05 = ebgm.quantile(n, e, THETA_HAT, 0.05)
    assert pairs[eb05 >= 2].sum() == 131
    qn = ebgm.posterior_weight(n, e, THETA_HAT)
    # summary(qn): Min. 0.0001205, Mean 0.2846021, Max. 0.9999997
    assert round(float(qn.min()), 7) == 0.0001205
    assert round(float(np.sum(qn * pairs) / pairs.sum()), 7) == 0.2846021
    assert round(float(qn.max()), 7) == 0.9999997


def test_log_likelihood_is_openebgms_at_its_estimate() -> None:
    n, e, pairs = caers_pairs()
    assert -ebgm.log_likelihood(FULL_DATA_ESTIMATE, n, e, pairs) == pytest.approx(FULL_DATA_NEGATIVE_LOG_LIKELIHOOD, abs=5e-4)
    # The weights only group identical pairs: expanding them changes nothing
    assert ebgm.log_likelihood(FULL_DATA_ESTIMATE, np.repeat(n, pairs.astype(int)), np.repeat(e, pairs.astype(int))) == pytest.approx(
        ebgm.log_likelihood(FULL_DATA_ESTIMATE, n, e, pairs), rel=1e-12
    )


@pytest.mark.parametrize("start", [(0.1, 0.2, 10, 10, 0.2), (0.3, 0.5, 6, 6, 0.5)])
def test_fit_from_openebgms_starting_points_reaches_its_estimate(start: tuple[float, ...]) -> None:
    n, e, pairs = caers_pairs()
    fit = ebgm.fit_prior(n, e, pairs, starts=[Prior(*start)])
    assert fit.converged
    for ours, published in zip(fit.prior.as_tuple(), FULL_DATA_ESTIMATE.as_tuple(), strict=True):
        assert ours == pytest.approx(published, rel=5e-4)
    assert -fit.log_likelihood == pytest.approx(FULL_DATA_NEGATIVE_LOG_LIKELIHOOD, abs=5e-4)


def test_default_fit_finds_the_higher_of_the_two_optima() -> None:
    """The example's likelihood has two local maxima; openEBGM reports the lower one.

    From DuMouchel's starting point (0.2, 0.1, 2, 4, 1/3), openEBGM's first, our fit climbs to a
    maximum 0.275 higher in log-likelihood, with a narrower first component (alpha1 about 21, beta1
    about 1.66, P about 0.035). Both are local maxima: no small step from either improves it.
    """
    n, e, pairs = caers_pairs()
    fit = ebgm.fit_prior(n, e, pairs)
    assert fit.converged and fit.min_count == 1 and fit.pairs == 17189
    assert fit.log_likelihood == pytest.approx(-4162.1808, abs=1e-3)
    assert fit.log_likelihood > -FULL_DATA_NEGATIVE_LOG_LIKELIHOOD + 0.2
    assert fit.prior.p < 0.5  # the lighter component first
    for optimum in (fit.prior, FULL_DATA_ESTIMATE):
        assert_local_maximum(optimum, n, e, pairs)


def assert_local_maximum(prior: Prior, n: np.ndarray, e: np.ndarray, pairs: np.ndarray, min_count: int = 1) -> None:
    best = ebgm.log_likelihood(prior, n, e, pairs, min_count)
    values = prior.as_tuple()
    for i in range(5):
        for factor in (0.99, 1.01):
            moved = list(values)
            moved[i] *= factor
            assert ebgm.log_likelihood(Prior(*moved), n, e, pairs, min_count) < best


def test_fit_without_truncation_on_all_cells() -> None:
    """min_count=0 is DuMouchel's (1999) likelihood over every cell, zeros included."""
    n, e, pairs = caers_pairs()
    cells = np.concatenate([n, [0.0]])
    expected = np.concatenate([e, [0.01]])
    weights = np.concatenate([pairs, [20000.0]])
    fit = ebgm.fit_prior(cells, expected, weights, min_count=0, starts=[Prior(*ebgm.STARTS[0])])
    assert fit.converged and fit.min_count == 0
    assert_local_maximum(fit.prior, cells, expected, weights, min_count=0)
    with pytest.raises(ValueError, match="at least 1"):
        ebgm.fit_prior(cells, expected, weights)


def test_special_functions_against_the_standard_library() -> None:
    x = np.array([1e-6, 0.01, 0.3, 0.5, 1.0, 2.5, 7.0, 9.99, 10.0, 33.3, 1e3, 1e6])
    assert ebgm.log_gamma(x) == pytest.approx([math.lgamma(v) for v in x], abs=1e-12, rel=1e-13)
    # ψ(1) = -γ, ψ(1/2) = -γ - 2 ln 2, ψ(x+1) = ψ(x) + 1/x
    euler_gamma = 0.5772156649015329
    assert ebgm.digamma(np.array([1.0, 0.5])) == pytest.approx([-euler_gamma, -euler_gamma - 2 * math.log(2)], abs=1e-13)
    assert ebgm.digamma(x + 1) - ebgm.digamma(x) == pytest.approx(1 / x, rel=1e-10)
    # P(a, x) for whole a is a Poisson tail; P(1/2, x) = erf(√x)
    for a in (1, 3, 12, 40):
        for at in (0.1, 2.0, 11.0, 39.0, 80.0):
            poisson_head = sum(math.exp(-at + k * math.log(at) - math.lgamma(k + 1)) for k in range(a))
            assert float(ebgm.gamma_cdf(a, at)) == pytest.approx(1 - poisson_head, abs=1e-13)
    for at in (1e-4, 0.2, 1.0, 4.0, 30.0):
        assert float(ebgm.gamma_cdf(0.5, at)) == pytest.approx(math.erf(math.sqrt(at)), abs=1e-14)


def posterior_density(x: np.ndarray, n: int, e: float, prior: Prior) -> np.ndarray:
    weight = ebgm.posterior_weight(n, e, prior)
    density = np.zeros_like(x)
    for share, shape, rate in ((weight, prior.alpha1 + n, prior.beta1 + e), (1 - weight, prior.alpha2 + n, prior.beta2 + e)):
        density += share * np.exp(shape * np.log(rate) + (shape - 1) * np.log(x) - rate * x - math.lgamma(shape))
    return density


@pytest.mark.parametrize(("n", "e"), [(1, 0.0360548272), (16, 0.40643623), (0, 2.5), (3, 0.001), (250, 40.0)])
def test_posterior_against_brute_force_integration(n: int, e: float) -> None:
    """EBGM, mean and quantiles by integrating the posterior density on a fine log grid (trapezoid rule)."""
    log_x = np.linspace(-40, 8, 400_001)
    x = np.exp(log_x)
    mass = posterior_density(x, n, e, THETA_HAT) * x  # density in log x
    assert np.trapezoid(mass, log_x) == pytest.approx(1, abs=1e-9)
    assert math.exp(np.trapezoid(mass * log_x, log_x)) == pytest.approx(ebgm.ebgm(n, e, THETA_HAT), rel=1e-8)
    assert np.trapezoid(mass * x, log_x) == pytest.approx(ebgm.posterior_mean(n, e, THETA_HAT), rel=1e-8)
    cumulative = np.concatenate([[0.0], np.cumsum((mass[1:] + mass[:-1]) / 2 * np.diff(log_x))])
    for p in (0.05, 0.5, 0.95):
        quantile = ebgm.quantile(n, e, THETA_HAT, p)
        assert ebgm.posterior_cdf(quantile, n, e, THETA_HAT) == pytest.approx(p, abs=1e-10)
        assert float(np.interp(p, cumulative, x)) == pytest.approx(quantile, rel=1e-6)


def test_one_gamma_prior_has_closed_forms() -> None:
    """With both components equal the posterior is one gamma: EBGM = exp(ψ(α+n))/(β+E), mean (α+n)/(β+E)."""
    alpha, beta = 1.7, 0.8
    prior = Prior(alpha, beta, alpha, beta, 0.3)
    n = np.array([0, 1, 2, 5, 40])
    e = np.array([0.5, 0.01, 3.0, 1.2, 20.0])
    closed = np.exp(ebgm.digamma(alpha + n)) / (beta + e)
    assert ebgm.ebgm(n, e, prior) == pytest.approx(closed, rel=1e-13)
    assert ebgm.posterior_mean(n, e, prior) == pytest.approx((alpha + n) / (beta + e), rel=1e-13)
    # one shape-1 component is exponential, whose p-quantile is -ln(1-p)/rate
    exponential = Prior(1.0, 2.0, 1.0, 2.0, 0.5)
    assert ebgm.quantile(0, 0.5, exponential, 0.05) == pytest.approx(-math.log(0.95) / 2.5, rel=1e-12)


def test_shrinkage_and_monotonicity() -> None:
    e = 0.02
    counts = np.arange(1, 30)
    scores, eb05, eb95 = ebgm.scores(counts, np.full(counts.shape, e), THETA_HAT)
    # one case where 0.02 were expected is a reporting ratio of 50; shrunk toward the prior it is about 2
    assert scores[0] < 3 < 1 / e
    # more cases for the same expectation, higher scores; the interval holds the geometric mean
    assert np.all(np.diff(scores) > 0) and np.all(np.diff(eb05) > 0)
    assert np.all((eb05 < scores) & (scores < eb95))
    # with many cases the data outweigh the prior: EBGM tends to N/E
    assert ebgm.ebgm(5000, 1000.0, THETA_HAT) == pytest.approx(5.0, rel=2e-3)
    # scores computes each distinct (n, E) once and gives every pair its own
    repeated = ebgm.scores([3, 1, 3], [0.5, 0.02, 0.5], THETA_HAT)
    assert repeated[0].tolist() == [ebgm.ebgm(3, 0.5, THETA_HAT), ebgm.ebgm(1, 0.02, THETA_HAT), ebgm.ebgm(3, 0.5, THETA_HAT)]
    assert repeated[1][1] == ebgm.quantile(1, 0.02, THETA_HAT, 0.05)
    # as a number for numbers, an array for arrays
    assert isinstance(ebgm.ebgm(3, 0.5, THETA_HAT), float)
    assert ebgm.quantile(np.array([[1, 2], [3, 4]]), 0.5, THETA_HAT, 0.05).shape == (2, 2)


def test_expected_count_from_margins() -> None:
    # 1-PHENYLALANINE has 11 reports, HEART RATE INCREASED 11; 3356 reports in all
    assert float(ebgm.expected_count(11, 11, CAERS_REPORTS)) == pytest.approx(0.0360548272, rel=1e-9)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        ebgm.fit_prior([1, 2], [0.5, 0.0])
    with pytest.raises(ValueError, match="whole number"):
        ebgm.fit_prior([1, 2.5], [0.5, 0.5])
    with pytest.raises(ValueError, match="differ in length"):
        ebgm.fit_prior([1, 2], [0.5])
    with pytest.raises(ValueError, match="0 < p < 1"):
        Prior(1, 1, 1, 1, 1.0)
    with pytest.raises(ValueError, match="quantile"):
        ebgm.quantile(1, 0.5, THETA_HAT, 1.0)
