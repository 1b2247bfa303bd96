"""The theorem-model arm and the logit decomposition of the ``alpine-path-finding`` figure
(experiments/alpine_path_finding.py; definitions and results: docs/figure_alpine.md).

* ``train_tabular``: the SIMPLIFIED model of Theorem 3 of Wang et al., "ALPINE", NeurIPS
  2024, arXiv 2405.09220 (§3.2-3.3): attention fixed on the target, no layer norm, linear
  FFN, W_t = W_o = I, so the next-node logits of a state (current u, target t) are exactly
  ``W^M[u, :] + W^V[t, :]``. Trained by full-batch gradient descent (the theorem's dynamics)
  from W^M = W^V = 0 plus N(0, INIT_STD²) noise per seed, on the next-node predictions of the
  training paths D: for a path s = u_1, ..., u_L = t, the predictions u_j -> u_{j+1},
  j < L (the theorem's n ∈ [3, N−1] on ``s t s ... t``). The <eos> after t is not
  modelled: node columns only, as in the W^M′/W^V′ AUCs of the transformer. The loss is the
  mean cross-entropy over those predictions, computed from the count tensor N[u, t, k] of
  Theorem 3 (the gradient is the theorem's Σ_j N_{i,j}(p − N_{i,j,k}/N_{i,j}) form).
* ``within_row_auc``: mean over rows of the per-row AUC (a per-row offset c_t, invisible to
  the softmax, cannot change it); an extra statistic, fixed before measuring, reported for
  both arms, never a claim.
* ``decompose``: where the transformer stores reachability. At teacher-forced path states
  (target t, current u) the node logits L(k) are split into W^M′(u, k) + W^V′(t, k) + rest
  (rest: the FFN's interaction on current + attended token, attention off the target,
  positions, biases). Among the out-neighbours k of u, valid (R(t, k) = 1) against invalid
  (R(t, k) = 0), within each state (immune to per-state offsets), the pooled pair AUC of each
  part (``full`` L, ``add`` W^M′ + W^V′, ``wv``, ``wm``, ``rest``); and
  R²_V = 1 − Σ(D − V)²/Σ D², where D is the target-dependent part of L (centred over the
  out-neighbours of u within the state, then over the states with the same u) and V the
  W^V′ term centred the same way: the share of D the additive value term explains.
* ``theorem_arm`` and ``decomposition``: the two steps as the figure's ``run`` calls them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments import alpine_measures as M
from experiments.alpine_measures import N_SPECIALS, auc

INIT_STD = 0.01


def transition_counts(paths, n_nodes: int) -> np.ndarray:
    """N[u, t, k]: how often a path with target t steps from u to k (float64[n, n, n])."""
    counts = np.zeros((n_nodes, n_nodes, n_nodes))
    for p in paths:
        p = np.asarray(p)
        np.add.at(counts, (p[:-1], np.full(len(p) - 1, p[-1]), p[1:]), 1.0)
    return counts


def train_tabular(counts, seeds, steps: int, lr: float):
    """Theorem 3's model on N[u, t, k]: (W^M, W^V) float64[S, n, n] and the loss curve
    [S, steps + 1], one model per seed (vmapped; seeds differ only in the init noise)."""
    counts = np.asarray(counts)
    u, t = np.nonzero(counts.sum(-1))  # the states (u, t) that occur in D
    cnt = jnp.asarray(counts[u, t] / counts.sum(), jnp.float32)  # [C, n], sums to 1
    u, t = jnp.asarray(u), jnp.asarray(t)
    n = counts.shape[0]

    def loss(w):
        logp = jax.nn.log_softmax(w[0][u] + w[1][t], axis=-1)
        return -(cnt * logp).sum()

    def one(key):
        w = INIT_STD * jax.random.normal(key, (2, n, n))

        def step(w, _):
            val, g = jax.value_and_grad(loss)(w)
            return w - lr * g, val

        w, curve = jax.lax.scan(step, w, None, length=steps)
        return w, jnp.append(curve, loss(w))

    keys = jnp.stack([jax.random.key_data(jax.random.key(s)) for s in seeds])
    w, curve = jax.jit(jax.vmap(lambda k: one(jax.random.wrap_key_data(k))))(keys)
    w = np.asarray(w, np.float64)
    return w[:, 0], w[:, 1], np.asarray(curve, np.float64)


def within_row_auc(w, pos, neg) -> float:
    """Mean over rows with both sets non-empty of auc(w[r, pos[r]], w[r, neg[r]])."""
    vals = [auc(w[r][pos[r]], w[r][neg[r]]) for r in range(w.shape[0])
            if pos[r].any() and neg[r].any()]
    return float(np.mean(vals)) if vals else float("nan")


def _pair_auc(score, valid, invalid) -> float:
    """Pooled over states c of the (valid k, invalid k') pairs within c: P(score[c, k] >
    score[c, k']) + ½ P(tie). score float[C, n]; valid, invalid bool[C, n]. NaN with no
    pair or a non-finite compared score (a diverged model has no ranking, as in ``auc``)."""
    gt = score[:, :, None] > score[:, None, :]
    eq = score[:, :, None] == score[:, None, :]
    pairs = valid[:, :, None] & invalid[:, None, :]
    total = pairs.sum()
    if not total or not np.isfinite(score[valid | invalid]).all():
        return float("nan")
    return float(((gt + 0.5 * eq) * pairs).sum() / total)


def state_table(tokens, states, targets):
    """(row, column, u, t) int arrays of the states: tokens int[P, W] as built by
    ``alpine_measures.gold_states``, states bool[P, W], targets int[P]."""
    row, col = np.nonzero(states)
    return row, col, np.asarray(tokens)[row, col] - N_SPECIALS, np.asarray(targets)[row]


def decompose(logits, u, t, w_m, w_v, adjacency, reachability) -> dict[str, float]:
    """Statistics of the module docstring for one model. logits float[C, n] (node columns
    of the states), u, t int[C]; w_m, w_v: that model's W^M′, W^V′."""
    a, r = np.asarray(adjacency, bool), np.asarray(reachability, bool)
    nbr = a[u]  # [C, n] out-neighbours of u
    valid, invalid = nbr & r[t], nbr & ~r[t]
    keep = valid.any(1) & invalid.any(1)  # states with a choice to make
    full = np.asarray(logits, np.float64)
    m, v = w_m[u], w_v[t]
    rest = full - m - v
    out = {f"dec_auc_{k}": _pair_auc(s[keep], valid[keep], invalid[keep])
           for k, s in (("full", full), ("add", m + v), ("wv", v), ("wm", m),
                        ("rest", rest))}

    def centre(x):  # within the state over nbr, then over the states with the same u
        x = np.where(nbr, x - (x * nbr).sum(1, keepdims=True) / nbr.sum(1, keepdims=True), 0.0)
        for node in np.unique(u):
            sel = u == node
            x[sel] -= x[sel].mean(0)
        return x

    d, vc = centre(full.copy()), centre(v.copy())
    ss = (d ** 2).sum()
    out["dec_r2_wv"] = float(1 - ((d - vc) ** 2).sum() / ss) if ss > 0 else float("nan")
    out["dec_states"] = float(keep.sum())
    return out


# ------------------------------------------------------------------ the figure's two steps
def theorem_arm(config, task, sets) -> dict:
    """Theorem 3's model per seed of ``config`` (``theorem_steps`` GD steps at
    ``theorem_lr``): its AUCs and set means (prefix ``th_``), the within-row obs vs non AUC
    of its W^V, the loss curves and seed 0's W^V."""
    counts = transition_counts(task.train_paths, config.n_nodes)
    seeds = range(config.seed, config.seed + config.n_seeds)
    w_m, w_v, curve = train_tabular(counts, seeds, config.theorem_steps, config.theorem_lr)
    scores = [M.matrix_scores(a, b, sets) for a, b in zip(w_m, w_v, strict=True)]
    out = {f"th_{k}": np.asarray([sc[k] for sc in scores]) for k in scores[0]}
    out["th_wrow_obs_non"] = np.asarray([within_row_auc(b, sets["obs"], sets["non"])
                                         for b in w_v])
    return {**out, "th_loss": curve, "th_wv_seed0": w_v[0]}


def decomposition(config, task, graphdef, params, mats, rng) -> dict:
    """``decompose`` of every seed's model (``params`` with a leading seed axis, ``mats`` its
    (W^M′, W^V′) per seed) on the gold-path states of ``config.dec_pairs`` train pairs
    (their first training path) and as many test pairs (their shortest path), drawn with
    ``rng``: keys ``dec_{stat}_{split}`` float[S]."""
    from tasks.path_finding import alpine_data
    from toymodels.model import forward

    data, m = alpine_data(task.config), task.config.paths_per_pair
    width = task.prompt_len + task.max_target_len
    out = {}
    for split, pairs, paths in (("train", task.train_pairs, data.train_paths[::m]),
                                ("test", task.test_pairs, data.test_paths)):
        idx = rng.choice(len(pairs), min(config.dec_pairs, len(pairs)), replace=False)
        tokens, states, _ = M.gold_states(task, pairs[idx], [paths[i] for i in idx], width)
        row, col, u, t = state_table(tokens, states, pairs[idx, 1])
        x = jnp.asarray(tokens[:, :-1])
        logits = jax.jit(jax.vmap(lambda p, x=x: forward(graphdef, p, x, valid=x > 0)[0]))(
            params)
        nodes = np.asarray(logits, np.float64)[:, row, col, N_SPECIALS:]
        dec = [decompose(nodes[i], u, t, *mats[i], task.adjacency, task.reachability)
               for i in range(len(mats))]
        out.update({f"{k}_{split}": np.asarray([d[k] for d in dec]) for k in dec[0]})
    return out
