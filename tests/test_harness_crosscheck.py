"""The statistics every figure's claims are judged with (``experiments/harness.py``,
``experiments/claims.py``), cross-checked against textbook references: scipy.stats and
plain float64 numpy, written from the definitions, not from the code they check.

* seed interval: mean ± t_{0.975, n−1}·s/√n over the seed axis (Student, 1908), i.e.
  ``scipy.stats.t.interval(0.95, n − 1, loc=mean, scale=sem)``; NaN with one seed;
* OLS: ``scipy.stats.linregress`` (slope, intercept, r², both standard errors);
* the logit crossing step: straight-line interpolation of logit q between two logs;
* sign claims: hold iff the lower end of the t interval of sign·x is > 0;
* claim verdicts: bounds inclusive, NaN or ±inf never holds.

Tolerances, fixed before running: 1e-12 relative where both sides compute the same
float64 expression, 1e-10 where scipy computes it another way. Each test has a guard that
a plausible wrong definition (a normal quantile, n degrees of freedom, interpolation in q)
would be rejected.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from helpers import crossing_reference
from scipy import stats

from experiments import claims as C
from experiments import harness as H

EXACT = dict(rtol=1e-12, atol=1e-12)


# ============================================================ harness: seed statistics
def test_t_quantile_is_students_t():
    for df, q in itertools.product((1, 2, 3, 4, 9, 29, 200), (0.9, 0.975, 0.995)):
        assert math.isclose(H.t_quantile(df, q), stats.t.ppf(q, df), rel_tol=1e-10)
    assert not math.isclose(H.t_quantile(4), stats.norm.ppf(0.975), rel_tol=1e-3)  # guard


@pytest.mark.parametrize("n_seeds", [2, 3, 5, 8])
def test_seed_interval_is_the_t_interval_over_the_seed_axis_with_n_minus_1_df(n_seeds):
    v = np.random.default_rng(n_seeds).normal(size=(n_seeds, 4))
    for axis, data in ((0, v), (1, v.T)):
        agg = H.seed_aggregate(data, axis=axis)
        mean, sem = v.mean(0), stats.sem(v, axis=0, ddof=1)
        lo, hi = stats.t.interval(0.95, n_seeds - 1, loc=mean, scale=sem)
        assert agg.n == n_seeds
        for got, want in ((agg.mean, mean), (agg.sem, sem), (agg.lo, lo), (agg.hi, hi)):
            np.testing.assert_allclose(got, want, **EXACT)
    # guard: n (not n − 1) degrees of freedom would give a narrower interval
    narrower = stats.t.interval(0.95, n_seeds, loc=v.mean(0), scale=stats.sem(v, axis=0))[0]
    assert not np.allclose(H.seed_aggregate(v).lo, narrower, rtol=1e-6)


def test_seed_interval_edge_cases():
    one = H.seed_aggregate([[0.3, 0.7]])  # one seed: a mean, no interval
    np.testing.assert_array_equal(one.mean, [0.3, 0.7])
    assert np.isnan(one.lo).all() and np.isnan(one.hi).all() and one.n == 1
    equal = H.seed_aggregate([2.0, 2.0, 2.0])  # no spread: a zero-width interval
    assert (equal.lo, equal.mean, equal.hi) == (2.0, 2.0, 2.0)
    nan = H.seed_aggregate([[1.0, 1.0], [np.nan, 2.0], [3.0, 4.0]])  # NaN stays in its column
    assert np.isnan(nan.mean[0]) and np.isnan(nan.lo[0])
    lo, hi = stats.t.interval(0.95, 2, loc=7 / 3, scale=stats.sem([1.0, 2.0, 4.0]))
    np.testing.assert_allclose([nan.lo[1], nan.hi[1]], [lo, hi], **EXACT)
    scalar = H.seed_aggregate([1.0, 2.0, 3.0])
    assert isinstance(scalar.lo, float)
    np.testing.assert_allclose(scalar.hi - scalar.mean, 4.302653 / np.sqrt(3), rtol=1e-6)  # hand


# ============================================================ harness: fits
@pytest.mark.parametrize("seed", range(4))
def test_linear_fit_is_ordinary_least_squares(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 30))
    x = rng.normal(size=n) * 3 + 1
    y = 0.7 * x - 2 + rng.normal(size=n)
    fit, ref = H.linear_fit(x, y), stats.linregress(x, y)
    np.testing.assert_allclose([fit.slope, fit.intercept, fit.r2, fit.slope_se,
                                fit.intercept_se],
                               [ref.slope, ref.intercept, ref.rvalue ** 2, ref.stderr,
                                ref.intercept_stderr], rtol=1e-10, atol=1e-12)
    assert fit.n == n
    assert not math.isclose(H.linear_fit(x, y + 0.1 * x).slope, ref.slope)  # guard


def test_linear_fit_degenerate_inputs_give_nan_not_numbers():
    assert np.isnan(H.linear_fit([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]).slope)  # constant x
    two = H.linear_fit([0.0, 1.0], [1.0, 3.0])  # two points: a line, no error estimate
    assert (two.slope, two.intercept, two.r2) == (2.0, 1.0, 1.0)
    assert np.isnan(two.slope_se) and np.isnan(two.intercept_se)
    flat = H.linear_fit([0.0, 1.0, 2.0], [5.0, 5.0, 5.0])  # constant y: R² undefined
    assert flat.slope == 0.0 and np.isnan(flat.r2)
    assert np.isnan(H.linear_fit([0.0, 1.0, 2.0], [0.0, np.nan, 1.0]).slope)
    with pytest.raises(ValueError):
        H.linear_fit([0.0, 1.0], [0.0, 1.0, 2.0])


def test_loglog_fit_recovers_a_power_law_and_refuses_nonpositive_values():
    x = np.array([1.0, 2.0, 5.0, 10.0, 40.0])
    fit = H.loglog_fit(x, 3.0 * x ** -0.5)
    np.testing.assert_allclose([fit.slope, np.exp(fit.intercept), fit.r2], [-0.5, 3.0, 1.0],
                               rtol=1e-12)
    for bad in ((x, -x), (x - 1, x)):
        with pytest.raises(ValueError):
            H.loglog_fit(*bad)


# ============================================================ harness: crossing step
def test_logit_crossing_step_matches_the_reference_on_random_curves():
    rng = np.random.default_rng(0)
    steps = np.cumsum(rng.integers(1, 20, size=9)).astype(np.float64)  # uneven spacing
    q = rng.uniform(0, 1, size=(40, 9))
    q[:5] = np.sort(q[:5], axis=1)  # rising curves
    q[5, :] = 0.2  # never reached
    q[6, 0] = 0.95  # already there at the first log
    q[7, 3] = 0.8  # exactly on the level at log 3
    q[8] = [0, 0, 0, 1, 1, 1, 1, 1, 1]  # 0 and 1: the clip matters
    got = H.logit_crossing_step(steps, q.reshape(4, 10, 9), 0.8, clip=1e-4).ravel()
    want = [crossing_reference(steps, row, 0.8, 1e-4) for row in q]
    np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)
    assert np.isnan(got[5]) and got[6] == steps[0]
    assert steps[2] < got[8] < steps[3]
    # guard: interpolating linearly in q instead of logit q gives another step
    row = np.array([0.1, 0.95])
    lin = 0 + (0.8 - 0.1) / (0.95 - 0.1) * 10
    assert not math.isclose(H.logit_crossing_step(np.array([0.0, 10.0]), row, 0.8), lin,
                            rel_tol=1e-3)


def test_a_nan_log_before_the_crossing_means_no_crossing_step():
    steps = np.array([0.0, 10.0, 20.0, 30.0])
    q = np.array([[0.1, np.nan, 0.3, 0.9],    # NaN two logs before the crossing
                  [0.1, 0.3, np.nan, 0.9],    # NaN just before it
                  [0.1, 0.9, np.nan, 0.2]])   # NaN only after it: the crossing stands
    got = H.logit_crossing_step(steps, q, 0.8)
    assert np.isnan(got[0]) and np.isnan(got[1])
    assert 0.0 < got[2] < 10.0


# ============================================================ harness: claims by sign
def test_sign_claim_holds_iff_the_t_interval_of_sign_times_x_lies_above_zero():
    rng = np.random.default_rng(1)
    for _ in range(30):
        n = int(rng.integers(2, 7))
        x = rng.normal(rng.normal(), 1.0, size=n)
        for sign in (1.0, -1.0):
            lo = stats.t.interval(0.95, n - 1, loc=np.mean(sign * x),
                                  scale=stats.sem(sign * x))[0]
            claim = H.sign_claim("c", sign, x, "note")
            assert claim.holds == bool(lo > 0)
            assert math.isclose(claim.measured, np.mean(x), rel_tol=1e-12)
    assert not H.sign_claim("c", 1.0, [5.0], "one seed").holds  # no interval
    assert not H.sign_claim("c", 1.0, [1.0, np.nan, 2.0], "a NaN seed").holds
    assert not H.sign_claim("c", 1.0, [0.0, 0.0, 0.0], "exactly 0").holds  # strict
    assert H.sign_claim("c", -1.0, [-1.0, -1.1, -0.9], "x").holds


def test_sign_claim_at_lower_ends_just_below_and_just_above_zero():
    base = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    half = stats.t.ppf(0.975, 4) * base.std(ddof=1) / math.sqrt(5)
    for lo in (-0.01, 0.01):
        x = base + half + lo  # a t interval whose lower end is exactly lo
        assert stats.t.interval(0.95, 4, loc=x.mean(), scale=stats.sem(x))[0] == pytest.approx(lo)
        assert H.sign_claim("x", 1.0, x, "").holds == (lo > 0)
        assert H.sign_claim("x", -1.0, -x, "").holds == (lo > 0)


def test_wrong_predictions_flip_or_double_a_copy():
    pred = np.array([0.5, -2.0])
    np.testing.assert_array_equal(H.wrong_prediction(pred, "flip"), [-0.5, 2.0])
    np.testing.assert_array_equal(H.wrong_prediction(pred, "double"), [1.0, -4.0])
    result = {"p": pred, "other": np.array([1.0])}
    bad = H.corrupt(result, ["p"], "flip")
    np.testing.assert_array_equal(result["p"], [0.5, -2.0])  # the original is untouched
    np.testing.assert_array_equal(bad["p"], [-0.5, 2.0])
    assert bad["other"] is result["other"]
    with pytest.raises(KeyError):
        H.corrupt(result, ["missing"], "flip")
    with pytest.raises(ValueError):
        H.wrong_prediction(pred, "negate")


# ============================================================ claims.py verdicts
def test_claim_bounds_are_inclusive_and_nan_or_inf_never_holds():
    assert C.within("c", 1.0, 1.25, 0.25).holds and not C.within("c", 1.0, 1.5, 0.25).holds
    assert C.within("c", 1.0, 0.75, 0.25).holds  # both sides
    assert C.at_least("c", 0.9, 0.9).holds and not C.at_least("c", 0.9, 0.8999).holds
    assert C.at_most("c", 0.65, 0.65).holds and not C.at_most("c", 0.65, 0.6501).holds
    assert C.in_range("c", 0.0, 1.0, 0.0).holds and C.in_range("c", 0.0, 1.0, 1.0).holds
    assert not C.in_range("c", 0.0, 1.0, 1.0001).holds
    for bad in (float("nan"), float("inf"), -float("inf")):
        assert not C.within("c", 0.0, bad, 1e9).holds
        assert not C.at_least("c", -1e9, bad).holds and not C.at_most("c", 1e9, bad).holds
        assert not C.in_range("c", -1e9, 1e9, bad).holds
    d = C.at_least("c", 0.5, float("nan")).to_dict()
    assert d["measured"] == "nan" and d["holds"] is False


def test_a_tolerance_band_covering_every_possible_value_is_not_judged():
    # a probability predicted at 0.5 with tolerance 0.98 (one sample) cannot fail
    wide = C.within("c", 0.5, 0.5, 0.98, "one sample", support=(0, 1))
    assert not wide.holds and "not judged" in wide.note
    assert C.within("c", 0.5, 0.55, 0.1, support=(0, 1)).holds
    assert not C.within("c", 0.5, 0.7, 0.1, support=(0, 1)).holds
    assert C.within("c", 0.9, 0.2, 0.8, support=(0, 1)).holds  # 0.1..1.7 leaves 0 outside
