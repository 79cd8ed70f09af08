"""Empirical Bayes geometric mean (EBGM) by the gamma-Poisson shrinker (DuMouchel 1999), pure and database-free.

The model, for every drug-event pair with ``N`` cases observed and ``E`` expected under independence
(``E = drug cases x event cases / all cases``, the 2x2 margins):

- ``N`` given the pair's true reporting ratio ``lambda`` is Poisson with mean ``lambda * E``;
- ``lambda`` is drawn from one prior shared by all pairs, a mixture of two gamma distributions:
  ``P * Gamma(alpha1, rate beta1) + (1 - P) * Gamma(alpha2, rate beta2)``;
- so ``N`` is marginally a mixture of two negative binomials, and the prior's five parameters are
  fitted by maximum likelihood of that mixture over all pairs (:func:`fit_prior`). A pairs table only
  holds pairs seen at least once, so by default each negative binomial is truncated to ``N >= 1``
  before mixing (DuMouchel and Pregibon 2001's ``N*``, as openEBGM does; DuMouchel 1999 fitted every
  cell, zeros included, which ``min_count=0`` reproduces);
- the posterior of ``lambda`` given ``N = n`` is again a two-gamma mixture, with shapes
  ``alpha_i + n``, rates ``beta_i + E`` and the first component's weight ``Q_n``
  (:func:`posterior_weight`). EBGM is ``exp(E[log lambda | n])`` (:func:`ebgm`); EB05 and EB95 are
  the posterior's 5% and 95% quantiles (:func:`quantile`).

Everything works on numpy arrays (pairs at a time), and on plain numbers. numpy's own functions
cover no gamma function, so the few special functions needed (log-gamma, digamma, the regularized
incomplete gamma) are written here from their textbook series and continued fraction.
The formulas are in docs/signal-rules.md; tests/test_ebgm.py checks them against openEBGM's
published example (FDA CAERS 2012 dietary supplement reports).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float64]

# Starting points of the fit. The first is DuMouchel's (1999) "lightly justified" choice; the others
# start from a wider and a narrower first component so that one local optimum does not trap the fit.
STARTS: tuple[tuple[float, float, float, float, float], ...] = (
    (0.2, 0.1, 2.0, 4.0, 1 / 3),
    (1.0, 0.5, 2.0, 2.0, 0.2),
    (3.0, 0.5, 1.0, 1.0, 0.1),
)
# Transformed parameters (log of the shapes and rates, logit of P) are kept within these bounds:
# beyond them a component has degenerated (zero weight or a point mass) and its parameters are arbitrary
LIMIT = 25.0
GRADIENT_TOLERANCE = 1e-7  # on the transformed parameters, relative to the pairs' total weight
MOST_ITERATIONS = 2000
# Gamma shapes above this are evaluated by the Wilson-Hilferty approximation (see gamma_cdf)
HUGE_SHAPE = 1e6


@dataclass(frozen=True)
class Prior:
    """The two-gamma mixture prior of the reporting ratio: weight ``p`` on Gamma(alpha1, rate beta1), the rest on the other."""

    alpha1: float
    beta1: float
    alpha2: float
    beta2: float
    p: float

    def __post_init__(self) -> None:
        if min(self.alpha1, self.beta1, self.alpha2, self.beta2) <= 0 or not 0 < self.p < 1:
            raise ValueError(f"a prior needs positive shapes and rates and 0 < p < 1: {self}")

    def as_tuple(self) -> tuple[float, float, float, float, float]:
        return (self.alpha1, self.beta1, self.alpha2, self.beta2, self.p)

    def canonical(self) -> Prior:
        """The same mixture with the lighter component first (the order is otherwise arbitrary)."""
        if self.p <= 0.5:
            return self
        return Prior(self.alpha2, self.beta2, self.alpha1, self.beta1, 1 - self.p)


@dataclass(frozen=True)
class PriorFit:
    """A fitted prior and how it was obtained."""

    prior: Prior
    log_likelihood: float  # the full log-likelihood, constants included (see :func:`log_likelihood`)
    min_count: int  # the likelihood was of N given N >= min_count
    pairs: float  # the pairs fitted (the sum of the weights)
    iterations: int
    converged: bool  # the gradient vanished at the optimum (False: a component degenerated or the iterations ran out)


# ---------------------------------------------------------------------------------------------------------------
# Special functions, vectorized. Each shifts its argument up by the recurrence until an asymptotic series is
# accurate to about 1e-15, then evaluates the series.

SHIFT_TO = 10.0
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _shift_up(x: Array, term: Callable[[Array], Array]) -> tuple[Array, Array]:
    """``x`` raised by whole steps to at least :data:`SHIFT_TO`, and the sum of ``term`` over the steps taken."""
    y = np.array(x, dtype=float, copy=True)
    total = np.zeros_like(y)
    for _ in range(int(SHIFT_TO)):
        low = y < SHIFT_TO
        if not low.any():
            break
        total[low] += term(y[low])
        y[low] += 1.0
    return y, total


def log_gamma(x: ArrayLike) -> Array:
    """log Γ(x) for x > 0 (Stirling's series after the recurrence Γ(x+1) = xΓ(x))."""
    y, shifted = _shift_up(np.asarray(x, dtype=float), np.log)
    inverse = 1.0 / y
    inverse2 = inverse * inverse
    series = inverse * (1 / 12 - inverse2 * (1 / 360 - inverse2 * (1 / 1260 - inverse2 * (1 / 1680 - inverse2 * (1 / 1188)))))
    return (y - 0.5) * np.log(y) - y + _HALF_LOG_2PI + series - shifted


def digamma(x: ArrayLike) -> Array:
    """ψ(x) = d log Γ(x)/dx for x > 0 (asymptotic series after the recurrence ψ(x+1) = ψ(x) + 1/x)."""
    y, shifted = _shift_up(np.asarray(x, dtype=float), np.reciprocal)
    inverse2 = 1.0 / (y * y)
    series = inverse2 * (1 / 12 - inverse2 * (1 / 120 - inverse2 * (1 / 252 - inverse2 * (1 / 240 - inverse2 * (1 / 132)))))
    return np.log(y) - 0.5 / y - series - shifted


def gamma_cdf(a: ArrayLike, x: ArrayLike) -> Array:
    """The regularized lower incomplete gamma P(a, x): the CDF at x of a gamma of shape a and rate 1.

    Below x = a + 1 the power series converges fast; above it the continued fraction of the upper
    tail does (evaluated by Lentz's method), the usual split.
    """
    a, x = np.broadcast_arrays(np.asarray(a, dtype=float), np.asarray(x, dtype=float))
    result = np.zeros(a.shape)
    positive = x > 0
    # log of x^a e^-x / Γ(a), the factor both expansions share
    log_front = np.full(a.shape, -np.inf)
    log_front[positive] = a[positive] * np.log(x[positive]) - x[positive] - log_gamma(a[positive])
    # A shape this large is a degenerate prior component (a near point mass): both expansions would need about
    # sqrt(a) terms, while the Wilson-Hilferty normal approximation is then exact to about 1/a
    huge = positive & (a > HUGE_SHAPE)
    if huge.any():
        ah, xh = a[huge], x[huge]
        spread = np.sqrt(1.0 / (9.0 * ah))
        z = (np.cbrt(xh / ah) - (1.0 - 1.0 / (9.0 * ah))) / spread
        result[huge] = 0.5 * np.vectorize(math.erfc)(-z / math.sqrt(2.0))
    series = positive & ~huge & (x < a + 1)
    fraction = positive & ~huge & ~series
    if series.any():
        result[series] = _lower_series(a[series], x[series], log_front[series])
    if fraction.any():
        result[fraction] = 1.0 - _upper_fraction(a[fraction], x[fraction], log_front[fraction])
    return result


def _converge(step: Callable[[NDArray[np.intp]], NDArray[np.bool_]], size: int) -> None:
    """Run ``step`` on the indices still unconverged until it reports them all converged."""
    active = np.arange(size)
    for _ in range(100_000):  # √a terms at most: enough for shapes up to about 10^8 cases
        if active.size == 0:
            return
        active = active[~step(active)]
    raise ArithmeticError("incomplete gamma: no convergence")


def _lower_series(a: Array, x: Array, log_front: Array) -> Array:
    # P(a, x) = x^a e^-x / Γ(a+1) · Σ_k x^k / ((a+1)…(a+k))
    term = np.ones_like(a)
    total = np.ones_like(a)
    denominator = a.copy()

    def step(active: NDArray[np.intp]) -> NDArray[np.bool_]:
        denominator[active] += 1.0
        term[active] *= x[active] / denominator[active]
        total[active] += term[active]
        return term[active] < total[active] * 1e-16

    _converge(step, a.size)
    return np.exp(log_front + np.log(total) - np.log(a))


def _upper_fraction(a: Array, x: Array, log_front: Array) -> Array:
    # Q(a, x) = x^a e^-x / Γ(a) · 1/(x+1-a- 1·(1-a)/(x+3-a- 2·(2-a)/(x+5-a- …))), by modified Lentz
    tiny = 1e-300
    b = x + 1.0 - a
    c = np.full_like(a, 1.0 / tiny)
    d = 1.0 / b
    h = d.copy()
    index = np.zeros_like(a)

    def step(active: NDArray[np.intp]) -> NDArray[np.bool_]:
        index[active] += 1.0
        i = index[active]
        an = -i * (i - a[active])
        b[active] += 2.0
        d_new = an * d[active] + b[active]
        d_new = np.where(np.abs(d_new) < tiny, tiny, d_new)
        c_new = b[active] + an / c[active]
        c_new = np.where(np.abs(c_new) < tiny, tiny, c_new)
        d[active] = 1.0 / d_new
        c[active] = c_new
        delta = d[active] * c_new
        h[active] *= delta
        return np.abs(delta - 1.0) < 1e-16

    _converge(step, a.size)
    return np.exp(log_front + np.log(h))


# ---------------------------------------------------------------------------------------------------------------
# The marginal likelihood


def expected_count(drug_cases: ArrayLike, event_cases: ArrayLike, all_cases: ArrayLike) -> Array:
    """E = (a+b)(a+c)/n: the cases of a pair expected if drug and event were reported independently."""
    return np.asarray(drug_cases, dtype=float) * np.asarray(event_cases, dtype=float) / np.asarray(all_cases, dtype=float)


def _log_negative_binomial(n: Array, e: Array, alpha: float, beta: float) -> Array:
    # log P(N = n) when N | λ ~ Poisson(λE) and λ ~ Gamma(alpha, rate beta)
    return log_gamma(alpha + n) - log_gamma(alpha) - log_gamma(n + 1.0) - alpha * np.log1p(e / beta) + n * (np.log(e) - np.log(beta + e))


def _checked(counts: ArrayLike, expected: ArrayLike, weights: ArrayLike | None, min_count: int) -> tuple[Array, Array, Array]:
    n = np.asarray(counts, dtype=float).ravel()
    e = np.asarray(expected, dtype=float).ravel()
    w = np.ones_like(n) if weights is None else np.asarray(weights, dtype=float).ravel()
    if not n.size == e.size == w.size:
        raise ValueError(f"counts, expected counts and weights differ in length: {n.size}, {e.size}, {w.size}")
    if n.size == 0:
        raise ValueError("no pairs to fit a prior to")
    if not (np.all(np.isfinite(e)) and np.all(e > 0)):
        raise ValueError("every expected count must be positive and finite")
    if np.any(n != np.floor(n)) or np.any(n < min_count):
        raise ValueError(f"every count must be a whole number of at least {min_count} (the likelihood is of N given N >= {min_count})")
    if np.any(w < 0):
        raise ValueError("weights must not be negative")
    return n, e, w


def _unpack(theta: Array) -> tuple[float, float, float, float, float]:
    alpha1, beta1, alpha2, beta2 = np.exp(theta[:4])
    p = 1.0 / (1.0 + math.exp(-theta[4]))
    return float(alpha1), float(beta1), float(alpha2), float(beta2), p


def _pack(prior: Prior) -> Array:
    return np.array([*np.log(prior.as_tuple()[:4]), math.log(prior.p / (1 - prior.p))])


def _likelihood_and_gradient(theta: Array, n: Array, e: Array, w: Array, min_count: int) -> tuple[float, Array]:
    """The log-likelihood and its gradient in the transformed parameters (log shapes and rates, logit P).

    Each negative binomial is truncated to N >= min_count (divided by S_i = 1 - Σ_{k < min_count} f_i(k))
    before mixing, as DuMouchel and Pregibon (2001) and openEBGM do; with min_count = 0 nothing is
    truncated and this is DuMouchel's (1999) likelihood.
    """
    alpha1, beta1, alpha2, beta2, p = _unpack(theta)
    components = ((alpha1, beta1, p), (alpha2, beta2, 1.0 - p))

    def score(count: Array | float, alpha: float, beta: float) -> tuple[Array, Array]:
        # d log f / d log alpha and d log f / d log beta of one negative binomial
        by_alpha = alpha * (digamma(alpha + count) - digamma(alpha) - np.log1p(e / beta))
        by_beta = alpha - (alpha + count) * beta / (beta + e)
        return by_alpha, by_beta

    log_f, scores = [], []
    for alpha, beta, weight in components:
        by_alpha, by_beta = score(n, alpha, beta)
        log_component = _log_negative_binomial(n, e, alpha, beta) + math.log(weight)
        if min_count > 0:
            log_head = [_log_negative_binomial(np.full_like(e, k), e, alpha, beta) for k in range(min_count)]
            log_head_total = log_head[0] if min_count == 1 else np.logaddexp.reduce(np.array(log_head), axis=0)
            tail = -np.expm1(log_head_total)  # accurate when the head is close to 1 (tiny E)
            log_component -= np.log(tail)
            for k, log_probability in enumerate(log_head):
                # d log S / d θ = -Σ_k f(k) d log f(k) / d θ / S
                k_alpha, k_beta = score(float(k), alpha, beta)
                share = np.exp(log_probability) / tail
                by_alpha += share * k_alpha
                by_beta += share * k_beta
        log_f.append(log_component)
        scores.append((by_alpha, by_beta))
    log_mixture = np.logaddexp(log_f[0], log_f[1])
    gradient = np.zeros(5)
    for i in range(2):
        responsibility = np.exp(log_f[i] - log_mixture)
        gradient[2 * i] = np.sum(w * responsibility * scores[i][0])
        gradient[2 * i + 1] = np.sum(w * responsibility * scores[i][1])
        if i == 0:
            # d log mixture / d logit P = responsibility of the first component - P
            gradient[4] = np.sum(w * (responsibility - p))
    return float(np.sum(w * log_mixture)), gradient


def log_likelihood(prior: Prior, counts: ArrayLike, expected: ArrayLike, weights: ArrayLike | None = None, min_count: int = 1) -> float:
    """Σ w·log(P·f1(n)/S1 + (1-P)·f2(n)/S2) under ``prior``: what :func:`fit_prior` maximizes.

    f1, f2 are the two negative binomials, S1, S2 their probabilities of a count of at least
    ``min_count``. Constants are included (the log n! terms): openEBGM reports this quantity's negative.
    ``weights`` count identical (n, E) pairs once each, which changes nothing but the time taken.
    """
    n, e, w = _checked(counts, expected, weights, min_count)
    return _likelihood_and_gradient(_pack(prior), n, e, w, min_count)[0]


def fit_prior(
    counts: ArrayLike,
    expected: ArrayLike,
    weights: ArrayLike | None = None,
    min_count: int = 1,
    starts: Sequence[Prior] | None = None,
) -> PriorFit:
    """The maximum likelihood two-gamma prior of the pairs' reporting ratios.

    ``counts`` are the pairs' case counts N, ``expected`` their expected counts E, ``weights`` (if
    given) how many pairs share each (N, E). The likelihood is of N given N >= ``min_count``: 1 for a
    table of the pairs reported at least once (the default), 0 when zero cells are included.
    Maximized by BFGS with a backtracking line search from each starting point in turn (by default
    :data:`STARTS`); the best optimum is returned with the lighter component first.
    """
    n, e, w = _checked(counts, expected, weights, min_count)
    # Identical (n, E) pairs are one term weighted by their number: most pairs are single cases, and
    # drugs and events with equal case counts give equal E, so this often shrinks the work many times
    distinct, which = np.unique(np.column_stack([n, e]), axis=0, return_inverse=True)
    n, e, w = distinct[:, 0], distinct[:, 1], np.bincount(which.ravel(), weights=w)
    scale = max(float(np.sum(w)), 1.0)
    best: PriorFit | None = None
    for start in starts or [Prior(*values) for values in STARTS]:
        theta, value, iterations, converged = _maximize(_pack(start), lambda t: _likelihood_and_gradient(t, n, e, w, min_count), scale)
        fit = PriorFit(Prior(*_unpack(theta)).canonical(), value, min_count, float(np.sum(w)), iterations, converged)
        if best is None or fit.log_likelihood > best.log_likelihood:
            best = fit
    assert best is not None
    return best


def _maximize(theta: Array, objective: Callable[[Array], tuple[float, Array]], scale: float) -> tuple[Array, float, int, bool]:
    """BFGS ascent with Armijo backtracking, within ±:data:`LIMIT` on every transformed parameter."""
    theta = np.clip(theta, -LIMIT, LIMIT)
    value, gradient = objective(theta)
    inverse_hessian = np.eye(theta.size) / scale
    for iteration in range(1, MOST_ITERATIONS + 1):
        if np.max(np.abs(gradient)) < GRADIENT_TOLERANCE * scale:
            return theta, value, iteration, True
        direction = inverse_hessian @ gradient
        if direction @ gradient <= 0:  # not an ascent direction: restart from the gradient
            inverse_hessian = np.eye(theta.size) / scale
            direction = gradient / scale
        step = 1.0
        while True:
            candidate = np.clip(theta + step * direction, -LIMIT, LIMIT)
            candidate_value, candidate_gradient = objective(candidate)
            if np.isfinite(candidate_value) and candidate_value >= value + 1e-4 * (candidate - theta) @ gradient:
                break
            step /= 2
            if step < 1e-12:  # no step improves: at the optimum within rounding
                return theta, value, iteration, bool(np.max(np.abs(gradient)) < 1e-4 * scale)
        s = candidate - theta
        y = gradient - candidate_gradient  # the gradient of the negative log-likelihood changes by -y
        if s @ y > 1e-12 * np.linalg.norm(s) * np.linalg.norm(y):
            rho = 1.0 / (s @ y)
            identity = np.eye(theta.size)
            inverse_hessian = (identity - rho * np.outer(s, y)) @ inverse_hessian @ (identity - rho * np.outer(y, s)) + rho * np.outer(s, s)
        theta, value, gradient = candidate, candidate_value, candidate_gradient
        if np.any(np.abs(theta) >= LIMIT):  # a component degenerated: its parameters no longer matter
            return theta, value, iteration, False
    return theta, value, MOST_ITERATIONS, False


# ---------------------------------------------------------------------------------------------------------------
# The posterior of each pair


def _as_result(value: Array, *inputs: ArrayLike) -> float | Array:
    # A number for numbers, an array for arrays
    return float(value) if all(np.ndim(x) == 0 for x in inputs) else value


def _posterior(n: ArrayLike, e: ArrayLike, prior: Prior) -> tuple[Array, Array, Array, Array, Array]:
    count = np.asarray(n, dtype=float)
    exp_count = np.asarray(e, dtype=float)
    if np.any(exp_count <= 0) or np.any(count < 0):
        raise ValueError("expected counts must be positive and counts not negative")
    count, exp_count = np.broadcast_arrays(count, exp_count)
    log_f1 = _log_negative_binomial(count, exp_count, prior.alpha1, prior.beta1) + math.log(prior.p)
    log_f2 = _log_negative_binomial(count, exp_count, prior.alpha2, prior.beta2) + math.log1p(-prior.p)
    weight = np.exp(log_f1 - np.logaddexp(log_f1, log_f2))
    return weight, prior.alpha1 + count, prior.beta1 + exp_count, prior.alpha2 + count, prior.beta2 + exp_count


def posterior_weight(n: ArrayLike, e: ArrayLike, prior: Prior) -> float | Array:
    """Q_n: the posterior probability that the pair's ratio comes from the prior's first component."""
    return _as_result(_posterior(n, e, prior)[0], n, e)


def ebgm(n: ArrayLike, e: ArrayLike, prior: Prior) -> float | Array:
    """EBGM = exp(E[log λ | N = n]) = exp(Q_n(ψ(α1+n) - log(β1+E)) + (1-Q_n)(ψ(α2+n) - log(β2+E)))."""
    weight, shape1, rate1, shape2, rate2 = _posterior(n, e, prior)
    mean_log = weight * (digamma(shape1) - np.log(rate1)) + (1 - weight) * (digamma(shape2) - np.log(rate2))
    return _as_result(np.exp(mean_log), n, e)


def posterior_mean(n: ArrayLike, e: ArrayLike, prior: Prior) -> float | Array:
    """E[λ | N = n] = Q_n(α1+n)/(β1+E) + (1-Q_n)(α2+n)/(β2+E)."""
    weight, shape1, rate1, shape2, rate2 = _posterior(n, e, prior)
    return _as_result(weight * shape1 / rate1 + (1 - weight) * shape2 / rate2, n, e)


def posterior_cdf(x: ArrayLike, n: ArrayLike, e: ArrayLike, prior: Prior) -> float | Array:
    """P(λ <= x | N = n): the posterior mixture's distribution function."""
    weight, shape1, rate1, shape2, rate2 = _posterior(n, e, prior)
    at = np.asarray(x, dtype=float)
    value = weight * gamma_cdf(shape1, rate1 * at) + (1 - weight) * gamma_cdf(shape2, rate2 * at)
    return _as_result(value, x, n, e)


def quantile(n: ArrayLike, e: ArrayLike, prior: Prior, p: float) -> float | Array:
    """The posterior's p-quantile of λ: EB05 with p = 0.05, EB95 with p = 0.95.

    Solves Q_n·P(α1+n, (β1+E)x) + (1-Q_n)·P(α2+n, (β2+E)x) = p for x by Newton's method on log x,
    kept inside a bracket that bisection narrows whenever a Newton step would leave it.
    """
    if not 0 < p < 1:
        raise ValueError(f"a quantile needs 0 < p < 1, not {p}")
    weight, shape1, rate1, shape2, rate2 = (np.atleast_1d(v).astype(float).ravel() for v in _posterior(n, e, prior))
    # The mixture quantile lies between its components' quantiles; these bounds hold both (a gamma's
    # p-quantile is above its mean·p^(1/shape)·0.1 and below mean + 40 standard deviations + 40/rate)
    low = np.minimum(np.log(shape1 / rate1) + np.log(p) / shape1, np.log(shape2 / rate2) + np.log(p) / shape2) - math.log(10.0)
    high = np.maximum(np.log((shape1 + 40 * np.sqrt(shape1) + 40) / rate1), np.log((shape2 + 40 * np.sqrt(shape2) + 40) / rate2))
    t = np.log(weight * shape1 / rate1 + (1 - weight) * shape2 / rate2)  # start at the posterior mean
    t = np.clip(t, low, high)
    active = np.arange(t.size)
    for _ in range(200):
        if active.size == 0:
            break
        x = np.exp(t[active])
        w, a1, b1, a2, b2 = weight[active], shape1[active], rate1[active], shape2[active], rate2[active]
        miss = w * gamma_cdf(a1, b1 * x) + (1 - w) * gamma_cdf(a2, b2 * x) - p
        # d F / d log x = x·density: for each gamma component exp(a·log(bx) - bx - log Γ(a))
        slope = w * np.exp(a1 * np.log(b1 * x) - b1 * x - log_gamma(a1)) + (1 - w) * np.exp(a2 * np.log(b2 * x) - b2 * x - log_gamma(a2))
        high[active] = np.where(miss > 0, t[active], high[active])
        low[active] = np.where(miss <= 0, t[active], low[active])
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = t[active] - miss / slope
        inside = np.isfinite(newton) & (newton > low[active]) & (newton < high[active])
        proposal = np.where(inside, newton, 0.5 * (low[active] + high[active]))
        done = (np.abs(proposal - t[active]) < 1e-12) | (high[active] - low[active] < 1e-12)
        t[active] = proposal
        active = active[~done]
    result = np.exp(t).reshape(np.shape(np.broadcast_arrays(np.asarray(n, dtype=float), np.asarray(e, dtype=float))[0]))
    return _as_result(result, n, e)


def scores(n: ArrayLike, e: ArrayLike, prior: Prior) -> tuple[Array, Array, Array]:
    """EBGM, EB05 and EB95 of every pair (flattened): the three columns a signals table shows.

    Pairs with the same (n, E) share their scores, so each distinct pair is computed once.
    """
    count, exp_count = (np.ravel(v).astype(float) for v in np.broadcast_arrays(np.asarray(n), np.asarray(e)))
    distinct, which = np.unique(np.column_stack([count, exp_count]), axis=0, return_inverse=True)
    which = which.ravel()
    n_distinct, e_distinct = distinct[:, 0], distinct[:, 1]
    return (
        np.asarray(ebgm(n_distinct, e_distinct, prior))[which],
        np.asarray(quantile(n_distinct, e_distinct, prior, 0.05))[which],
        np.asarray(quantile(n_distinct, e_distinct, prior, 0.95))[which],
    )
