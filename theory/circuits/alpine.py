"""ALPINE's path-finding transformer, compiled into our layout.

Wang, Shen, Feng, Sun, Teng, Chen, "ALPINE: Unveiling the Planning Capability of
Autoregressive Learning in Language Models", NeurIPS 2024, arXiv 2405.09220, §3.1: Theorem 2
(a 1-layer, 1-head transformer with an O(|V|) embedding finds paths with the adjacency matrix
in the FFN and the reachability matrix in the attention's value weights) and Algorithm 1
(the idealised planner: from the current node i step to any k with A(i, k) = 1 and
R(t, k) = 1). Index convention as in the paper and ``tasks.path_finding``: ``A[i, k]`` = edge
i -> k, ``R[t, k]`` = k can reach t (reflexive).

Sequence (``tasks.path_finding``): ``s t | s u_1 ... t <eos>``; token of node k is k + 2
(``<pad>`` = 0, ``<eos>`` = 1). The logits at column p predict column p + 1.

Our derivation (the paper's proof fixes the attention and uses a linear FFN; our model has
learned positions, a causal softmax head and a GELU MLP, so the weights differ):

Residual stream, d_model = 3n + 5, one named subspace per variable (tracr's layout):
    CUR [n]  one-hot of the node at this column (token embedding)
    ATT [n]  one-hot of the node the head attends to (written by the head)
    LOG [V]  logit accumulator; W_U is the identity from LOG to the vocabulary
    P0, P1, LATER   position flags (positional embedding of column 0, 1, >= 2)

Attention (1 head, d_head = max(n, 2)): q = g*sqrt(E) (P1 e_0 + LATER e_1), k = P0 e_0 + P1 e_1,
so column 1 attends column 0 (the source s) and every column >= 2 attends column 1 (the
target t), each with weight 1 - O((T) e^-g), g = ``attn_gap``. Value = CUR; the output writes
ATT = one-hot(attended node) and, into LOG, the row R[attended node, :] (the reachability
matrix lives in the OV circuit, as in Theorem 2).

MLP (d_mlp = 3n, GELU): every unit reads a 0/1 feature f times a sharpness S >> 1 and writes
with 1/S, so GELU(S f)/S = f for f in {0, 1} (tanh-GELU is exactly 0 at 0 and saturates for
|S f| >= 10): it acts as an exact ReLU on these inputs.
    adjacency  a_i = GELU(S CUR_i)                  writes A[i, :] into LOG
    copy       c_i = GELU(S (ATT_i + P1 - 1))       writes C into LOG[node i]   (column 1)
    stop       e_i = GELU(S (CUR_i + ATT_i - 1))    writes E into LOG[<eos>]   (current = t)

Logits at a column >= 2 with current node u and target t:
    node k:  A[u, k] + R[t, k]   (= 2 exactly on Algorithm 1's allowed set, <= 1 elsewhere)
    <eos>:   E [u = t]
At u = t on a DAG, A[t, k] = 1 forces k > t, so R[t, k] = 0 and every node logit is <= 1 < E.
At column 1 (current t, attended s): node s gets C + R[s, s] = C + 1 > 2 >= any other. So with
C = E = 4 greedy decoding writes s, then a node allowed by Algorithm 1 at every step (one
exists while u != t because u reaches t), then ``<eos>`` on reaching t: on a DAG every
reachable (s, t) gives a valid path. Column 0 (which predicts t, never generated) is unused.
"""

from __future__ import annotations

import numpy as np

from theory.circuits.layout import empty_weights

COPY_LOGIT = 4.0  # C: the source must beat A + R <= 2 at column 1
EOS_LOGIT = 4.0  # E: <eos> must beat A + R <= 2 (<= 1 on a DAG) once the target is reached


def _check_matrix(name: str, m, n: int | None) -> np.ndarray:
    m = np.asarray(m)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2:
        raise ValueError(f"alpine.build: {name} must be a square matrix [n, n] with n >= 2, "
                         f"got shape {m.shape}")
    if n is not None and m.shape[0] != n:
        raise ValueError(f"alpine.build: {name} has {m.shape[0]} nodes, adjacency has {n}")
    if not np.isin(m, (0, 1)).all():
        raise ValueError(f"alpine.build: {name} must hold only 0/1 (or bool) entries")
    return m.astype(np.float32)


def config(n_nodes: int, max_len: int | None = None) -> dict:
    """ModelConfig fields of the construction for ``n_nodes`` nodes (see module docstring).

    max_len defaults to n + 3: prompt (2) + the longest simple path (n nodes) + ``<eos>``.
    """
    n = n_nodes
    return dict(vocab_size=n + 2, max_len=n + 3 if max_len is None else int(max_len),
                n_layers=1, n_heads=1, d_model=3 * n + 5, d_mlp=3 * n, d_head=max(n, 2),
                pos_enc="learned", norm="none", tied_embed=False, init_scale=0.02)


def build(adjacency, reachability, *, max_len: int | None = None, attn_gap: float = 40.0,
          sharpness: float = 30.0) -> tuple[dict, dict[str, np.ndarray]]:
    """``(config dict, weights)`` of the ALPINE construction (module docstring).

    adjacency[i, k]: edge i -> k; reachability[t, k]: k can reach t, reflexive (pass the true
    R for an exact planner, or ``R_obs | eye`` to imitate what NTP learns, §3.2).
    attn_gap: score gap g of the head; sharpness: S of the MLP units.
    """
    a = _check_matrix("adjacency", adjacency, None)
    n = a.shape[0]
    r = _check_matrix("reachability", reachability, n)
    if not np.all(np.diag(r) == 1):
        raise ValueError("alpine.build: reachability must be reflexive (R[t, t] = 1), as in "
                         "tasks.path_finding")
    for name, value in (("attn_gap", attn_gap), ("sharpness", sharpness)):
        if not 10.0 <= float(value) <= 1e3:
            raise ValueError(f"alpine.build: {name}={value} is not allowed: a number in "
                             "[10, 1000] (smaller breaks exactness, larger loses precision)")
    if max_len is not None and not (isinstance(max_len, int | np.integer) and max_len >= 3):
        raise ValueError(f"alpine.build: max_len={max_len!r} is not allowed: None or an "
                         "integer >= 3")
    cfg = config(n, max_len)
    v, e = cfg["vocab_size"], cfg["d_head"]
    cur, att, log = np.arange(n), n + np.arange(n), 2 * n + np.arange(v)
    p0, p1, later = 2 * n + v, 2 * n + v + 1, 2 * n + v + 2
    node = 2 + np.arange(n)  # token id (and LOG column) of node k
    eos = 1
    w = empty_weights(cfg)

    w["embed"][node, cur] = 1.0
    w["pos_embed"][0, p0] = 1.0
    w["pos_embed"][1, p1] = 1.0
    w["pos_embed"][2:, later] = 1.0

    qkv = w["blocks.0.attn.W_QKV"]  # [D, 3, H, E]
    q_scale = attn_gap * np.sqrt(e)  # scores are divided by sqrt(E) in the model
    qkv[p1, 0, 0, 0] = q_scale  # column 1 looks for the P0 key ...
    qkv[later, 0, 0, 1] = q_scale  # ... every later column for the P1 key
    qkv[p0, 1, 0, 0] = 1.0
    qkv[p1, 1, 0, 1] = 1.0
    qkv[cur, 2, 0, np.arange(n)] = 1.0  # value = one-hot of the key's node
    w_o = w["blocks.0.attn.W_O"]  # [H, E, D]
    w_o[0, np.arange(n), att] = 1.0
    w_o[0, :n, log[0] + node[0]:log[0] + node[-1] + 1] = r  # OV: node i -> R[i, :]

    s = float(sharpness)
    units_a, units_c, units_e = np.arange(n), n + np.arange(n), 2 * n + np.arange(n)
    w_in, b_in = w["blocks.0.mlp.W_in"], w["blocks.0.mlp.b_in"]
    w_out = w["blocks.0.mlp.W_out"]
    w_in[cur, units_a] = s
    w_out[units_a, log[0] + node[0]:log[0] + node[-1] + 1] = a / s
    w_in[att, units_c] = s
    w_in[p1, units_c] = s
    b_in[units_c] = -s
    w_out[units_c, log[node]] = COPY_LOGIT / s
    w_in[cur, units_e] = s
    w_in[att, units_e] = s
    b_in[units_e] = -s
    w_out[units_e, log[eos]] = EOS_LOGIT / s

    w["W_U"][log, np.arange(v)] = 1.0
    return cfg, w


def predicted_logits(adjacency, reachability, current: int, target: int) -> np.ndarray:
    """Algorithm-1 scores the construction puts on the node tokens at a column >= 2:
    ``A[current, :] + R[target, :]`` (adjacency from the MLP, reachability from the head)."""
    a = np.asarray(adjacency, np.float32)
    r = np.asarray(reachability, np.float32)
    return a[current] + r[target]
