"""Figure alpine-path-finding (ALPINE, arXiv 2405.09220; RL diversity, arXiv 2509.22613): the
W^M′/W^V′ extraction recovers the compiled Theorem-2 construction, the measurement helpers
match brute force, Theorem 3's tabular model (experiments/alpine_theorem.py) stores observed
reachability on hand cases and the logit decomposition finds a planted target term, the
claims hold on an ideal synthetic run and reject wrong predictions,
the quick run completes end to end and, marked slow, the full run judges every claim."""

import collections
import json
import time

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import tasks
from experiments import alpine_measures as M
from experiments import alpine_path_finding as F
from experiments import alpine_theorem as TH
from experiments import runner
from theory.circuits import alpine
from toymodels import model
from toymodels.config import ModelConfig
from toymodels.interp.cache import load_weights


@pytest.fixture(scope="module")
def small_task():
    return tasks.make("graph/path_finding", n_nodes=20, edge_prob=0.3, graph_seed=0)


# ------------------------------------------------------------------------- extraction
@pytest.mark.parametrize("observed", [False, True])
def test_extraction_recovers_the_compiled_construction(small_task, observed):
    """Theorem 2's weights: the FFN path is exactly A, the value path exactly R (or R_obs
    with the diagonal, the matrix NTP is said to learn)."""
    a = small_task.adjacency
    r = (small_task.observed_reachability | np.eye(20, dtype=bool)) if observed else \
        small_task.reachability
    w_m, w_v = M.logit_matrices(load_weights(*alpine.build(a, r))[1], 20)
    np.testing.assert_allclose(w_m, a, atol=1e-5)
    np.testing.assert_allclose(w_v, r, atol=1e-5)


@pytest.mark.parametrize("kw", [{"norm": "pre"}, {"n_layers": 2}, {"n_heads": 2},
                                {"d_mlp": 0}])
def test_extraction_refuses_models_where_it_is_not_exact(kw):
    cfg = ModelConfig(vocab_size=12, max_len=8, d_model=8, **{
        "n_layers": 1, "n_heads": 1, "d_mlp": 8, "norm": "none", **kw})
    # Shapes only (no random numbers): the refusal must come before any weight is read.
    params = nnx.split(nnx.eval_shape(lambda: model.Transformer(cfg, rngs=nnx.Rngs(0))))[1]
    with pytest.raises(ValueError):
        M.logit_matrices(params, 10)


# ------------------------------------------------------------------------------ helpers
def test_auc_hand_values_and_brute_force():
    assert M.auc([2, 3], [1]) == 1.0
    assert M.auc([1], [1]) == 0.5
    assert M.auc([0], [1, 2]) == 0.0
    assert np.isnan(M.auc([], [1.0]))
    assert np.isnan(M.auc([np.nan, 1.0], [0.5])) and np.isnan(M.auc([np.nan] * 3, [np.nan]))
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, 30), rng.integers(0, 5, 40)  # many ties
    brute = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
    assert M.auc(pos, neg) == pytest.approx(brute)


def test_matrix_sets_partition_the_relevant_entries(small_task):
    t = small_task
    s = M.matrix_sets(t.adjacency, t.reachability, t.observed_reachability)
    n = 20
    assert (s["edge"] | s["non_edge"]).sum() == n * (n - 1) // 2
    assert not (s["edge"] & s["non_edge"]).any()
    assert (s["obs"].astype(int) + s["real_obs"] + s["non"] == np.tril(np.ones((n, n)), -1)).all()
    assert s["edge"].sum() == t.adjacency.sum()  # every edge of a DAG in topological order


def test_accuracy_by_degree_matches_brute_force_and_marks_empty_buckets():
    rewards = np.array([[1, 0, 1, 1, 0], [1, 1, 0, 0, 0]], float)
    degree = np.array([0, 0, 1, 3, 2])
    acc, counts = M.accuracy_by_degree(rewards, degree)
    np.testing.assert_allclose(acc, [[0.5, 1.0, 0.5], [1.0, 0.0, 0.0]])
    assert counts.tolist() == [2, 1, 2]
    acc, counts = M.accuracy_by_degree(rewards[:, :3], degree[:3])
    assert counts[2] == 0 and np.isnan(acc[:, 2]).all()


def test_path_entropy_matches_counting_distinct_valid_paths():
    rng = np.random.default_rng(1)
    tokens = rng.integers(2, 4, (6, 8, 3))  # few distinct rows, so repeats occur
    valid = rng.random((6, 8)) < 0.7
    valid[0] = False  # a pair with no valid sample: entropy 0
    h, m = M.path_entropy(jnp.asarray(tokens), jnp.asarray(valid))
    for p in range(6):
        c = collections.Counter(tuple(x) for x, ok in zip(tokens[p], valid[p], strict=True) if ok)
        q = np.array(list(c.values()), float) / max(valid[p].sum(), 1)
        assert h[p] == pytest.approx(-(q * np.log(q)).sum() if q.size else 0.0, abs=1e-5)
        assert m[p] == valid[p].sum()


def test_kl_to_uniform_matches_the_definition():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(3, 4, 6))
    allowed = rng.random((3, 4, 6)) < 0.5
    allowed[..., 0] = True
    states = rng.random((3, 4)) < 0.6
    states[0, 0] = True
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    kls = [sum(1 / allowed[i, j].sum() * np.log(1 / allowed[i, j].sum() / p[i, j, k])
               for k in np.flatnonzero(allowed[i, j]))
           for i in range(3) for j in range(4) if states[i, j]]
    got = M.kl_to_uniform(jnp.asarray(logits), jnp.asarray(states), jnp.asarray(allowed))
    assert float(got) == pytest.approx(np.mean(kls), rel=1e-5)


def test_gold_states_mark_each_step_of_the_gold_path(small_task):
    t = small_task
    pairs = t.train_pairs[:5]
    paths = t.train_paths[::t.config.paths_per_pair][:5]
    tokens, states, allowed = M.gold_states(t, pairs, paths, 12)
    assert states.sum() == sum(len(p) - 1 for p in paths)
    for i, path in enumerate(paths):
        for j, (u, nxt) in enumerate(zip(path, path[1:], strict=False)):
            assert tokens[i, 2 + j] == u + 2 and states[i, 2 + j]
            assert allowed[i, 2 + j, nxt + 2]  # the gold next node is a valid next node
    with pytest.raises(ValueError):
        M.gold_states(t, pairs[:1], [[int(pairs[0, 0]), 0]], 12)


def test_saturation_index():
    assert M.saturation_index([0.1, 0.5, 0.9, 0.91, 0.9], 0.02) == 2
    assert M.saturation_index([0.5, 0.5], 0.02) == 0
    assert M.saturation_index([0.1, 0.5], 0.02) == 1


def test_rule_loss_hand_value_and_brute_force(small_task):
    # Diamond 0 -> {1, 2} -> 3: on path 0 1 3 only the first step has a choice (of 2),
    # over 4 target tokens (0, 1, 3, <eos>).
    a = np.zeros((4, 4), bool)
    a[0, 1] = a[0, 2] = a[1, 3] = a[2, 3] = True
    r = np.eye(4, dtype=bool)
    r[3, :] = True  # every node reaches 3
    assert M.rule_loss(a, r, [[0, 1, 3]]) == pytest.approx(np.log(2) / 4)
    t = small_task
    paths = t.train_paths[:200]
    nll, tokens = 0.0, 0
    for p in paths:  # cross-entropy of an explicit uniform-over-valid distribution per step
        for u, k in zip(p[:-1], p[1:], strict=True):
            prob = (t.adjacency[u] & t.reachability[p[-1]]) / (t.adjacency[u]
                                                                & t.reachability[p[-1]]).sum()
            nll -= np.log(prob[k])
        tokens += len(p) + 1
    assert M.rule_loss(t.adjacency, t.reachability, paths) == pytest.approx(nll / tokens)


# ------------------------------------------------------------------------ theorem model
def test_transition_counts_brute_force(small_task):
    paths = small_task.train_paths[:50]
    n = TH.transition_counts(paths, 20)
    brute = collections.Counter((p[j], p[-1], p[j + 1]) for p in paths for j in range(len(p) - 1))
    assert n.sum() == sum(brute.values())
    for (u, t, k), c in brute.items():
        assert n[u, t, k] == c


def test_theorem_model_hand_case_stores_observed_reachability():
    """Graph 0->1->2, 0->3, 3->4, 1->4; D: (0, 1, 2), (0, 3, 4). Theorem 3: W^V rises on
    the observed (t, k) and falls on the unobserved ones of each target row; W^M rises on
    the used edges. 1 -> 4 is an edge never used in D: its W^M entry falls."""
    counts = TH.transition_counts([[0, 1, 2], [0, 3, 4]], 5)
    w_m, w_v, curve = TH.train_tabular(counts, [0, 1], steps=200, lr=5.0)
    assert (curve[:, -1] < curve[:, 0]).all()
    for w in w_v:  # row 2: obs {1, 2}, row 4: obs {3, 4}
        assert min(w[2, 1], w[2, 2]) > max(w[2, 0], w[2, 3], w[2, 4])
        assert min(w[4, 3], w[4, 4]) > max(w[4, 0], w[4, 1], w[4, 2])
    for w in w_m:
        assert w[0, 1] > w[0, 2] and w[0, 3] > w[0, 4] and w[1, 2] > w[1, 4]
    # the same extraction and AUCs the figure uses: obs above non in row 2
    pos, neg = np.zeros((5, 5), bool), np.zeros((5, 5), bool)
    pos[2, 1], neg[2, 0] = True, True
    assert M.auc(w_v[0][pos], w_v[0][neg]) == 1.0
    assert TH.within_row_auc(w_v[0], pos, neg) == 1.0


def test_theorem_model_on_a_small_graph_ranks_obs_above_non(small_task):
    t = small_task
    sets = M.matrix_sets(t.adjacency, t.reachability, t.observed_reachability)
    w_m, w_v, _ = TH.train_tabular(TH.transition_counts(t.train_paths, 20), [0], 300, 20.0)
    assert TH.within_row_auc(w_v[0], sets["obs"], sets["non"]) > 0.9
    assert M.auc(w_m[0][sets["edge"]], w_m[0][sets["non_edge"]]) > 0.9


def test_decompose_finds_the_target_term_where_it_is():
    """Logits exactly W^M′[u] + W^V′[t]: the rest is 0 (AUC ½, all ties) and R²_V = 1;
    add R(t, k) to the logits outside W^V′ and the rest separates valid from invalid."""
    rng = np.random.default_rng(3)
    n = 6
    a = np.triu(rng.random((n, n)) < 0.7, 1)
    a[0, 1:] = True
    r = np.linalg.matrix_power(a.astype(int) + np.eye(n, dtype=int), n).T > 0  # r[t, k]
    u, t = np.zeros(8, int), np.array([2, 3, 4, 5, 2, 3, 4, 5])
    w_m, w_v = rng.normal(size=(n, n)), rng.normal(size=(n, n))
    d = TH.decompose(w_m[u] + w_v[t], u, t, w_m, w_v, a, r)
    assert d["dec_auc_rest"] == 0.5 and d["dec_r2_wv"] == pytest.approx(1.0)
    full, brute = w_m[u] + w_v[t], []  # brute force of the pooled within-state pair AUC
    for c in range(8):
        nb = a[u[c]]
        for k in np.flatnonzero(nb & r[t[c]]):
            brute += [(full[c, k] > full[c, j]) + 0.5 * (full[c, k] == full[c, j])
                      for j in np.flatnonzero(nb & ~r[t[c]])]
    assert d["dec_auc_full"] == pytest.approx(np.mean(brute))
    d = TH.decompose(w_m[u] + w_v[t] + 50.0 * r[t], u, t, w_m, w_v, a, r)
    assert d["dec_auc_rest"] == 1.0 and d["dec_auc_full"] == 1.0 and d["dec_r2_wv"] < 0.5
    assert d["dec_states"] > 0


@pytest.mark.parametrize("bad", [dict(n_seeds=1), dict(edge_prob=0.0), dict(d_model=0),
                                 dict(rl_steps=30, log_every=20), dict(seed=-1),
                                 dict(n_samples=1), dict(theorem_lr=0.0),
                                 dict(dec_pairs=0)])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        F.Config(**bad)


# ----------------------------------------------------------------------------- claims
def _ideal(n_seeds=5, sat_at=2, n_logs=9):
    """The numbers the theory predicts: clear AUCs, degree 0/1 solved and degree >= 2 not,
    test accuracy rising to a plateau at log ``sat_at``, KL rising and entropy falling."""
    rng = np.random.default_rng(0)
    noise = lambda *shape: 0.01 * rng.normal(size=shape)
    acc = np.minimum(0.6 + 0.15 * np.arange(n_logs), 0.6 + 0.15 * sat_at)
    return {"auc_edge": 0.99 + noise(n_seeds), "auc_obs_non": 0.98 + noise(n_seeds),
            "auc_realobs_non": 0.52 + noise(n_seeds),
            "th_auc_edge": 0.99 + noise(n_seeds), "th_auc_obs_non": 0.98 + noise(n_seeds),
            "th_auc_realobs_non": 0.5 + noise(n_seeds),
            "acc_degree_ntp": np.array([0.97, 0.93, 0.5]) + noise(n_seeds, 3),
            "degree_counts": np.array([800, 300, 30]),
            "rl_step": np.arange(n_logs) * 25.0,
            "rl_acc_test": acc + noise(n_seeds, n_logs),
            "rl_kl_test": 0.5 + 0.1 * np.arange(n_logs) + noise(n_seeds, n_logs),
            "rl_entropy_test": 1.5 - 0.1 * np.arange(n_logs) + noise(n_seeds, n_logs),
            "pred_direction": np.float64(1.0)}


def _failed(result):
    return {c.name for c in F.claims(result, F.Config()) if not c.holds}


def test_ideal_run_holds_every_claim():
    assert _failed(_ideal()) == set()


def test_reverse_ordering_is_rejected():
    """The wrong prediction "the reverse order" (pred_direction = −1) fails every ordering."""
    failed = _failed({**_ideal(), "pred_direction": np.float64(-1.0)})
    for part in ("W^M'", "W^V' obs", "theorem model: W^M", "theorem model: W^V obs",
                 "min(degree 0, 1)", "RL raises", "KL(U_C", "entropy"):
        assert any(part in name for name in failed), part


def test_claims_fail_on_data_against_the_theory():
    ideal = _ideal()
    transitive = {**ideal, "auc_realobs_non": ideal["auc_obs_non"]}  # R learnt, not R_obs
    assert any("real\\obs" in n for n in _failed(transitive))
    th_transitive = {**ideal, "th_auc_realobs_non": ideal["th_auc_obs_non"]}
    assert _failed(th_transitive) == {"theorem model: W^V real\\obs vs non: AUC"}
    no_deg2 = {**ideal, "acc_degree_ntp": ideal["acc_degree_ntp"] * [1, 1, np.nan],
               "degree_counts": np.array([800, 300, 0])}
    assert any("degree >=2" in n for n in _failed(no_deg2))
    flat = {**ideal, "rl_entropy_test": np.zeros_like(ideal["rl_entropy_test"])}
    assert "path entropy falls after saturation: upper 95% bound" in _failed(flat)  # no fall
    late = _ideal(sat_at=8)  # accuracy saturates only at the last log: nothing after it
    assert {n for n in _failed(late) if "saturation" in n} == {
        "KL(U_C||pi) rises after saturation: lower 95% bound",
        "path entropy falls after saturation: upper 95% bound"}


# --------------------------------------------------------------------------- end to end
def _execute(config, tmp_path):
    t0 = time.perf_counter()
    run_dir = runner.execute(F, config, tmp_path)
    found = json.loads((run_dir / "claims.json").read_text())
    assert (run_dir / "figure.png").exists() and (run_dir / "figure.svg").exists()
    assert len(found) == 12 and all(isinstance(c["holds"], bool) for c in found)
    return found, time.perf_counter() - t0


def test_quick_run_end_to_end(tmp_path):
    found, wall = _execute(F.quick_config(), tmp_path)
    print(f"quick run: {wall:.1f} s; holds: {[c['name'] for c in found if c['holds']]}")


@pytest.mark.slow
def test_full_run_judges_every_claim(tmp_path):
    """Completion and a verdict for every claim only: which claims hold is in
    docs/figure_alpine.md (W^V' and the theorem model's pooled W^V AUC do not at any of 5
    seeds; the degree gap and the entropy fall after saturation hold at some)."""
    found, wall = _execute(F.Config(), tmp_path)
    print(f"full run: {wall:.0f} s; " + json.dumps(found, indent=1))
