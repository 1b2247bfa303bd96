"""The transformer's parts as Flax NNX modules, each with the one code path used by the
teacher-forced forward, the sampler's prefill and its one-token decode step.

A block is pre-norm (or norm-free):
    resid_mid  = resid_pre + Attn(LN1(resid_pre))
    resid_post = resid_mid + MLP(LN2(resid_mid))          (no MLP when d_mlp = 0)
    Attn(x)    = sum_h softmax(q_h k_h^T / sqrt(E) + mask) v_h W_O[h] + b_O
    MLP(x)     = gelu(x W_in + b_in) W_out + b_out
with q, k, v from one fused projection ``x W_QKV + b_QKV`` (W_QKV: [D, 3, H, E]).

KV cache: when ``cache=(k_cache, v_cache)`` ([B, H, S, E] each, head-major) is given, this
call's keys and values are written at columns ``cache_index .. cache_index + T - 1`` with
``lax.dynamic_update_slice`` and the queries attend to all S cache columns (the mask
hides the ones not yet written); the updated cache is returned.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from toymodels.config import ModelConfig
from toymodels.hooks import Sites

LN_EPS = 1e-5
ROPE_BASE = 10_000.0
# Masked attention scores: finite, so a row whose keys are all masked cannot give NaN.
MASKED_SCORE = -1e30


def _normal(rngs: nnx.Rngs, shape, scale: float) -> nnx.Param:
    return nnx.Param(scale * jax.random.normal(rngs.params(), shape, jnp.float32))


def _zeros(shape) -> nnx.Param:
    return nnx.Param(jnp.zeros(shape, jnp.float32))


class LayerNorm(nnx.Module):
    """LN(x) = (x - mean(x)) / sqrt(var(x) + 1e-5) * scale + bias, over the last axis."""

    def __init__(self, width: int):
        self.scale = nnx.Param(jnp.ones((width,), jnp.float32))
        self.bias = _zeros((width,))

    def __call__(self, x: jax.Array) -> jax.Array:
        mean = x.mean(-1, keepdims=True)
        centred = x - mean
        var = (centred * centred).mean(-1, keepdims=True)
        return centred * jax.lax.rsqrt(var + LN_EPS) * self.scale[...] + self.bias[...]


def rotary_tables(positions: jax.Array, head_dim: int) -> tuple[jax.Array, jax.Array]:
    """cos, sin of angle ``pos * ROPE_BASE^(-2i/E)``, shaped [B, T, 1, E/2] for the heads."""
    inv_freq = ROPE_BASE ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    return jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]


def apply_rotary(x: jax.Array, tables: tuple[jax.Array, jax.Array]) -> jax.Array:
    """Rotate-half RoPE: pairs (x_i, x_{i+E/2}) rotated by their angle."""
    cos, sin = tables
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


class Attention(nnx.Module):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d, h, e = config.d_model, config.n_heads, config.head_dim
        self.W_QKV = _normal(rngs, (d, 3, h, e), config.init_scale)
        self.b_QKV = _zeros((3, h, e))
        self.W_O = _normal(rngs, (h, e, d), config.init_scale)
        self.b_O = _zeros((d,))

    def __call__(self, x, mask, sites: Sites, prefix: str, rotary=None, cache=None,
                 cache_index=None):
        """x [B, T, D]; mask bool [B or 1, 1, T, S] (True = may attend); returns
        (out [B, T, D], updated cache or None)."""
        b, t, d = x.shape
        w = self.W_QKV[...]
        _, _, h, e = w.shape
        qkv = (x.reshape(b * t, d) @ w.reshape(d, 3 * h * e)).reshape(b, t, 3, h, e)
        qkv = qkv + self.b_QKV[...]
        q = sites(f"{prefix}.q", qkv[:, :, 0])
        k = sites(f"{prefix}.k", qkv[:, :, 1])
        v = sites(f"{prefix}.v", qkv[:, :, 2])
        if rotary is not None:
            q, k = apply_rotary(q, rotary), apply_rotary(k, rotary)
        # Keys and values head-major, [B, H, S, E]: the layout the batched matmuls read
        # without a transpose (a [B, S, H, E] cache was transposed whole at every step).
        k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
        if cache is not None:
            k_cache, v_cache = cache
            k = jax.lax.dynamic_update_slice(k_cache, k, (0, 0, cache_index, 0))
            v = jax.lax.dynamic_update_slice(v_cache, v, (0, 0, cache_index, 0))
            cache = (k, v)
        scores = jnp.einsum("bqhe,bhke->bhqk", q, k) * (e ** -0.5)
        scores = jnp.where(mask, scores, MASKED_SCORE)
        pattern = sites(f"{prefix}.pattern", jax.nn.softmax(scores, axis=-1))
        z = sites(f"{prefix}.z", jnp.einsum("bhqk,bhke->bqhe", pattern, v))
        out = (z.reshape(b * t, h * e) @ self.W_O[...].reshape(h * e, d)).reshape(b, t, d)
        return sites(f"{prefix}.out", out + self.b_O[...]), cache


class MLP(nnx.Module):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d, m = config.d_model, config.d_mlp
        self.W_in = _normal(rngs, (d, m), config.init_scale)
        self.b_in = _zeros((m,))
        self.W_out = _normal(rngs, (m, d), config.init_scale)
        self.b_out = _zeros((d,))

    def __call__(self, x, sites: Sites, prefix: str):
        pre = sites(f"{prefix}.pre", x @ self.W_in[...] + self.b_in[...])
        post = sites(f"{prefix}.post", jax.nn.gelu(pre))
        return post @ self.W_out[...] + self.b_out[...]


class Block(nnx.Module):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        pre = config.norm == "pre"
        self.ln1 = LayerNorm(config.d_model) if pre else None
        self.attn = Attention(config, rngs=rngs)
        self.ln2 = LayerNorm(config.d_model) if pre and config.has_mlp else None
        self.mlp = MLP(config, rngs=rngs) if config.has_mlp else None

    def __call__(self, x, mask, sites: Sites, prefix: str, rotary=None, cache=None,
                 cache_index=None):
        x = sites(f"{prefix}.resid_pre", x)
        h = self.ln1(x) if self.ln1 is not None else x
        attn_out, cache = self.attn(h, mask, sites, f"{prefix}.attn", rotary, cache,
                                    cache_index)
        x = sites(f"{prefix}.resid_mid", x + attn_out)
        if self.mlp is not None:
            h = self.ln2(x) if self.ln2 is not None else x
            x = x + self.mlp(h, sites, f"{prefix}.mlp")
        return sites(f"{prefix}.resid_post", x), cache
