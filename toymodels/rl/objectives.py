"""The pieces of the RL loss, each a pure function of log-probs, masks and advantages.

Shapes: ``[B, L]`` per completion token (B completions of up to L tokens), ``mask`` bool[B, L]
True on the completion tokens that count (up to and including the first ``<eos>``).
All per-token terms are *losses* (to be minimised); :func:`aggregate` reduces them.

Total per-token loss (GRPO, Shao et al. 2024, arXiv 2402.03300, Eq. 3, with the DAPO
asymmetric clip of Yu et al. 2025, arXiv 2503.14476, Eq. 10, and an entropy bonus):

    l_{i,t} = -min(ρ_{i,t} Â_i, clip(ρ_{i,t}, 1 - ε_low, 1 + ε_high) Â_i)
              + β · KL_{i,t} - c_H · H_{i,t}

with ρ = π_θ(o_t | ·) / π_old(o_t | ·).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


# --------------------------------------------------------------------------- surrogate
def clipped_surrogate(logp: jax.Array, old_logp: jax.Array, advantages: jax.Array,
                      eps_low: float, eps_high: float):
    """PPO clipped surrogate with separate bounds (Schulman et al. 2017, arXiv 1707.06347,
    Eq. 7; asymmetric "clip-higher": Yu et al. 2025, DAPO, arXiv 2503.14476, Eq. 10).

        l_t = -min(ρ_t A_t, clip(ρ_t, 1 - eps_low, 1 + eps_high) A_t),  ρ_t = exp(logp - old)

    ``advantages`` broadcasts against ``logp`` (pass A[:, None] for sequence advantages).
    Returns ``(loss float32[B, L], clipped_low bool[B, L], clipped_high bool[B, L])`` where
    a token is *clipped low* when A < 0 and ρ < 1 - eps_low and *clipped high* when A > 0
    and ρ > 1 + eps_high: the cases where the clipped branch is the minimum and the token's
    gradient is zero (TRL's ``clip_ratio/low_mean`` and ``clip_ratio/high_mean``).

    On the clipped tokens the minimum is the clipped branch, a constant (1 ∓ ε)·A; on every
    other token it is ρA (both branches are equal inside the range, and outside it on the
    pessimistic side the unclipped one is smaller). The loss is written that way, with
    ``where`` on the flags, so that a ratio exactly on a bound (ρ = 1 on-policy with
    ``eps_low = 0`` or ``eps_high = 0``) gets the unclipped gradient -ρA the flags report:
    ``jnp.minimum`` and ``jnp.clip`` split the gradient of a tie in halves (the former
    ``-minimum(ρA, clip(ρ)A)`` gave -0.75·ρA at ρ = 1 with ``eps_low = 0``). This concerns
    exact ties only. In the engine the first epoch's ρ is 1 only to float precision (the
    sampler's KV-cache log-probs differ from the training forward's by about 1e-7), so with a
    zero bound a float-noise share of tokens is clipped (measured on parity, P = G = 16,
    eps_low = 0: 0.2-1.6 % of tokens per step, against 0 at eps_low = 0.2).
    """
    ratio = jnp.exp(logp - old_logp)
    clipped_low = (ratio < 1.0 - eps_low) & (advantages < 0)
    clipped_high = (ratio > 1.0 + eps_high) & (advantages > 0)
    bound = jax.lax.stop_gradient(jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high))
    loss = -jnp.where(clipped_low | clipped_high, bound * advantages, ratio * advantages)
    return loss, clipped_low, clipped_high


# --------------------------------------------------------------------------- KL
def kl_k1(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    """k1 = log π(o) - log π_ref(o): unbiased for KL(π ‖ π_ref) under o ~ π, high variance,
    can be negative (Schulman 2020, "Approximating KL divergence", joschu.net/blog/kl-approx)."""
    return logp - ref_logp


def kl_k2(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    """k2 = ½ (log π(o) - log π_ref(o))²: biased, low variance, ≥ 0 (Schulman 2020, same
    note; its expectation is KL to second order in the log-ratio)."""
    return 0.5 * jnp.square(logp - ref_logp)


def kl_k3(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    """k3 = π_ref/π - 1 - log(π_ref/π): unbiased, ≥ 0, low variance (Schulman 2020; the KL
    term of GRPO, Shao et al. 2024, arXiv 2402.03300, Eq. 4)."""
    log_ratio = ref_logp - logp
    return jnp.expm1(log_ratio) - log_ratio


def kl_exact(logits: jax.Array, ref_logits: jax.Array) -> jax.Array:
    """Exact per-position KL(π ‖ π_ref) = Σ_v π(v) (log π(v) - log π_ref(v)) over the whole
    vocabulary (the quantity k1, k2, k3 estimate from one sample). logits: [..., V]."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    ref = jax.nn.log_softmax(ref_logits, axis=-1)
    return jnp.sum(jnp.exp(logp) * (logp - ref), axis=-1)


# As *loss terms* (GRPO's use, Eq. 3), differentiated through log π(o) of a token o ~ π, the
# estimators' expected gradients are not all ∇KL(π ‖ π_ref) (our derivation, checked exactly in
# tests/test_rl_crosscheck.py::test_what_each_kl_estimator_does_to_the_gradient; the pitfall
# Tang & Munos 2025, arXiv 2506.09477, point out):
#   k1: E[∇ log π(o)] = 0: no regularisation in expectation, only noise;
#   k2: E[(log π(o) - log π_ref(o)) ∇ log π(o)] = ∇ KL(π ‖ π_ref);
#   k3: E[(1 - π_ref(o)/π(o)) ∇ log π(o)] = -Σ_o π_ref(o) ∇ log π(o) = ∇ KL(π_ref ‖ π);
#   exact: ∇ KL(π ‖ π_ref).
# Each is per position: how earlier tokens change the later positions' distributions is not
# differentiated (the sequence-level KL's remaining terms).
KL_ESTIMATORS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "k1": kl_k1, "k2": kl_k2, "k3": kl_k3,
}
KL_NAMES = ("k1", "k2", "k3", "exact")


# --------------------------------------------------------------------------- entropy
def entropy_from_logits(logits: jax.Array) -> jax.Array:
    """Per-position policy entropy H = -Σ_v π(v) log π(v) (nats). logits: [..., V]."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def token_logprobs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """log π(tokens) from logits [..., V] and int tokens [...]."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]


# --------------------------------------------------------------------------- aggregation
def token_mean(loss: jax.Array, mask: jax.Array, max_tokens: int) -> jax.Array:
    """token-mean: Σ_{i,t} l_{i,t} m_{i,t} / Σ_{i,t} m_{i,t} (verl ``agg_loss`` and tunix
    ``aggregate_loss`` "token-mean"; DAPO, arXiv 2503.14476, Eq. 12). Per-token weight
    A / (total tokens in the batch)."""
    m = mask.astype(loss.dtype)
    return jnp.sum(loss * m) / jnp.maximum(jnp.sum(m), 1.0)


def sequence_mean_token_mean(loss: jax.Array, mask: jax.Array, max_tokens: int) -> jax.Array:
    """sequence-mean-token-mean: (1/B) Σ_i (Σ_t l_{i,t} m_{i,t} / Σ_t m_{i,t}) (GRPO's
    1/|o_i| normalisation, Shao et al. 2024, arXiv 2402.03300, Eq. 3; verl
    "seq-mean-token-mean", tunix "sequence-mean-token-mean"). Per-token weight A_i / (B |o_i|):
    the response-level length bias of Liu et al. 2025, arXiv 2503.20783, §3.1."""
    m = mask.astype(loss.dtype)
    per_seq = jnp.sum(loss * m, axis=-1) / jnp.maximum(jnp.sum(m, axis=-1), 1.0)
    return jnp.mean(per_seq)


def sequence_mean_token_sum_norm(loss: jax.Array, mask: jax.Array,
                                 max_tokens: int) -> jax.Array:
    """sequence-mean-token-sum-norm: Σ_{i,t} l_{i,t} m_{i,t} / (B · max_tokens), the Dr.GRPO
    aggregation (Liu et al. 2025, arXiv 2503.20783, §3.2 and Listing 1: masked sum divided by
    the constant MAX_TOKENS per response, then the batch mean). Per-token weight
    A_i / (B · max_tokens), independent of |o_i|.

    Conventions differ by a constant: tunix's "sequence-mean-token-sum-norm" divides the
    masked sum by a user ``norm`` (default the number of non-empty rows); current verl's
    "seq-mean-token-sum-norm" divides by the padded response length only. Ours is tunix's
    with norm = B · max_tokens, which equals Dr.GRPO's official code.
    """
    m = mask.astype(loss.dtype)
    return jnp.sum(loss * m) / (loss.shape[0] * max_tokens)


LOSS_AGGREGATIONS: dict[str, Callable[[jax.Array, jax.Array, int], jax.Array]] = {
    "token-mean": token_mean,
    "sequence-mean-token-mean": sequence_mean_token_mean,
    "sequence-mean-token-sum-norm": sequence_mean_token_sum_norm,
}
# The aggregation each advantage estimator uses when the config leaves ``loss_agg`` unset.
DEFAULT_LOSS_AGG = {"grpo": "sequence-mean-token-mean", "dr_grpo": "sequence-mean-token-sum-norm",
                    "rloo": "token-mean", "reinforce": "token-mean"}


def register_loss_aggregation(name: str):
    def decorator(fn):
        if name in LOSS_AGGREGATIONS:
            raise ValueError(f"loss aggregation {name!r} registered twice")
        LOSS_AGGREGATIONS[name] = fn
        return fn

    return decorator


def aggregate(loss: jax.Array, mask: jax.Array, mode: str, max_tokens: int) -> jax.Array:
    """Reduce a per-token loss [B, L] to a scalar with the named aggregation."""
    if mode not in LOSS_AGGREGATIONS:
        raise ValueError(f"loss_agg={mode!r} is not allowed: one of {sorted(LOSS_AGGREGATIONS)}")
    return LOSS_AGGREGATIONS[mode](loss, mask, max_tokens)


# --------------------------------------------------------------------------- total
def policy_loss(logits: jax.Array, tokens: jax.Array, mask: jax.Array, old_logp: jax.Array,
                advantages: jax.Array, ref_logits: jax.Array | None, *, eps_low: float,
                eps_high: float, kl_coef: float, kl_estimator: str, entropy_coef: float,
                loss_agg: str, max_tokens: int):
    """Scalar loss and per-token diagnostics for one minibatch.

    logits float32[B, L, V] are the current policy's at the completion positions (the logits
    that *predict* ``tokens``); ``advantages`` float32[B] (one per completion, outcome reward).
    Loss = aggregate(l_surrogate + kl_coef · KL - entropy_coef · H) with the module-docstring
    equation. Returns ``(loss, aux)`` with aux holding per-token arrays for metrics.
    """
    logp = token_logprobs(logits, tokens)
    # After the first <eos> (mask False) every log-probability is read as 0, so that nothing
    # there (an old log-prob of any size, a padded token 100 nats less likely than under the
    # reference, whose k3 = e^100 overflows) can reach the loss or its gradient. The 0 weight
    # of the aggregation alone does not do it: 0 · inf = NaN, in the value and the gradient.
    def live(x):
        return jnp.where(mask, x, 0.0)

    surrogate, clipped_low, clipped_high = clipped_surrogate(
        live(logp), live(old_logp), advantages[:, None], eps_low, eps_high)
    per_token = surrogate
    entropy = entropy_from_logits(logits)
    if entropy_coef:
        per_token = per_token - entropy_coef * entropy
    kl = jnp.zeros_like(logp)
    if ref_logits is not None:
        ref_logp = token_logprobs(ref_logits, tokens)
        if kl_estimator == "exact":
            kl = kl_exact(logits, ref_logits)
        else:
            kl = KL_ESTIMATORS[kl_estimator](live(logp), live(ref_logp))
        if kl_coef:
            per_token = per_token + kl_coef * kl
    loss = aggregate(per_token, mask, loss_agg, max_tokens)
    aux = {"logp": logp, "surrogate": surrogate, "clipped_low": clipped_low,
           "clipped_high": clipped_high, "entropy": entropy, "kl": kl,
           "ratio": jnp.exp(live(logp) - live(old_logp))}
    return loss, aux
