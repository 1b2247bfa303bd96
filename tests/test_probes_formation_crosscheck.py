"""Linear probes and formation steps against independent references, on random inputs.

``tests/test_interp.py`` checks the tools on one compiled circuit. Here:

* probes (``toymodels/interp/probes.py``, module docstring): a float64 numpy reference of
  the documented fit. Features standardised with the training split's mean and population
  std (+ 1e-6); ridge W = (X^T X + l2 n I)^-1 X^T (Y - mean Y), b = mean Y on one-hot Y;
  logistic = the minimiser of mean cross-entropy + l2 ||W||^2 (scipy L-BFGS to convergence).
  The split and the control's permutation are drawn from ``key`` as the docstring states, so
  the reference scores the same rows.
* formation (``toymodels/interp/formation.py``): a plain-Python loop over the definition
  min { step_i : s_j >= theta for all j >= i } on hypothesis-drawn sequences with ties at
  the threshold.

Tolerances, fixed before measuring:
* ridge weights and biases: |lib - ref| <= 1e-4 * max(1, max|ref|). The library solves in
  float32; on these well-conditioned problems (N >> D, or l2 = 0.1 when D > N) the condition
  number is below 1e3, so float32 errors stay near 1e-7 * 1e3 = 1e-4 at worst and usually 1e-6.
* accuracies: the library's equal the reference's up to the rows whose reference top-two
  logit margin is below 1e-3 (a float32 tie could go either way): |lib - ref| <= that count / n.
* logistic (Adam: not a closed form): run for 3000 steps, objective gap J(lib) - J(ref)
  <= 1e-4 (it reaches the reference's optimum: same objective, same l2). At the defaults (300
  steps, lr 0.05): held-out predictions agree on >= 97% of rows, accuracies within 0.03. (A
  third claim, gap <= 1e-3 at the defaults, did not hold: on a first design (600 x 5) it was
  1.17e-3 / 1.10e-3 / 9.5e-5 / 1.6e-4 on seeds 0 / 1000 / 2000 / 6660000, on the present one
  (400 x 6) 2.8e-4 / 3.6e-3 / 2.4e-4 / 4.9e-4; predictions agreed on 100% of held-out rows
  throughout. It is not asserted; the probe docstring says the default fit is not fully
  converged. At 3000 steps the gap was <= 1e-12 on all four seeds.)
Measured ridge: relative weight error <= 4.3e-7 and accuracies identical to the reference on
all four seeds.
* planted separable bit: held-out accuracy >= 0.95; control <= max-class frequency + 3 binomial
  standard errors of the held-out set. (First tried on 3 separable classes: ridge read 0.88
  on seed 0, below 0.95, while agreeing with the numpy reference. That is the "masking" of
  least-squares classification with K >= 3 classes (Hastie, Tibshirani & Friedman, Elements
  of Statistical Learning, 2nd ed., Sec. 4.2), not a bug: the probe docstring now says so and
  the planted test uses a bit. On the bit, ridge read 0.975 / 0.950 / 0.942 / 0.942 on seeds
  0 / 1000 / 2000 / 6660000: the claim fails for ridge on the last two, whose bits are
  unbalanced (80-90% one class); a least-squares boundary is not a max-margin one. It is
  asserted for logistic only, which read 0.992 / 0.992 / 1.000 / 0.983. The control bound
  held on all four seeds for both.)
"""

import os

import jax
import numpy as np
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st

from toymodels.interp.formation import formation_step
from toymodels.interp.probes import fit_probe

SEED = int(os.environ.get("PROBE_CROSSCHECK_SEED", "0"))  # rerun on 1000, 2000, 6660000
W_TOL, MARGIN_TIE = 1e-4, 1e-3


# ------------------------------------------------------------------ probe reference
def split_like_the_docs(key, n, test_frac):
    """(train, test, permutation of the labels) drawn from ``key`` as the docstring states."""
    split_key, shuffle_key = jax.random.split(key)
    order = np.asarray(jax.random.permutation(split_key, n))
    n_test = int(round(n * test_frac))
    return order[n_test:], order[:n_test], np.asarray(jax.random.permutation(shuffle_key, n))


def standardise(x, train):
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    return (x - mean) / std


def ref_ridge(x, y, k, l2):
    n, d = x.shape
    y1 = np.eye(k)[y]
    return np.linalg.solve(x.T @ x + l2 * n * np.eye(d), x.T @ (y1 - y1.mean(0))), y1.mean(0)


def objective(w, b, x, y, l2):
    logits = x @ w + b
    logits = logits - logits.max(1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return -logp[np.arange(len(y)), y].mean() + l2 * (w ** 2).sum()


def ref_logistic(x, y, k, l2):
    d = x.shape[1]
    y1 = np.eye(k)[y]

    def fun(theta):
        w, b = theta[:d * k].reshape(d, k), theta[d * k:]
        logits = x @ w + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - y1) / len(y)
        return objective(w, b, x, y, l2), np.concatenate([(x.T @ g + 2 * l2 * w).ravel(),
                                                          g.sum(0)])

    res = scipy.optimize.minimize(fun, np.zeros(d * k + k), jac=True, method="L-BFGS-B",
                                  options=dict(maxiter=5000, gtol=1e-10, ftol=1e-15))
    return res.x[:d * k].reshape(d, k), res.x[d * k:]


def accuracy_and_ties(w, b, x, y):
    logits = x @ w + b
    top2 = np.sort(logits, 1)[:, -2:]
    return (logits.argmax(1) == y).mean(), int((top2[:, 1] - top2[:, 0] < MARGIN_TIE).sum())


def reference_probe(x, y, key, *, method="ridge", test_frac=0.3, l2=1e-3, k=None):
    """(train_acc, test_acc, control_acc, W, b, tie counts) from the numpy reference."""
    x, y = np.asarray(x, np.float64), np.asarray(y)
    k = int(y.max()) + 1 if k is None else k
    train, test, perm = split_like_the_docs(key, len(y), test_frac)
    xs = standardise(x, train)
    fit = ref_ridge if method == "ridge" else ref_logistic
    w, b = fit(xs[train], y[train], k, l2)
    shuffled = y[perm]
    wc, bc = fit(xs[train], shuffled[train], k, l2)
    (tr, t1), (te, t2), (co, t3) = (accuracy_and_ties(w, b, xs[train], y[train]),
                                    accuracy_and_ties(w, b, xs[test], y[test]),
                                    accuracy_and_ties(wc, bc, xs[test], shuffled[test]))
    return dict(train=tr, test=te, control=co, w=w, b=b, ties=(t1, t2, t3), xs=xs,
                train_idx=train, test_idx=test)


def planted(rng, n, d, k, noise):
    """Gaussian features with a few scales and offsets; labels argmax(x W* + noise)."""
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, d) + rng.normal(size=d)
    y = np.argmax(x @ rng.normal(size=(d, k)) + noise * rng.gumbel(size=(n, k)), 1)
    return x.astype(np.float32), y


def assert_accuracies_match(lib, ref, n_train, n_test):
    for got, want, ties, n in zip((lib.train_acc, lib.test_acc, lib.control_acc),
                                  (ref["train"], ref["test"], ref["control"]), ref["ties"],
                                  (n_train, n_test, n_test), strict=True):
        assert abs(got - want) <= ties / n + 1e-6, (got, want, ties)


# ------------------------------------------------------------------ probe tests
# One data shape (N x D) for most tests: every new shape costs the probe a compile.
N, D = 400, 6


@pytest.mark.parametrize("n, d, k, l2", [(N, D, 3, 1e-3), (N, D, 2, 1e-2), (60, 90, 3, 0.1)],
                         ids=["3-class", "binary", "D>N"])
def test_ridge_equals_the_closed_form_reference(n, d, k, l2):
    rng = np.random.default_rng(SEED)
    x, y = planted(rng, n, d, k, noise=1.0)
    key = jax.random.key(SEED)
    lib = fit_probe(x, y, key=key, l2=l2, n_classes=k)
    ref = reference_probe(x, y, key, l2=l2, k=k)
    # the comparison can fail: the weights are O(0.1-1), far above the tolerance
    assert np.abs(ref["w"]).max() > 100 * W_TOL
    np.testing.assert_allclose(lib.weights, ref["w"], rtol=0,
                               atol=W_TOL * max(1.0, np.abs(ref["w"]).max()))
    np.testing.assert_allclose(lib.bias, ref["b"], rtol=0, atol=W_TOL)
    n_test = int(round(0.3 * n))
    assert_accuracies_match(lib, ref, n - n_test, n_test)
    if d > n:  # more features than rows: ridge interpolates the training labels
        assert lib.train_acc == 1.0


def test_logistic_minimises_the_documented_objective():
    rng = np.random.default_rng(SEED + 1)
    x, y = planted(rng, N, D, 3, noise=1.0)
    key = jax.random.key(SEED + 1)
    ref = reference_probe(x, y, key, method="logistic")
    xs, train, test = ref["xs"], ref["train_idx"], ref["test_idx"]

    def gap(w, b):  # J(w, b) - J(optimum) on the training split
        return (objective(np.asarray(w, float), np.asarray(b, float), xs[train], y[train], 1e-3)
                - objective(ref["w"], ref["b"], xs[train], y[train], 1e-3))

    # Run long enough, Adam reaches the reference's optimum: the same objective and l2.
    converged = fit_probe(x, y, key=key, method="logistic", steps=3000)
    assert -1e-6 <= gap(converged.weights, converged.bias) <= 1e-4
    assert gap(np.zeros_like(ref["w"]), np.zeros(3)) > 1e-2  # guard: the bound can fail
    # At the defaults (300 steps) the fit is not fully converged (objective gap 2.4e-4 to
    # 3.6e-3 on our seeds), but its predictions and accuracies are the optimum's.
    lib = fit_probe(x, y, key=key, method="logistic")
    agree = ((xs[test] @ lib.weights + lib.bias).argmax(1)
             == (xs[test] @ ref["w"] + ref["b"]).argmax(1)).mean()
    assert agree >= 0.97, agree
    for got, want in ((lib.test_acc, ref["test"]), (lib.control_acc, ref["control"])):
        assert abs(got - want) <= 0.03


@pytest.mark.parametrize("method", ["ridge", "logistic"])
def test_planted_signal_is_read_and_the_control_is_at_chance(method):
    rng = np.random.default_rng(SEED + 2)
    x, y = planted(rng, N, D, 2, noise=0.0)  # a separable bit
    probe = fit_probe(x, y, key=jax.random.key(SEED + 2), method=method)
    n_test = int(round(0.3 * N))
    p_max = np.bincount(y).max() / len(y)
    if method == "logistic":  # ridge: see the module docstring (0.94 on seeds 2000, 6660000)
        assert probe.test_acc >= 0.95
    assert probe.control_acc <= p_max + 3 * np.sqrt(p_max * (1 - p_max) / n_test)


def test_no_row_is_both_trained_on_and_held_out():
    # Identity features, each row its own class: ridge memorises every training row (train
    # accuracy 1), and a held-out row can only be right if it was also trained on.
    n = 50
    probe = fit_probe(np.eye(n, dtype=np.float32), np.arange(n), key=jax.random.key(SEED))
    assert probe.train_acc == 1.0
    assert probe.test_acc == 0.0 and probe.control_acc == 0.0


def test_degenerate_inputs_give_an_error_or_the_documented_result():
    rng = np.random.default_rng(SEED + 3)
    x, y = planted(rng, N, D, 2, noise=0.5)
    key = jax.random.key(SEED + 3)
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match="NaN or infinite"):
            fit_probe(np.where(np.arange(D) == 2, bad, x), y, key=key)
    with pytest.raises(ValueError, match="l2=-1"):
        fit_probe(x, y, key=key, l2=-1.0)
    for method in ("ridge", "logistic"):  # one class: defined, and the control equals it
        one = fit_probe(x, np.zeros_like(y), key=key, method=method, n_classes=2)
        assert one.train_acc == one.test_acc == one.control_acc == 1.0
    # two constant columns get ~0 weight and change nothing (reference without them)
    x[:, 4:] = 0.1
    lib, ref = fit_probe(x, y, key=key), reference_probe(x[:, :4], y, key)
    assert np.abs(lib.weights[4:]).max() < 1e-3
    assert_accuracies_match(lib, ref, N - int(round(0.3 * N)), int(round(0.3 * N)))
    # all features constant: the probe predicts the training split's majority class
    flat = fit_probe(np.ones((N, D), np.float32), y, key=key)
    train, test, _ = split_like_the_docs(key, N, 0.3)
    majority = np.bincount(y[train]).argmax()
    assert flat.test_acc == pytest.approx((y[test] == majority).mean(), abs=1e-6)


# ------------------------------------------------------------------ formation reference
def ref_formation(steps, scores, theta, direction="above"):
    across = (lambda s: s >= theta) if direction == "above" else (lambda s: s <= theta)
    for i in range(len(steps)):
        if all(across(s) for s in scores[i:]):
            return steps[i]
    return None


THETA = 0.5
# Values on both sides of the threshold and exactly on it, so ties are common.
SCORE_VALUES = st.sampled_from([-np.inf, 0.0, 0.49, THETA, 0.51, 1.0, np.inf])


@st.composite
def curves(draw):
    steps = sorted(draw(st.sets(st.integers(0, 10 ** 6), min_size=1, max_size=12)))
    return steps, draw(st.lists(SCORE_VALUES, min_size=len(steps), max_size=len(steps)))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(curves(), st.sampled_from(["above", "below"]))
def test_formation_step_equals_the_definition(curve, direction):
    steps, scores = curve
    assert formation_step(steps, scores, THETA, direction=direction) == \
        ref_formation(steps, scores, THETA, direction)


def test_formation_step_edge_cases():
    steps = [1, 3, 10, 30]
    assert formation_step(steps, [0.1, 0.2, 0.3, 0.5], 0.5) == 30  # across at the last only
    assert formation_step(steps, [0.1, 0.2, 0.3, 0.4], 0.5) is None  # never
    assert formation_step(steps, [0.6, 0.7, 0.4, 0.9], 0.5) == 30  # crosses, falls back
    assert formation_step(steps, [0.5, 0.5, 0.5, 0.5], 0.5) == 1  # ties count, both ways
    assert formation_step(steps, [0.5, 0.5, 0.5, 0.5], 0.5, direction="below") == 1
    assert isinstance(formation_step(np.array(steps, np.int64), [1, 1, 1, 1], 0.5), int)
    for bad_steps in ([3, 1, 10, 30], [1, 3, 3, 30]):  # unsorted, repeated
        with pytest.raises(ValueError, match="strictly increasing"):
            formation_step(bad_steps, [0.6] * 4, 0.5)
    with pytest.raises(ValueError, match="scores contain NaN"):
        formation_step(steps, [0.6, np.nan, 0.7, 0.8], 0.5)
    with pytest.raises(ValueError, match="threshold is NaN"):
        formation_step(steps, [0.6] * 4, float("nan"))
