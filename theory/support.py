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

``rl_reach`` and ``unsolved_bound`` turn this into a prediction for a finite RL run (ours,
docs/theory_rl_dynamics.md §4, used by the ``passk-support`` figure), both built on
``at_least_once(p, n)`` = 1 − (1 − p)^n and its log complement ``log_all_miss``.
"""

from __future__ import annotations

import numpy as np

from theory._checks import probabilities
from theory.entropy import log_softmax
from theory.grpo_weights import correct_advantage_sum


def pg_logit_gradient(logits, rewards):
    """Exact softmax policy gradient ∂E_π[r]/∂z_a = π_a (r_a − E_π[r]) on the last axis.

    ``logits`` may contain −inf (probability exactly zero); those entries get gradient 0.
    Hand value: z = (0, 0), r = (1, 0): π = (1/2, 1/2), E r = 1/2, gradient (1/4, −1/4).
    """
    logits = np.asarray(logits, dtype=np.float64)
    p = np.exp(log_softmax(logits))
    # An answer with p == 0 contributes nothing whatever its reward (even an infinite one,
    # where 0 · inf would be NaN): its terms are dropped from the mean and the gradient.
    live_r = np.where(p > 0, rewards, 0.0)
    v = np.sum(p * live_r, axis=-1, keepdims=True)
    return np.where(p > 0, p * (live_r - v), 0.0)


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


def log_all_miss(p, n):
    """log P(none of n independent tries succeeds) = n log(1 − p), elementwise; exactly −inf
    at p = 1 and n > 0, and 0 for n = 0 tries (log1p keeps the digits of tiny p)."""
    p, n = probabilities(p), np.asarray(n)
    if np.any(n < 0):
        raise ValueError(f"the number of tries must be >= 0, got {n}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n == 0, 0.0, n * np.log1p(-p))


def at_least_once(p, n):
    """P(at least one of n independent tries with success probability p succeeds) =
    1 − (1 − p)^n, elementwise, stable for tiny p (≈ n·p). Hand values: p = 1/2, n = 2: 3/4;
    n = 0: 0 (no try, no success), also at p = 1."""
    return 0.0 - np.expm1(log_all_miss(p, n))  # 0.0 - : no −0.0 at n = 0


def rl_reach(p, group_size: int, prompt_draws: int, n_problems: int):
    """P(RL ever samples a correct completion of problem j), at a fixed success rate p_j.

    Ours (docs/theory_rl_dynamics.md §4): each of ``prompt_draws`` uniform prompt draws hits
    problem j with probability 1/|P| and then draws G completions, one of which at least is
    correct with probability 1 − (1 − p_j)^G, so
        ρ_j = 1 − (1 − (1 − (1 − p_j)^G) / |P|)^D.
    Hand values: p = 1/2, G = 1, D = 2, |P| = 1 gives 3/4; p = 1/2, G = 2, D = 1, |P| = 4
    gives 3/16. Computed with log1p/expm1, so tiny p keeps its digits (ρ ≈ G·D·p/|P|).
    """
    return at_least_once(at_least_once(p, group_size) / n_problems, prompt_draws)


def shared_strategy_first_step(w_a: float, n_a: int, n_b: int, group_size: int,
                               own_to_shared: float):
    """Expected first-step GRPO change of log p on each class of a two-strategy toy (ours,
    docs/theory_rl_dynamics.md §4, after Nguyen et al. 2025, arXiv 2510.02230, whose
    per-step influence is Δ log π(y′|x′) = η K(x, x′) · (the update's direction)).

    Every problem j opens its completion with a strategy token, A with probability
    σ(z_j); the answer after it is then certain, right on the n_a problems of S_A with A, on
    the n_b of S_B with B. So p_j = σ(z_j) on S_A and 1 − σ(z_j) on S_B, with σ(z) = w_a
    at the base. A group of G on problem j with c correct (q = c/G) pushes z_j by
    Σ Â_i ∂z log π(y_i) = s_j G sqrt(q(1−q)) (s_j = +1 on S_A, −1 on S_B: a correct sample's
    ∂z log π is 1 − p for A, −p for B, a wrong one the opposite sign with −p), in expectation
    s_j g(p_j), g(p) = G E_c sqrt(q(1−q)) (``grpo_weights.correct_advantage_sum``),
    symmetric in p ↔ 1 − p. With the kernel K(i, j) = ∂z_i·∂z_j equal to k_s between
    problems and k_s + k_o on the diagonal (r = k_o/k_s = ``own_to_shared``), one draw per
    problem gives, in units of η k_s,
        Δz_A = n_a g(w_a) − n_b g(1 − w_a) + r g(w_a),
        Δz_B = n_a g(w_a) − n_b g(1 − w_a) − r g(1 − w_a),
        Δ log p_A = (1 − w_a) Δz_A,   Δ log p_B = −w_a Δz_B.
    S_B loses (Δ log p_B < 0) iff the shared push n_a − n_b exceeds r; the class sizes, not
    w_a, decide the shared push's sign. Returns (Δ log p_A, Δ log p_B).
    Hand value: G = 2, w_a = 1/2 (g = 1/2), n_a = 3, n_b = 1, r = 1: (3/4, −1/4).
    """
    g_a = float(correct_advantage_sum(w_a, group_size, "grpo"))
    g_b = float(correct_advantage_sum(1.0 - w_a, group_size, "grpo"))
    shared = n_a * g_a - n_b * g_b
    return (1.0 - w_a) * (shared + own_to_shared * g_a), -w_a * (shared - own_to_shared * g_b)


def unsolved_bound(p_base, reach, n: int):
    """Upper bound on the fraction of base-unsolved problems solved after RL, as a ratio of
    expectations: E[# base-unsolved problems solved after RL] / E[# base-unsolved problems]
    (not the expectation of the per-run fraction, which differs at small counts).

    Ours (docs/theory_rl_dynamics.md §4): problem j is base-unsolved (no success in n base
    samples) with probability w_j = (1 − p_j)^n. If RL learns a problem only when it sampled a
    correct completion (probability ρ_j, ``rl_reach``) and a never-rewarded problem keeps at
    most its base success b_j = 1 − (1 − p_j)^n, then
        F_U ≤ Σ_j w_j [ρ_j + (1 − ρ_j) b_j] / Σ_j w_j.
    Hand value: p = (0, 1), ρ = (0, 1): only problem 0 is unsolved and unreachable: 0.
    NaN when no problem can be base-unsolved (every p_j = 1: the fraction is 0/0), so a
    figure whose base solves everything reports the claim as not holding instead of failing.
    """
    p = probabilities(p_base)
    rho = probabilities(reach, "reach probabilities")
    log_miss = log_all_miss(p, n)  # −inf at p_j = 1: w_j = 0 and b_j = 1
    w, b = np.exp(log_miss), -np.expm1(log_miss)
    if not np.sum(w) > 0:
        return float("nan")
    return float(np.sum(w * (rho + (1 - rho) * b)) / np.sum(w))
