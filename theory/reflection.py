"""Derived rates for emergent long chains of thought and reflection (docs/theory_reflection.md).

Part 1: the short/long parity mixture of Tsilivis, Malach, Ullrich & Kempe 2025 (arXiv
2510.11495; research notes E6). The prompt is d bits, the long answer the running parities
c_1 .. c_d ``<eos>``, the short answer c_d ``<eos>``; long with probability p. The first
output token is c_1 = x_1 (long) or c_d (short), so it does not reveal the mode.

Equation numbers (Eq. 1-8) are those of docs/theory_reflection.md, not the paper's. What is
attributed to the paper below ("length calibration", the greedy threshold near 1/3, the
O(log((1 − p)/p)) STaR rounds) comes from secondary summaries (research notes E6, marked
[S]), not checked against the paper body; the functions here use only our derivations.

A *length-calibrated* next-token model (the paper's Section on NTP; the prediction it names
"length calibration") that has learnt the long chain (accuracy a_L) but not the short map
(short answers uniform, since c_d is independent of any proper subset of the bits) has:

* (T1) P(long) = p at temperature 1, and accuracy  A(p) = p·a_L + (1 − p)/2   (Eq. 1 of the
  doc);
* (T2) P(y_1 = x_1) = (1 + p)/2 and, after y_1 = x_1, P(continue) = 2p/(1 + p) against
  P(<eos>) = (1 − p)/(1 + p); greedy decoding continues iff 2p > 1 − p, i.e. p > 1/3
  (Eq. 2; our derivation, consistent with the paper's reported greedy threshold). Below
  1/3 the greedy answer is x_1: accuracy 1/2. Above it, the long chain: accuracy a_L.
* (T3) at any policy, accuracy = q·a_L + (1 − q)·½ with q = P(long) (Eq. 3).
* (T4) the paper's STaR rounds: refitting a calibrated model on its correct samples maps
  the log-odds ℓ = log(q/(1 − q)) of the long form to ℓ + log 2 per round (Eq. 4), so
  reaching q* takes (logit q* + log((1 − p)/p))/log 2 rounds: O(log((1 − p)/p)).
* (T5) our objective (GRPO, Adam): in the regime where the sign of the gradient on the
  decision logit is stable, Adam moves every parameter by ≈ η per step whatever the
  gradient's size, so the log-odds of the long form grows at a constant rate κ per step and
  the steps to reach q* are T(p) = (logit q* + log((1 − p)/p))/κ (Eq. 5): linear in
  log((1 − p)/p) with slope 1/κ. Plain SGD instead gives dℓ/dt = η q(1 − q)/2, i.e.
  T ≈ 2/(η p) from small q (Eq. 6).
"""

from __future__ import annotations

import numpy as np

from theory._checks import probabilities

GREEDY_THRESHOLD = 1.0 / 3.0  # Eq. 2


def logit(q):
    """log(q / (1 − q)), elementwise (±inf at q = 1, 0)."""
    q = probabilities(q)
    return np.log(q) - np.log1p(-q)


def ntp_long_rate(p_long):
    """(T1) P(long) of a length-calibrated NTP model at temperature 1: p."""
    return probabilities(p_long)


def mixture_accuracy(q_long, acc_long=1.0):
    """(T1, T3) accuracy q·a_L + (1 − q)/2 when the short form is at chance.

    Hand value: q = 0.2, a_L = 1: 0.2 + 0.4 = 0.6 = (1 + 0.2)/2.
    """
    q = probabilities(q_long)
    return q * probabilities(acc_long) + (1.0 - q) * 0.5


def continue_probability(p_long):
    """(T2) P(second output token is a bit | first token = x_1) = 2p/(1 + p)."""
    p = probabilities(p_long)
    return 2.0 * p / (1.0 + p)


def greedy_uses_long(p_long):
    """(T2) greedy decoding of the calibrated model writes the long chain iff p > 1/3."""
    return continue_probability(p_long) > 0.5


def greedy_accuracy(p_long, acc_long=1.0):
    """(T2) greedy accuracy: 1/2 below the threshold, a_L above it."""
    return np.where(greedy_uses_long(p_long), probabilities(acc_long), 0.5)


def star_round(q):
    """(T4) one STaR round on a calibrated model whose long chain is always right (a_L = 1):
    q -> P(long | correct) = q / (q + (1 − q)/2) = 2q/(1 + q)."""
    q = probabilities(q)
    return 2.0 * q / (1.0 + q)


def steps_to_reach(p_long, q_star, rate):
    """(T4, T5) steps (or rounds) for the log-odds to go from logit p to logit q* at a
    constant ``rate`` per step: (logit q* − logit p)/rate. rate = log 2 gives STaR rounds.

    Hand value: p = 0.2, q* = 0.8, rate = log 2: (log 4 + log 4)/log 2 = 4 rounds.
    Negative when p is already above q*; ``rate`` must be > 0.
    """
    if not np.all(np.asarray(rate) > 0):
        raise ValueError(f"rate must be > 0, got {rate}")
    return (logit(q_star) - logit(p_long)) / rate


# ------------------------------------------------------------- Part 2: reflection (<back>)
# A tabular softmax policy in graph search (docs/theory_reflection.md §2). At a state right
# after a mistake (a step onto a node from which t is unreachable) the policy writes <back>
# with probability b = σ(λ), else it continues into the dead end (reward 0 for sure). After
# <back> the search recovers with probability r and then succeeds with probability s. A
# completion meets such a state with probability m (the mistake rate per completion). With
# outcome reward and exact policy gradient at step size η, and advantages scaled by 1/σ_R
# (GRPO; 1 for Dr.GRPO) and by 1/L (the per-token aggregation of a length-L completion):
#
#     dλ/dt = η · m · r · s · b (1 − b) / (σ_R · L)                           (Eq. 7)
#
# Separating variables with ∫ dλ / (b (1 − b)) = F(λ) = 2λ + e^λ − e^{−λ}:
#
#     T(λ0 → λ*) = (F(λ*) − F(λ0)) · σ_R · L / (η m r s)                       (Eq. 8)
#
# so the emergence step scales like 1/(m r): reflection is learnt slowly when mistakes are
# rare (Yao et al. 2025, arXiv 2510.04028, the two-stage picture: the rare useful action is
# reinforced only when it is sampled in the states where it pays off).


def back_logodds_rate(b, mistake_rate, p_recover, success=1.0, eta=1.0, scale=1.0):
    """Eq. 7: dλ/dt of the log-odds λ of <back> after a mistake, for P(<back>|mistake) = b.

    Hand value: b = 1/2, m = 0.2, r = 0.5, s = 1, η = 1, scale = 1: 0.2·0.5·0.25 = 0.025.
    """
    b = np.asarray(b, dtype=np.float64)
    return eta * mistake_rate * p_recover * success * b * (1 - b) / scale


def _f(lam):
    lam = np.asarray(lam, dtype=np.float64)
    return 2 * lam + np.exp(lam) - np.exp(-lam)


def emergence_steps(b0, b_star, mistake_rate, p_recover, success=1.0, eta=1.0, scale=1.0):
    """Eq. 8: steps for P(<back>|mistake) to go from b0 to b_star under Eq. 7 (constant m, r).

    Hand value: b0 = 1/2 -> b* = σ(1): F(1) − F(0) = 2 + e − 1/e ≈ 4.3504, divided by
    η m r s / scale.
    """
    rate = eta * mistake_rate * p_recover * success / scale
    return (_f(logit(b_star)) - _f(logit(b0))) / rate
