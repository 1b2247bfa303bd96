"""Measures of the ``reflection-emergence`` figure (experiments/reflection_emergence.py):
on-policy reflection counters, teacher-forced P(<back>) on forced-mistake and clean
prefixes, the exact expected number of <back> per completion, and the statistics of the
claims (per-interval log-odds growth against Eq. 7, emergence steps against Eq. 8).

Definitions (every rate a ratio of sums over the held-out set, so a completion with many
steps weighs as many steps):

* on-policy, on ``eval_n`` held-out prompts sampled at temperature 1 within the length
  budget, judged exactly from the prompt's graph by ``task.counters``:
  P(back|mistake), P(back|correct), mistake rate per step, accuracy, and
  m = P(completion makes >= 1 mistake), rs = P(reward 1 | completion wrote <back>);
* ``expected_backs``: E[#<back> per completion] = mean over completions of
  Σ_t π(<back> | prefix_t) on the sampled prefixes (the tower rule makes it an unbiased
  estimate of the number of <back>, with far less noise than counting sampled tokens);
* teacher-forced (an intervention, no sampling noise): ``forced_back_mistake`` is the mean
  of π(<back>) right after the first wrong turn of gold traces that take one (the prefix
  ends in a step onto a node from which t is unreachable); ``forced_back_correct`` the mean
  of π(<back>) after every step of clean gold traces (all steps correct).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments import harness
from tasks.core import PAD
from theory import reflection as T
from toymodels.rl.reflection import step_metrics
from toymodels.rl.rollout import completion_logits
from toymodels.sampler import generate

# Columns of one evaluation (the last axis of the ``evals`` array).
EVAL_FIELDS = ("accuracy", "p_back_given_mistake", "p_back_given_correct", "mistake_rate",
               "m_completion", "rs_after_back", "length", "back_rate", "expected_backs",
               "forced_back_mistake", "forced_back_correct", "n_mistake_opps", "n_backed")
FORCE_KEY, EVAL_KEY = 2_000_003, 1_000_003


def fixed_sets(mistake_task, clean_task, forced_n: int, eval_n: int, seed: int):
    """The fixed held-out sets (built once on the host; both tasks sampled with one size N,
    so that each compiles its sampler once): ``forced_n`` gold traces that take a wrong turn
    with the target index of their first dead-end step; ``forced_n`` clean traces with a mask
    of their correct steps (trace node tokens after the first, before <sep>); and the
    ``eval_n`` prompts for on-policy sampling (the first rows of the clean batch)."""
    key = jax.random.key(seed + FORCE_KEY)
    n_big = max(4 * forced_n, eval_n)
    big = mistake_task.sample(key, n_big, "test")
    keep = np.nonzero(np.asarray(big.meta["has_mistake"]))[0][:forced_n]
    if keep.size < forced_n:
        raise ValueError(f"only {keep.size} of {n_big} gold traces take a wrong turn: the "
                         "graphs have too few dead ends for the forced-mistake probe")
    first = np.argmax(np.asarray(big.meta["mistake"])[keep], axis=1)
    clean = clean_task.sample(jax.random.fold_in(key, 1), n_big, "test")
    tgt = np.asarray(clean.targets)[-forced_n:]
    sep = np.argmax(tgt == clean_task.vocab.id("<sep>"), axis=1)
    pos = np.arange(tgt.shape[1])[None, :]
    forced = {"m_prompts": np.asarray(big.prompts)[keep],
              "m_targets": np.asarray(big.targets)[keep], "m_index": first,
              "c_prompts": np.asarray(clean.prompts)[-forced_n:], "c_targets": tgt,
              "c_steps": (pos >= 1) & (pos < sep[:, None])}
    return forced, jax.tree.map(lambda x: x[:eval_n], clean)


def make_evaluator(graphdef, task, forced: dict, batch, budget: int):
    """``evaluate(params, key) -> float32[len(EVAL_FIELDS)]`` on the fixed sets of
    :func:`fixed_sets` (on-policy samples of ``batch``'s prompts within ``budget`` tokens)."""
    back = task.vocab.id("<back>")
    valid = batch.prompts != PAD

    def p_back(params, prompts, targets):  # π(<back>) after target token j, at column j + 1
        logits = completion_logits(graphdef, params, prompts, prompts != PAD, targets)
        return jax.nn.softmax(logits, axis=-1)[..., back]

    def evaluate(params, key):
        s = generate(graphdef, params, key, batch.prompts, valid, max_new_tokens=budget)
        reward = task.reward(batch, s.tokens)
        c = task.counters(batch, s.tokens)
        m = step_metrics(c)
        backed = c["backtracks"] > 0
        pb = p_back(params, batch.prompts, s.tokens)
        expected_backs = jnp.sum(jnp.where(s.mask, pb, 0.0), axis=1).mean()
        fm = p_back(params, forced["m_prompts"], forced["m_targets"])
        forced_m = jnp.take_along_axis(fm, forced["m_index"][:, None] + 1, axis=1).mean()
        fc = p_back(params, forced["c_prompts"], forced["c_targets"])
        after = jnp.concatenate([fc[:, 1:], jnp.zeros_like(fc[:, :1])], axis=1)
        forced_c = jnp.sum(after * forced["c_steps"]) / jnp.sum(forced["c_steps"])
        return jnp.stack([
            reward.mean(), m["p_back_given_mistake"], m["p_back_given_correct"],
            m["mistake_rate"], jnp.mean(c["mistakes"] > 0),
            jnp.sum(reward * backed) / jnp.maximum(jnp.sum(backed), 1), m["length_mean"],
            m["back_rate"], expected_backs, forced_m, forced_c,
            jnp.sum(c["mistake_then_back_opportunities"]), jnp.sum(backed)])

    return evaluate


def fields(evals: np.ndarray) -> dict:
    """``{name: evals[..., i]}`` for the columns of :data:`EVAL_FIELDS`."""
    return {k: evals[..., i] for i, k in enumerate(EVAL_FIELDS)}


def predicted_rate_shape(f: dict, advantage: str, budget: int):
    """Eq. 7 without its constant η: m·(r s)·b(1 − b)/(σ_R·L) at each evaluation, with m the
    per-completion mistake probability, r·s = P(reward | wrote <back>), b the forced
    P(<back> | wrong turn), σ_R = sqrt(A(1 − A)) for GRPO (1 for Dr.GRPO), L the mean length
    (GRPO's per-sequence token mean) or the budget (Dr.GRPO's constant normaliser)."""
    rs = np.where(f["n_backed"] > 0, f["rs_after_back"], np.nan)
    return T.back_logodds_rate(f["forced_back_mistake"], f["m_completion"], rs, 1.0, 1.0,
                               rate_scale(f, advantage, budget))


def rate_scale(f: dict, advantage: str, budget: int):
    """σ_R·L of Eq. 7 for the estimator (see :func:`predicted_rate_shape`)."""
    acc = f["accuracy"]
    if advantage == "grpo":
        return np.sqrt(np.clip(acc * (1 - acc), 1e-3, None)) * np.maximum(f["length"], 1.0)
    return np.full_like(acc, float(budget))


def interval_rates(steps, b, shape):
    """Per interval between evaluations: measured Δlogit b/Δstep and Eq. 7's shape averaged
    over the interval's two ends; arrays flattened over all leading axes, NaN pairs dropped."""
    lam = T.logit(np.clip(b, 1e-6, 1 - 1e-6))
    measured = np.diff(lam, axis=-1) / np.diff(steps)
    shape = np.asarray(shape)
    pred = 0.5 * (shape[..., :-1] + shape[..., 1:])
    ok = np.isfinite(measured) & np.isfinite(pred)
    return measured[ok], pred[ok]


def origin_fit(measured, pred):
    """Least squares measured ≈ k·pred through the origin: k and Pearson r."""
    if measured.size < 3 or np.std(pred) == 0 or np.std(measured) == 0:
        return float("nan"), float("nan")
    k = float(np.sum(measured * pred) / np.sum(pred * pred))
    return k, float(np.corrcoef(measured, pred)[0, 1])


def emergence_step(steps, b, b_star: float):
    """First logged step with b >= b_star, linearly interpolated in logit b; NaN if never.
    b: [..., logs]."""
    return harness.logit_crossing_step(steps, b, b_star, clip=1e-6)


def predicted_emergence(b0, b_star, m, rs, k, scale):
    """Eq. 8 with the fitted constant k in place of η: (F(λ*) − F(λ0))·σ_R·L/(k·m·r·s);
    +inf where the rate is not positive (no emergence predicted), 0 where b0 >= b*, and NaN
    where k is NaN (``origin_fit`` could not fit it): no prediction, so the emergence claim
    is not judged as "not reached, as predicted"."""
    b0 = np.clip(np.asarray(b0, np.float64), 1e-6, 1 - 1e-6)
    rate_ok = np.isfinite(rs) & (np.asarray(rs) > 0) & (np.asarray(m) > 0) & (k > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = T.emergence_steps(b0, b_star, m, rs, 1.0, k, scale)
    t = np.where(np.isnan(k), np.nan, np.where(rate_ok, t, np.inf))
    return np.where(b0 >= b_star, 0.0, t)
