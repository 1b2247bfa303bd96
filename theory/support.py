"""Support preservation of on-policy policy gradient on a softmax policy.

Wu et al. 2025, "The Invisible Leash" (arXiv 2507.14843, abstract) state that RLVR
is constrained by the base model's support: it cannot sample, hence cannot reinforce,
solutions with zero initial probability. For the tabular softmax this is exact and
elementary (our derivation, docs/theory.md §4):

    ∂/∂z_a E_π[r] = π_a (r_a − E_π[r])                    (exact policy gradient)
    Σ_i (e_{a_i} − π)_a A_i = 1[a sampled]·(...) − π_a Σ_i A_i   (sampled REINFORCE)

so an answer with π_a = 0 gets zero gradient either way (it is never sampled), and in
general |∂J/∂z_a| <= π_a · max_b |r_b − E_π[r]|: the push on an answer is bounded by its
probability. With function approximation (shared parameters) the bound does not hold per
answer; interference between answers is what can break support preservation.
"""

from __future__ import annotations

import numpy as np

from theory.entropy import log_softmax


def pg_logit_gradient(logits, rewards):
    """Exact softmax policy gradient ∂E_π[r]/∂z_a = π_a (r_a − E_π[r]) on the last axis.

    ``logits`` may contain −inf (probability exactly zero); those entries get gradient 0.
    Hand value: z = (0, 0), r = (1, 0): π = (1/2, 1/2), E r = 1/2, gradient (1/4, −1/4).
    """
    logits = np.asarray(logits, dtype=np.float64)
    p = np.exp(log_softmax(logits))
    v = np.sum(p * rewards, axis=-1, keepdims=True)
    # Where p == 0 the product is 0 whatever r is; `where` avoids 0 · inf if r is infinite.
    return np.where(p > 0, p * (rewards - v), 0.0)


def reinforce_logit_gradient(logits, actions, advantages):
    """Sampled REINFORCE gradient in logit space, (1/N) Σ_i A_i (e_{a_i} − π).

    ``actions`` int[N] sampled from π, ``advantages`` float[N]. The gradient of log π(a_i)
    with respect to z is e_{a_i} − π (softmax score function).
    """
    logits = np.asarray(logits, dtype=np.float64)
    p = np.exp(log_softmax(logits))
    onehot = np.eye(p.shape[-1])[np.asarray(actions)]
    adv = np.asarray(advantages, dtype=np.float64)[:, None]
    return np.mean(adv * (onehot - p[None, :]), axis=0)


def gradient_bound(logits, rewards):
    """The per-answer bound π_a · max_b |r_b − E_π[r]| on |∂E_π[r]/∂z_a| (derivation above)."""
    logits = np.asarray(logits, dtype=np.float64)
    p = np.exp(log_softmax(logits))
    v = np.sum(p * rewards, axis=-1, keepdims=True)
    return p * np.max(np.abs(rewards - v), axis=-1, keepdims=True)


def support(probs, tol: float = 0.0):
    """The answers with probability above ``tol`` (bool mask)."""
    return np.asarray(probs) > tol


def support_preserved(p_before, p_after, tol: float = 0.0) -> bool:
    """True iff no answer outside the support of ``p_before`` entered that of ``p_after``."""
    return bool(np.all(support(p_before, tol) | ~support(p_after, tol)))
