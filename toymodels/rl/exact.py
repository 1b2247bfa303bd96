"""Exact objectives where the answer space can be enumerated, to check sampled estimators.

Two settings:

* A tabular softmax bandit: logits z over K answers, π = softmax(z), reward vector r.
* A (tiny) model over short answers: every completion of at most L tokens over a vocabulary
  of V tokens is enumerated and scored through the model's forward.

References: the bandit policy gradient is the REINFORCE identity (Williams 1992, Machine
Learning 8:229) for a softmax policy, as in Cui et al. 2025 (arXiv 2505.22617, App. E.1,
Lemma 3); pass@k as in Chen et al. 2021 (arXiv 2107.03374, §2.1) with an exact success
probability instead of an estimate.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from tasks.core import EOS, PAD
from toymodels.rl.objectives import token_logprobs
from toymodels.rl.rollout import completion_logits


# --------------------------------------------------------------------------- bandit
def bandit_expected_reward(z: jax.Array, r: jax.Array) -> jax.Array:
    """J(z) = Σ_a π(a) r(a), π = softmax(z)."""
    return jnp.sum(jax.nn.softmax(z) * r)


def bandit_policy_gradient(z: jax.Array, r: jax.Array) -> jax.Array:
    """∇_z J = π ⊙ (r - J) (since ∂π_a/∂z_b = π_a (δ_ab - π_b))."""
    pi = jax.nn.softmax(z)
    return pi * (r - jnp.sum(pi * r))


def bandit_pass_at_k(z: jax.Array, correct: jax.Array, k) -> jax.Array:
    """pass@k = 1 - (1 - p)^k, p = Σ_{a correct} π(a): k independent draws, one success."""
    p = jnp.sum(jax.nn.softmax(z) * correct)
    return 1.0 - (1.0 - p) ** k


def bandit_kl(z: jax.Array, z_ref: jax.Array) -> jax.Array:
    """KL(π ‖ π_ref) = Σ_a π(a) (log π(a) - log π_ref(a))."""
    logp, ref = jax.nn.log_softmax(z), jax.nn.log_softmax(z_ref)
    return jnp.sum(jnp.exp(logp) * (logp - ref))


def bandit_entropy(z: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(z)
    return -jnp.sum(jnp.exp(logp) * logp)


def bandit_expected_estimate(z, r, group_size: int, estimate_fn) -> jax.Array:
    """E over G i.i.d. answers a_1..a_G ~ π of ``estimate_fn(z, answers int[G])``, exactly,
    by summing over all K^G answer tuples weighted by Π_i π(a_i).

    This is the expectation a sampled policy-gradient estimator (e.g. GRPO's, whose
    std-normalised advantages have no closed-form mean) actually converges to.
    """
    k = z.shape[0]
    tuples = jnp.asarray(list(itertools.product(range(k), repeat=group_size)), jnp.int32)
    logpi = jax.nn.log_softmax(z)
    weights = jnp.exp(jnp.sum(logpi[tuples], axis=1))
    estimates = jax.vmap(lambda a: estimate_fn(z, a))(tuples)
    return jnp.tensordot(weights, estimates, axes=1)


# --------------------------------------------------------------------------- short answers
def enumerate_completions(vocab_size: int, length: int):
    """Every completion the sampler can emit in ``length`` steps: tokens int32[N, L] with
    ``<pad>`` after the first ``<eos>``, and mask bool[N, L] (True up to and including it).
    N = Σ_{k<L} (V-1)^k + (V-1)^(L-1) V, e.g. 57 for V = 8, L = 2."""
    if vocab_size ** length > 2_000_000:
        raise ValueError(f"vocab_size**length = {vocab_size}**{length} is too many to enumerate")
    grid = np.asarray(list(itertools.product(range(vocab_size), repeat=length)), np.int32)
    is_eos = grid == EOS
    first = np.where(is_eos.any(1), is_eos.argmax(1), length)
    mask = np.arange(length)[None, :] <= first[:, None]
    tokens = np.unique(np.where(mask, grid, PAD), axis=0)
    is_eos = tokens == EOS
    first = np.where(is_eos.any(1), is_eos.argmax(1), length)
    mask = np.arange(length)[None, :] <= first[:, None]
    return jnp.asarray(tokens), jnp.asarray(mask)


def completion_logprob(graphdef, params, prompt, prompt_valid, completions, mask) -> jax.Array:
    """log P(completion | prompt) = Σ_t m_t log π(o_t | prompt, o_<t) for each of N
    completions of one prompt (prompt int[P], prompt_valid bool[P])."""
    n = completions.shape[0]
    prompts = jnp.broadcast_to(prompt, (n, prompt.shape[0]))
    valid = jnp.broadcast_to(prompt_valid, (n, prompt.shape[0]))
    logits = completion_logits(graphdef, params, prompts, valid, completions)
    return jnp.sum(jnp.where(mask, token_logprobs(logits, completions), 0.0), axis=1)


def exact_expected_reward(graphdef, params, prompts, prompt_valid, completions, mask,
                          rewards) -> jax.Array:
    """J(θ) = mean_p Σ_n P_θ(o_n | x_p) r_p(o_n) over all enumerated completions.

    prompts int[P, T], prompt_valid bool[P, T], completions/mask [N, L] (from
    :func:`enumerate_completions`), rewards float32[P, N]. Differentiable in ``params``:
    ``jax.grad`` of it is the exact policy gradient.
    """
    logp = jax.vmap(lambda x, v: completion_logprob(graphdef, params, x, v, completions, mask))(
        prompts, prompt_valid)
    return jnp.mean(jnp.sum(jnp.exp(logp) * rewards, axis=1))


def exact_pass_at_k(graphdef, params, prompts, prompt_valid, completions, mask, correct,
                    k) -> jax.Array:
    """Per-prompt exact pass@k = 1 - (1 - Σ_{n correct} P_θ(o_n | x_p))^k, float32[P]."""
    logp = jax.vmap(lambda x, v: completion_logprob(graphdef, params, x, v, completions, mask))(
        prompts, prompt_valid)
    p = jnp.sum(jnp.exp(logp) * correct, axis=1)
    return 1.0 - (1.0 - p) ** k
