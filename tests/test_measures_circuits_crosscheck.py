"""The measurements behind the claims of the circuit and reflection figures
(alpine-path-finding, iteration-head, search-lookahead, reflection-emergence,
long-cot-emergence), cross-checked against independent float64 references. The statistics
shared by every figure are checked in tests/test_harness_crosscheck.py.

Each reference below is written from the documented definition (docs/figure_alpine.md,
docs/theory_circuits.md, docs/theory_reflection.md, the modules' docstrings, and the papers
they cite), not from the code it checks; scipy.stats gives the textbook statistics (the
first two below are used to check claims built on them, not retested):

* seed interval: mean ± t_{0.975, n−1}·s/√n over the seed axis (Student, 1908), i.e.
  ``scipy.stats.t.interval(0.95, n − 1, loc=mean, scale=sem)``; NaN with one seed.
* OLS: ``scipy.stats.linregress`` (slope, intercept, r², both standard errors).
* Mann-Whitney AUC: U/(n₊n₋), U counting ties as ½ (``scipy.stats.mannwhitneyu``'s U₁).
* ALPINE (Wang et al., NeurIPS 2024, arXiv 2405.09220, §3.2, Theorem 3, App. D): the
  entry sets of the W^M′ / W^V′ AUCs, the tabular model's gradient
  ∂ℓ/∂W^M(i, k) = (1/N) Σ_j (N_{i,j} p_{i,j}(k) − N_{i,j,k}); E5 (arXiv 2509.22613):
  KL(U_C ‖ π) = Σ_{k∈C} (1/|C|) log((1/|C|)/π(k)).
* iteration heads (Cabannes et al., arXiv 2406.02128, official AttentionEval): layer 1
  queries L+2..2L+1 → key L+1 (<eoi>), layer 2 query L+t → key t.
* search (Saparov et al., arXiv 2412.04703): guessing among s's children, E[1/#children].

Tolerances, fixed before running: numpy/float64 code agrees with a float64 reference to
1e-12 relative (``EXACT``), or 1e-10 where the two compute it another way (scipy's
algorithms; logit as log(p/(1 − p)) here, log p − log1p(−p) there); JAX code runs in
float32: ``FLOAT32`` = 1e-5 relative, 1e-6 absolute for O(1) values, 1e-5 absolute for KL
sums of log-probabilities and the tabular model's weights, 1e-4 absolute for logits of a
random model through its own forward (O(10) values summed over width 16); the compiled
iteration-head construction is one-hot only up to its finite score gaps (weights
1 − O(1e-4)), so TV against it is checked to 1e-3. Monte-Carlo checks: 5 standard errors.
Each family has a guard that the comparison can fail; in a scratch copy, 39 planted bugs
(df n instead of n − 1, ties counted 0, the diagonal in the W^V′ sets, the value slice,
query columns off by one, ...) each failed a test, except two that change no output (the
first loss of the formation curve, hidden by the max with eval_every; the z² seed mean
computed over p first, the same grand mean).
"""

from __future__ import annotations

import collections
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import crossing_reference
from scipy import stats

from experiments import alpine_measures as AM
from experiments import alpine_theorem as TH
from experiments import iteration_head as IH
from experiments import long_cot_emergence as LC
from experiments import reflection_measures as RM
from experiments import search_lookahead as SL
from experiments import search_lookahead_data as SLD

EXACT = dict(rtol=1e-12, atol=1e-12)
FLOAT32 = dict(rtol=1e-5, atol=1e-6)


def logit(p):
    p = np.asarray(p, np.float64)
    return np.log(p / (1 - p))


# ============================================================ ALPINE: AUC and entry sets
def auc_reference(pos, neg):
    """Pairs: 1 if pos > neg, ½ if equal, 0 else; mean over all pairs."""
    pairs = [(p > n) + 0.5 * (p == n) for p in pos for n in neg]
    return float(np.mean(pairs)) if pairs else float("nan")


def test_auc_is_mann_whitney_with_ties_as_half():
    rng = np.random.default_rng(2)
    for _ in range(25):
        pos = rng.integers(0, 5, size=rng.integers(1, 12)).astype(float)  # many ties
        neg = rng.integers(0, 5, size=rng.integers(1, 12)).astype(float)
        got = AM.auc(pos, neg)
        assert math.isclose(got, auc_reference(pos, neg), rel_tol=1e-12, abs_tol=1e-15)
        u = stats.mannwhitneyu(pos, neg, method="asymptotic").statistic
        assert math.isclose(got, u / (pos.size * neg.size), rel_tol=1e-12, abs_tol=1e-15)
    assert AM.auc([1.0, 1.0], [1.0]) == 0.5  # all equal
    assert AM.auc([1.0], [0.0]) == 1.0 and AM.auc([0.0], [1.0]) == 0.0
    for pos, neg in (([], [1.0]), ([1.0], []), ([np.nan], [1.0]), ([1.0], [np.inf])):
        assert np.isnan(AM.auc(pos, neg))


def random_dag(n, p, seed):
    rng = np.random.default_rng(seed)
    a = (rng.random((n, n)) < p) & np.triu(np.ones((n, n), bool), 1)
    reach = np.eye(n, dtype=bool)  # reach[u, v]: u reaches v, by repeated squaring
    for _ in range(n):
        reach = reach | ((reach.astype(int) @ a.astype(int)) > 0)
    return a, reach.T  # R[t, k]: k reaches t


def test_logit_matrices_are_the_two_paths_run_through_the_model_itself():
    """App. D: W^M′[i] = (e_i W_t + FFN(e_i W_t)) W_o is what the token i alone gives through
    the skip and the FFN; W^V′[t] = (v + FFN(v)) W_o with v = e_t W_t W_V W_O is what the
    head's value of t alone gives. The model's own forward, with positions and every bias
    but b_in zeroed, computes both: on the input (i) with the value map zeroed, and on
    (t, z) with a zero-embedding z, query/key maps zeroed (½ on each key) and W_O doubled."""
    from flax import nnx

    from toymodels.config import ModelConfig
    from toymodels.interp import load_weights
    from toymodels.interp.cache import layout
    from toymodels.model import Transformer, forward

    n_nodes = 6
    cfg = dict(vocab_size=n_nodes + 2, max_len=2, n_layers=1, n_heads=1, d_model=8, d_mlp=16,
               norm="none")  # untied unembedding W_o, as in the figure
    shapes = layout(nnx.split(nnx.eval_shape(lambda: Transformer(ModelConfig(**cfg),
                                                                 rngs=nnx.Rngs(params=0))))[1])
    rng = np.random.default_rng(20)
    w = {k: (rng.normal(size=v) / np.sqrt(v[0])).astype(np.float32) for k, v in shapes.items()}
    w_m, w_v = AM.logit_matrices(load_weights(cfg, w)[1], n_nodes)  # biases in: ignored
    bare = {k: np.zeros_like(v) if k in ("pos_embed", "b_U") or k.split(".")[-1] in (
        "b_QKV", "b_O", "b_out") else v.copy() for k, v in w.items()}
    nodes = np.arange(n_nodes) + AM.N_SPECIALS
    keep = lambda q_k_v: np.asarray(q_k_v, np.float32)[None, :, None, None]  # W_QKV [D,3,H,E]
    m_only = {**bare, "blocks.0.attn.W_QKV": bare["blocks.0.attn.W_QKV"] * keep([1, 1, 0])}
    run = jax.jit(lambda g, p, x: forward(g, p, x)[0], static_argnums=0)
    g, p = load_weights(cfg, m_only)
    logits = np.asarray(run(g, p, jnp.asarray(nodes[:, None])))[:, 0]
    np.testing.assert_allclose(w_m, logits[:, nodes], rtol=1e-4, atol=1e-4)
    v_only = {**bare, "blocks.0.attn.W_QKV": bare["blocks.0.attn.W_QKV"] * keep([0, 0, 1]),
              "blocks.0.attn.W_O": 2 * bare["blocks.0.attn.W_O"]}
    v_only["embed"][1] = 0.0  # z = <eos>: no embedding, so no value and no skip
    g, p = load_weights(cfg, v_only)
    rows = jnp.asarray(np.stack([nodes, np.ones_like(nodes)], 1))
    logits = np.asarray(run(g, p, rows))[:, 1]
    np.testing.assert_allclose(w_v, logits[:, nodes], rtol=1e-4, atol=1e-4)
    assert np.abs(w_v - w_m).max() > 0.1  # guard: the two paths differ


def test_matrix_sets_follow_the_figures_definitions_entry_by_entry():
    n = 9
    a, r = random_dag(n, 0.3, 3)
    ro = r & (np.random.default_rng(4).random((n, n)) < 0.6)
    sets = AM.matrix_sets(a, r, ro)
    for i, k in itertools.product(range(n), range(n)):
        assert sets["edge"][i, k] == (i < k and a[i, k])
        assert sets["non_edge"][i, k] == (i < k and not a[i, k])
        # W^V′ rows t, columns k, strictly below the diagonal (t > k)
        assert sets["obs"][i, k] == (i > k and ro[i, k])
        assert sets["real_obs"][i, k] == (i > k and r[i, k] and not ro[i, k])
        assert sets["non"][i, k] == (i > k and not r[i, k])
    assert not any(np.diag(s).any() for s in sets.values())


def test_matrix_scores_are_the_aucs_and_means_of_those_sets():
    n = 10
    a, r = random_dag(n, 0.3, 5)
    ro = r & (np.random.default_rng(6).random((n, n)) < 0.5)
    rng = np.random.default_rng(7)
    w_m, w_v = rng.integers(-3, 3, (n, n)).astype(float), rng.normal(size=(n, n))
    sets = AM.matrix_sets(a, r, ro)
    got = AM.matrix_scores(w_m, w_v, sets)
    pick = lambda w, name: [w[i, k] for i, k in zip(*np.nonzero(sets[name]), strict=True)]
    assert math.isclose(got["auc_edge"], auc_reference(pick(w_m, "edge"),
                                                       pick(w_m, "non_edge")), rel_tol=1e-12)
    for key, p, q in (("auc_obs_non", "obs", "non"), ("auc_realobs_non", "real_obs", "non"),
                      ("auc_obs_realobs", "obs", "real_obs")):
        assert math.isclose(got[key], auc_reference(pick(w_v, p), pick(w_v, q)), rel_tol=1e-12)
    for k in ("obs", "real_obs", "non"):
        assert math.isclose(got[f"mean_{k}"], np.mean(pick(w_v, k)), rel_tol=1e-12)
    empty = AM.matrix_scores(w_m, w_v, {**sets, "real_obs": np.zeros((n, n), bool)})
    assert np.isnan(empty["mean_real_obs"]) and np.isnan(empty["auc_realobs_non"])


def test_accuracy_by_degree_pools_degree_3_into_the_last_bucket_and_nan_when_empty():
    rng = np.random.default_rng(8)
    degree = np.array([0, 3, 2, 0, 0, 2, 3, 0])  # no degree-1 pair
    rewards = rng.integers(0, 2, size=(2, 3, degree.size)).astype(float)
    acc, counts = AM.accuracy_by_degree(rewards, degree)
    np.testing.assert_array_equal(counts, [4, 0, 4])
    for b, members in ((0, degree == 0), (2, degree >= 2)):
        np.testing.assert_allclose(acc[..., b], rewards[..., members].mean(-1), **EXACT)
    assert np.isnan(acc[..., 1]).all()


# ============================================================ ALPINE: diversity
def entropy_reference(samples, valid):
    """Plug-in entropy of the distinct valid paths (0 with no valid sample)."""
    paths = [tuple(s) for s, ok in zip(samples, valid, strict=True) if ok]
    if not paths:
        return 0.0, 0
    m = len(paths)
    return -sum(c / m * math.log(c / m) for c in collections.Counter(paths).values()), m


def test_path_entropy_counts_distinct_valid_paths_only():
    rng = np.random.default_rng(9)
    tokens = rng.integers(2, 5, size=(12, 6, 4))  # few symbols: many repeats
    tokens[:, :, 3] = 0  # a <pad> column after every path
    valid = rng.random((12, 6)) < 0.6
    valid[0] = False  # no valid sample
    valid[1] = True
    tokens[1] = tokens[1, 0]  # six copies of one path: entropy 0
    tokens[2, :3] = tokens[2, 3]  # an invalid copy of a valid path must not count
    valid[2] = [False, False, False, True, True, True]
    entropy = jax.jit(AM.path_entropy)
    h, m = entropy(jnp.asarray(tokens), jnp.asarray(valid))
    want = [entropy_reference(t, v) for t, v in zip(tokens, valid, strict=True)]
    np.testing.assert_allclose(h, [w[0] for w in want], **FLOAT32)
    np.testing.assert_array_equal(m, [w[1] for w in want])
    assert h[0] == 0 and h[1] == 0
    distinct = np.arange(8)[:, None, None] * 0 + np.arange(8)[None, :, None] + 2
    h8, _ = entropy(jnp.asarray(distinct[:1]), jnp.ones((1, 8), bool))
    np.testing.assert_allclose(h8, [math.log(8)], **FLOAT32)  # the docs' bound, log n


def test_kl_to_uniform_is_the_kl_of_the_uniform_law_on_c_from_pi():
    rng = np.random.default_rng(10)
    logits = rng.normal(size=(3, 5, 7)) * 2
    allowed = rng.random((3, 5, 7)) < 0.4
    allowed[0, 0] = False  # empty C: 0 by convention
    states = rng.random((3, 5)) < 0.7
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = np.zeros((3, 5))
    for idx in np.ndindex(3, 5):
        c = np.flatnonzero(allowed[idx])
        if c.size:
            want[idx] = np.sum((1 / c.size) * (np.log(1 / c.size) - logp[idx][c]))
    got = jax.jit(AM.kl_state)(jnp.asarray(logits, jnp.float32), jnp.asarray(allowed))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    total = jax.jit(AM.kl_to_uniform)(jnp.asarray(logits, jnp.float32), jnp.asarray(states),
                                      jnp.asarray(allowed))
    np.testing.assert_allclose(total, want[states].mean(), rtol=1e-5, atol=1e-5)
    uniform = np.where(allowed[1, 1], 0.0, -1e4)  # π uniform on C: KL 0
    assert abs(float(jax.jit(AM.kl_state)(jnp.asarray(uniform, jnp.float32),
                                          jnp.asarray(allowed[1, 1])))) < 1e-5


def test_gold_states_mark_each_path_node_before_t_with_its_valid_next_nodes():
    from tasks import make

    task = make("graph/path_finding", n_nodes=12, edge_prob=0.3, graph_seed=0)
    from tasks.path_finding import alpine_data

    paths = alpine_data(task.config).test_paths[:6]
    pairs = task.test_pairs[:6]
    width = task.prompt_len + task.max_target_len
    tokens, states, allowed = AM.gold_states(task, pairs, paths, width)
    a, r = task.adjacency, task.reachability
    for i, ((s, t), path) in enumerate(zip(pairs, paths, strict=True)):
        row = [s, t, *path]
        np.testing.assert_array_equal(tokens[i, :len(row)], np.asarray(row) + AM.N_SPECIALS)
        assert tokens[i, len(row)] == 1 and not tokens[i, len(row) + 1:].any()  # <eos>, pads
        cols = np.flatnonzero(states[i])
        assert len(cols) == len(path) - 1  # every node u != t on the path
        for col in cols:
            u = tokens[i, col] - AM.N_SPECIALS
            want = {k for k in range(len(a)) if a[u, k] and r[t, k]}
            assert set(np.flatnonzero(allowed[i, col]) - AM.N_SPECIALS) == want
            assert tokens[i, col + 1] - AM.N_SPECIALS in want  # column col predicts col + 1


def test_rule_loss_is_the_generating_rules_cross_entropy_per_target_token():
    a, r = random_dag(8, 0.5, 11)
    rng = np.random.default_rng(12)
    paths = []
    pairs = [(a_, b_) for a_ in range(8) for b_ in range(a_ + 1, 8) if r[b_, a_]][:10]
    for s, t in pairs:
        path = [s]
        while path[-1] != t:
            path.append(int(rng.choice([k for k in range(8) if a[path[-1], k] and r[t, k]])))
        paths.append(path)
    nats = sum(math.log(sum(a[u, k] and r[p[-1], k] for k in range(8)))
               for p in paths for u in p[:-1])
    want = nats / sum(len(p) + 1 for p in paths)  # L nodes + <eos> per path
    assert math.isclose(AM.rule_loss(a, r, paths), want, rel_tol=1e-12)


def test_saturation_index_is_the_first_index_from_which_the_curve_stays_near_its_end():
    def ref(curve, tol):
        return min(i for i in range(len(curve))
                   if all(abs(c - curve[-1]) <= tol for c in curve[i:]))

    rng = np.random.default_rng(13)
    for _ in range(40):
        curve = np.round(rng.random(int(rng.integers(1, 9))), 2)
        assert AM.saturation_index(curve, 0.1) == ref(curve, 0.1)
    assert AM.saturation_index([0.5, 0.9, 0.5, 0.95], 0.05) == 3  # a dip: only the last
    assert AM.saturation_index([0.93, 0.95], 0.02) == 0  # within tol: saturated from 0


# ============================================================ ALPINE: theorem model, decomposition
def test_tabular_model_takes_gradient_steps_on_theorem_3s_loss(monkeypatch):
    """Two full-batch GD steps of W^M[u] + W^V[t] logits from 0 (the init noise switched off,
    so that the reference starts where the library does), against Theorem 3's gradient."""
    n, lr = 5, 2.5
    paths = [[0, 2, 4], [0, 1, 4], [1, 3], [2, 3], [0, 2, 4], [1, 4]]
    counts = TH.transition_counts(paths, n)
    ref_counts = np.zeros((n, n, n))
    for p in paths:
        for u, k in zip(p, p[1:], strict=False):
            ref_counts[u, p[-1], k] += 1  # N[u, t, k]: current u, target t, next k
    np.testing.assert_array_equal(counts, ref_counts)
    monkeypatch.setattr(TH, "INIT_STD", 0.0)
    wm2, wv2, curve = TH.train_tabular(counts, [0], 2, lr)
    total, n_ut = counts.sum(), counts.sum(-1, keepdims=True)
    weights, losses = [(np.zeros((n, n)), np.zeros((n, n)))], []
    for step in range(3):  # the loss at w0, w1, w2; the weights w1, w2
        wm, wv = weights[-1]
        logits = wm[:, None, :] + wv[None, :, :]  # [u, t, k]
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        losses.append(-(counts * np.log(p)).sum() / total)  # mean CE over the predictions
        residual = n_ut * p - counts  # N_{i,j} p_{i,j}(k) − N_{i,j,k}
        if step < 2:
            weights.append((wm - lr * residual.sum(1) / total, wv - lr * residual.sum(0) / total))
    np.testing.assert_allclose(curve[0], losses, **FLOAT32)
    assert losses[2] < losses[1] < losses[0] == pytest.approx(math.log(n))
    w_ref = weights[2]
    np.testing.assert_allclose(wm2[0], w_ref[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(wv2[0], w_ref[1], rtol=1e-5, atol=1e-5)
    assert np.abs(w_ref[0]).max() > 0.1  # guard: the steps moved the weights


def decompose_reference(logits, u, t, w_m, w_v, a, r):
    parts = {"full": logits, "wm": w_m[u], "wv": w_v[t]}
    parts["add"] = parts["wm"] + parts["wv"]
    parts["rest"] = logits - parts["add"]
    out, kept = {}, [c for c in range(len(u))
                     if (a[u[c]] & r[t[c]]).any() and (a[u[c]] & ~r[t[c]]).any()]
    for name, s in parts.items():
        pairs = [(s[c, k] > s[c, j]) + 0.5 * (s[c, k] == s[c, j]) for c in kept
                 for k in np.flatnonzero(a[u[c]] & r[t[c]])
                 for j in np.flatnonzero(a[u[c]] & ~r[t[c]])]
        out[f"dec_auc_{name}"] = float(np.mean(pairs)) if pairs else float("nan")

    def centred(x):  # over the out-neighbours within a state, then over states of one u
        y = np.zeros_like(x)
        for c in range(len(u)):
            nb = np.flatnonzero(a[u[c]])
            y[c, nb] = x[c, nb] - x[c, nb].mean()
        for node in set(u.tolist()):
            same = [c for c in range(len(u)) if u[c] == node]
            y[same] -= y[same].mean(0)
        return y

    d, v = centred(logits), centred(parts["wv"])
    out["dec_r2_wv"] = 1 - ((d - v) ** 2).sum() / (d ** 2).sum()
    out["dec_states"] = float(len(kept))
    return out


def test_decompose_matches_the_reference_choice_auc_and_r2():
    n = 9
    a, r = random_dag(n, 0.45, 15)
    rng = np.random.default_rng(16)
    states = [(u, t) for u in range(n) for t in range(n) if u != t and r[t, u] and a[u].any()]
    idx = rng.choice(len(states), size=min(25, len(states)), replace=False)
    u, t = (np.array([states[i][j] for i in idx]) for j in (0, 1))
    w_m = rng.integers(-2, 3, (n, n)).astype(float)  # integers: ties in every part
    w_v = rng.integers(-2, 3, (n, n)).astype(float)
    logits = w_m[u] + w_v[t] + rng.integers(-1, 2, (len(u), n))
    got = TH.decompose(logits, u, t, w_m, w_v, a, r)
    want = decompose_reference(logits, u, t, w_m, w_v, a, r)
    assert got.keys() == want.keys() and want["dec_states"] >= 5
    for k in want:
        assert math.isclose(got[k], want[k], rel_tol=1e-12, abs_tol=1e-12), k
    shuffled = TH.decompose(logits[::-1], u, t, w_m, w_v, a, r)  # guard: states matter
    assert shuffled["dec_auc_full"] != got["dec_auc_full"]
    diverged = TH.decompose(np.full_like(logits, np.nan), u, t, w_m, w_v, a, r)
    assert np.isnan(diverged["dec_auc_full"]) and np.isnan(diverged["dec_auc_rest"])
    assert np.isnan(diverged["dec_r2_wv"])  # NaN logits: no ranking and no R², not 0
    assert diverged["dec_auc_wv"] == got["dec_auc_wv"]  # W^V′ alone does not read them


def test_within_row_auc_averages_the_rows_with_both_sets():
    rng = np.random.default_rng(17)
    w = rng.integers(0, 3, (6, 6)).astype(float)
    pos, neg = rng.random((6, 6)) < 0.4, rng.random((6, 6)) < 0.4
    pos[0], neg[1] = False, False  # rows without a set are skipped
    rows = [auc_reference(w[i][pos[i]], w[i][neg[i]]) for i in range(6)
            if pos[i].any() and neg[i].any()]
    assert math.isclose(TH.within_row_auc(w, pos, neg), np.mean(rows), rel_tol=1e-12)


# ============================================================ iteration head
def test_iteration_head_scores_read_the_designated_keys_of_the_official_attention_eval():
    """The compiled construction attends to exactly the keys the paper's circuit uses:
    layer 1 from s positions L+2..2L+1 to <eoi> at L+1, layer 2 from L+t to x_t. Scored
    with the figure's ``measure`` it must give 1 everywhere; the chance levels must be
    1/(number of visible keys) of each query."""
    from experiments.iteration_head_data import designated, measure, sample
    from theory.circuits import iteration_head
    from toymodels.interp import load_weights

    n_max = 6
    g, p = load_weights(*iteration_head.build(n_max))
    batch = jax.jit(lambda k: sample(k, 24, "parity", n_max))(jax.random.key(0))
    scores = jax.jit(lambda prm, b: measure(g, prm, b, n_max))(p, batch)
    for key in ("l1_abs", "l1_thr", "l2_abs", "l2_thr", "acc"):
        assert float(scores[key]) > 0.99, key
    rows = np.concatenate([batch.prompts, batch.targets], 1)
    cols, mask = designated(batch, n_max)
    lens = np.asarray(batch.meta["L"])
    chance = {"l1": [], "l2": []}
    for b in range(rows.shape[0]):
        first = int(np.argmax(rows[b] == 2))  # the task token: column 0 of the format
        L = lens[b]
        for t in range(1, L + 1):
            q1, k1 = first + L + 1 + t, first + L + 1
            q2, k2 = first + L + t, first + t
            assert rows[b, k1] == 3 and rows[b, k2] - 4 in (0, 1)  # <eoi>, x_t
            assert rows[b, q2 + 1] == int(batch.meta["s"][b, t - 1]) + 4  # q2 predicts s_t
            assert (cols["l1"][0][b, t - 1], cols["l1"][1][b, t - 1]) == (q1, k1)
            assert (cols["l2"][0][b, t - 1], cols["l2"][1][b, t - 1]) == (q2, k2)
            chance["l1"].append(1 / (q1 - first + 1))
            chance["l2"].append(1 / (q2 - first + 1))
        assert not np.asarray(mask)[b, L:].any()
    for layer in ("l1", "l2"):
        np.testing.assert_allclose(scores[f"{layer}_abs_chance"], np.mean(chance[layer]),
                                   **FLOAT32)
        assert float(scores[f"{layer}_thr_chance"]) == 0.0


def test_tv_to_the_construction_of_a_uniform_attention_model_is_one_minus_one_over_keys():
    """TV(learned, construction) = ½ Σ_k |A − A_c| averaged over the designated queries of
    full-length rows (L = n_max): a model whose attention is uniform (query and key maps
    zeroed) against the construction's one-hot patterns gives 1 − 1/(keys visible to q)."""
    from experiments.iteration_head_data import sample
    from theory.circuits import iteration_head
    from toymodels.interp import load_weights

    n_max = 4
    spec, weights = iteration_head.build(n_max)
    g_c, p_c = load_weights(spec, weights)
    flat = dict(weights)
    for layer in (0, 1):
        for name in ("W_QKV", "b_QKV"):
            w = np.array(flat[f"blocks.{layer}.attn.{name}"])
            w[..., :2, :, :] = 0.0  # query and key: every score 0, a uniform pattern
            flat[f"blocks.{layer}.attn.{name}"] = w
    one = lambda tree: jax.tree.map(lambda x: x[None], tree)  # a leading seed axis of 1
    draw = jax.jit(lambda key: sample(key, 8, "parity", n_max, n_max))  # L = n_max
    full, abl = one(draw(jax.random.key(1))), draw(jax.random.key(2))  # full: per seed
    out = IH._compare_jit(g_c, g_c, one(load_weights(spec, flat)[1]), p_c, full, abl, n_max)
    cols = {1: np.arange(n_max + 2, 2 * n_max + 2), 2: np.arange(n_max + 1, 2 * n_max + 1)}
    for layer, q in cols.items():  # the paper's queries, counted from the task token
        np.testing.assert_allclose(out[f"tv_l{layer}"], [np.mean(1 - 1 / (q + 1))], atol=1e-3)
    same = IH._compare_jit(g_c, g_c, one(p_c), p_c, full, abl, n_max)
    np.testing.assert_allclose([same["tv_l1"][0], same["tv_l2"][0]], 0.0, atol=1e-6)


def test_formation_ratio_divides_the_formation_step_by_the_loss_drop_step():
    every, n_eval = 10, 8
    steps = np.arange(0, every * n_eval + 1, every, dtype=np.float64)
    loss = np.full((3, every * n_eval), 1.0)
    loss[:, 30:] = 0.05  # blocks 4.. (evals 4..) are below 0.1: t_drop = 40
    loss[1, 25:30] = 0.05  # block 3 mean 0.525: still above
    loss[2] = 1.0  # never drops
    score = np.tile(np.linspace(0, 1, n_eval + 1), (3, 1))  # >= 0.9 from eval 8 (step 80)
    score[0, 6:] = 0.95  # forms at eval 6, step 60
    result = {"eval_step": steps, "parity_loss": loss, "parity_l1_abs": score}
    got = IH.formation_ratio(result, "parity", "l1_abs")
    np.testing.assert_allclose(got, [60 / 40, 80 / 40, np.nan], equal_nan=True)
    loss[1, 3] = np.nan  # a diverged seed: never formed, not an error
    got = IH.formation_ratio(result, "parity", "l1_abs")
    np.testing.assert_allclose(got, [60 / 40, np.nan, np.nan], equal_nan=True)


# ============================================================ search lookahead
def test_guess_level_is_the_mean_of_one_over_the_number_of_children_of_s():
    n, top, size = 8, 3, 4000
    g = jax.device_get(jax.jit(lambda k: SLD.sample(k, size, n, top, None, True))(
        jax.random.key(0)))  # the balanced distribution: L uniform in 1 .. top
    children = ((g["edge_src"] == g["start"][:, None]) & (g["edge_dst"] >= 0)).sum(1)
    np.testing.assert_array_equal(children, g["n_branches"])
    guess = SL.guess_level(n, top)
    for L in range(1, top + 1):
        k = children[g["lookahead"] == L]
        k_max = int(SLD.max_branches(n, L))
        assert set(k.tolist()) == set(range(2, k_max + 1))  # uniform in 2 .. k_max
        inv = 1.0 / k
        assert abs(inv.mean() - guess[L - 1]) <= 5 * inv.std() / math.sqrt(k.size) + 1e-12


def test_search_claims_split_lookaheads_at_the_bound_2_to_the_depth():
    config = SL.Config(n_seeds=2, depths=(1, 2), max_lookahead=3, n_vertices=8)
    acc1 = np.array([[0.95, 0.92, 0.4], [0.97, 0.90, 0.6]])  # depth 1: L=3 is beyond
    acc2 = np.array([[0.99, 0.60, 0.85], [0.99, 0.70, 0.75]])
    result = {"bound": SL.merge_bound(config.depths), "guess": np.array([0.36, 0.5, 0.5]),
              "acc_d1": acc1[:, None], "acc_d2": acc2[:, None]}
    got = {c.name: c for c in SL.claims(result, config)}
    within = got["every depth solves every lookahead within its bound 2^depth"]
    assert math.isclose(within.measured, 0.65)  # depth 2, L = 2
    beyond = got["no depth solves a lookahead beyond its bound 2^depth"]
    assert math.isclose(beyond.measured, 0.5) and beyond.holds  # the only one: depth 1, L=3
    guess = got["beyond the bound: accuracy = guessing among s's children, E[1/k]"]
    assert math.isclose(guess.measured, 0.0, abs_tol=1e-12) and guess.holds
    order = got["solved lookahead L* is non-decreasing in depth"]
    assert order.measured == 1.0 and not order.holds  # L* = 2 at depth 1, 1 at depth 2
    deeper = got["depth 2 beats depth 1 at L=3"]
    assert math.isclose(deeper.measured, np.mean(acc2[:, 2] - acc1[:, 2]))
    assert [SL.solved_up_to(x) for x in ([0.95, 0.2, 0.95], [0.1], [0.9, 0.9])] == [1, 0, 2]


# ============================================================ reflection
def test_interval_rates_and_origin_fit_match_the_reference():
    rng = np.random.default_rng(18)
    steps = np.array([0.0, 10.0, 30.0, 60.0])
    b = rng.uniform(0.05, 0.95, size=(2, 3, 4))
    shape = rng.uniform(0, 1, size=(2, 3, 4))
    shape[0, 1, 2] = np.nan  # drops the two intervals that touch it
    meas, pred = RM.interval_rates(steps, b, shape)
    want_m, want_p = [], []
    for i, j in itertools.product(range(2), range(3)):
        for s in range(3):
            p = (shape[i, j, s] + shape[i, j, s + 1]) / 2
            if np.isfinite(p):
                want_m.append((logit(b[i, j, s + 1]) - logit(b[i, j, s])) / (steps[s + 1]
                                                                              - steps[s]))
                want_p.append(p)
    np.testing.assert_allclose(meas, want_m, **EXACT)
    np.testing.assert_allclose(pred, want_p, **EXACT)
    k, r = RM.origin_fit(meas, pred)
    k_ref = np.linalg.lstsq(pred[:, None], meas, rcond=None)[0][0]
    assert math.isclose(k, k_ref, rel_tol=1e-10)
    assert math.isclose(r, stats.pearsonr(meas, pred).statistic, rel_tol=1e-10)
    assert all(np.isnan(RM.origin_fit(meas[:2], pred[:2])))  # fewer than 3 intervals


def test_rate_shape_and_eq8_emergence_from_their_formulas():
    f = {"forced_back_mistake": np.array([0.3, 0.6]), "m_completion": np.array([0.2, 0.1]),
         "rs_after_back": np.array([0.5, 0.0]), "n_backed": np.array([4.0, 0.0]),
         "accuracy": np.array([0.7, 0.0005]), "length": np.array([9.0, 0.5])}
    grpo = RM.predicted_rate_shape(f, "grpo", 14)
    sigma_l = np.array([math.sqrt(0.21) * 9.0, math.sqrt(1e-3) * 1.0])  # clipped σ², L >= 1
    np.testing.assert_allclose(RM.rate_scale(f, "grpo", 14), sigma_l, **EXACT)
    assert math.isclose(grpo[0], 0.2 * 0.5 * 0.3 * 0.7 / sigma_l[0], rel_tol=1e-12)
    assert np.isnan(grpo[1])  # no completion wrote <back>: r·s unknown
    dr = RM.predicted_rate_shape(f, "dr_grpo", 14)
    assert math.isclose(dr[0], 0.2 * 0.5 * 0.3 * 0.7 / 14, rel_tol=1e-12)

    def eq8(b0, b_star, m, rs, k, scale):  # ∫ dλ/(σ(λ)(1 − σ(λ))) by quadrature
        lam = np.linspace(logit(b0), logit(b_star), 200001)
        sig = 1 / (1 + np.exp(-lam))
        return np.trapezoid(1 / (sig * (1 - sig)), lam) * scale / (k * m * rs)

    got = RM.predicted_emergence(np.array([0.1, 0.95, 0.1, 0.1]), 0.9,
                                 np.array([0.2, 0.2, 0.0, 0.2]),
                                 np.array([0.3, 0.3, 0.3, np.nan]), 0.05, 12.0)
    assert math.isclose(got[0], eq8(0.1, 0.9, 0.2, 0.3, 0.05, 12.0), rel_tol=1e-6)
    assert got[1] == 0.0 and got[2] == np.inf and got[3] == np.inf
    assert RM.predicted_emergence(0.1, 0.9, 0.2, 0.3, -0.05, 12.0) == np.inf  # k <= 0


# ============================================================ long CoT
def test_kappa_uses_only_intervals_with_q_in_the_band_at_both_ends():
    """Eq. 5's rate κ: median of Δlogit q/Δstep over the intervals whose two ends both lie in
    [0.1, 0.9] (docs/theory_reflection.md §1), per seed, over the p given."""
    steps = np.array([0.0, 10.0, 20.0, 30.0, 40.0])
    q = np.array([[[0.05, 0.2, 0.5, 0.8, 0.99],  # seed 0, p 0: intervals 1-2 in the band
                   [0.95, 0.5, 0.6, 0.7, 0.75]],  # seed 0, p 1: the first starts above 0.9
                  [[0.3, 0.4, 0.5, 0.6, 0.7],  # seed 1, p 0
                   [0.01, 0.02, 0.03, 0.04, 0.05]]])  # seed 1, p 1: never in the band
    q = np.moveaxis(q, 1, 0)  # [p, seeds, logs]
    rate = np.diff(logit(q), axis=-1) / 10
    want = []
    for s in range(2):
        rows = [rate[i, s, j] for i in range(2) for j in range(4)
                if 0.1 <= q[i, s, j] <= 0.9 and 0.1 <= q[i, s, j + 1] <= 0.9]
        want.append(np.median(rows))
    np.testing.assert_allclose(LC._kappa(steps, q), want, rtol=1e-10)
    assert np.isnan(LC._kappa(steps, q[1:, 1:]))[0]  # no interval in the band


def test_long_cot_identity_z2_and_log_odds_fit_from_synthetic_evaluations():
    config = LC.Config(n_seeds=3, p_longs=(0.05, 0.2, 0.5, 0.8), rl_steps=40, log_every=10)
    rng = np.random.default_rng(19)
    p, s, logs = 4, 3, 5
    evals = np.zeros((p, s, logs, 2, 6))
    q = np.sort(rng.uniform(0.02, 0.98, (p, s, logs)), -1)
    q[1, 0, 0] = 0.0  # seed 0 of p = 0.2 sampled no long answer after NTP: a_L is 0/0 ...
    evals[..., 0, 1] = q
    evals[..., 0, 2] = rng.uniform(0.92, 1.0, (p, s, logs))  # a_L
    evals[1, 0, 0, 0, 2] = 0.0  # ... which the evaluator writes as 0
    evals[0, :, 0, 0, 2] = 0.5  # p = 0.05 outside the regime
    evals[..., 0, 4] = np.round((1 - q) * 256)
    evals[..., 0, 0] = q * evals[..., 0, 2] + (1 - q) / 2 + rng.normal(0, 0.02, (p, s, logs))
    evals[..., 0, 5] = 8 * q
    res = LC._measure(config, evals, np.zeros((p, s, 40, 3)))
    got = {c.name: c for c in LC.claims(res, config)}
    se = (1 - q) * 0.5 / np.sqrt(np.maximum(evals[..., 0, 4], 1))
    z = (evals[..., 0, 0] - (q * evals[..., 0, 2] + (1 - q) / 2)) / np.maximum(se, 1e-9)
    z2 = (z ** 2).mean(axis=(0, 2))  # per seed: over p and logged steps
    claim = got["short answers at chance: A = q a_L + (1-q)/2, mean z^2"]
    assert math.isclose(claim.measured, z2.mean(), rel_tol=1e-10)
    lo, hi = stats.t.interval(0.95, s - 1, loc=z2.mean(), scale=stats.sem(z2))
    assert f"[{lo:.4f}, {hi:.4f}] over {s} seeds" in claim.note  # the seed axis, n − 1 df
    t = np.array([[crossing_reference(res["eval_step"], q[i, j], 0.8, 1e-4)
                   for j in range(s)] for i in range(p)])
    np.testing.assert_allclose(res["t_reach"], t, rtol=1e-10, equal_nan=True)
    a_long = [[evals[i, j, 0, 0, 2] for j in range(s) if evals[i, j, 0, 0, 1] > 0]
              for i in range(p)]  # a_L after NTP of the seeds that sampled a long answer
    regime = np.array([np.mean(a) >= 0.9 for a in a_long])
    assert regime.tolist() == [False, True, True, True]
    claim = got["regime: NTP learnt the long chain (a_L), p_long=0.2"]
    assert math.isclose(claim.measured, np.mean(a_long[1]), rel_tol=1e-12)
    assert "over 2 seeds" in claim.note
    ok = np.isfinite(t) & regime[:, None]
    x = np.broadcast_to(np.log((1 - np.array(config.p_longs)) / np.array(config.p_longs))
                        [:, None], t.shape)
    fit = stats.linregress(x[ok], t[ok])
    r2 = got["steps to q*: R^2 of T on log((1-p)/p)"]
    assert math.isclose(r2.measured, fit.rvalue ** 2, rel_tol=1e-10)
    kappa = res["kappa"]
    ratio = got["steps to q*: slope / (1/kappa), kappa from the same runs"]
    assert math.isclose(ratio.measured, fit.slope / np.mean(1 / kappa[np.isfinite(kappa)]),
                        rel_tol=1e-10)
