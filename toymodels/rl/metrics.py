"""Per-step RL metrics as pure functions (definitions in docs/metrics.md)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    m = mask.astype(jnp.float32)
    return jnp.sum(x * m) / jnp.maximum(jnp.sum(m), 1.0)


def token_logp_advantage_cov(logp: jax.Array, advantages: jax.Array,
                             mask: jax.Array) -> jax.Array:
    """Token-level covariance between log-prob and advantage over the batch's completion
    tokens (Cui et al. 2025, arXiv 2505.22617, Eq. 10 averaged over tokens; the natural
    policy gradient form of their Theorem 2):

        Cov = mean_t (log π(y_t) - mean log π)(A_t - mean A),   A_t = A_i of the sequence.

    Positive covariance predicts falling entropy.
    """
    a = jnp.broadcast_to(advantages[:, None], logp.shape)
    dl = logp - masked_mean(logp, mask)
    da = a - masked_mean(a, mask)
    return masked_mean(dl * da, mask)


def frac_zero_std(grouped_rewards: jax.Array) -> jax.Array:
    """Fraction of groups (rows of float32[P, G]) whose rewards are all equal: their
    group-centred advantages are 0, so they contribute no policy gradient."""
    return jnp.mean(jnp.all(grouped_rewards == grouped_rewards[:, :1], axis=1))


def mean_where(x: jax.Array, where: jax.Array) -> jax.Array:
    """Mean of x over ``where``; NaN if ``where`` is empty (no such completion this step)."""
    n = jnp.sum(where)
    return jnp.where(n > 0, jnp.sum(jnp.where(where, x, 0.0)) / jnp.maximum(n, 1), jnp.nan)


def pass_at_k_unbiased(n: int, c: jax.Array, k: int) -> jax.Array:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021, arXiv
    2107.03374, Eq. 1): 1 - C(n - c, k) / C(n, k), and 1 when n - c < k.

    Computed as Chen et al.'s product C(n-c, k)/C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i)
    (``theory.passk.pass_at_k_unbiased`` is the float64 reference): exactly 0 at c = 0 and
    within [0, 1], which a difference of log-gammas in float32 is not (-4.8e-7 at c = 0)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per prompt, got {n}")
    c = jnp.asarray(c, jnp.float32)[..., None]
    i = jnp.arange(1, n + 1, dtype=jnp.float32)  # the factor for i enters iff i > n - c
    ratio = jnp.prod(jnp.where(i > n - c, 1.0 - k / i, 1.0), axis=-1)
    return jnp.where(n - c[..., 0] < k, 1.0, 1.0 - ratio)
