"""Measurements of the ``alpine-path-finding`` figure (experiments/alpine_path_finding.py):
the learned logit matrices W^M′ and W^V′, rank AUCs, accuracy by degree, and the two
diversity measures of the RL phase. Definitions and thresholds: docs/figure_alpine.md.

* ``logit_matrices``: Wang et al., "ALPINE", NeurIPS 2024, arXiv 2405.09220, App. D (the
  matrices of Fig. 5 and Fig. 6a). With W_t the token embedding, W_o the unembedding and
  W^V = W_V W_O the head's value-output map,
      W^M′[i, :] = FFN(e_i W_t) W_o + e_i W_t W_o            (current node -> next node)
      W^V′[i, :] = e_i W_t W^V W_o + FFN(e_i W_t W^V) W_o    (target node -> next node)
  FFN(x) = gelu(x W_in + b_in) W_out. Our model for the figure has no layer norms
  (``norm='none'``), so these are the exact logit contributions of a token through the two
  paths; positional embeddings, b_out, the value/output biases and b_U are left out: they do
  not depend on the node i (the paper's formula has none of them either).
* ``auc``: the Mann-Whitney rank statistic P(x_pos > x_neg) + ½ P(x_pos = x_neg).
* ``kl_to_uniform``: E5 (Wang et al. 2025, arXiv 2509.22613, the diversity-collapse theorem):
  KL(U_C ‖ π) = −log|C| − (1/|C|) Σ_{k∈C} log π(k), C = {k : A(u, k) = 1, R(t, k) = 1}.
* ``path_entropy``: plug-in entropy of the distinct valid paths among n samples (our
  choice of the experimental diversity measure; E5's exact metric is not confirmed).
* ``rule_loss``: the NTP training loss (on D) of the data's own generating rule (uniform over
  the valid next nodes), the reference our NTP step count is judged against (our quantity).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

N_SPECIALS = 2  # <pad>, <eos>: the token of node k is k + 2 (tasks.path_finding)
DEGREE_BUCKETS = ("0", "1", ">=2")  # degree 2 and 3+ pooled: the 100-node graph has ~0-9 of 3+


# ----------------------------------------------------------------------- logit matrices
def logit_matrices(params, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """(W^M′, W^V′) float64[n, n] of a 1-layer, 1-head, norm-free model (module docstring),
    node rows and node columns only. ``params``: the nnx.State of one model."""
    from toymodels.interp.cache import layout, weight

    shapes = layout(params)  # names and shapes only: the refusals read no weight
    for present, why in (("blocks.1.attn.W_O", "1 layer"), ("blocks.0.ln1.scale", "norm='none'")):
        if present in shapes:
            raise ValueError(f"logit_matrices: the model has {present}; the extraction is "
                             f"exact only for a model with {why}")
    if "blocks.0.mlp.W_in" not in shapes:
        raise ValueError("logit_matrices needs a 1-layer model with an MLP (d_mlp > 0)")
    if shapes["blocks.0.attn.W_QKV"][2] != 1:
        raise ValueError("logit_matrices: the model must have exactly one head")
    get = lambda name: np.asarray(weight(params, name), np.float64)
    w_qkv, w_o = get("blocks.0.attn.W_QKV"), get("blocks.0.attn.W_O")
    w_in, b_in, w_out = (get(f"blocks.0.mlp.{k}") for k in ("W_in", "b_in", "W_out"))
    embed = get("embed")
    w_u = get("W_U") if "W_U" in shapes else embed.T  # tied embedding: W_o = W_t^T
    nodes = N_SPECIALS + np.arange(n_nodes)
    w_t = embed[nodes]  # e_i W_t, [n, D]
    w_v = w_qkv[:, 2, 0, :] @ w_o[0]  # W^V = W_V W_O, [D, D]

    def ffn(x):  # the model's tanh-GELU, evaluated in float64
        return np.asarray(jax.nn.gelu(x @ w_in + b_in), np.float64) @ w_out

    w_m = (ffn(w_t) + w_t) @ w_u
    value = w_t @ w_v
    w_vp = (value + ffn(value)) @ w_u
    return w_m[:, nodes], w_vp[:, nodes]


# --------------------------------------------------------------------------------- AUC
def auc(pos, neg) -> float:
    """Mann-Whitney AUC: P(pos > neg) + ½ P(pos = neg) over all (pos, neg) pairs; NaN if a
    set is empty or holds a non-finite value (a diverged model has no ranking, not AUC ½).
    Hand values: auc([2, 3], [1]) = 1, auc([1], [1]) = ½, auc([0], [1, 2]) = 0."""
    pos, neg = np.ravel(pos).astype(np.float64), np.sort(np.ravel(neg).astype(np.float64))
    if pos.size == 0 or neg.size == 0 or not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        return float("nan")
    below = np.searchsorted(neg, pos, side="left")
    ties = np.searchsorted(neg, pos, side="right") - below
    return float((below + 0.5 * ties).sum() / (pos.size * neg.size))


def matrix_sets(adjacency, reachability, observed_reachability) -> dict[str, np.ndarray]:
    """Boolean masks [n, n] of the entries each AUC compares.

    W^M′ (rows current i, columns next k): ``edge`` A = 1 and ``non_edge`` A = 0, both with
    i < k (a node list in topological order can only have edges i -> k with i < k).
    W^V′ (rows target t, columns k), entries with t > k (Fig. 6a uses t >= k; we drop the
    diagonal, where R(t, t) = 1 by definition): ``obs`` R_obs = 1, ``real_obs`` R = 1 and
    R_obs = 0, ``non`` R = 0.
    """
    a, r, ro = (np.asarray(x, bool) for x in (adjacency, reachability, observed_reachability))
    n = a.shape[0]
    upper, lower = np.triu(np.ones((n, n), bool), 1), np.tril(np.ones((n, n), bool), -1)
    return {"edge": a & upper, "non_edge": ~a & upper, "obs": ro & lower,
            "real_obs": r & ~ro & lower, "non": ~r & lower}


def matrix_scores(w_m, w_v, sets: dict[str, np.ndarray]) -> dict[str, float]:
    """AUCs of one model's matrices and the mean W^V′ of each set (Fig. 6a)."""
    return {"auc_edge": auc(w_m[sets["edge"]], w_m[sets["non_edge"]]),
            "auc_obs_non": auc(w_v[sets["obs"]], w_v[sets["non"]]),
            "auc_realobs_non": auc(w_v[sets["real_obs"]], w_v[sets["non"]]),
            "auc_obs_realobs": auc(w_v[sets["obs"]], w_v[sets["real_obs"]]),
            **{f"mean_{k}": float(w_v[sets[k]].mean()) if sets[k].any() else float("nan")
               for k in ("obs", "real_obs", "non")}}


# ------------------------------------------------------------------ accuracy by degree
def degree_buckets(degree) -> np.ndarray:
    """Bucket index 0, 1, 2 (= degree 2 or 3+) of each pair's degree."""
    return np.minimum(np.asarray(degree), 2)


def accuracy_by_degree(rewards, degree) -> tuple[np.ndarray, np.ndarray]:
    """rewards float[..., P] (1 = valid path), degree int[P] -> (accuracy [..., 3] with NaN
    for an empty bucket, counts int[3])."""
    rewards, bucket = np.asarray(rewards, np.float64), degree_buckets(degree)
    counts = np.bincount(bucket, minlength=3)
    acc = np.stack([rewards[..., bucket == b].mean(-1) if counts[b] else
                    np.full(rewards.shape[:-1], np.nan) for b in range(3)], -1)
    return acc, counts


# ----------------------------------------------------------------------------- diversity
def path_entropy(tokens, valid):
    """Entropy (nats) of the empirical distribution of the distinct valid completions.

    tokens int[P, n, L] (n samples per pair), valid bool[P, n] -> (entropy [P], number of
    valid samples [P]); a pair with no valid sample has entropy 0. With m valid samples and
    c_j the count of sample j's path among them, H = −(1/m) Σ_j log(c_j / m): each distinct
    path p, seen c_p times, contributes c_p times −(1/m) log(c_p/m).
    """
    same = jnp.all(tokens[:, :, None, :] == tokens[:, None, :, :], axis=-1)  # [P, n, n]
    v = valid.astype(jnp.float32)
    count = jnp.einsum("pij,pi->pj", same.astype(jnp.float32), v)  # valid copies of sample j
    m = v.sum(-1)
    frac = count / jnp.maximum(m, 1.0)[:, None]
    h = -(v * jnp.log(jnp.where(v > 0, frac, 1.0))).sum(-1) / jnp.maximum(m, 1.0)
    return h, m


def gold_states(task, pairs, paths, width: int):
    """Teacher-forcing inputs for ``kl_to_uniform`` on the gold ``paths`` of ``pairs``.

    Returns tokens int32[P, width] = (s, t, path..., <eos>, <pad>...), states bool[P, width]
    (True at the columns whose input is a path node u != t: the logits there are
    π(·|t, u, prefix)), and allowed bool[P, width, V] (the set C(t, u) at those columns).
    """
    a, r = task.adjacency, task.reachability
    v = task.vocab.size
    tokens = np.zeros((len(pairs), width), np.int32)
    states = np.zeros((len(pairs), width), bool)
    allowed = np.zeros((len(pairs), width, v), bool)
    for i, ((s, t), path) in enumerate(zip(pairs, paths, strict=True)):
        seq = [s, t, *path]
        if len(seq) + 1 > width or path[0] != s or path[-1] != t:
            raise ValueError(f"gold_states: path {path} of pair ({s}, {t}) does not fit")
        tokens[i, :len(seq)] = np.asarray(seq) + N_SPECIALS
        tokens[i, len(seq)] = 1  # <eos>
        for j, u in enumerate(path[:-1]):
            col = 2 + j
            states[i, col] = True
            allowed[i, col, N_SPECIALS:] = a[u] & r[t]
    if not allowed[states].any(-1).all():
        raise ValueError("gold_states: a state with no valid next node (the path is not a "
                         "path of the graph)")
    return tokens, states, allowed


def kl_state(logits, allowed):
    """KL(U_C ‖ π) = −log|C| − mean_{k∈C} log π(k) at every column (module docstring).
    logits float[..., V], allowed bool[..., V] (C; a column with empty C gives 0)."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    size = jnp.maximum(allowed.sum(-1), 1)
    return -jnp.log(size) - jnp.where(allowed, logp, 0.0).sum(-1) / size


def kl_to_uniform(logits, states, allowed):
    """Mean of ``kl_state`` over the states. logits float[P, W, V] (column j predicts column
    j + 1), states bool[P, W], allowed bool[P, W, V]."""
    kl = kl_state(logits, allowed)
    return jnp.where(states, kl, 0.0).sum() / jnp.maximum(states.sum(), 1)


# ------------------------------------------------------------------------ NTP reference
def rule_loss(adjacency, reachability, paths) -> float:
    """Mean per-token cross-entropy on the training paths D of the rule that generated
    them: after prompt (s, t) the completion s u_2 ... u_L = t <eos> is predicted with s and
    <eos> certain and each u_{j+1} uniform over C(u_j, t) = {k : A(u_j, k) = 1, R(t, k) = 1}:

        loss = Σ_paths Σ_{j<L} log|C(u_j, t)|  /  Σ_paths (L + 1)

    (L + 1 target tokens per path, as in ``toymodels.train.ntp_loss``). A model below it
    has memorised frequencies of D; near it, it has learned the rule on the train states."""
    n_valid = np.asarray(adjacency, np.int64) @ np.asarray(reachability, np.int64).T  # [u, t]
    total, tokens = 0.0, 0
    for path in paths:
        total += float(np.log(n_valid[path[:-1], path[-1]]).sum())
        tokens += len(path) + 1
    return total / tokens


# ---------------------------------------------------------------------------- saturation
def saturation_index(curve, tol: float) -> int:
    """First index from which ``curve`` stays within ``tol`` of its last value."""
    curve = np.asarray(curve, np.float64)
    outside = np.flatnonzero(np.abs(curve - curve[-1]) > tol)
    return int(outside[-1] + 1) if outside.size else 0
