"""Rollouts: G completions per prompt from the KV-cache sampler, rewards in the graph, and the
teacher-forced log-probs of the same completions under any params (current or reference).

Row layout: prompt p's g-th completion is row ``p * G + g`` (``jnp.repeat``), so
``rewards.reshape(P, G)`` gives the groups.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from tasks.core import Batch, prompt_valid
from toymodels.model import forward
from toymodels.sampler import generate


class Rollout(NamedTuple):
    prompts: jax.Array  # int32[B, P] (B = prompts x G), left-padded
    prompt_valid: jax.Array  # bool[B, P]
    tokens: jax.Array  # int32[B, L] completions, <pad> after the first <eos>
    mask: jax.Array  # bool[B, L] True up to and including the first <eos>
    old_logp: jax.Array  # float32[B, L] sampling log-probs (the old policy's)
    entropy: jax.Array  # float32[B, L] sampling policy entropies
    rewards: jax.Array  # float32[B]
    counters: dict  # task counters, float32[B] each


def repeat_batch(batch: Batch, group_size: int) -> Batch:
    """Each example ``group_size`` times in a row (rows p*G .. p*G + G-1)."""
    return jax.tree.map(lambda x: jnp.repeat(x, group_size, axis=0), batch)


def sample_rollout(graphdef, params, key, task, batch: Batch, *, group_size: int,
                   max_new_tokens: int, temperature: float, top_k: int) -> Rollout:
    """G completions per prompt of ``batch``, scored by ``task.reward`` (pure jnp)."""
    rep = repeat_batch(batch, group_size)
    valid = prompt_valid(rep.prompts, rep.prompt_lens)
    samples = generate(graphdef, params, key, rep.prompts, valid,
                       max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k)
    rewards = task.reward(rep, samples.tokens).astype(jnp.float32)
    counters = {k: v.astype(jnp.float32) for k, v in task.counters(rep, samples.tokens).items()}
    return Rollout(rep.prompts, valid, samples.tokens, samples.mask, samples.logprobs,
                   samples.entropies, rewards, counters)


def completion_logits(graphdef, params, prompts, prompt_valid, completions) -> jax.Array:
    """Teacher-forced logits float32[B, L, V] that predict each completion token.

    The input is concat(prompt, completion[:, :-1]) with the prompt's validity and every
    completion column valid, exactly the key mask the sampler uses, so these logits equal
    the sampler's up to float error. Position P - 1 + t predicts completion token t.
    """
    p = prompts.shape[1]
    tokens = jnp.concatenate([prompts, completions[:, :-1]], axis=1)
    valid = jnp.concatenate(
        [prompt_valid, jnp.ones((completions.shape[0], completions.shape[1] - 1), bool)], axis=1)
    logits, _ = forward(graphdef, params, tokens, valid=valid)
    return logits[:, p - 1:]
