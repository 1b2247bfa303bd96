"""The RL loss and advantages, cross-checked against an independent float64 numpy reference.

The reference below is written from the papers' formulas, not from ``toymodels/rl``:

* advantages, one group of G rewards r (population std, ε = 1e-6: the engine's documented
  convention, ``toymodels/rl/advantages.py``):
    GRPO      Â_i = (r_i − mean r) / (std r + ε)       Shao et al. 2024, arXiv 2402.03300, §4.1.2
    Dr.GRPO   Â_i = r_i − mean r                       Liu et al. 2025, arXiv 2503.20783, §3.2
    RLOO      Â_i = r_i − mean_{j≠i} r_j               Ahmadian et al. 2024, arXiv 2402.14740, Eq. 6
    REINFORCE Â_i = r_i, or r_i − mean of the batch    Williams 1992, Eq. 11
  and the separate std switch: divide by the group's std, the batch's std, or not at all.
* per-token loss, ρ = π_θ(o_t)/π_old(o_t) (PPO, Schulman et al. 2017, arXiv 1707.06347, Eq. 7;
  asymmetric bounds: DAPO, Yu et al. 2025, arXiv 2503.14476, Eq. 10; GRPO Eq. 3):
    l_t = −min(ρ Â, clip(ρ, 1 − ε_low, 1 + ε_high) Â) + β KL_t − c_H H_t
  KL_t one of Schulman's estimators (joschu.net/blog/kl-approx.html) with x = log π − log π_ref:
  k1 = x, k2 = x²/2, k3 = e^{−x} − 1 + x (GRPO Eq. 4), or the exact Σ_v π_v (log π_v − log π_ref,v).
* aggregation over the tokens up to and including the first ``<eos>`` (weights w_{i,t}):
    token-mean                   1 / Σ_j |o_j|      DAPO Eq. 12
    sequence-mean-token-mean     1 / (B |o_i|)      GRPO Eq. 3
    sequence-mean-token-sum-norm 1 / (B · MAX)      Dr.GRPO §3.2, Listing 1
* gradient w.r.t. the logits z of one position (our derivation, π = softmax z):
    ∂ log π(o)/∂z = e_o − π;   ∂H/∂z = −π ⊙ (log π + H);
    ∂KL_exact/∂z = π ⊙ (log π − log π_ref − KL).
  The surrogate's ∂l/∂log π(o) is −ρÂ, and 0 on a *clipped* token: Â > 0 and ρ > 1 + ε_high,
  or Â < 0 and ρ < 1 − ε_low (strict: a ratio on a bound is not clipped).

The library runs in float32 on the same float32 arrays the reference upcasts, so the only
difference is float32 rounding of O(1) numbers. Tolerances, fixed before measuring:
FLOAT32_RTOL = 1e-5, FLOAT32_ATOL = 1e-6 for advantages, loss values and gradients alike.
"""

from __future__ import annotations

import itertools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tasks.core import EOS, PAD
from toymodels.rl import advantages as adv
from toymodels.rl import objectives as obj
from toymodels.rl.config import RLConfig

FLOAT32_RTOL, FLOAT32_ATOL = 1e-5, 1e-6
STD_EPS = 1e-6
AGGREGATIONS = ("token-mean", "sequence-mean-token-mean", "sequence-mean-token-sum-norm")
# (eps_low, eps_high): PPO's symmetric 0.2, DAPO's clip-higher (0.2, 0.28), aggressive bounds
# on either side, and eps_low = 0 with an upper bound that never binds.
EPS_PAIRS = ((0.2, 0.2), (0.2, 0.28), (0.05, 0.3), (0.3, 0.05), (0.0, 1e6))
# Ratios at least 0.03 away from every bound above, on both sides of each.
RATIOS = (0.3, 0.6, 0.9, 0.97, 1.03, 1.12, 1.4, 3.0)


# =========================================================================== reference
def ref_advantages(rewards, estimator: str, scale: str, batch_baseline: bool = False):
    """Advantages float64[P, G] from rewards [P, G], straight from the formulas above."""
    r = np.asarray(rewards, np.float64)
    n_groups, g = r.shape
    if estimator in ("grpo", "dr_grpo"):
        centred = r - r.mean(axis=1, keepdims=True)
    elif estimator == "rloo":
        centred = np.array([[r[p, i] - np.delete(r[p], i).mean() for i in range(g)]
                            for p in range(n_groups)])
    elif estimator == "reinforce":
        centred = r - r.mean() if batch_baseline else r
    else:
        raise AssertionError(estimator)
    if scale == "group":
        return centred / (r.std(axis=1, keepdims=True) + STD_EPS)  # np.std: population (ddof 0)
    if scale == "batch":
        return centred / (r.std() + STD_EPS)
    return centred


def ref_lengths(tokens) -> np.ndarray:
    """|o_i|: tokens up to and including the first <eos>, all of them when there is none."""
    out = []
    for row in np.asarray(tokens):
        eos = np.flatnonzero(row == EOS)
        out.append(eos[0] + 1 if eos.size else row.size)
    return np.array(out)


def _log_softmax(z):
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


def ref_token_weights(lengths, loss_agg: str, max_tokens: int, n_rows: int):
    """w_i for every counted token of row i (0-length rows get no tokens)."""
    total = lengths.sum()
    if loss_agg == "token-mean":
        return [1.0 / total if total else 0.0 for _ in lengths]
    if loss_agg == "sequence-mean-token-mean":
        return [1.0 / (n_rows * n) if n else 0.0 for n in lengths]
    if loss_agg == "sequence-mean-token-sum-norm":
        return [1.0 / (n_rows * max_tokens) for _ in lengths]
    raise AssertionError(loss_agg)


def ref_policy_loss(logits, tokens, lengths, old_logp, advantages, ref_logits, *, eps_low,
                    eps_high, kl_coef, kl_estimator, entropy_coef, loss_agg, max_tokens):
    """(loss, ∂loss/∂logits, clipped_low, clipped_high) in float64; only the first |o_i|
    positions of row i are ever read."""
    z, z_ref = np.asarray(logits, np.float64), np.asarray(ref_logits, np.float64)
    old, a = np.asarray(old_logp, np.float64), np.asarray(advantages, np.float64)
    n_rows = z.shape[0]
    weights = ref_token_weights(lengths, loss_agg, max_tokens, n_rows)
    loss, grad = 0.0, np.zeros_like(z)
    low, high = np.zeros(z.shape[:2], bool), np.zeros(z.shape[:2], bool)
    for i, t in ((row, t) for row in range(n_rows) for t in range(lengths[row])):
        logpi, logref = _log_softmax(z[i, t]), _log_softmax(z_ref[i, t])
        pi, o = np.exp(logpi), tokens[i, t]
        dlogp = np.eye(z.shape[2])[o] - pi  # ∂ log π(o) / ∂z
        rho = np.exp(logpi[o] - old[i, t])
        low[i, t] = a[i] < 0 and rho < 1 - eps_low
        high[i, t] = a[i] > 0 and rho > 1 + eps_high
        value = -min(rho * a[i], np.clip(rho, 1 - eps_low, 1 + eps_high) * a[i])
        g = np.zeros_like(pi) if (low[i, t] or high[i, t]) else -rho * a[i] * dlogp
        x = logpi[o] - logref[o]
        if kl_estimator == "exact":
            kl = np.sum(pi * (logpi - logref))
            dkl = pi * (logpi - logref - kl)
        else:
            kl, dkl_dlogp = {"k1": (x, 1.0), "k2": (0.5 * x * x, x),
                             "k3": (np.exp(-x) - 1 + x, 1 - np.exp(-x))}[kl_estimator]
            dkl = dkl_dlogp * dlogp
        entropy = -np.sum(pi * logpi)
        value += kl_coef * kl - entropy_coef * entropy
        g = g + kl_coef * dkl + entropy_coef * pi * (logpi + entropy)
        loss += weights[i] * value
        grad[i, t] += weights[i] * g
    return loss, grad, low, high


# =========================================================================== inputs
N_PROMPTS, GROUP, L, V = 3, 4, 6, 7
N_ROWS = N_PROMPTS * GROUP
# Row lengths: 1 = an immediate <eos>; (6, False) = the budget ran out with no <eos> at all.
ROWS = [(1, True), (6, False), (6, True), (3, True), (2, True), (4, True),
        (1, True), (5, True), (6, False), (2, True), (3, True), (6, True)]


def make_tokens(rng, rows=ROWS):
    """int32[B, L]: ordinary tokens, <eos> ending each row that has one, <pad> after it."""
    tokens = np.full((len(rows), L), PAD, np.int32)
    for i, (n, has_eos) in enumerate(rows):
        tokens[i, :n] = rng.integers(2, V, n)  # 0 = <pad> and 1 = <eos> are special
        if has_eos:
            tokens[i, n - 1] = EOS
    return tokens


def make_inputs(seed: int):
    """Random logits, tokens, old log-probs at chosen ratios, GRPO advantages of rewards with
    one all-equal group (Â = 0 there), and reference logits."""
    rng = np.random.default_rng(seed)
    tokens = make_tokens(rng)
    lengths = ref_lengths(tokens)
    mask = np.arange(L)[None, :] < lengths[:, None]
    logits = rng.normal(0, 1.5, (N_ROWS, L, V)).astype(np.float32)
    ref_logits = (logits + rng.normal(0, 0.7, logits.shape)).astype(np.float32)
    logp = np.take_along_axis(np.apply_along_axis(_log_softmax, -1, logits.astype(np.float64)),
                              tokens[..., None], -1)[..., 0]
    # Ratios cycle along each row from a random offset, so every row sees several of them.
    cycle = 3 * np.arange(N_ROWS)[:, None] + np.arange(L)[None, :] + rng.integers(len(RATIOS))
    ratio = np.asarray(RATIOS)[cycle % len(RATIOS)]
    old_logp = np.where(mask, logp - np.log(ratio), 0.0).astype(np.float32)  # sampler: 0 on pad
    rewards = np.array([[0, 1, 1, 0], [1, 1, 1, 1], [0, 1, 0, 1]], np.float32)
    advantages = ref_advantages(rewards, "grpo", "group").reshape(-1).astype(np.float32)
    return types.SimpleNamespace(logits=logits, ref_logits=ref_logits, tokens=tokens,
                                 mask=mask, lengths=lengths, old_logp=old_logp,
                                 advantages=advantages)


def library_loss(x, **kw):
    """The engine's loss and its gradient w.r.t. the logits, plus the clip flags."""
    def fn(logits):
        return obj.policy_loss(logits, jnp.asarray(x.tokens), jnp.asarray(x.mask),
                               jnp.asarray(x.old_logp), jnp.asarray(x.advantages),
                               jnp.asarray(x.ref_logits), **kw)
    (loss, aux), grad = jax.value_and_grad(fn, has_aux=True)(jnp.asarray(x.logits))
    return float(loss), np.asarray(grad), np.asarray(aux["clipped_low"]), \
        np.asarray(aux["clipped_high"])


def assert_close(actual, desired):
    np.testing.assert_allclose(actual, desired, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)


# =========================================================================== advantages
# Every (estimator, scale, batch_baseline) that is allowed: std scaling needs a signal centred
# at least at the level of the std (test_std_scaling_of_an_uncentred_signal_is_refused).
ADVANTAGE_CONFIGS = [(e, s, False) for e in ("grpo", "dr_grpo", "rloo")
                     for s in ("group", "batch", "none")] + [
    ("reinforce", "none", False), ("reinforce", "none", True), ("reinforce", "batch", True)]
REWARDS = {
    # Binary outcome rewards (every task's), one all-correct and one all-wrong group.
    "binary": np.array([[1, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 1]]),
    # Graded (partial-credit) rewards, with all-equal groups of non-dyadic values.
    "graded": np.array([[0.3, 0.3, 0.3, 0.3], [0.1, 0.9, 0.4, 0.4], [0.7, 0.2, 0.0, 1.0],
                        [0.93, 0.93, 0.93, 0.93], [0.5, 0.6, 0.5, 0.6]]),
}


@pytest.mark.parametrize("estimator, scale, batch_baseline", ADVANTAGE_CONFIGS)
@pytest.mark.parametrize("kind", sorted(REWARDS))
def test_advantages_match_the_reference(estimator, scale, batch_baseline, kind):
    rewards = REWARDS[kind].astype(np.float32)
    out = adv.compute_advantages(jnp.asarray(rewards), estimator, scale_rewards=scale,
                                 batch_baseline=batch_baseline)
    assert_close(out, ref_advantages(rewards, estimator, scale, batch_baseline))


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "rloo"])
@pytest.mark.parametrize("group_size", [3, 8, 64])
def test_a_group_of_equal_rewards_has_exactly_zero_advantage(estimator, group_size):
    # r_i − mean r = 0 exactly for equal rewards, whatever float32 makes of the mean of 64
    # copies of 0.93; the std division (std + 1e-6 with std ≈ 1e-8) must not inflate a
    # rounding error into a group-wide push. The last group keeps the batch std non-zero.
    values = [0.0, 1.0, 0.3, 0.93, 1 / 3, 0.7]
    rewards = np.stack([np.full(group_size, v) for v in values]
                       + [np.r_[1.0, np.zeros(group_size - 1)]])
    for scale in ("group", "batch", "none"):
        out = np.asarray(adv.compute_advantages(jnp.asarray(rewards, jnp.float32), estimator,
                                                scale_rewards=scale))
        assert np.all(out[:-1] == 0.0), (scale, out[:-1, 0])
        assert np.all(np.isfinite(out)) and np.all(out[-1] != 0.0)


def test_reinforce_batch_baseline_of_an_all_equal_batch_is_exactly_zero():
    out = adv.compute_advantages(jnp.full((3, 4), 0.3, jnp.float32), "reinforce",
                                 scale_rewards="batch", batch_baseline=True)
    assert np.all(np.asarray(out) == 0.0)


@pytest.mark.parametrize("estimator, scale, batch_baseline", [
    ("reinforce", "group", False), ("reinforce", "batch", False), ("reinforce", "group", True)])
def test_std_scaling_of_an_uncentred_signal_is_refused(estimator, scale, batch_baseline):
    # r / (std_group + 1e-6) on a group of equal rewards is r · 1e6: no defined meaning.
    with pytest.raises(ValueError, match=f"scale_rewards='{scale}'"):
        adv.compute_advantages(jnp.ones((2, 4)), estimator, scale_rewards=scale,
                               batch_baseline=batch_baseline)


def test_config_defaults_resolve_to_the_papers_choices():
    task = types.SimpleNamespace(max_target_len=9)
    expected = {  # estimator: (scale, aggregation)
        "grpo": ("group", "sequence-mean-token-mean"),  # GRPO Eq. 3
        "dr_grpo": ("none", "sequence-mean-token-sum-norm"),  # Dr.GRPO §3.2
        "rloo": ("none", "token-mean"), "reinforce": ("none", "token-mean")}
    for estimator, (scale, agg) in expected.items():
        c = RLConfig(task="t", advantage=estimator).resolved(task)
        assert (c.scale_rewards, c.loss_agg, c.max_new_tokens, c.max_tokens) == \
            (scale, agg, 9, 9)
        # compute_advantages' own default (scale_rewards=None) is the same one.
        r = jnp.asarray(REWARDS["graded"], jnp.float32)
        np.testing.assert_array_equal(adv.compute_advantages(r, estimator),
                                      adv.compute_advantages(r, estimator, scale_rewards=scale))


# =========================================================================== the loss
def test_the_inputs_cover_every_case():
    # The cross-check below is only as good as its inputs: both clip sides, the pessimistic
    # (unclipped) side of each bound, positive, negative and zero advantages, an immediate
    # <eos>, rows with no <eos>, and rows of every length in between.
    for seed in (0, 1000, 2000, 6660000):
        x = make_inputs(seed)
        a = np.broadcast_to(x.advantages[:, None], x.mask.shape)[x.mask]
        rho = np.exp(np.take_along_axis(np.apply_along_axis(_log_softmax, -1, x.logits),
                                        x.tokens[..., None], -1)[..., 0] - x.old_logp)[x.mask]
        lo, hi = 0.8, 1.2
        for case in (a > 0) & (rho > hi), (a < 0) & (rho < lo), (a > 0) & (rho < lo), \
                (a < 0) & (rho > hi), (a > 0) & (rho > lo) & (rho < hi), a == 0:
            assert case.sum() >= 2, seed
        assert set(x.lengths) == {1, 2, 3, 4, 5, 6}
        assert sum(EOS not in row for row in x.tokens) == 2


KL_TERMS = [(0.0, "k3"), (0.1, "k1"), (0.1, "k2"), (0.1, "k3"), (0.1, "exact")]


@pytest.mark.parametrize("loss_agg", AGGREGATIONS)
@pytest.mark.parametrize("kl_coef, kl_estimator", KL_TERMS)
def test_loss_and_gradient_match_the_reference(loss_agg, kl_coef, kl_estimator):
    x = make_inputs(0)
    for (eps_low, eps_high), entropy_coef in itertools.product(EPS_PAIRS, (0.0, 0.01)):
        kw = dict(eps_low=eps_low, eps_high=eps_high, kl_coef=kl_coef,
                  kl_estimator=kl_estimator, entropy_coef=entropy_coef, loss_agg=loss_agg,
                  max_tokens=8)
        loss, grad, low, high = library_loss(x, **kw)
        r_loss, r_grad, r_low, r_high = ref_policy_loss(
            x.logits, x.tokens, x.lengths, x.old_logp, x.advantages, x.ref_logits, **kw)
        assert_close(loss, r_loss)
        assert_close(grad, r_grad)
        np.testing.assert_array_equal(low & x.mask, r_low)
        np.testing.assert_array_equal(high & x.mask, r_high)


@pytest.mark.parametrize("seed", [1000, 2000, 6660000])
def test_loss_and_gradient_match_the_reference_on_other_draws(seed):
    x = make_inputs(seed)
    kw = dict(eps_low=0.2, eps_high=0.28, kl_coef=0.1, kl_estimator="k3", entropy_coef=0.01,
              loss_agg="sequence-mean-token-mean", max_tokens=6)
    loss, grad, _, _ = library_loss(x, **kw)
    r_loss, r_grad, _, _ = ref_policy_loss(x.logits, x.tokens, x.lengths, x.old_logp,
                                           x.advantages, x.ref_logits, **kw)
    assert_close(loss, r_loss)
    assert_close(grad, r_grad)


def test_the_reference_gradient_is_the_derivative_of_the_reference_loss():
    # Central differences in float64 on a small batch (ratios away from the clip bounds,
    # where the loss is smooth): the reference's analytic gradient is right to 1e-7.
    x = make_inputs(3)
    rows = slice(0, 3)
    sub = dict(tokens=x.tokens[rows], lengths=x.lengths[rows], old_logp=x.old_logp[rows],
               advantages=np.array([1.5, -0.7, 0.4]), ref_logits=x.ref_logits[rows])
    kw = dict(eps_low=0.2, eps_high=0.28, kl_coef=0.3, entropy_coef=0.05,
              loss_agg="sequence-mean-token-mean", max_tokens=6)
    z0 = x.logits[rows].astype(np.float64)
    for estimator in ("k2", "k3", "exact"):
        _, analytic, _, _ = ref_policy_loss(z0, **sub, kl_estimator=estimator, **kw)
        numeric, h = np.zeros_like(z0), 1e-6
        for idx in np.ndindex(z0.shape):
            dz = np.zeros_like(z0)
            dz[idx] = h
            up = ref_policy_loss(z0 + dz, **sub, kl_estimator=estimator, **kw)[0]
            down = ref_policy_loss(z0 - dz, **sub, kl_estimator=estimator, **kw)[0]
            numeric[idx] = (up - down) / (2 * h)
        np.testing.assert_allclose(analytic, numeric, atol=1e-7)


# =========================================================================== masking
def test_nothing_after_the_first_eos_reaches_the_loss_or_its_gradient():
    # Masked positions may hold anything: other tokens (even <eos>), any old log-prob, and
    # a policy whose log-probability of the padded token is 120 nats below the reference's
    # (k3 = e^120 there would overflow float32). Loss and gradient stay those of clean padding.
    x = make_inputs(0)
    dirty = types.SimpleNamespace(**vars(x))
    rng = np.random.default_rng(5)
    pad = ~x.mask
    dirty.tokens = np.where(pad, rng.integers(0, V, x.tokens.shape), x.tokens).astype(np.int32)
    dirty.old_logp = np.where(pad, rng.normal(0, 50, x.old_logp.shape), x.old_logp
                              ).astype(np.float32)
    spike = np.where(pad[..., None] & (np.arange(V) == dirty.tokens[..., None]), -120.0, 0.0)
    dirty.logits = (x.logits + spike).astype(np.float32)
    for loss_agg, estimator in itertools.product(AGGREGATIONS, ("k1", "k2", "k3", "exact")):
        kw = dict(eps_low=0.2, eps_high=0.28, kl_coef=0.1, kl_estimator=estimator,
                  entropy_coef=0.01, loss_agg=loss_agg, max_tokens=6)
        clean, clean_grad, _, _ = library_loss(x, **kw)
        loss, grad, low, high = library_loss(dirty, **kw)
        assert np.isfinite(loss) and np.all(np.isfinite(grad)), (loss_agg, estimator)
        assert_close(loss, clean)
        assert_close(grad[x.mask], clean_grad[x.mask])
        assert np.all(grad[pad] == 0.0)
        assert not np.any((low | high) & pad)


@pytest.mark.parametrize("loss_agg", AGGREGATIONS)
def test_empty_completions_are_defined(loss_agg):
    # The sampler always emits at least one token, but the loss must not divide by 0:
    # an all-empty batch has loss 0 and gradient 0; an empty row in a batch adds nothing
    # to the numerator (and still counts as one of the B rows in the per-sequence means).
    x = make_inputs(0)
    kw = dict(eps_low=0.2, eps_high=0.2, kl_coef=0.1, kl_estimator="k3", entropy_coef=0.01,
              loss_agg=loss_agg, max_tokens=6)
    empty = types.SimpleNamespace(**vars(x))
    empty.mask = np.zeros_like(x.mask)
    loss, grad, _, _ = library_loss(empty, **kw)
    assert loss == 0.0 and np.all(grad == 0.0)
    some = types.SimpleNamespace(**vars(x))
    some.lengths = x.lengths.copy()
    some.lengths[[0, 5]] = 0
    some.mask = np.arange(L)[None, :] < some.lengths[:, None]
    loss, grad, _, _ = library_loss(some, **kw)
    r_loss, r_grad, _, _ = ref_policy_loss(x.logits, x.tokens, some.lengths, x.old_logp,
                                           x.advantages, x.ref_logits, **kw)
    assert_close(loss, r_loss)
    assert_close(grad, r_grad)


# =========================================================================== edge cases
@pytest.mark.parametrize("eps_low, eps_high", [(0.0, 0.2), (0.2, 0.0), (0.0, 0.0), (0.2, 0.2)])
@pytest.mark.parametrize("loss_agg", AGGREGATIONS)
def test_on_policy_nothing_is_clipped_even_with_a_zero_bound(eps_low, eps_high, loss_agg):
    # First epoch: old log-probs are the current ones, ρ = 1 exactly. A ratio on a bound is
    # not clipped (the flags are strict), so the gradient is the plain policy gradient of
    # −Σ w_{i,t} Â_i log π(o_t) whatever ε is, 0 included: ε = 0 is a legal config value.
    x = make_inputs(0)
    tokens, mask = jnp.asarray(x.tokens), jnp.asarray(x.mask)
    a = jnp.asarray(x.advantages)
    def clipped(z):
        # old from the same traced z, so ρ = 1 bitwise (an eager copy may differ by an ulp)
        old = jax.lax.stop_gradient(obj.token_logprobs(z, tokens))
        return obj.policy_loss(z, tokens, mask, old, a, None, eps_low=eps_low,
                               eps_high=eps_high, kl_coef=0.0, kl_estimator="k3",
                               entropy_coef=0.0, loss_agg=loss_agg, max_tokens=6)[0]

    def plain(z):
        return obj.aggregate(-a[:, None] * obj.token_logprobs(z, tokens), mask, loss_agg, 6)

    z = jnp.asarray(x.logits)
    assert_close(jax.grad(clipped)(z), jax.grad(plain)(z))
    old = obj.token_logprobs(z, tokens)
    _, aux = obj.policy_loss(z, tokens, mask, old, a, None, eps_low=eps_low, eps_high=eps_high,
                             kl_coef=0.0, kl_estimator="k3", entropy_coef=0.0,
                             loss_agg=loss_agg, max_tokens=6)
    assert not np.any(np.asarray(aux["clipped_low"] | aux["clipped_high"]))


def test_a_huge_eps_high_never_clips_high_and_eps_low_zero_clips_every_negative_below_one():
    x = make_inputs(0)
    _, _, low, high = library_loss(x, eps_low=0.0, eps_high=1e6, kl_coef=0.0,
                                   kl_estimator="k3", entropy_coef=0.0, loss_agg="token-mean",
                                   max_tokens=6)
    rho = np.exp(np.take_along_axis(np.apply_along_axis(_log_softmax, -1, x.logits),
                                    x.tokens[..., None], -1)[..., 0] - x.old_logp)
    a = np.broadcast_to(x.advantages[:, None], rho.shape)
    assert not np.any(high)
    np.testing.assert_array_equal(low & x.mask, (a < 0) & (rho < 1) & x.mask)


@pytest.mark.parametrize("loss_agg", AGGREGATIONS)
def test_kl_coef_zero_ignores_the_reference_and_positive_adds_beta_kl(loss_agg):
    x = make_inputs(0)
    common = dict(eps_low=0.2, eps_high=0.28, entropy_coef=0.0, loss_agg=loss_agg, max_tokens=6)
    without, g_without, _, _ = library_loss(x, kl_coef=0.0, kl_estimator="k3", **common)
    no_ref = obj.policy_loss(jnp.asarray(x.logits), jnp.asarray(x.tokens), jnp.asarray(x.mask),
                             jnp.asarray(x.old_logp), jnp.asarray(x.advantages), None,
                             kl_coef=0.0, kl_estimator="k3", **common)[0]
    assert float(no_ref) == without
    other_ref = types.SimpleNamespace(**vars(x))
    other_ref.ref_logits = -x.ref_logits
    assert library_loss(other_ref, kl_coef=0.0, kl_estimator="k3", **common)[0] == without
    for estimator in ("k1", "k2", "k3", "exact"):
        beta = 0.5
        with_kl = library_loss(x, kl_coef=beta, kl_estimator=estimator, **common)[0]
        kl_only = ref_policy_loss(x.logits, x.tokens, x.lengths, x.old_logp,
                                  np.zeros(N_ROWS), x.ref_logits, eps_low=0.2, eps_high=0.28,
                                  kl_coef=1.0, kl_estimator=estimator, entropy_coef=0.0,
                                  loss_agg=loss_agg, max_tokens=6)[0]
        assert_close(with_kl - without, beta * kl_only)


def test_the_on_policy_grpo_loss_is_zero_only_where_docs_metrics_md_says():
    # docs/metrics.md: at ρ = 1 with group-centred advantages the loss is −(1/B) Σ_i A_i = 0
    # under sequence-mean-token-mean whatever the lengths; under token-mean and the Dr.GRPO
    # normaliser it is −Σ_i |o_i| A_i / (Σ_i |o_i| or B·MAX), not 0 for unequal lengths.
    x = make_inputs(0)
    a, lengths = x.advantages.astype(np.float64), x.lengths
    assert np.all(np.abs(a.reshape(N_PROMPTS, GROUP).sum(1)) < 1e-6)
    expected = {"sequence-mean-token-mean": 0.0,
                "token-mean": -np.sum(lengths * a) / lengths.sum(),
                "sequence-mean-token-sum-norm": -np.sum(lengths * a) / (N_ROWS * 8)}
    tokens, mask = jnp.asarray(x.tokens), jnp.asarray(x.mask)
    old = obj.token_logprobs(jnp.asarray(x.logits), tokens)
    for loss_agg, value in expected.items():
        loss = obj.policy_loss(jnp.asarray(x.logits), tokens, mask, old, jnp.asarray(x.advantages),
                               None, eps_low=0.2, eps_high=0.2, kl_coef=0.0, kl_estimator="k3",
                               entropy_coef=0.0, loss_agg=loss_agg, max_tokens=8)[0]
        assert_close(float(loss), value)
    assert abs(expected["token-mean"]) > 0.05 and abs(expected["sequence-mean-token-sum-norm"]) \
        > 0.05


def test_what_each_kl_estimator_does_to_the_gradient():
    # As a loss term differentiated through log π(o), with o ~ π at one position, the
    # estimators' expected gradients are (our derivation; the pitfall Tang & Munos 2025,
    # arXiv 2506.09477, point out):
    #   k1: E[∇ log π(o)] = 0                                   (no regularisation at all)
    #   k2: E[x ∇ log π(o)] = ∇ KL(π ‖ π_ref)                  (the intended gradient)
    #   k3: E[(1 − π_ref/π) ∇ log π(o)] = −Σ_o π_ref ∇ log π = ∇ KL(π_ref ‖ π)  (reversed KL)
    # and 'exact' is ∇ KL(π ‖ π_ref) itself. The expectation is the exact sum over V tokens.
    rng = np.random.default_rng(0)
    z, z_ref = (jnp.asarray(rng.normal(0, 1, 5), jnp.float32) for _ in range(2))

    @jax.jit  # one compilation instead of many eager jacobians
    def gradients(z, z_ref):
        pi = jax.nn.softmax(z)
        out = {}
        for name, estimator in obj.KL_ESTIMATORS.items():
            def every_token(zz, estimator=estimator):  # the estimate for each token o
                return estimator(jax.nn.log_softmax(zz), jax.nn.log_softmax(z_ref))
            out[name] = pi @ jax.jacrev(every_token)(z)  # Σ_o π(o) ∇_z estimate(o)
        out["forward"] = jax.grad(lambda zz: obj.kl_exact(zz, z_ref))(z)  # ∇ KL(π ‖ π_ref)
        out["reverse"] = jax.grad(lambda zz: obj.kl_exact(z_ref, zz))(z)  # ∇ KL(π_ref ‖ π)
        return out

    g = gradients(z, z_ref)
    forward, reverse = g["forward"], g["reverse"]
    assert_close(g["k1"], np.zeros(5))
    assert_close(g["k2"], forward)
    assert_close(g["k3"], reverse)
    assert float(jnp.abs(forward - reverse).max()) > 1e-2  # the two really differ here


# =========================================================================== config
@pytest.mark.parametrize("field, value", [
    ("eps_low", 1.0),  # a lower bound 1 − ε_low = 0 < ρ would never bind: range [0, 1)
    ("eps_low", -0.1), ("eps_high", -0.1), ("eps_high", float("inf")), ("eps_low", float("nan")),
    ("kl_coef", -0.1), ("entropy_coef", -0.01), ("kl_estimator", "k4"),
    ("loss_agg", "seq-mean"), ("scale_rewards", "global"), ("max_tokens", 0),
    ("batch_baseline", True),  # with the default advantage 'grpo': reinforce only
    ("group_size", 1),  # a group of one has a zero group-relative advantage
])
def test_config_refuses(field, value):
    with pytest.raises(ValueError, match=f"RLConfig.{field}="):
        RLConfig(task="t", **{field: value})


@pytest.mark.parametrize("estimator, scale, batch_baseline", [
    ("reinforce", "group", False), ("reinforce", "batch", False), ("reinforce", "group", True)])
def test_config_refuses_std_scaling_of_an_uncentred_signal(estimator, scale, batch_baseline):
    assert not adv.scaling_is_centred(estimator, scale, batch_baseline)
    with pytest.raises(ValueError, match="RLConfig.scale_rewards="):
        RLConfig(task="t", advantage=estimator, scale_rewards=scale,
                 batch_baseline=batch_baseline)


@pytest.mark.parametrize("kwargs", [
    dict(eps_low=0.0), dict(eps_high=1e6), dict(eps_low=0.2, eps_high=0.28), dict(kl_coef=0.0),
    dict(advantage="reinforce", group_size=1), dict(advantage="reinforce", batch_baseline=True),
    dict(advantage="rloo", scale_rewards="group"), dict(advantage="grpo", scale_rewards="none"),
])
def test_config_accepts(kwargs):
    RLConfig(task="t", **kwargs)
