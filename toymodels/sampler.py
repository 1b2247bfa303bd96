"""Jitted KV-cache generation: one prefill over the (left-padded) prompts, then a
``lax.scan`` of one-token decode steps through the same blocks as ``model.forward``.

Caches: one (k, v) pair per layer, each ``float32[B, H, P + N, E]`` (head-major, so the
attention matmuls read them without transposing), preallocated and carried
through the scan; every step writes one column with ``lax.dynamic_update_slice`` so XLA
updates the buffers in place (nothing is re-stacked per step).

Log-probs and entropies are those of the policy pi = softmax(logits) at temperature 1 (the
distribution RL differentiates), NOT of the tempered / top-k distribution actually sampled
from; temperature, top-k and greedy only choose the token:
    logprob_t = log pi(x_t | x_<t),   entropy_t = -sum_v pi(v | x_<t) log pi(v | x_<t).
After the first ``<eos>`` the tokens are ``<pad>``, mask False, logprob and entropy 0.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tasks.core import EOS, PAD
from toymodels.hooks import Sites
from toymodels.model import _check_tokens, attention_mask, positions_from_valid


class Samples(NamedTuple):
    tokens: jax.Array  # int32[B, N], <pad> after the first <eos>
    logprobs: jax.Array  # float32[B, N], log pi(token) at temperature 1; 0 where ~mask
    entropies: jax.Array  # float32[B, N], entropy of pi at temperature 1; 0 where ~mask
    mask: jax.Array  # bool[B, N], True up to and including the first <eos>
    lengths: jax.Array  # int32[B], sum of mask


def _check_args(config, prompts, prompt_valid, max_new_tokens, temperature, top_k, greedy):
    _check_tokens(config, prompts, prompt_valid)
    if prompt_valid is None:
        raise ValueError("prompt_valid must be a bool array shaped like prompts")
    if not isinstance(prompt_valid, jax.core.Tracer):
        # The first token is drawn from the logits of the LAST column: on a right-padded or
        # empty row that is a <pad>, and the continuation would silently follow "<pad>".
        v = np.asarray(prompt_valid, bool)
        if not v[:, -1].all() or (v[:, 1:] < v[:, :-1]).any():
            raise ValueError("prompt_valid must mark left-padded prompts: in every row the "
                             "False (<pad>) columns come first and the last column is a real "
                             "token")
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) \
            or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} is not allowed: an integer >= 1")
    total = prompts.shape[1] + max_new_tokens
    if total > config.max_len:
        raise ValueError(f"prompt length {prompts.shape[1]} + max_new_tokens "
                         f"{max_new_tokens} = {total} exceeds max_len={config.max_len}")
    if not isinstance(greedy, bool):
        raise ValueError(f"greedy={greedy!r} is not allowed: True or False")
    if not isinstance(top_k, int) or isinstance(top_k, bool) \
            or not 0 <= top_k <= config.vocab_size:
        raise ValueError(f"top_k={top_k!r} is not allowed: an integer in [0, vocab_size="
                         f"{config.vocab_size}] (0 = no top-k)")
    if not greedy and not isinstance(temperature, jax.core.Tracer):
        ok = isinstance(temperature, int | float) and not isinstance(temperature, bool)
        if not (ok and 0.0 < float(temperature) < float("inf")):
            raise ValueError(f"temperature={temperature!r} is not allowed: a finite "
                             "number > 0")


def generate(graphdef, params, key, prompts, prompt_valid, *, max_new_tokens: int,
             temperature: float = 1.0, top_k: int = 0, greedy: bool = False) -> Samples:
    """Sample ``max_new_tokens`` tokens after left-padded ``prompts`` int[B, P].

    prompt_valid bool[B, P] marks the real prompt tokens: each row left-padded, with at least
    one real token (checked unless traced: under an outer jit it is the caller's duty; a
    right-padded row would continue after a <pad>). ``temperature`` may be a traced
    scalar (then it cannot be checked: keep it > 0); ``max_new_tokens``, ``top_k`` and
    ``greedy`` are static (compiled in). top-k keeps every token tied with the k-th logit.
    Greedy ignores temperature and top-k. P + max_new_tokens must not exceed max_len.
    """
    config = nnx.merge(graphdef, params).config
    _check_args(config, prompts, prompt_valid, max_new_tokens, temperature, top_k, greedy)
    return _generate(graphdef, params, key, prompts, jnp.asarray(prompt_valid, bool),
                     jnp.asarray(temperature, jnp.float32), max_new_tokens, top_k, greedy)


def _choose(logits, key, temperature, top_k: int, greedy: bool):
    """The next token from logits [B, V] (the tempered, top-k'd distribution)."""
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    scaled = logits / temperature
    if top_k:
        kth = jax.lax.top_k(scaled, top_k)[0][:, -1:]
        scaled = jnp.where(scaled >= kth, scaled, -jnp.inf)
    return jax.random.categorical(key, scaled, axis=-1).astype(jnp.int32)


def _emit(logits, key, done, temperature, top_k, greedy):
    """Choose a token and its pi-statistics; rows already done emit <pad> with zeros."""
    token = _choose(logits, key, temperature, top_k, greedy)
    logp_all = jax.nn.log_softmax(logits, axis=-1)
    logp = jnp.take_along_axis(logp_all, token[:, None], axis=-1)[:, 0]
    entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
    live = ~done
    token = jnp.where(live, token, PAD)
    out = (token, jnp.where(live, logp, 0.0), jnp.where(live, entropy, 0.0), live)
    return out, done | (token == EOS)


@functools.partial(jax.jit, static_argnums=(0, 6, 7, 8))
def _generate(graphdef, params, key, prompts, prompt_valid, temperature, n_new, top_k, greedy):
    model = nnx.merge(graphdef, params)
    cfg = model.config
    b, p = prompts.shape
    total = p + n_new
    shape = (b, cfg.n_heads, total, cfg.head_dim)
    caches = tuple((jnp.zeros(shape), jnp.zeros(shape)) for _ in range(cfg.n_layers))
    key_valid = jnp.concatenate([prompt_valid, jnp.ones((b, n_new), bool)], axis=1)
    no_sites = Sites()

    mask = attention_mask(jnp.arange(p), key_valid, total)
    logits, caches = model(prompts, positions_from_valid(prompt_valid), mask, no_sites,
                           caches, 0, last_only=True)
    prompt_lens = prompt_valid.sum(axis=1).astype(jnp.int32)
    keys = jax.random.split(key, n_new)

    def step(carry, i):
        caches, logits, done = carry
        out, done = _emit(logits, keys[i], done, temperature, top_k, greedy)
        col = p + i
        step_mask = attention_mask(col[None], key_valid, total)
        pos = (prompt_lens + i)[:, None]
        logits, caches = model(out[0][:, None], pos, step_mask, no_sites, caches, col)
        return (caches, logits[:, 0], done), out

    carry = (caches, logits[:, 0], jnp.zeros((b,), bool))
    (_, last_logits, done), outs = jax.lax.scan(step, carry, jnp.arange(n_new - 1))
    last, _ = _emit(last_logits, keys[n_new - 1], done, temperature, top_k, greedy)

    def columns(scanned, final):  # scan outputs are [N - 1, B]; append the last step's [B]
        return jnp.concatenate([scanned.T, final[:, None]], axis=1)

    tokens, logprobs, entropies, live = map(columns, outs, last)
    return Samples(tokens, logprobs, entropies, live, live.sum(axis=1).astype(jnp.int32))
