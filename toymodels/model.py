"""The decoder-only transformer and its one forward function.

``init(config, key) -> (graphdef, params)`` splits the NNX module at the boundary; every
caller works on ``params`` (an ``nnx.State`` pytree) with plain ``jax.jit``/``vmap``/``scan``.

``forward`` serves training, interpretability and (through ``Transformer.__call__`` with a
KV cache) the sampler, so the three never disagree. Padding is on the LEFT; with
``valid`` given, position ids are ``p_t = max(cumsum(valid)_t - 1, 0)`` and query t may
attend key s iff ``s <= t and (valid_s or s == t)``: pad keys are invisible to real tokens,
so a left-padded row has the logits of its unpadded self at the real positions (a pad query
attends only to itself, which keeps its softmax well defined).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from toymodels.config import ModelConfig
from toymodels.hooks import (  # noqa: F401  (Intervention, site_names: re-exported)
    Intervention,
    Sites,
    check_interventions,
    resolve_capture,
    site_names,
)
from toymodels.layers import Block, LayerNorm, _normal, _zeros, rotary_tables


class Transformer(nnx.Module):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        d, v = config.d_model, config.vocab_size
        self.embed = _normal(rngs, (v, d), config.init_scale)
        learned = config.pos_enc == "learned"
        self.pos_embed = _normal(rngs, (config.max_len, d), config.init_scale) if learned else None
        self.blocks = nnx.List([Block(config, rngs=rngs) for _ in range(config.n_layers)])
        self.ln_final = LayerNorm(d) if config.norm == "pre" else None
        self.W_U = None if config.tied_embed else _normal(rngs, (d, v), config.init_scale)
        self.b_U = _zeros((v,))

    def __call__(self, tokens, positions, mask, sites: Sites, caches=None, cache_index=None,
                 last_only=False):
        """tokens int[B, T], positions int[B, T], mask bool[B or 1, 1, T, S].

        caches: None or a tuple with one (k, v) pair per layer (see ``layers``); returns
        (logits [B, T, V] (or [B, 1, V] with ``last_only``), updated caches or None).
        """
        table = self.embed[...]
        x = sites("embed", _embed_tokens(table, tokens))
        if self.pos_embed is not None:
            x = x + sites("pos_embed", jnp.take(self.pos_embed[...], positions, axis=0))
        rotary = None
        if self.config.pos_enc == "rope":
            rotary = rotary_tables(positions, self.config.head_dim)
        new_caches = []
        for l, block in enumerate(self.blocks):
            cache = None if caches is None else caches[l]
            x, cache = block(x, mask, sites, f"blocks.{l}", rotary, cache, cache_index)
            new_caches.append(cache)
        if last_only:
            x = x[:, -1:]
        if self.ln_final is not None:
            x = sites("ln_final", self.ln_final(x))
        w_u = table.T if self.W_U is None else self.W_U[...]
        logits = sites("logits", x @ w_u + self.b_U[...])
        return logits, (None if caches is None else tuple(new_caches))


def _embed_tokens(table: jax.Array, tokens: jax.Array) -> jax.Array:
    """Rows of the embedding. An out-of-range id is an error when ``tokens`` is concrete
    (``_check_tokens``); under jit, where nothing can raise, it embeds as NaN, so that row's
    logits are all NaN (other rows are untouched) rather than silently another token's."""
    return jnp.take(table, tokens, axis=0, mode="fill", fill_value=jnp.nan)


def init(config: ModelConfig, key: jax.Array):
    """A freshly initialised model as ``(graphdef, params)`` (weights ~ N(0, init_scale^2),
    biases 0, LayerNorm scales 1). Same key, same params."""
    if not isinstance(config, ModelConfig):
        raise ValueError(f"init: config must be a ModelConfig, got {type(config).__name__}")
    model = Transformer(config, rngs=nnx.Rngs(params=key))
    return nnx.split(model)


def attention_mask(query_cols: jax.Array, key_valid: jax.Array | None, n_keys: int):
    """bool[B or 1, 1, Tq, S]: query at column q sees key column s iff s <= q and (the key
    is valid or s == q). ``key_valid`` bool[B, S] or None (all valid)."""
    key_cols = jnp.arange(n_keys)
    causal = key_cols[None, :] <= query_cols[:, None]
    if key_valid is None:
        return causal[None, None]
    own = key_cols[None, :] == query_cols[:, None]
    return causal[None, None] & (key_valid[:, None, None, :] | own[None, None])


def positions_from_valid(valid: jax.Array) -> jax.Array:
    """Position ids for left padding: ``max(cumsum(valid) - 1, 0)``."""
    return jnp.maximum(jnp.cumsum(valid.astype(jnp.int32), axis=1) - 1, 0)


def _check_tokens(config: ModelConfig, tokens, valid) -> None:
    if getattr(tokens, "ndim", None) != 2:
        raise ValueError(f"tokens must be an int array [batch, time], got shape "
                         f"{getattr(tokens, 'shape', type(tokens).__name__)}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"tokens must have an integer dtype, got {tokens.dtype}")
    if not isinstance(tokens, jax.core.Tracer):
        t = np.asarray(tokens)
        if t.size and (t.min() < 0 or t.max() >= config.vocab_size):
            raise ValueError(f"tokens: ids must lie in [0, {config.vocab_size}) (vocab_size); "
                             f"got min {t.min()}, max {t.max()}")
    if not 1 <= tokens.shape[1] <= config.max_len:
        raise ValueError(f"tokens: length {tokens.shape[1]} must be in [1, max_len="
                         f"{config.max_len}]")
    if valid is not None and getattr(valid, "shape", None) != tokens.shape:
        raise ValueError(f"valid must have the shape of tokens {tokens.shape}, got "
                         f"{getattr(valid, 'shape', type(valid).__name__)}")


def forward(graphdef, params, tokens, *, valid=None, capture=(), interventions=None):
    """Teacher-forced logits and the captured activations.

    tokens int[B, T]; valid bool[B, T] or None (all tokens real); capture: tuple of site
    names or fnmatch patterns (see ``toymodels.hooks.site_names``); interventions: None or
    ``{site_name: Intervention}``. Returns (logits float32[B, T, V], {name: array}).
    Under ``jax.jit`` pass ``graphdef`` and ``capture`` as static arguments: the same
    capture tuple then reuses the compiled function.
    """
    model = nnx.merge(graphdef, params)
    config = model.config
    _check_tokens(config, tokens, valid)
    check_interventions(config, interventions)
    sites = Sites(resolve_capture(config, capture), interventions)
    b, t = tokens.shape
    if valid is None:
        positions = jnp.broadcast_to(jnp.arange(t), (b, t))
    else:
        valid = jnp.asarray(valid, bool)
        positions = positions_from_valid(valid)
    mask = attention_mask(jnp.arange(t), valid, t)
    logits, _ = model(tokens, positions, mask, sites)
    return logits, sites.captured
