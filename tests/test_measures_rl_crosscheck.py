"""The measurements of the four RL-dynamics figures, cross-checked against an independent
float64 numpy reference (entropy-mechanism, grpo-length-bias, passk-support with its
competing-strategies toy, clipping-entropy with its decomposition). The statistics they
share are checked in tests/test_harness_crosscheck.py.

Each reference below is written from the documented definition (module docstrings,
docs/theory_rl_dynamics.md), not from the figure code, and is fed small synthetic arrays with
the edge cases a run produces: groups all right or all wrong, steps without an incorrect
completion (NaN), p = 0 or 1, curves that touch, a seed that fails (NaN). Nothing here trains.
The references (the first two are used to check claims built on them, not retested):

* seed aggregates: mean ± t_{0.975, n−1} s/√n over the *seed* axis, s with n − 1 in the
  denominator (Student 1908; scipy's t quantile);
* OLS: slope, intercept, R² and σ²(XᵀX)⁻¹ standard errors, σ² = SSR/(n − 2) (textbook);
* entropy change of a logit step: H(z + Δz) − H(z), first order −Cov_π(log π, Δz) (Cui et
  al. 2025, arXiv 2505.22617, Lemma 1); sampled REINFORCE Δz = (η/N) Σ (r_a − E_π r)(e_a − π);
* per-prompt gradient weight (docs §2): GRPO Σ_i |r_i − q| / ((std + 1e-6) B), Dr.GRPO
  Σ_i |r_i − q| |o_i| / (B·MAX), B = P·G rows; |o_i| counts the tokens up to and including
  the first <eos>; the expected length-logit update by exact enumeration of every group;
* pass@k exact, mean_j 1 − (1 − p_j)^k (Chen et al. 2021, arXiv 2107.03374, §2.1, in
  expectation); F_U, F_S as ratios of expectations, checked against simulated samples;
  Spearman's ρ = Pearson of average ranks (scipy);
* clipped SGD on tabular logits (Schulman et al. 2017, arXiv 1707.06347, Eq. 7; DAPO, arXiv
  2503.14476, Eq. 10): a token is clipped iff Â > 0 and ρ > 1 + ε_high or Â < 0 and
  ρ < 1 − ε_low, and then carries no gradient; the trajectory sums of its decomposition
  weight the evaluation at z_i by the steps it stands for, min(every, T − i);
* log π(gold | prompt): one teacher-forced pass of prompt ⧺ gold[:-1] through
  ``toymodels.model.forward``, the log-softmax at the gold tokens summed up to and including
  the first <eos>;
* the strategy-logit kernel (docs §4): (k_s, k_o) the least-squares fit of K = J Jᵀ to
  k_s 11ᵀ + k_o I, r = k_o / k_s; J by forward-mode autodiff of logit(<A>) − logit(<B>) at
  the last prompt position.

Tolerances, fixed before measuring: float64 code against the float64 reference 1e-10;
float32 code (the figures' jax engines) 1e-5 relative (and 1e-5 absolute for log π(gold),
which can be near 0); a float32 trajectory of a few SGD
updates on O(1) logits 1e-4; ``pytest.approx``'s default 1e-6 relative where the two sides
take another float64 route (a median or mean of exponentials, the enumeration of every group
in ``predicted_fill_update``); the F_U / F_S simulation 0.01 absolute, about 12 standard
errors of its 20 000 draws; the kernel ratio of a float32 model 1e-4 relative (two
float32 Jacobians, r a difference over k_s). Where a plausible wrong definition could pass
by accident (a normal quantile, pooling the seeds, pairing the next block, a shifted
position), a guard checks that it would be rejected. Each test can fail: 26 bugs planted
one at a time in a scratch copy (ddof 0, pads counted in |o|, <eos> left out, k* on a
strict >, the clip fraction without the epochs, the drift at z_{t+1}, ...) were each
caught (2026-11-27); so were 18 more in the three measurements added later (k_s with the
diagonal, the ratio inverted, one Jacobian leaf, NaN only at k_s = 0, the strategy logit
at another position or without log π(<B>); every span = every, the split after its step,
the unsplit seed key, the on-policy schedule ignored; pads after <eos> counted, a padded
prompt read as valid, the logits one position early, the seeds reversed; the two
Jacobian-route bugs are caught only by the slow test).

The jax parts compile with XLA's cheap backend passes (``_fast``): compiling dominates, and
the file must stay inside the default suite's budget (13-21 s on 2 cores, load 2.4-2.3; the
three measurements added later cost 4 s more at load 1.3, without the end-to-end kernel
test, which compiles two Jacobians and is marked slow).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats
from flax import nnx

from experiments import clipping_decomposition as CD
from experiments import clipping_entropy as CE
from experiments import entropy_mechanism as EM
from experiments import grpo_length_bias as GL
from experiments import passk_data as PD
from experiments import passk_strategies as PS
from experiments import passk_support as PK
from tasks.core import EOS, PAD
from theory import entropy as E
from toymodels import model

F64_TOL, F32_RTOL, TRAJ_TOL = 1e-10, 1e-5, 1e-4
_COMPILED = {}


def _fast(name, fn, *args):
    """``jax.jit(fn)(*args)``, compiled once per ``name`` with XLA's cheap backend passes
    (``passk_strategies.FAST_COMPILE``): compiling, not running, is what these tests cost."""
    if name not in _COMPILED:
        _COMPILED[name] = jax.jit(fn).lower(*args).compile(PS.FAST_COMPILE)
    return _COMPILED[name](*args)


# =========================================================================== references
def ref_t_interval(x):
    """Mean and two-sided 95 % Student-t interval of the 1-D sample ``x`` (n − 1 df)."""
    x = np.asarray(x, np.float64)
    n = len(x)
    half = scipy.stats.t.ppf(0.975, n - 1) * np.std(x, ddof=1) / math.sqrt(n)
    return x.mean(), x.mean() - half, x.mean() + half


def ref_ols(x, y):
    """slope, intercept, R², se(slope), se(intercept) from the normal equations."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    X = np.stack([np.ones_like(x), x], 1)
    beta = np.linalg.solve(X.T @ X, X.T @ y)
    resid = y - X @ beta
    cov = resid @ resid / (len(x) - 2) * np.linalg.inv(X.T @ X)
    r2 = 1 - resid @ resid / np.sum((y - y.mean()) ** 2)
    return beta[1], beta[0], r2, math.sqrt(cov[1, 1]), math.sqrt(cov[0, 0])


def ref_softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def ref_entropy(z):
    p = ref_softmax(z)
    return -np.sum(p * np.log(p), -1)


def ref_grad_entropy(z):
    """∂H/∂z_b = −π_b (log π_b + H)."""
    p = ref_softmax(z)
    return -p * (np.log(p) + ref_entropy(z)[..., None])


def ref_spearman(x, y):
    return scipy.stats.spearmanr(x, y).statistic


def ref_lengths(tokens, eos):
    """Tokens up to and including the first <eos> (all of them when there is none)."""
    out = []
    for row in np.asarray(tokens):
        hit = np.nonzero(row == eos)[0]
        out.append(hit[0] + 1 if hit.size else len(row))
    return np.array(out, np.float64)


def ref_prompt_weight(rewards, lengths, method, n_prompts, max_tokens):
    """Σ_i |∂loss/∂ log π(o_i)| over one group's tokens (docs §2), from the rewards [P, G]."""
    r = np.asarray(rewards, np.float64)
    g = r.shape[-1]
    b = n_prompts * g
    dev = np.abs(r - r.mean(-1, keepdims=True))
    if method == "grpo":
        return dev.sum(-1) / (r.std(-1) + 1e-6) / b
    return (dev * np.asarray(lengths, np.float64)).sum(-1) / (b * max_tokens)


def ref_kernel_fit(k):
    """(k_s, k_o) of the least-squares fit K ≈ k_s 11ᵀ + k_o I (docs §4: k_s between
    problems, k_s + k_o on the diagonal), float64."""
    k = np.asarray(k, np.float64)
    n = len(k)
    design = np.stack([np.ones(n * n), np.eye(n).ravel()], 1)
    (k_s, k_o), *_ = np.linalg.lstsq(design, k.ravel(), rcond=None)
    return k_s, k_o


def ref_gold_loglik(graphdef, params, prompts, targets, name):
    """log π(gold | prompt) in float64 from one teacher-forced pass of prompt ⧺ gold[:-1]
    through ``toymodels.model.forward`` (full-length prompts), position P − 1 + t predicting
    gold token t: the sum of log softmax(logits_t)[gold_t] over the tokens up to and
    including the first <eos> (``sum``); also every column's term (``per_token``) and the sum
    read one position early (``early``, a guard's wrong reading)."""
    prompts, targets = np.asarray(prompts), np.asarray(targets)
    tokens = jnp.asarray(np.concatenate([prompts, targets[:, :-1]], 1))
    logits = np.asarray(_fast(name, lambda p, t: model.forward(graphdef, p, t)[0], params,
                              tokens), np.float64)
    logp = logits - scipy.special.logsumexp(logits, -1, keepdims=True)
    eos = targets == EOS
    gold = np.cumsum(eos, 1) - eos == 0  # no <eos> before this token
    p = prompts.shape[1]
    read = lambda start: np.take_along_axis(logp[:, start:start + targets.shape[1]],
                                            targets[..., None], -1)[..., 0]
    return {"sum": np.where(gold, read(p - 1), 0.0).sum(1), "per_token": read(p - 1),
            "early": np.where(gold, read(p - 2), 0.0).sum(1)}


# ======================================================================= entropy-mechanism
def test_sampled_reinforce_step_draws_answers_by_inverse_cdf_and_averages_the_score():
    rng = np.random.default_rng(3)
    s, k, n, eta = 4, 5, 64, 0.3
    z = rng.normal(0, 2, size=(s, k))
    r = (rng.uniform(size=(s, k)) < 0.4).astype(np.float64)
    u = rng.uniform(size=(n, s))
    u[0, 0] = 1 - 1e-17  # the top of [0, 1): the last answer
    with jax.enable_x64(True):
        dz, measured = (np.asarray(x) for x in jax.jit(lambda z, r, u: (
            lambda d: (d, EM._measure(z, d)))(EM._reinforce_dz(z, r, u, eta)))(
            jnp.asarray(z), jnp.asarray(r), jnp.asarray(u)))
    p = ref_softmax(z)
    ref = np.zeros((s, k))
    for j in range(s):
        cdf = np.cumsum(p[j])
        for i in range(n):
            a = min(np.searchsorted(cdf, u[i, j], side="left"), k - 1)  # smallest cdf >= u
            ref[j] += (r[j, a] - p[j] @ r[j]) * (np.eye(k)[a] - p[j]) * eta / n
    assert np.allclose(dz, ref, atol=F64_TOL)
    assert np.allclose(measured, ref_entropy(z + ref) - ref_entropy(z), atol=F64_TOL)
    # first order of the same step (Lemma 1) is −Cov_π(log π, Δz)
    cov = np.sum(p * (np.log(p) - np.sum(p * np.log(p), -1, keepdims=True))
                 * (ref - np.sum(p * ref, -1, keepdims=True)), -1)
    assert np.allclose(E.entropy_change_first_order(z, ref), -cov, atol=F64_TOL)


def _scatter_result(rng, seeds=3, steps=4, states=6, slopes=(1.0, 1.2, 0.8)):
    res = {}
    for key in EM.SCATTERS:
        pred = rng.normal(size=(seeds, steps, states))
        res[f"{key}_pred"] = pred
        res[f"{key}_meas"] = np.asarray(slopes)[:, None, None] * pred + 0.01 * rng.normal(
            size=pred.shape)
    eta = np.array([0.001, 0.002, 0.004, 0.008])
    for key in EM.ORDERS:
        pred = rng.normal(size=(seeds, 4, states))
        res[f"order_{key}_pred"] = pred
        res[f"order_{key}_meas"] = pred + (5.0 * eta ** 2)[None, :, None] * rng.choice(
            [-1, 1], size=pred.shape) * (1 + 0.1 * rng.uniform(size=(seeds, 1, 1)))
    res["eta_grid"] = eta
    return res


def test_bandit_claims_average_per_seed_fits_and_per_seed_loglog_residual_slopes():
    rng = np.random.default_rng(4)
    res = _scatter_result(rng)
    cfg = EM.quick_config()
    claims = {c.name: c for c in EM.claims(res, cfg)}
    for key in EM.SCATTERS:
        per_seed = [ref_ols(p.ravel(), m.ravel()) for p, m in
                    zip(res[f"{key}_pred"], res[f"{key}_meas"], strict=True)]
        slope = claims[f"{key}: slope of measured on predicted dH"].measured
        assert slope == pytest.approx(np.mean([f[0] for f in per_seed]), abs=F64_TOL)
        r2 = claims[f"{key}: R^2 of measured on predicted dH"].measured
        assert r2 == pytest.approx(np.mean([f[2] for f in per_seed]), abs=F64_TOL)
        # guard: one fit pooled over the seeds has a lower R² than the per-seed fits
        pooled = ref_ols(res[f"{key}_pred"].ravel(), res[f"{key}_meas"].ravel())
        assert pooled[2] < r2 - 0.01
    for key in EM.ORDERS:
        resid = np.abs(res[f"order_{key}_meas"] - res[f"order_{key}_pred"]).mean(-1)
        ref = np.mean([ref_ols(np.log(res["eta_grid"]), np.log(r))[0] for r in resid])
        assert claims[f"{key}: residual ~ eta^p, exponent p"].measured == pytest.approx(
            ref, abs=F64_TOL)
        assert ref == pytest.approx(2.0, abs=1e-9)


def _blocks_ref(x, size):
    n = len(x) // size
    return np.array([np.mean(x[j * size:(j + 1) * size]) for j in range(n)])


def test_grpo_interval_correlation_pairs_each_block_with_the_change_to_the_next_block():
    """(b): block j's mean −Cov against mean H(block j+1) − mean H(block j); a remainder of
    fewer than ``interval`` steps is dropped. (c): the fit's RMSE on the evaluations after
    the first n_fit, the final pass@1 = mean of the last 3 evaluations, ceiling b − a."""
    rng = np.random.default_rng(5)
    cfg = EM.Config()  # grpo on: interval 5, eval every 4 of 100 steps
    seeds, steps, n_eval, n_fit = 3, 103, 25, 8
    h = np.cumsum(rng.normal(0, 0.1, size=(seeds, steps)), 1) + 2.0
    pred = rng.normal(size=(seeds, steps))
    h_eval = rng.uniform(0.1, 1.5, size=(seeds, n_eval))
    a, b = rng.uniform(0.1, 0.3, seeds), rng.uniform(0.8, 1.0, seeds)
    r_eval = -a[:, None] * np.exp(h_eval) + b[:, None] + rng.normal(0, 0.02, (seeds, n_eval))
    res = {"grpo_entropy": h, "grpo_pred_dh": pred, "grpo_n_fit": np.array(n_fit),
           "grpo_fit_a": a, "grpo_fit_b": b, "grpo_eval_h": h_eval, "grpo_eval_pass1": r_eval}
    stats = EM._grpo_stats(res, cfg)
    size = cfg.grpo.interval
    for s in range(seeds):
        bh, bp = _blocks_ref(h[s], size), _blocks_ref(pred[s], size)
        assert len(bh) == 20  # 103 steps: 3 left over
        ref_corr = scipy.stats.pearsonr(np.diff(bh), bp[:-1]).statistic
        assert stats["corr"][s] == pytest.approx(ref_corr, abs=1e-12)
        later = r_eval[s, n_fit:] - (b[s] - a[s] * np.exp(h_eval[s, n_fit:]))
        assert stats["rmse"][s] == pytest.approx(np.sqrt(np.mean(later ** 2)), abs=F64_TOL)
        assert stats["final"][s] == pytest.approx(r_eval[s, -3:].mean(), abs=F64_TOL)
        assert stats["ceiling"][s] == pytest.approx(b[s] - a[s], abs=F64_TOL)
        # guard: pairing block j+1's covariance instead gives another number
        shifted = scipy.stats.pearsonr(np.diff(bh), bp[1:]).statistic
        assert abs(shifted - ref_corr) > 1e-3


def test_entropy_performance_fit_is_least_squares_of_r_on_exp_h():
    rng = np.random.default_rng(6)
    h = rng.uniform(0.1, 1.5, 9)
    r = -0.2 * np.exp(h) + 0.95 + rng.normal(0, 0.01, 9)
    a, b = E.fit_entropy_performance(h, r)
    slope, intercept = np.polyfit(np.exp(h), r, 1)
    assert (a, b) == pytest.approx((-slope, intercept), abs=1e-9)


# ======================================================================= grpo-length-bias
def test_per_prompt_weight_formula_matches_the_reference_including_uniform_groups():
    rng = np.random.default_rng(7)
    p, g, mx = 6, 4, 10
    rewards = (rng.uniform(size=(2, p, g)) < 0.5).astype(np.float64)
    rewards[0, 0], rewards[0, 1] = 1.0, 0.0  # all right, all wrong: weight 0
    lengths = rng.integers(4, mx + 1, size=(2, p, g)).astype(np.float64)
    for method in GL.METHODS:
        got = GL.predicted_weight(rewards, lengths, method, p, mx)
        assert np.allclose(got, ref_prompt_weight(rewards, lengths, method, p, mx),
                           atol=F64_TOL)
        assert np.all(got[0, :2] == 0.0)
    q = rewards.mean(-1)
    grpo_closed = 2 / p * q * (1 - q) / (np.sqrt(q * (1 - q)) + 1e-6)  # docs §2
    assert np.allclose(GL.predicted_weight(rewards, lengths, "grpo", p, mx), grpo_closed)


def _rollout(key, params, correct, cfg, method):
    return _fast(f"rollout {method}", lambda k, prm, corr: GL.rollout_gradient(
        k, prm, corr, cfg, method)[1], key, params, correct)


TINY = GL.Config(n_seeds=2, n_prompts=4, n_answers=3, max_fill=3, group_size=6, steps=2,
                 window=1)


def _tiny_params():
    """Prompt 0 always right, prompt 1 always wrong, 2 and 3 mixed; prompt 0 always runs to
    the filler cap (no stop before F), prompt 1 stops at once."""
    params, correct = GL.init_params(jax.random.key(0), TINY)
    correct = jnp.array([0, 1, 2, 0])
    draft = np.zeros((4, 3), np.float32)
    draft[0, 0], draft[1, 0] = 50.0, 50.0  # prompt 1's correct answer is 1: never drawn
    fill = np.array(params["fill"])
    fill[0], fill[1] = 50.0, -50.0
    return {"draft": jnp.asarray(draft), "fill": jnp.asarray(fill)}, correct


def test_length_bias_step_metrics_match_the_reference_on_tokens_rewards_and_masks():
    params, correct = _tiny_params()
    key = jax.random.key(1)
    prompt = jnp.repeat(jnp.arange(4), TINY.group_size)
    tokens, mask, draft, tau = (np.asarray(x) for x in _fast(
        "sample tiny", lambda k, prm: GL._sample(k, prm, prompt, TINY), key, params))
    lengths = ref_lengths(tokens, GL.EOS)
    assert np.array_equal(mask, np.arange(tokens.shape[1])[None] < lengths[:, None])
    assert np.all(tokens[~mask] == GL.PAD) and np.all(lengths == tau + GL.N_FIXED)
    assert np.all(lengths[:6] == GL.max_tokens(TINY)) and np.all(lengths[6:12] == 4)
    reward = (tokens[:, 0] - GL.FIRST_ANSWER == np.asarray(correct)[np.asarray(prompt)])
    assert reward[:6].all() and not reward[6:12].any()
    # GRPO only (each method is a separate ~3 s compile): the lengths do not depend on it,
    # and Dr.GRPO's weight formula is checked above and by the figure's own weight claim
    for method in ("grpo",):
        out = {k: np.asarray(v, np.float64) for k, v in
               _rollout(key, params, correct, TINY, method).items()}
        assert np.array_equal(out["rewards"].ravel(), reward)
        assert np.array_equal(out["lengths"].ravel(), lengths)
        assert out["len_correct"] == pytest.approx(lengths[reward].mean(), rel=F32_RTOL)
        assert out["len_incorrect"] == pytest.approx(lengths[~reward].mean(), rel=F32_RTOL)
        assert out["accuracy"] == pytest.approx(reward.mean(), rel=F32_RTOL)
        ref_w = ref_prompt_weight(reward.reshape(4, 6), lengths.reshape(4, 6), method, 4,
                                  GL.max_tokens(TINY))
        assert np.allclose(out["w_meas"], ref_w, rtol=F32_RTOL, atol=1e-7)
        mixed = reward.reshape(4, 6).std(1) > 0
        assert out["w_meas"][0] == out["w_meas"][1] == 0.0
        assert mixed.any() and ref_w[mixed].min() > 0.01  # guard: weights that can differ


def test_length_means_are_nan_in_a_step_without_such_completions_and_the_window_skips_them():
    params, correct = _tiny_params()
    params = {**params, "draft": params["draft"].at[2:, :].set(0.0).at[2:, 0].set(50.0)}
    correct = jnp.array([0, 0, 0, 0])  # every draft is 0 and right
    out = _rollout(jax.random.key(2), params, correct, TINY, "grpo")
    assert np.isnan(float(out["len_incorrect"])) and float(out["accuracy"]) == 1.0
    x = np.array([[5.0, np.nan, 7.0, 6.0, np.nan, 9.0], [4.0, 4.0, np.nan, 5.0, 5.0, 5.0]])
    ref = [np.mean([6.0, 9.0]) - np.mean([5.0, 7.0]), 5.0 - 4.0]  # window 3, NaN steps dropped
    assert np.allclose(GL._delta(x, 3), ref, atol=F64_TOL)


def test_sampled_lengths_follow_the_stop_chain_and_logits_score_the_sampled_tokens():
    """P(k = t) = S_t (1 − σ_t), P(k = F) = S_F; log π of the sampled completion by teacher
    forcing through ``_logits`` = log π(d) + Σ_{t<k} log σ_t + log(1 − σ_k) (k < F)."""
    cfg = dataclasses.replace(TINY, n_prompts=1)
    fill = np.array([[[0.3, -0.5, 1.0]] * 3], np.float32)
    params = {"draft": jnp.asarray([[0.2, -0.4, 0.1]]), "fill": jnp.asarray(fill)}
    n = 20000
    prompt = jnp.zeros(n, jnp.int32)
    tokens, _, draft, tau = _fast("sample", lambda k: GL._sample(k, params, prompt, cfg),
                                  jax.random.key(3))
    sig = 1 / (1 + np.exp(-fill[0, 0].astype(np.float64)))
    reach = np.cumprod(np.concatenate([[1.0], sig]))
    p_len = reach * np.concatenate([1 - sig, [1.0]])
    freq = np.bincount(np.asarray(tau), minlength=4) / n
    assert np.all(np.abs(freq - p_len) <= 5 * np.sqrt(p_len * (1 - p_len) / n))
    logp = _fast("logits", lambda d, t: jax.nn.log_softmax(
        GL._logits(params, prompt[:64], d, t, cfg)), draft[:64], tau[:64])
    lp = np.take_along_axis(np.asarray(logp, np.float64), np.asarray(tokens[:64])[..., None],
                            -1)[..., 0]
    mask = np.asarray(tokens[:64]) != GL.PAD
    got = np.where(mask, lp, 0.0).sum(1)
    pd = ref_softmax(np.asarray(params["draft"][0], np.float64))
    ref = [np.log(pd[d]) + np.sum(np.log(sig[:k])) + (np.log(1 - sig[k]) if k < 3 else 0.0)
           for d, k in zip(np.asarray(draft[:64]), np.asarray(tau[:64]), strict=True)]
    assert np.allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize("method", GL.METHODS)
def test_predicted_fill_update_equals_the_exact_expectation_over_every_group(method):
    """E[−∂loss/∂s[p, d, t]] by enumerating all K^G drafts and (F + 1)^G lengths of one
    group (G = 3, K = 2, F = 2), loss = −Σ_i Σ_t w_{i,t} log π(o_{i,t}) at ratio 1."""
    cfg = GL.Config(n_prompts=1, n_answers=2, max_fill=2, group_size=3, steps=2, window=1)
    g, k_ans, f, mx = 3, 2, 2, GL.max_tokens(cfg)
    draft_logits = np.array([[0.4, -0.3]])
    fill_logits = np.array([[[0.5, -0.2], [-0.7, 1.1]]])
    correct = np.array([1])
    pd = ref_softmax(draft_logits[0])
    expected = np.zeros((k_ans, f))
    for drafts in itertools.product(range(k_ans), repeat=g):
        r = np.array([d == correct[0] for d in drafts], np.float64)
        adv = r - r.mean()
        if method == "grpo":
            adv = adv / (r.std() + 1e-6)
        for ks in itertools.product(range(f + 1), repeat=g):
            prob = np.prod(pd[list(drafts)])
            for d, kk in zip(drafts, ks, strict=True):
                sig = 1 / (1 + np.exp(-fill_logits[0, d]))
                prob *= (np.prod(sig[:kk]) * (1 - sig[kk] if kk < f else 1.0))
            for i, (d, kk) in enumerate(zip(drafts, ks, strict=True)):
                sig = 1 / (1 + np.exp(-fill_logits[0, d]))
                score = np.array([(1 - sig[t]) * (kk > t) - sig[t] * (kk == t) for t in range(f)])
                norm = (kk + 4) if method == "grpo" else mx
                expected[d] += prob * adv[i] / (g * norm) * score
    got = GL.predicted_fill_update(draft_logits, fill_logits, correct, cfg, method)[0]
    assert np.allclose(got, expected, atol=1e-9, rtol=1e-6)
    if method == "grpo":
        assert np.abs(expected).max() > 1e-3  # guard: not trivially zero


def test_accuracy_claim_is_the_seed_mean_of_paired_last_window_differences():
    rng = np.random.default_rng(8)
    cfg = GL.Config(n_seeds=4, steps=10, window=3)
    res = {}
    for m in GL.METHODS:
        for kind in ("correct", "incorrect"):
            res[f"{m}_len_{kind}"] = rng.uniform(4, 10, (4, 10))
        res[f"{m}_accuracy"] = rng.uniform(0.5, 1, (4, 10))
        res[f"{m}_w_meas"] = res[f"{m}_w_pred"] = rng.uniform(0.1, 1, (4, 10, 6))
    claims = {c.name: c for c in GL.claims(res, cfg)}
    ref = np.mean(res["grpo_accuracy"][:, -3:].mean(1) - res["dr_grpo_accuracy"][:, -3:].mean(1))
    assert claims["final accuracy GRPO - Dr.GRPO"].measured == pytest.approx(ref, abs=F64_TOL)
    d = lambda x: x[:, -3:].mean(1) - x[:, :3].mean(1)
    paired = d(res["dr_grpo_len_incorrect"]) - d(res["grpo_len_incorrect"])
    name = "Dr.GRPO minus GRPO: incorrect length change (CI high end)"
    assert claims[name].measured == pytest.approx(ref_t_interval(paired)[2], abs=F64_TOL)


# ========================================================================== passk-support
def _passk_result(rng, n_seeds=4, n_problems=40):
    p_base = rng.beta(0.6, 0.6, n_problems)
    p_base[:3] = [0.0, 1.0, 1e-6]
    ll_base = np.log(np.clip(p_base, 1e-300, 1))
    ll_rl = ll_base[None] + rng.normal(0, 0.8, (n_seeds, n_problems))
    ll_rl = np.minimum(ll_rl, 0.0)
    cfg = PK.Config(n_seeds=n_seeds)
    ks = PK.ks_of(cfg.n_samples)
    ref_curve = lambda p: np.array([np.mean(1 - (1 - p) ** k) for k in ks])
    p_rl = np.exp(ll_rl)
    answer = np.arange(n_problems) % cfg.modulus
    return cfg, {
        "ks": ks, "ll_base": ll_base, "ll_rl": ll_rl, "answer": answer,
        "passk_base": ref_curve(p_base), "passk_rl": np.stack([ref_curve(p) for p in p_rl]),
        "reach": rng.uniform(0, 1, n_problems), "reach_scale": np.array(1.0)}


def test_every_problem_is_listed_once_with_the_tasks_own_prompt_and_gold_completion():
    """p_j = π(gold_j) is the success probability only if the gold completion is the one the
    task's reward accepts: (answer, <eos>) after the task's own prompt."""
    cfg = PK.quick_config()
    task = PD.make_task(cfg)
    every = PD.all_problems(task)
    terms = np.asarray(every.meta["terms"])
    assert len({tuple(t) for t in terms}) == cfg.modulus ** cfg.n_terms == len(terms)
    off_by_one = every.targets.at[:, 0].set(
        task.vocab.num((every.meta["answer"] + 1) % cfg.modulus))
    no_eos = every.targets.at[:, 1].set(every.targets[:, 0])

    def draw(key):  # one compiled call: eager jax ops each compile on their own
        batch = task.sample(key, 32)
        rewards = [task.reward(every, t) for t in (every.targets, off_by_one, no_eos)]
        return batch, PD.exclude_answer(batch, task, cfg.excluded_answer), rewards

    batch, shifted, (r_gold, r_off, r_no_eos) = _fast("modular_sum", draw, jax.random.key(9))
    index = {tuple(t): i for i, t in enumerate(terms)}
    rows = [index[tuple(t)] for t in np.asarray(batch.meta["terms"])]
    assert np.array_equal(np.asarray(every.prompts)[rows], np.asarray(batch.prompts))
    assert np.array_equal(np.asarray(every.targets)[rows], np.asarray(batch.targets))
    assert np.all(np.asarray(r_gold) == 1.0)
    assert np.all(np.asarray(r_off) == 0.0) and np.all(np.asarray(r_no_eos) == 0.0)
    new_terms = np.asarray(shifted.prompts)[:, :cfg.n_terms] - int(task.vocab.num(0))
    answers = np.asarray(shifted.meta["answer"])
    assert np.array_equal(new_terms.sum(1) % cfg.modulus, answers)
    assert not np.any(answers == cfg.excluded_answer)
    assert np.array_equal(np.asarray(shifted.targets)[:, 0], np.asarray(task.vocab.num(answers)))


def test_ks_are_powers_of_two_up_to_n_with_n_itself():
    assert PK.ks_of(256).tolist() == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert PK.ks_of(100).tolist() == [1, 2, 4, 8, 16, 32, 64, 100]


def test_exact_pass_at_k_is_the_mean_over_problems_of_one_minus_the_miss_probability():
    p = np.array([0.0, 1.0, 0.3, 0.05])
    ks = np.array([1, 2, 8])
    ref = [np.mean(1 - (1 - p) ** k) for k in ks]
    assert np.allclose(PK.passk.pass_at_k_exact(p, ks), ref, atol=F64_TOL)


def test_passk_stats_match_the_reference_sign_statistics_and_crossing():
    rng = np.random.default_rng(9)
    cfg, res = _passk_result(rng)
    s = PK.stats(res, cfg)
    base, rl = res["passk_base"], res["passk_rl"]
    assert np.allclose(s["d1"], rl[:, 0] - base[0], atol=F64_TOL)
    upper = [j for j, k in enumerate(res["ks"]) if k >= 16]  # √256, ..., 256
    assert np.allclose(s["dmax"], [np.mean(base[upper] - rl[i, upper]) for i in range(4)])
    inside = res["answer"] != cfg.excluded_answer
    d = res["ll_rl"] - res["ll_base"][None]
    ref_rho = [ref_spearman(res["ll_base"][inside], d[i, inside]) for i in range(4)]
    assert np.allclose(s["rho"], ref_rho, atol=1e-12)
    order = np.argsort(res["ll_base"][inside])
    q = inside.sum() // 4
    assert np.allclose(s["top"], d[:, inside][:, order[-q:]].mean(1), atol=F64_TOL)
    assert s["ll_excluded"] == pytest.approx(np.median(res["ll_base"][~inside]))


@pytest.mark.parametrize("case, expected", [("base ahead at k=1", 1.0), ("tie at k=8", 8.0),
                                            ("only at k=n", 256.0), ("never", float("nan"))])
def test_crossing_is_the_first_k_with_base_at_least_the_seed_mean_rl_curve(case, expected):
    rng = np.random.default_rng(10)
    cfg, res = _passk_result(rng)
    ks = res["ks"]
    rl = np.tile(np.linspace(0.5, 0.9, len(ks)), (4, 1)) + rng.normal(0, 0.01, (4, len(ks)))
    rl -= rl.mean(0) - np.linspace(0.5, 0.9, len(ks))  # seed mean exactly the line
    mean = rl.mean(0)
    base = mean - 0.05
    if case == "base ahead at k=1":
        base = mean + 0.01
    elif case == "tie at k=8":
        base[3:] = mean[3:]
    elif case == "only at k=n":
        base[-1] = mean[-1] + 0.01
    res = {**res, "passk_base": base, "passk_rl": rl}
    k_star = PK.stats(res, cfg)["k_star"]
    assert (np.isnan(k_star) and np.isnan(expected)) or k_star == expected
    assert ks[3] == 8


def test_support_fractions_are_ratios_of_expectations_over_sampled_counts():
    """F_U, F_S, the bound and the base's own luck from the formulas; F_U and F_S also
    against simulated counts (c_base, c_rl ~ Bin(n, p)), pooled over replicates."""
    rng = np.random.default_rng(11)
    n = 16
    p_base = np.concatenate([[0.0, 1.0, 0.5], rng.beta(0.3, 2.0, 27)])
    p_rl = np.clip(p_base[None] * rng.uniform(0.5, 2.0, (2, 30)), 0, 1)
    reach = rng.uniform(0, 1, 30)
    got = PD.support_stats(p_base, p_rl, n, reach)
    w = (1 - p_base) ** n
    s_rl = 1 - (1 - p_rl) ** n
    assert np.allclose(got["F_U"], (w * s_rl).sum(-1) / w.sum(), atol=F64_TOL)
    assert np.allclose(got["F_S"], ((1 - w) * s_rl).sum(-1) / (1 - w).sum(), atol=F64_TOL)
    b = 1 - (1 - p_base) ** n
    assert got["bound"] == pytest.approx(np.sum(w * (reach + (1 - reach) * b)) / w.sum())
    assert got["base_luck"] == pytest.approx(np.sum(w * b) / w.sum())
    reps = 20000
    c_base = rng.binomial(n, p_base, size=(reps, 30))
    c_rl = rng.binomial(n, p_rl[0], size=(reps, 30))
    unsolved = c_base == 0
    sim = np.sum(unsolved & (c_rl > 0)) / np.sum(unsolved)
    sim_s = np.sum(~unsolved & (c_rl > 0)) / np.sum(~unsolved)
    assert sim == pytest.approx(got["F_U"][0], abs=0.01)
    assert sim_s == pytest.approx(got["F_S"][0], abs=0.01)


def test_rank_correlation_is_spearman_with_average_ranks_for_ties():
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=50), rng.normal(size=(3, 50)) + 0.3 * rng.normal(size=50)
    assert np.allclose(PD.rank_correlation(x, y), [ref_spearman(x, r) for r in y], atol=1e-12)
    xt, yt = np.round(x, 0), np.round(y, 0)  # many ties, as float32 saturation could give
    assert np.allclose(PD.rank_correlation(xt, yt), [ref_spearman(xt, r) for r in yt],
                       atol=1e-12)
    assert np.isnan(PD.rank_correlation(np.arange(5.0), np.full(5, 2.0)))  # constant: no order


def test_rank_correlation_of_a_seed_with_a_nan_is_nan():
    x = np.arange(6.0)
    y = np.stack([x + 0.5 * np.sin(x), np.where(x == 2, np.nan, x)])
    rho = PD.rank_correlation(x, y)
    assert rho[0] == pytest.approx(ref_spearman(x, y[0])) and np.isnan(rho[1])


def test_decompose_change_splits_the_variance_and_debiases_the_shared_part():
    rng = np.random.default_rng(13)
    s, j = 5, 200
    a = rng.normal(0, 0.5, j)
    d = rng.normal(0, 0.3, (s, 1)) + a[None] + rng.normal(0, 1.0, (s, j))
    parts = PD.decompose_change(d)
    common = d.mean(1)
    shared = np.array([np.mean(d[:, jj] - common) for jj in range(j)])
    noise = d - common[:, None] - shared[None]
    assert np.allclose(parts["common"], common) and np.allclose(parts["systematic"], shared)
    total = parts["var_common"] + parts["var_systematic"] + parts["var_noise"]
    assert total == pytest.approx(np.var(d), abs=1e-12)
    assert parts["var_noise"] == pytest.approx(np.var(noise), abs=1e-12)
    debiased = np.mean([PD.decompose_change(rng.normal(0, 0.3, (s, 1)) + a[None]
                                            + rng.normal(0, 1.0, (s, j)))[
        "var_systematic_debiased"] for _ in range(200)])
    assert debiased == pytest.approx(np.var(a), abs=0.02)  # undebiased: var(a) + 1/5


def test_tabular_gain_is_g_times_one_minus_p_times_expected_sqrt_q_one_minus_q():
    g = 8
    for p in (0.0, 0.05, 0.29, 0.6, 1.0):
        e = sum(math.comb(g, c) * p ** c * (1 - p) ** (g - c) * math.sqrt(c / g * (1 - c / g))
                for c in range(g + 1))
        assert PD.grpo_tabular_gain(p, g) == pytest.approx(g * (1 - p) * e, abs=1e-12)
    assert PD.grpo_tabular_gain(0.5, 2) == pytest.approx(0.25)


def test_strategies_stats_are_per_seed_class_means_and_rank_correlations():
    rng = np.random.default_rng(14)
    cfg = PK.Config(n_seeds=3)
    n = cfg.strategies.n_problems
    in_a = np.zeros(n, bool)
    in_a[rng.permutation(n)[:cfg.strategies.n_a]] = True
    ll_base = np.log(rng.uniform(0.05, 0.9, n))
    ll_rl = np.minimum(ll_base[None] + rng.normal(0, 1, (3, n)), 0)
    res = {"strat_in_a": in_a, "strat_ll_base": ll_base, "strat_ll_rl": ll_rl,
           "strat_pick_a_base": rng.uniform(size=n), "strat_pick_a_rl": rng.uniform(size=(3, n)),
           "strat_kernel_ratio": np.array(0.01)}
    st = PS.stats(res, cfg)
    d = ll_rl - ll_base[None]
    assert np.allclose(st["d_a"], [d[i, in_a].mean() for i in range(3)], atol=F64_TOL)
    assert np.allclose(st["d_b"], [d[i, ~in_a].mean() for i in range(3)], atol=F64_TOL)
    assert np.allclose(st["rho"], [ref_spearman(ll_base, d[i]) for i in range(3)], atol=1e-12)
    assert st["p_rl_b"] == pytest.approx(np.exp(ll_rl[:, ~in_a]).mean())
    assert st["p_base_a"] == pytest.approx(np.exp(ll_base[in_a]).mean())


def _tiny_model(config, task, seed, max_len=None):
    """A random model of the figure's shape without its MLP (attention-only: the measurements
    do not depend on it, and it halves the compile time), every parameter ~ N(0, 0.5²):
    logits of O(1), so a wrong position or token reads a clearly different log-probability.
    Drawn in numpy on the abstract model (``nnx.eval_shape``): ``model.init``'s eager draws
    compile for ~3 s."""
    mc = PD.model_config(config, task)
    mc = dataclasses.replace(mc, d_mlp=0, init_scale=0.5, max_len=max_len or mc.max_len)
    graphdef, shapes = nnx.split(nnx.eval_shape(lambda: model.Transformer(mc,
                                                                          rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(seed)
    return graphdef, jax.tree.map(lambda s: rng.normal(0, 0.5, s.shape).astype(s.dtype), shapes)


def test_gold_loglik_is_a_teacher_forced_sum_over_the_gold_up_to_its_eos():
    """``passk_data.gold_loglik`` on the figure's 100 problems against one forward pass of
    prompt ⧺ gold[:-1] (float32 logits: 1e-5); with a seed axis, on the same problems in the
    ``Batch`` layout with padding, a <pad> column after the <eos> (target_lens 2) and a
    left-padded prompt (prompt_lens 3): log π(gold | prompt) is the unpadded problem's."""
    cfg = PK.quick_config()
    task = PD.make_task(cfg)
    graphdef, params = _tiny_model(cfg, task, 17, max_len=6)
    second = jax.tree.map(lambda a: -a, params)  # another model, without another draw
    every = PD.all_problems(task)
    n = every.n
    padded = dataclasses.replace(
        every, prompts=jnp.pad(every.prompts, ((0, 0), (1, 0)), constant_values=PAD),
        targets=jnp.pad(every.targets, ((0, 0), (0, 1)), constant_values=PAD))
    assert np.all(np.asarray(padded.prompt_lens) == 3) and np.all(
        np.asarray(padded.target_lens) == 2)
    # the reference reads the <pad> column too (causal: the gold's terms are unchanged)
    ref = [ref_gold_loglik(graphdef, p, every.prompts, padded.targets, "gold")
           for p in (params, second)]
    got = PD.gold_loglik(graphdef, params, every)
    assert got.dtype == np.float64 and got.shape == (n,)
    assert np.allclose(got, ref[0]["sum"], rtol=F32_RTOL, atol=1e-5)
    seeds = jax.tree.map(lambda a, b: jnp.stack([a, b]), params, second)
    got_seeds = PD.gold_loglik(graphdef, seeds, padded, seed_axis=True)
    assert got_seeds.shape == (2, n)
    assert np.allclose(got_seeds, [r["sum"] for r in ref], rtol=F32_RTOL, atol=1e-5)
    # guards: a reading one position early, or the <pad> term counted, is rejected
    assert np.abs(ref[0]["early"] - ref[0]["sum"]).max() > 0.1
    assert np.abs(ref[0]["per_token"][:, 2]).min() > 0.1


def test_kernel_ratio_is_own_over_shared_of_the_least_squares_kernel_fit(monkeypatch):
    """r = k_o / k_s for K = J Jᵀ, J the strategy logits' Jacobian (a pytree whose leaves have
    a leading problem axis), planted in float64. Hand value: J = [√a·1 | √b·I] gives
    K = a 11ᵀ + b I exactly, r = b / a; a shared direction whose sign alternates between the
    problems gives k_s < 0: NaN (the docstring's undefined ratio)."""
    n = 64
    task = types.SimpleNamespace(all_problems=lambda: types.SimpleNamespace(targets=None))
    rng = np.random.default_rng(15)
    a, b = 0.25, 0.01
    hand = np.concatenate([np.full((n, 1), math.sqrt(a)), math.sqrt(b) * np.eye(n)], 1)
    noisy = 0.8 * rng.normal(size=(1, 30)) + rng.normal(0, 0.4, (n, 30))
    sign = np.where(np.arange(n) % 2, -1.0, 1.0)[:, None]
    opposed = sign * rng.normal(size=(1, 30)) + rng.normal(0, 0.1, (n, 30))

    def ratio(jac):
        leaves = {"w": jac[:, :6].reshape(n, 2, 3), "b": jac[:, 6:]}
        monkeypatch.setattr(PS, "_compiled", lambda fn, *args: jax.tree.map(jnp.asarray,
                                                                            leaves))
        with jax.enable_x64(True):
            return PS.strategy_kernel_ratio(None, None, task)

    assert ratio(hand) == pytest.approx(b / a, abs=F64_TOL)
    k_s, k_o = ref_kernel_fit(noisy @ noisy.T)
    assert ratio(noisy) == pytest.approx(k_o / k_s, abs=F64_TOL)
    k = noisy @ noisy.T  # guard: k_s as the mean of every entry (diagonal included)
    assert abs((np.trace(k) / n - k.mean()) / k.mean() - k_o / k_s) > 1e-3
    assert ref_kernel_fit(opposed @ opposed.T)[0] < 0 and np.isnan(ratio(opposed))


@pytest.mark.slow
def test_kernel_ratio_of_a_tiny_model_is_that_of_the_strategy_logits_jacobian():
    """End to end on a random model (8 problems): J by forward-mode autodiff of the reference's
    z_j = logit(<A>) − logit(<B>) at the last prompt position of a pass of the prompt alone
    (the completion cannot reach it; the normaliser cancels), K = J Jᵀ in float64. Two float32
    Jacobians by different routes, r a difference over k_s: 1e-4 relative. Marked slow: the
    two Jacobians compile for 2-3.5 s, over this file's budget; the algebra from J to r is
    checked in the default suite above."""
    cfg = dataclasses.replace(PK.quick_config(),
                              strategies=PS.StrategiesConfig(n_problems=8, d_model=8))
    task = PS.make_task(cfg)
    graphdef, params = _tiny_model(cfg.strategies, task, 16)
    got = PS.strategy_kernel_ratio(graphdef, params, task)
    prompts = task.all_problems().prompts
    ids = jnp.array([task.vocab.id("<A>"), task.vocab.id("<B>")])

    def z(p):  # [position: last prompt token (the strategy's), first (a wrong reading), n]
        logits = model.forward(graphdef, p, prompts)[0][:, ::-1][..., ids]
        return (logits[..., 0] - logits[..., 1]).T

    jac = _fast("strategy logits' jacobian", jax.jacfwd(z), params)
    fits = []
    for position in (0, 1):
        rows = np.concatenate([np.asarray(leaf[position], np.float64).reshape(8, -1)
                               for leaf in jax.tree.leaves(jac)], 1)
        fits.append(ref_kernel_fit(rows @ rows.T))
    (k_s, k_o), (k_s_wrong, k_o_wrong) = fits
    assert got == pytest.approx(k_o / k_s, rel=1e-4)
    assert k_s > 0.1 * (k_s + k_o)  # guard: a ratio well conditioned at this tolerance
    assert abs(k_o_wrong / k_s_wrong - k_o / k_s) > 1e-2 * abs(k_o / k_s)  # guard: position


# ======================================================================= clipping-entropy
CLIP = CE.Config(n_seeds=2, n_states=3, n_actions=4, group_size=8, steps=2, epochs=3,
                 minibatches=2, lr=3.0)


def _draws(z, key, n_states, g, epochs, minibatches):
    """The step's samples and minibatch orders, drawn from the figure's keys as ``_rl_step``
    draws them (RNG plumbing only)."""
    def draw(z, key):
        k_a, k_r, k_p = jax.random.split(key, 3)
        actions = jax.random.categorical(k_a, z[:, None, :], shape=(n_states, g))
        rewards = jax.random.bernoulli(k_r, 0.5, (n_states, g))
        orders = jax.vmap(lambda k: jax.random.permutation(k, g).reshape(minibatches, -1))(
            jax.random.split(k_p, epochs))
        return actions, rewards, orders.reshape(epochs * minibatches, -1)

    return _fast(f"draws {n_states, g, epochs, minibatches}", draw, z, key)


def _base(key, cfg):
    """The figure's base logits and run key (``clipping_entropy._base``), compiled once."""
    return _fast(f"base {cfg.n_states, cfg.n_actions}", lambda k: CE._base(k, cfg), key)


def ref_rl_step(z, key, eps, cfg, epochs, minibatches):
    """One RL step in float64 numpy: the samples and permutations are drawn from the same
    keys as the figure (``_draws``); the clipped token-mean SGD is the reference.
    Returns z_new, the clipped count and the smallest distance of a ratio to its bound."""
    mb = cfg.group_size // minibatches
    actions, r, orders = (np.asarray(x) for x in _draws(
        jnp.asarray(z, jnp.float32), key, z.shape[0], cfg.group_size, epochs, minibatches))
    r = r.astype(np.float64)
    adv = (r - r.mean(1, keepdims=True)) / (r.std(1, keepdims=True) + 1e-6)
    z = np.asarray(z, np.float64).copy()
    p_old = ref_softmax(z)
    clipped, margin = 0, np.inf
    for rows in orders:
        p = ref_softmax(z)
        grad = np.zeros_like(z)
        for s in range(z.shape[0]):
            for i in rows:
                a, A = actions[s, i], adv[s, i]
                rho = p[s, a] / p_old[s, a]
                lo, hi = 1 - eps[0], 1 + eps[1]
                if A != 0:
                    margin = min(margin, abs(rho - (hi if A > 0 else lo)))
                if (A > 0 and rho > hi) or (A < 0 and rho < lo):
                    clipped += 1
                    continue
                grad[s] -= A * rho * (np.eye(z.shape[1])[a] - p[s]) / mb
        z = z - cfg.lr * grad
    return z, clipped, margin


def _trajectory(key, eps):
    return _fast("trajectory", lambda k, e: CE._trajectory(k, e, CLIP, CLIP.epochs,
                                                          CLIP.minibatches), key, eps)


@pytest.mark.parametrize("eps", [(0.2, 0.2), (0.05, 0.2), (0.2, 0.05)])
def test_trajectory_logs_h_and_mode_before_each_step_and_the_clip_fraction_per_token_update(
        eps):
    """entropy and π(base mode) at z_0 .. z_T (T + 1 values), the clipped fraction of each
    step's epochs × G token-updates per context; z_t from the reference's clipped SGD."""
    key = jax.random.key(5)
    out = _trajectory(key, tuple(map(jnp.asarray, eps)))
    z, k_run = _base(key, CLIP)
    z = np.asarray(z, np.float64)
    mode = z.argmax(-1)
    hs, pm, fr = [], [], []
    for i in range(CLIP.steps):
        hs.append(ref_entropy(z).mean())
        pm.append(ref_softmax(z)[np.arange(3), mode].mean())
        z, n, margin = ref_rl_step(z, jax.random.fold_in(k_run, i), eps, CLIP, CLIP.epochs,
                                   CLIP.minibatches)
        assert margin > 1e-4  # no ratio within float32 reach of a bound: the count is exact
        fr.append(n / (CLIP.epochs * CLIP.group_size * CLIP.n_states))  # each token once/epoch
    hs.append(ref_entropy(z).mean())
    pm.append(ref_softmax(z)[np.arange(3), mode].mean())
    assert np.allclose(np.asarray(out["entropy"]), hs, atol=TRAJ_TOL)
    assert np.allclose(np.asarray(out["p_mode"]), pm, atol=TRAJ_TOL)
    assert np.allclose(np.asarray(out["clip_frac"]), fr, atol=1e-7)
    assert max(fr) > 0.05  # guard: clipping does happen here


def test_onpolicy_trajectory_sums_the_realised_first_order_and_the_drift_at_each_z_t():
    cfg = dataclasses.replace(CLIP, lr=0.5)
    key = jax.random.key(6)
    out = _fast("onpolicy", lambda k: CE._onpolicy_trajectory(k, cfg), key)
    z, k_run = _base(key, cfg)
    z = np.asarray(z, np.float64)
    first = second = 0.0
    h0 = ref_entropy(z).mean()
    for i in range(cfg.steps):
        z_new, n, _ = ref_rl_step(z, jax.random.fold_in(k_run, i), (0.2, 0.2), cfg, 1, 1)
        assert n == 0  # on-policy: ρ ≡ 1
        first += np.mean(np.sum(ref_grad_entropy(z) * (z_new - z), -1))
        second += np.mean(E.onpolicy_entropy_drift(z, cfg.lr, cfg.group_size))
        z = z_new
    assert float(out["pred_realised_first"]) == pytest.approx(first, abs=TRAJ_TOL)
    assert float(out["pred_second"]) == pytest.approx(second, rel=1e-4)
    assert np.asarray(out["entropy"])[-1] - np.asarray(out["entropy"])[0] == pytest.approx(
        ref_entropy(z).mean() - h0, abs=TRAJ_TOL)
    assert float(np.max(out["clip_frac"])) == 0.0


def test_step_decomposition_is_the_mean_update_first_order_plus_the_rest():
    z0, _ = _base(jax.random.key(7), CLIP)
    mode = jnp.argmax(z0, -1)
    eps = (0.2, 0.2)
    key = jax.random.key(8)
    got = _fast("decomposition", lambda z, k: CD.step_decomposition(
        z, mode, tuple(map(jnp.asarray, eps)), CLIP, k, replicates=4), z0, key)
    z = np.asarray(z0, np.float64)
    news = np.stack([ref_rl_step(z, k, eps, CLIP, CLIP.epochs, CLIP.minibatches)[0]
                     for k in jax.random.split(key, 4)])
    mean_dz = news.mean(0) - z
    p = ref_softmax(z)
    m = np.asarray(mode)
    grad_pm = p[np.arange(3), m][:, None] * (np.eye(4)[m] - p)
    for name, f, grad in (("p_mode", lambda x: ref_softmax(x)[np.arange(3), m], grad_pm),
                          ("entropy", ref_entropy, ref_grad_entropy(z))):
        first = np.sum(grad * mean_dz, -1)
        total = np.mean([f(x) - f(z) for x in news], 0)
        assert float(got[f"{name}_first"]) == pytest.approx(first.mean(), abs=TRAJ_TOL)
        assert float(got[f"{name}_drift"]) == pytest.approx((total - first).mean(),
                                                            abs=TRAJ_TOL)


@pytest.mark.parametrize("on_policy", [False, True])
def test_trajectory_sums_weight_each_evaluation_by_the_steps_it_stands_for(monkeypatch,
                                                                          on_policy):
    """``decomposition_along_trajectory``: the split is evaluated at z_0, z_e, z_2e, ... of the
    first seed's own run (e = every), before that step, each evaluation weighted by the steps
    it stands for, min(e, T − i) (T = 5, e = 2: 2, 2, 1); the realised changes are
    f(z_T) − f(z_0), means over contexts. The step (checked against the reference above) and
    the split (``step_decomposition``, checked above) are replaced by functions that reveal
    the run's keys, the schedule (epochs, minibatches: the config's, or (1, 1) on-policy),
    the z it is evaluated at and the base mode; float32 along 5 steps: TRAJ_TOL."""
    cfg = dataclasses.replace(CLIP, steps=5, seed=7)
    weights = np.random.default_rng(19).normal(size=(cfg.n_states, cfg.n_actions))
    size = lambda epochs, minibatches: 0.1 * (epochs + 10 * minibatches)

    def planted_step(z, key, eps, cfg, epochs, minibatches):
        return z + size(epochs, minibatches) * jax.random.normal(key, z.shape), 0

    def planted_split(z, mode, eps, cfg, key, replicates, on_policy):
        at_mode = jnp.take_along_axis(z, mode[:, None], -1)
        return {"p_mode_first": jnp.sum(weights * z), "p_mode_drift": at_mode.mean(),
                "entropy_first": E.entropy(z).mean(), "entropy_drift": jnp.sum(weights[0])}

    monkeypatch.setattr(CD, "_rl_step", planted_step)
    monkeypatch.setattr(CD, "step_decomposition", planted_split)
    got = CD.decomposition_along_trajectory(cfg, every=2, replicates=4, on_policy=on_policy)
    z, k_run = _base(jax.random.split(jax.random.key(7), cfg.n_seeds)[0], cfg)  # seed 0 of 7
    step = size(1, 1) if on_policy else size(cfg.epochs, cfg.minibatches)
    zs = [np.asarray(z, np.float64)]
    for i in range(cfg.steps):
        noise = jax.random.normal(jax.random.fold_in(k_run, i), z.shape)
        zs.append(zs[-1] + step * np.asarray(noise, np.float64))
    mode = zs[0].argmax(-1)
    values = lambda x: {"p_mode_first": np.sum(weights * x),
                        "p_mode_drift": x[np.arange(len(x)), mode].mean(),
                        "entropy_first": ref_entropy(x).mean(), "entropy_drift": weights[0].sum()}
    spans = {0: 2, 2: 2, 4: 1}
    for name in values(zs[0]):
        ref = sum(span * values(zs[i])[name] for i, span in spans.items())
        assert got[name] == pytest.approx(ref, abs=TRAJ_TOL)
    # guards: every evaluation weighted by e, or taken after its step, is rejected
    assert abs(np.sum(weights * zs[4])) > 0.1
    assert abs(sum(span * np.sum(weights * zs[i + 1]) for i, span in spans.items())
               - got["p_mode_first"]) > 0.1
    p_mode = lambda x: ref_softmax(x)[np.arange(len(x)), mode].mean()
    assert got["p_mode_realised"] == pytest.approx(p_mode(zs[-1]) - p_mode(zs[0]), abs=TRAJ_TOL)
    assert got["entropy_realised"] == pytest.approx(
        ref_entropy(zs[-1]).mean() - ref_entropy(zs[0]).mean(), abs=TRAJ_TOL)
    assert abs(p_mode(zs[-1]) - p_mode(zs[-2])) > 1e-3  # guard: one step short is rejected
