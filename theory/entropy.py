"""Entropy dynamics of a softmax policy, after Cui et al. 2025 (arXiv 2505.22617).

A tabular softmax policy has one free logit per action, π(a) = exp z_a / Σ_b exp z_b.
Every function here works on the last axis (actions) and broadcasts over the leading
axes (states, seeds), in numpy or jax.numpy alike.

First-order entropy change (Cui et al., §3.1, Lemma 1; our derivation, docs/theory.md §1):

    H(z) = −Σ_a π_a log π_a,   ∂π_a/∂z_b = π_a (δ_ab − π_b)
    ∂H/∂z_b = −π_b (log π_b − E_π[log π])
    ΔH = H(z + Δz) − H(z) = −Cov_{a∼π}(log π(a), Δz(a)) + O(‖Δz‖²)

The two special cases of the paper (our reading of §3.2 / App. E, with the advantage
centred under π, E_π[A] = 0, which their Lemma 3 assumes):

* vanilla softmax policy gradient (Proposition 1 + Theorem 1): Δz_a = η π_a A_a, so
  ΔH ≈ −η Cov_{a∼π}(log π(a), π(a) A(a));
* natural policy gradient (Theorem 2, Δz_a = η A_a): ΔH ≈ −η Cov_{a∼π}(log π(a), A(a)).

The entropy–performance law (Eq. 6): R = −a·exp(H) + b, ceiling R(H = 0) = −a + b.
"""

from __future__ import annotations

import numpy as np


def _xp(x):
    """The array namespace of ``x``: jax.numpy for jax arrays, numpy otherwise."""
    if type(x).__module__.startswith("jax"):
        import jax.numpy as jnp

        return jnp
    return np


def log_softmax(logits):
    """log π = z − logsumexp(z) on the last axis (stable for any finite z)."""
    xp = _xp(logits)
    m = xp.max(logits, axis=-1, keepdims=True)
    shifted = logits - m
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))


def entropy(logits):
    """H(π) = −Σ_a π_a log π_a of the softmax of ``logits`` (nats), over the last axis.

    Hand values: uniform over K actions gives log K; a one-hot limit gives 0.
    """
    xp = _xp(logits)
    logp = log_softmax(logits)
    p = xp.exp(logp)
    # 0·log 0 = 0: an action with logit −inf has logp = −inf and p = 0; `where` drops it.
    return -xp.sum(p * xp.where(p > 0, logp, 0.0), axis=-1)


def policy_covariance(logits, x, y):
    """Cov_{a∼π}(x(a), y(a)) = E_π[(x − E_π x)(y − E_π y)] over the last axis.

    Actions of probability 0 (logit −inf) carry no weight, whatever x and y are there (x =
    log π is −inf there; 0·∞ would be NaN), so a one-hot policy has covariance 0."""
    xp = _xp(logits)
    p = xp.exp(log_softmax(logits))
    x, y = xp.where(p > 0, x, 0.0), xp.where(p > 0, y, 0.0)
    ex = xp.sum(p * x, axis=-1, keepdims=True)
    ey = xp.sum(p * y, axis=-1, keepdims=True)
    return xp.sum(p * (x - ex) * (y - ey), axis=-1)


def entropy_change_first_order(logits, dz):
    """Lemma 1 of Cui et al. 2025 (arXiv 2505.22617, §3.1): the first-order change of the
    softmax entropy under the logit update ``dz``,

        ΔH ≈ −Cov_{a∼π}(log π(a), Δz(a)).

    It is the directional derivative ∇_z H · Δz (derivation in the module docstring), so the
    error is the second-order Taylor term, O(‖Δz‖²). It holds for *any* Δz, sampled or exact;
    adding a constant to Δz changes neither the policy nor the covariance.
    """
    return -policy_covariance(logits, log_softmax(logits), dz)


def centred_advantage(logits, rewards):
    """A(a) = r(a) − E_π[r]: the advantage with the exact value baseline, E_π[A] = 0."""
    xp = _xp(logits)
    p = xp.exp(log_softmax(logits))
    return rewards - xp.sum(p * rewards, axis=-1, keepdims=True)


def pg_logit_update(logits, advantages, eta):
    """Exact (expected) softmax policy-gradient step in logit space,
    Δz_a = η ∂/∂z_a E_π[A] = η π_a (A_a − E_π[A])  (Cui et al. 2025, Prop. 1 / App. E.3).

    With a centred advantage (E_π[A] = 0) this is the paper's Δz_a = η π_a A_a; centring
    here makes the function exact for raw rewards too.
    """
    p = _xp(logits).exp(log_softmax(logits))
    return eta * p * centred_advantage(logits, advantages)


def npg_logit_update(logits, advantages, eta):
    """Natural policy gradient step for the tabular softmax (Cui et al. 2025, Thm. 2, after
    Agarwal et al. 2021): Δz_a = η A_a. Returned with A centred under π; the shift is a
    constant per state, so the policy and the covariance are the same either way."""
    return eta * centred_advantage(logits, advantages)


def predicted_entropy_change_pg(logits, rewards, eta):
    """Theorem 1 of Cui et al. 2025 (arXiv 2505.22617): under vanilla softmax policy
    gradient, ΔH ≈ −η Cov_{a∼π}(log π(a), π(a) A(a)), A centred under π."""
    p = _xp(logits).exp(log_softmax(logits))
    a = centred_advantage(logits, rewards)
    return -eta * policy_covariance(logits, log_softmax(logits), p * a)


def predicted_entropy_change_npg(logits, rewards, eta):
    """Theorem 2 of Cui et al. 2025 (arXiv 2505.22617): under natural policy gradient,
    ΔH ≈ −η Cov_{a∼π}(log π(a), A(a))."""
    return -eta * policy_covariance(logits, log_softmax(logits), rewards)


# ------------------------------------------------------------- R = −a·exp(H) + b (Eq. 6)
def fit_entropy_performance(h, r):
    """Least-squares fit of Cui et al. 2025 (arXiv 2505.22617) Eq. 6, R = −a·exp(H) + b.

    The model is linear in (a, b) with regressor x = exp(H): R = b − a x, so ordinary least
    squares gives a = −Cov(x, R)/Var(x), b = mean(R) + a·mean(x). (The paper does not name
    its fitting procedure; least squares on (H, R) pairs is our choice.) Returns (a, b).
    """
    x = np.exp(np.asarray(h, dtype=np.float64))
    r = np.asarray(r, dtype=np.float64)
    if x.size < 2 or np.ptp(x) == 0:
        raise ValueError("need at least two distinct entropies to fit R = -a exp(H) + b")
    xc = x - x.mean()
    a = -float(np.sum(xc * (r - r.mean())) / np.sum(xc * xc))
    b = float(r.mean() + a * x.mean())
    return a, b


def predict_performance(h, a, b):
    """R(H) = −a·exp(H) + b (Cui et al. 2025, Eq. 6)."""
    return -a * np.exp(np.asarray(h, dtype=np.float64)) + b


def performance_ceiling(a, b):
    """R at H = 0: −a + b (Cui et al. 2025, §2.5), the predicted ceiling of training."""
    return -a + b


# ------------------------------------------------------- second order: zero-mean updates
def entropy_hessian_fisher_trace(logits):
    """tr(∇²_z H · F), F = diag π − ππᵀ, in closed form (ours, docs/theory_rl_dynamics.md §3):
    with m = log π + H and s = Σ π²,

        tr(∇²_z H F) = −s(1 + s) + 2 Σ π³ − (1 + 2s) Σ π² m + 3 Σ π³ m.

    Uniform π over K answers: −(K − 1)/K². Not of one sign: for two answers it is −¼ at a
    logit gap of 0 and positive beyond a gap of ≈ 1.54."""
    xp = _xp(logits)
    logp = log_softmax(logits)
    p = xp.exp(logp)
    m = xp.where(p > 0, logp, 0.0) + entropy(logits)[..., None]  # p = 0 terms drop out
    s = xp.sum(p**2, axis=-1)
    return (-s * (1 + s) + 2 * xp.sum(p**3, axis=-1) - (1 + 2 * s) * xp.sum(p**2 * m, axis=-1)
            + 3 * xp.sum(p**3 * m, axis=-1))


def grpo_bernoulli_kappa(group_size: int, std_eps: float = 1e-6) -> float:
    """κ = E[Σ_i Â_i²]/G for GRPO advantages Â_i = (r_i − mean)/(std + eps) of G i.i.d.
    Bernoulli(½) rewards, population std (ours, docs §3): with k successes and q = k/G,
    Σ_i Â_i² = G σ²/(σ + eps)², σ² = q(1 − q) (0 when all rewards are equal); averaged over
    k ~ Binomial(G, ½). κ = 1 − 2^(1−G) up to eps."""
    from math import comb

    k = np.arange(group_size + 1)
    pmf = np.array([comb(group_size, j) / 2**group_size for j in k])
    sigma = np.sqrt(k / group_size * (1 - k / group_size))
    return float(np.sum(pmf * sigma**2 / (sigma + std_eps) ** 2))


def onpolicy_entropy_drift(logits, lr: float, group_size: int):
    """Expected entropy change of one on-policy SGD step on the logits, per context, under
    Bernoulli(½) rewards independent of the answers and GRPO advantages with the population
    std (κ is ``grpo_bernoulli_kappa``; another reward rate changes κ, e.g. Bernoulli(0.2)
    at G = 8 gives κ = 1 − 0.2⁸ − 0.8⁸ = 0.832 against 0.992) (ours, docs §3; the
    first-order term is Cui et al. 2025, arXiv 2505.22617, Lemma 1, applied to E[Δz] = 0):
    Δz = (lr/G) Σ_i Â_i (e_{a_i} − π), E[Δz] = 0, Cov Δz = (lr²/G) κ F, so

        E[ΔH] = ½ (lr²/G) κ tr(∇²_z H F) + O(lr³/G²)."""
    kappa = grpo_bernoulli_kappa(group_size)
    return 0.5 * lr**2 / group_size * kappa * entropy_hessian_fisher_trace(logits)
