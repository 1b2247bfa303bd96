"""Gradient weights under GRPO's and Dr.GRPO's normalisations (Liu et al. 2025,
"Understanding R1-Zero-Like Training: A Critical Perspective", arXiv 2503.20783).

GRPO (their Eq. 3, on-policy so the ratio is 1 and the clip inactive) maximises

    (1/G) Σ_i (1/|o_i|) Σ_t Â_i log π(o_{i,t}),   Â_i = (r_i − mean(r)) / std(r),

Dr.GRPO (their §3.2) drops both the 1/|o_i| and the 1/std(r):

    (1/G) Σ_i (1/MAX_TOKENS) Σ_t Â_i log π(o_{i,t}),   Â_i = r_i − mean(r),

MAX_TOKENS being a constant (the generation budget in their code). Hence the per-token
gradient weights Â_i/(G·|o_i|) (GRPO: a length bias) and Â_i/(G·MAX_TOKENS) (Dr.GRPO).

Per-prompt weight (our derivation, docs/theory.md §3). For binary rewards with success rate
p and a group of G samples, E[∇ log π(o) · 1{r=1}] = ∇p and E[∇ log π(o)] = 0 give
E[∇ log π(o) | r=1] = ∇p/p and E[∇ log π(o) | r=0] = −∇p/(1−p). With c ~ Bin(G, p) correct
samples, Â_+(c) on each correct and Â_−(c) on each wrong one, the expected sequence-level
update is w(p, G)·∇p with

    w(p, G) = (1/G) E_c[ c·Â_+(c)/p − (G−c)·Â_−(c)/(1−p) ].

Dr.GRPO: Â_± = (1 − c/G), −c/G, and E[c(G−c)] = G(G−1)p(1−p) give w = 1 − 1/G for every p.
GRPO with the population std: Â_+ = sqrt((1−q)/q), Â_− = −sqrt(q/(1−q)), q = c/G, so
w = E[sqrt(q(1−q))]/(p(1−p)) → 1/sqrt(p(1−p)) as G → ∞ (the difficulty bias).
"""

from __future__ import annotations

from math import lgamma

import numpy as np

METHODS = ("grpo", "dr_grpo")


def _check(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def group_advantages(rewards, method: str = "grpo", *, ddof: int = 0, eps: float = 0.0):
    """Â over the last axis (one group of G responses): GRPO (r − mean)/(std + eps),
    Dr.GRPO r − mean (Liu et al. 2025, arXiv 2503.20783, Eq. 3 and §3.2).

    ``ddof`` picks the std convention: 0 = population (our default), 1 = Bessel-corrected
    (torch's default, used by the official code). A group with std 0 gets Â = 0.
    Hand values: r = (1, 0) with ddof=0: GRPO (+1, −1), Dr.GRPO (+1/2, −1/2);
    r = (1, 1, 1, 0) with ddof=1: GRPO (+0.5, +0.5, +0.5, −1.5).
    """
    _check(method)
    r = np.asarray(rewards, dtype=np.float64)
    if not np.all(np.isfinite(r)):  # GRPO would turn them into Â = 0, Dr.GRPO into NaN
        raise ValueError(f"rewards must be finite, got {rewards}")
    centred = r - r.mean(axis=-1, keepdims=True)
    if method == "dr_grpo":
        return centred
    sd = r.std(axis=-1, ddof=ddof, keepdims=True)
    denom = sd + eps
    return np.where(denom > 0, centred / np.where(denom > 0, denom, 1.0), 0.0)


def token_weight(advantages, lengths, method: str = "grpo", *, max_tokens: int | None = None):
    """Per-token weight of ∇ log π(o_{i,t}) in one group: Â_i/(G·|o_i|) under GRPO,
    Â_i/(G·MAX_TOKENS) under Dr.GRPO (Liu et al. 2025, arXiv 2503.20783, Eq. 3, §3.2).

    ``advantages`` and ``lengths`` are [..., G]. Hand value: Â = (+1, −1), |o| = (2, 4),
    G = 2: GRPO (1/4, −1/8) (the longer wrong answer is penalised less per token);
    Dr.GRPO with MAX_TOKENS = 8: (1/16, −1/16).
    """
    _check(method)
    a = np.asarray(advantages, dtype=np.float64)
    n = np.asarray(lengths, dtype=np.float64)
    g = a.shape[-1]
    if method == "grpo":
        if np.any(n <= 0):
            raise ValueError("lengths must be positive")
        return a / (g * n)
    if max_tokens is None or max_tokens <= 0:
        raise ValueError("dr_grpo needs max_tokens > 0 (the constant normaliser)")
    return a / (g * max_tokens) + 0.0 * n  # broadcast to the lengths' shape


def sequence_weight(advantages, lengths, method: str = "grpo", *, max_tokens=None):
    """Total weight on a response's tokens, |o_i| × token weight: Â_i/G under GRPO (the
    same for every length), Â_i·|o_i|/(G·MAX_TOKENS) under Dr.GRPO (∝ length)."""
    return token_weight(advantages, lengths, method, max_tokens=max_tokens) * np.asarray(
        lengths, dtype=np.float64)


def prompt_scale(p, method: str = "grpo"):
    """Large-G factor by which a prompt of success rate p scales its advantages relative to
    r − mean: 1/sqrt(p(1−p)) for GRPO (population std), 1 for Dr.GRPO. At p = 1/2: 2 and 1.
    Infinite at p ∈ {0, 1} for GRPO (where every finite group has Â = 0 anyway)."""
    _check(method)
    p = np.asarray(p, dtype=np.float64)
    if method == "dr_grpo":
        return np.ones_like(p)
    with np.errstate(divide="ignore"):
        return 1.0 / np.sqrt(p * (1.0 - p))


def expected_prompt_weight(p, group_size: int, method: str = "grpo", *, ddof: int = 0):
    """Exact w(p, G): the expected GRPO / Dr.GRPO update of a prompt with success rate p is
    w(p, G)·∇p (derivation in the module docstring; summed over c ~ Bin(G, p)).

    Hand values at p = 1/2: Dr.GRPO 1 − 1/G (G = 2: 1/2); GRPO, G = 2, ddof = 0: only c = 1
    (prob 1/2) contributes, q = 1/2, sqrt(q(1−q)) = 1/2, so w = (1/2 · 1/2)/(1/4) = 1.
    """
    _check(method)
    g = int(group_size)
    if g < 2:
        raise ValueError("group_size must be >= 2")
    p = np.asarray(p, dtype=np.float64)
    if np.any(p <= 0) or np.any(p >= 1):
        raise ValueError("p must lie in (0, 1): at p in {0, 1} every group has zero advantage")
    total = np.zeros_like(p)
    for c in range(1, g):  # c = 0 and c = G give zero advantages
        # Binomial pmf in log space: C(G, c) overflows a float for G in the thousands.
        log_comb = lgamma(g + 1) - lgamma(c + 1) - lgamma(g - c + 1)
        prob = np.exp(log_comb + c * np.log(p) + (g - c) * np.log1p(-p))
        r = np.array([1.0] * c + [0.0] * (g - c))
        adv = group_advantages(r, method, ddof=ddof)
        a_plus, a_minus = adv[0], adv[-1]
        total = total + prob * (c * a_plus / p - (g - c) * a_minus / (1 - p)) / g
    return total


def correct_advantage_sum(p, group_size: int, method: str = "grpo", *, ddof: int = 0,
                          eps: float = 0.0):
    """E[Σ_{i: r_i = 1} Â_i] over a group of G samples with success rate p; the wrong samples'
    advantages sum to minus this, since Σ_i Â_i = 0 in every group (ours; Â as in
    :func:`group_advantages`, Liu et al. 2025, arXiv 2503.20783, Eq. 3 and §3.2).

    Summed over c ~ Bin(G, p): E[c·Â_+(c)]. Dr.GRPO: c(1 − c/G) has mean (G − 1)p(1 − p).
    GRPO (population std): c·Â_+ = G sqrt(q(1−q)), q = c/G. Hand values, G = 2, p = 1/2:
    only c = 1 (prob 1/2) counts, Â_+ = 1 (GRPO) or 1/2 (Dr.GRPO): 1/2 and 1/4.
    """
    _check(method)
    g = int(group_size)
    if g < 2:
        raise ValueError("group_size must be >= 2")
    p = np.asarray(p, dtype=np.float64)
    total = np.zeros_like(p)
    for c in range(1, g):
        log_comb = lgamma(g + 1) - lgamma(c + 1) - lgamma(g - c + 1)
        with np.errstate(divide="ignore"):
            prob = np.exp(log_comb + c * np.log(p) + (g - c) * np.log1p(-p))
        adv = group_advantages(np.array([1.0] * c + [0.0] * (g - c)), method, ddof=ddof,
                               eps=eps)
        total = total + prob * c * adv[0]
    return total


def stop_chain_length_score(fill_logits, n_fixed: int, method: str = "grpo", *,
                            max_tokens: int | None = None):
    """E_k[c(|o|) ∂ log π(k)/∂s_t], t = 0 .. F−1, for a stop/continue chain (ours).

    The chain: at position t = 0 .. F−1 a filler with probability σ(s_t), else stop; at t = F
    stop forced. k = number of fillers, |o| = k + ``n_fixed``, and c(L) = 1/L (GRPO's
    sequence-mean-token-mean) or 1/MAX_TOKENS (Dr.GRPO), Liu et al. 2025, arXiv 2503.20783,
    Eq. 3 and §3.2. With S_t = Π_{u<t} σ(s_u), P(k = t) = S_t(1 − σ_t) (t < F), P(k = F) = S_F,
    and ∂ log π(k)/∂s_t = (1 − σ_t)·1{k > t} − σ_t·1{k = t}:

        E[c ∂ log π/∂s_t] = (1 − σ_t) Σ_{k>t} P(k) c(k + n) − σ_t P(k = t) c(t + n)
                          = S_t σ_t (1 − σ_t) (E[c(k + n) | k > t] − c(t + n)).

    For constant c this is 0 (the score has mean zero); for c = 1/L it is < 0, since every
    k > t has 1/(k + n) < 1/(t + n). ``fill_logits`` [..., F]; returns [..., F].
    Hand value: F = 1, s_0 = 0, n = 4: (1/2)(1/2)(1/5) − (1/2)(1/2)(1/4) = −1/80 (GRPO).
    """
    _check(method)
    if not isinstance(n_fixed, int) or n_fixed < 1:
        raise ValueError(f"n_fixed must be an integer >= 1 (tokens besides the fillers), "
                         f"got {n_fixed!r}")
    s = np.asarray(fill_logits, dtype=np.float64)
    f = s.shape[-1]
    sig = 1.0 / (1.0 + np.exp(-s))
    reach = np.cumprod(np.concatenate([np.ones_like(s[..., :1]), sig], axis=-1), axis=-1)
    p_len = reach * np.concatenate([1.0 - sig, np.ones_like(s[..., :1])], axis=-1)  # k=0..F
    lengths = np.arange(f + 1) + n_fixed
    if method == "grpo":
        c = 1.0 / lengths
    else:
        if max_tokens is None or max_tokens <= 0:
            raise ValueError("dr_grpo needs max_tokens > 0 (the constant normaliser)")
        c = np.full(f + 1, 1.0 / max_tokens)
    weighted = p_len * c
    beyond = np.cumsum(weighted[..., ::-1], axis=-1)[..., ::-1][..., 1:]  # Σ_{k>t}, t < F
    return (1.0 - sig) * beyond - sig * weighted[..., :f]
