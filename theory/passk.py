"""pass@k: the unbiased estimator from n samples and the exact value from success rates.

The estimator is Chen et al. 2021, "Evaluating Large Language Models Trained on Code"
(arXiv 2107.03374, §2.1): with n samples of a problem of which c are correct,

    pass@k = 1 − C(n−c, k) / C(n, k),

the probability that k samples drawn *without replacement* from the n include a correct
one, whose expectation over the n samples is the true pass@k 1 − (1 − p)^k. Yue et al. 2025
(arXiv 2504.13837) use it for the base-vs-RL pass@k curves. The binomials overflow for
large n, so we use the equivalent product (the paper's numpy form):

    C(n−c, k) / C(n, k) = Π_{i=n−c+1}^{n} (1 − k/i)     (and = 0 when n − c < k).

Exact pass@k of a policy whose success probability on problem j is p_j:
pass@k = mean_j [1 − (1 − p_j)^k]  (k independent samples, with replacement).
"""

from __future__ import annotations

import numpy as np


def pass_at_k_unbiased(n: int, c, k: int):
    """Chen et al. 2021 (arXiv 2107.03374, §2.1, Eq. 1; the product is their Fig. 3's numpy
    form): 1 − C(n−c, k)/C(n, k) per problem.

    ``c`` may be an int or an integer array (one count per problem); returns float64 of the
    same shape. Hand values: n=4, c=1, k=2 gives 1 − C(3,2)/C(4,2) = 1 − 3/6 = 1/2; k=1 gives
    c/n; c=0 gives 0; n − c < k gives 1.
    """
    if not (isinstance(n, int | np.integer) and isinstance(k, int | np.integer)):
        raise TypeError("n and k must be integers")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    c = np.asarray(c)
    if c.dtype == np.bool_ or not np.issubdtype(c.dtype, np.number):
        raise TypeError(f"c must hold integer counts, got dtype {c.dtype}")
    if not np.all(np.isfinite(c)) or np.any(c != np.round(c)):  # a count of 1.5 or NaN
        raise ValueError(f"c must hold whole numbers, got {c}")
    if np.any(c < 0) or np.any(c > n):
        raise ValueError(f"need 0 <= c <= n={n}")
    c = c.astype(np.int64)
    i = np.arange(1, n + 1, dtype=np.float64)  # i = 1..n
    # Factor (1 − k/i) enters the product iff i > n − c; zero-cost masking keeps it vectorised.
    factors = np.where(i[None, :] > (n - c.reshape(-1, 1)), 1.0 - k / i[None, :], 1.0)
    ratio = np.prod(factors, axis=-1)
    out = np.where(n - c.reshape(-1) < k, 1.0, 1.0 - ratio)
    return out.reshape(c.shape) if c.shape else float(out[0])


def pass_at_k_exact(p, k):
    """Exact pass@k, mean_j [1 − (1 − p_j)^k], from per-problem success probabilities p_j.

    ``k`` may be an int or an array of k values (returned with one entry per k). Hand values:
    p = [1/2], k = 2 gives 3/4; p = [0, 1] gives 1/2 at every k.
    """
    p = np.asarray(p, dtype=np.float64)
    if np.any(p < 0) or np.any(p > 1):
        raise ValueError("success probabilities must lie in [0, 1]")
    ks = np.asarray(k)
    if np.any(ks < 1):
        raise ValueError("k must be >= 1")
    vals = 1.0 - (1.0 - p[..., None]) ** ks.reshape(-1)  # [problems, n_k]
    out = vals.mean(axis=tuple(range(vals.ndim - 1)))
    return out.reshape(ks.shape) if ks.shape else float(out[0])


def pass_at_k_curve(n: int, c, ks):
    """Dataset pass@k at each k in ``ks``: the mean over problems of the unbiased estimator."""
    c = np.atleast_1d(np.asarray(c))
    return np.array([float(np.mean(pass_at_k_unbiased(n, c, int(k)))) for k in ks])
