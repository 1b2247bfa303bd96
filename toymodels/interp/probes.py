"""Linear probes for the latent variables a task generator exposes (current node, distance,
running parity, carry), with held-out accuracy and a shuffled-label control (Hewitt & Liang
2019, arXiv 1909.03368: a probe is only informative if it beats the same probe on labels
that carry no information about the input).

Features are standardised with the training split's mean and std. Two fits:

* ``'ridge'`` (closed form): W = (X^T X + l2 n I)^-1 X^T (Y - mean Y) on one-hot labels Y,
  prediction argmax(x W + b);
* ``'logistic'``: softmax regression by optax Adam, ``steps`` full-batch steps in one
  ``lax.scan``, with the same l2 penalty.

Both minimise the same per-example objective, (1/n) sum_i loss_i + l2 ||W||_F^2 (bias not
penalised), with squared error on the one-hot labels for ridge (its normal equations are the
closed form above; the features are centred on the training split, so b = mean Y) and
cross-entropy for logistic. The logistic fit is as converged as ``steps`` and ``lr`` make it
(at the defaults its objective was 2e-4 to 4e-3 above the optimum on our checks, with the
optimum's predictions; ``tests/test_probes_formation_crosscheck.py``). With K >= 3 classes
ridge can miss a class that is linearly separable ("masking": Hastie, Tibshirani & Friedman,
Elements of Statistical Learning, Sec. 4.2), and even on a separable but unbalanced bit its
least-squares boundary can read below 1 (0.94 held-out in our checks, where logistic read
0.98 to 1.00): to ask "is it linearly decodable", use ``'logistic'``.

Randomness, all from ``key``: ``split_key, shuffle_key = jax.random.split(key)``; the held-out
rows are ``order[:round(test_frac n)]`` of ``order = jax.random.permutation(split_key, n)``, the
rest train (a row is never in both). The control fits the same probe on the labels permuted by
``jax.random.permutation(shuffle_key, n)`` (the label marginal is kept, the link to the input
is broken) and scores it on the permuted held-out labels: at most about the max-class
frequency (0.5 for a balanced bit).

Degenerate input: NaN or infinite features, or l2 < 0, are an error. One class only gives a
defined but empty result: every accuracy is 1, the control's too (nothing to beat). A
feature constant on the training split standardises to about 0 and gets a weight of about 0.
More features than rows is fine with l2 > 0 (the Gram matrix is then invertible).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

METHODS = ("ridge", "logistic")


class ProbeResult(NamedTuple):
    train_acc: float
    test_acc: float
    control_acc: float  # held-out accuracy of the probe fitted on shuffled labels
    weights: np.ndarray  # [D, K] on standardised features
    bias: np.ndarray  # [K]


def gather_positions(acts: jax.Array, positions) -> jax.Array:
    """[B * P, D] rows of ``acts`` [B, T, D] at columns ``positions`` (int[P] or [B, P])."""
    positions = jnp.asarray(positions)
    b = acts.shape[0]
    positions = jnp.broadcast_to(positions, (b, positions.shape[-1]))
    return acts[jnp.arange(b)[:, None], positions].reshape(-1, acts.shape[-1])


def labelled_rows(acts, labels, *, shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features [N, D] and labels int[N] of every (example, column) whose label is defined.

    ``acts`` [B, T, D] (a cached site), ``labels`` int[B, T] with -1 where undefined (as
    ``tasks.pairs.latents`` returns them). ``shift=1`` pairs the activation at column j with
    the label of column j + 1: what column j must compute to predict the next token.
    """
    acts, labels = np.asarray(acts), np.asarray(labels)
    if acts.ndim != 3 or labels.shape != acts.shape[:2]:
        raise ValueError(f"labelled_rows: acts must be [B, T, D] and labels int[B, T]; got "
                         f"{acts.shape} and {labels.shape}")
    if not 0 <= shift < acts.shape[1]:
        raise ValueError(f"labelled_rows: shift={shift} is not allowed: in [0, {acts.shape[1]})")
    acts, labels = acts[:, :acts.shape[1] - shift], labels[:, shift:]
    keep = labels >= 0
    return acts[keep], labels[keep]


def _standardise(x_train, x):
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    return (x - mean) / std


@functools.partial(jax.jit, static_argnames=("n_classes", "method", "steps"))
def _fit(x, y, *, n_classes, method, l2, steps, lr):
    y1 = jax.nn.one_hot(y, n_classes)
    if method == "ridge":
        n, d = x.shape
        y_mean = y1.mean(0)
        gram = x.T @ x + l2 * n * jnp.eye(d)
        w = jnp.linalg.solve(gram, x.T @ (y1 - y_mean))
        return w, y_mean
    opt = optax.adam(lr)

    def loss(p):
        logits = x @ p[0] + p[1]
        return optax.softmax_cross_entropy(logits, y1).mean() + l2 * (p[0] ** 2).sum()

    def step(carry, _):
        p, s = carry
        g = jax.grad(loss)(p)
        upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s), None

    p0 = (jnp.zeros((x.shape[1], n_classes)), jnp.zeros(n_classes))
    (p, _), _ = jax.lax.scan(step, (p0, opt.init(p0)), None, length=steps)
    return p


def fit_probe(features, labels, *, key: jax.Array, n_classes: int | None = None,
              method: str = "ridge", test_frac: float = 0.3, l2: float = 1e-3,
              steps: int = 300, lr: float = 0.05) -> ProbeResult:
    """Fit a linear probe ``features [N, D] -> labels int[N]`` on a random (1 - test_frac)
    split and report train, held-out and shuffled-label-control accuracy."""
    x, y = jnp.asarray(features, jnp.float32), jnp.asarray(labels)
    if x.ndim != 2 or y.shape != x.shape[:1]:
        raise ValueError(f"fit_probe: features must be [N, D] and labels int[N]; got "
                         f"{x.shape} and {y.shape}")
    if not bool(jnp.isfinite(x).all()):
        raise ValueError("fit_probe: features contain NaN or infinite values")
    if not (np.isfinite(l2) and l2 >= 0):
        raise ValueError(f"fit_probe: l2={l2} is not allowed: a finite number >= 0")
    if not jnp.issubdtype(y.dtype, jnp.integer) or int(y.min()) < 0:
        raise ValueError("fit_probe: labels must be non-negative integers (class ids)")
    if method not in METHODS:
        raise ValueError(f"fit_probe: method={method!r} is not allowed: one of {METHODS}")
    if not 0.0 < test_frac < 1.0:
        raise ValueError(f"fit_probe: test_frac={test_frac} is not allowed: in (0, 1)")
    n = x.shape[0]
    n_test = int(round(n * test_frac))
    if n_test < 1 or n - n_test < 2:
        raise ValueError(f"fit_probe: {n} examples are too few for test_frac={test_frac}")
    k = int(y.max()) + 1 if n_classes is None else n_classes
    if int(y.max()) >= k:
        raise ValueError(f"fit_probe: labels reach {int(y.max())}, n_classes={k}")
    split_key, shuffle_key = jax.random.split(key)
    order = jax.random.permutation(split_key, n)
    train, test = order[n_test:], order[:n_test]
    xs = _standardise(x[train], x)
    fit = functools.partial(_fit, n_classes=k, method=method, l2=float(l2), steps=int(steps),
                            lr=float(lr))

    def accuracy(params, idx, labels_):
        pred = jnp.argmax(xs[idx] @ params[0] + params[1], axis=-1)
        return float((pred == labels_[idx]).mean())

    params = fit(xs[train], y[train])
    shuffled = y[jax.random.permutation(shuffle_key, n)]
    control = fit(xs[train], shuffled[train])
    return ProbeResult(accuracy(params, train, y), accuracy(params, test, y),
                       accuracy(control, test, shuffled), np.asarray(params[0]),
                       np.asarray(params[1]))
