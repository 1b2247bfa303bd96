"""The search-lookahead figure (Saparov et al. 2025, arXiv 2412.04703): the balanced graphs
have the lookahead they claim and a correct, unique answer; the claims can fail; the quick
run completes."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from experiments import harness, runner
from experiments import search_lookahead as sl
from experiments import search_lookahead_data as data

# jitted once per shape (eager, the vmapped sampler dispatches op by op: seconds per call)
sample = jax.jit(data.sample, static_argnums=(1, 2, 3, 4, 5))


def official_lookahead(children: dict, vertex, next_vertex, goal) -> int:
    """A plain-Python transcription of ``lookahead_depth`` in the official generator
    (``asaparov/learning_to_search/generator.cpp``): breadth-first search from the children
    of ``vertex``, each entry tagged with the child it descends from."""
    frontier = [(v, v) for v in children.get(vertex, [])]
    visited = list(children.get(vertex, []))
    lookahead = 0
    while frontier:
        if all(branch == next_vertex for _, branch in frontier):
            return lookahead
        lookahead += 1
        new = []
        for v, branch in frontier:
            if v == goal:
                return lookahead
            for child in children.get(v, []):
                if child not in visited:
                    new.append([child, branch])
                    visited.append(child)
                elif branch == next_vertex:
                    for entry in new:
                        if entry[0] == child:
                            entry[1] = branch
        frontier = [tuple(e) for e in new]
    return lookahead


def reachable(children: dict, a, b) -> bool:
    seen, todo = {a}, [a]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in seen:
                seen.add(c)
                todo.append(c)
    return b in seen


def _graphs(batch, i):
    src, dst = np.asarray(batch["edge_src"][i]), np.asarray(batch["edge_dst"][i])
    children: dict = {}
    for u, v in zip(src[src >= 0].tolist(), dst[dst >= 0].tolist(), strict=True):
        children.setdefault(u, []).append(v)
    return children


@pytest.mark.parametrize("n, top, outside", [(8, 3, True), (12, 5, True), (8, 3, False)])
def test_every_sample_is_a_balanced_search_problem(n, top, outside):
    """The answer is a child of s, the only one from which g is reachable; the lookahead is
    the official definition's; the prompt lists exactly these edges and the query."""
    batch = sample(jax.random.key(0), 300, n, top, None, outside)
    seen = set()
    for i in range(300):
        children = _graphs(batch, i)
        s, g, c = (int(batch[k][i]) for k in ("start", "goal", "answer"))
        L, k = int(batch["lookahead"][i]), int(batch["n_branches"][i])
        seen.add(L)
        assert sorted(children[s]) == sorted(set(children[s])) and len(children[s]) == k
        assert [x for x in children[s] if reachable(children, x, g)] == [c]
        assert official_lookahead(children, s, c, g) == L
        assert 2 <= k <= data.MAX_BRANCHES and 1 <= L <= top
        edges = [e for e in np.asarray(batch["prompts"][i])[:-1].tolist() if e]
        assert sorted(edges) == sorted(2 + n + n * u + v for u in children
                                       for v in children[u])
        assert batch["prompts"][i][-1] == 2 + n + n * n + n * s + g
        assert batch["answers"][i] == 2 + c
        if not outside:  # only s and its chains: every vertex has one parent, s none
            in_degree = np.bincount([v for vs in children.values() for v in vs], minlength=n)
            assert in_degree.max() == 1 and in_degree[s] == 0
    assert seen == set(range(1, top + 1))  # every lookahead occurs


def test_lookahead_is_balanced_and_fixable():
    batch = sample(jax.random.key(1), 3000, 8, 3, None, False)
    counts = np.bincount(np.asarray(batch["lookahead"]), minlength=4)[1:]
    assert np.all(np.abs(counts / 3000 - 1 / 3) < 0.03)  # 3.5 standard deviations
    fixed = sample(jax.random.key(2), 300, 8, 3, 3, False)
    assert (np.asarray(fixed["lookahead"]) == 3).all()


def test_factor_embedding_reads_the_pair():
    n, d = 5, 3
    factors = {k: np.arange(n * d, dtype=np.float32).reshape(n, d) * (i + 1)
               for i, k in enumerate(("src", "dst", "qs", "qg"))}
    tokens = np.asarray([[0, 2 + n + n * 3 + 1, 2 + n + n * n + n * 4 + 2, 2 + 1]])
    out = np.asarray(sl.factor_embedding(factors, tokens, n))
    assert (out[0, 0] == 0).all() and (out[0, 3] == 0).all()  # padding, vertex token
    np.testing.assert_allclose(out[0, 1], factors["src"][3] + factors["dst"][1])
    np.testing.assert_allclose(out[0, 2], factors["qs"][4] + factors["qg"][2])


@pytest.mark.parametrize("bad", [dict(depths=(2, 1)), dict(depths=()), dict(n_seeds=1),
                                 dict(n_vertices=7, max_lookahead=3), dict(n_vertices=17),
                                 dict(steps=150, eval_every=100), dict(d_model=30)])
def test_config_rejects(bad):
    with pytest.raises(ValueError):
        sl.Config(**bad)


def _synthetic(n_seeds=5, reach=(2, 3, 3, 3), top=3, beyond=0.5):
    """A result as run() returns it: depth d solves lookaheads 1 .. reach[d] (accuracy 1) and
    sits at the guessing level ``beyond`` above them."""
    config = sl.Config(n_seeds=n_seeds, max_lookahead=top, steps=200, eval_every=100)
    result = {"depths": np.asarray(config.depths, float), "bound": sl.merge_bound(config.depths),
              "lookaheads": np.arange(1, top + 1, dtype=float), "guess": np.full(top, 0.5),
              "eval_step": np.asarray([100.0, 200.0])}
    for depth, r in zip(config.depths, reach, strict=True):
        acc = np.where(np.arange(1, top + 1) <= r, 1.0, beyond)
        result[f"acc_d{depth}"] = np.tile(acc, (n_seeds, 2, 1))
        result[f"loss_d{depth}"] = np.full((n_seeds, 200), 0.1)
    return result, config


def _verdicts(result, config):
    return {c.name: c.holds for c in sl.claims(result, config)}


def test_claims_hold_on_the_predicted_behaviour():
    verdicts = _verdicts(*_synthetic())
    assert len(verdicts) == 5 and all(verdicts.values()), verdicts


def test_a_flipped_depth_ordering_is_rejected():
    """Deeper models that solve less than shallower ones break the order claims."""
    v = _verdicts(*_synthetic(reach=(3, 3, 2, 2)))
    assert not v["solved lookahead L* is non-decreasing in depth"]
    assert not v["depth 4 beats depth 1 at L=3"]
    assert not v["no depth solves a lookahead beyond its bound 2^depth"]  # depth 1 at L=3


def test_a_halved_bound_is_rejected():
    """L_max = 2^(depth - 1): depth 1 would be limited to L = 1, but it solves L = 2."""
    result, config = _synthetic()
    result["bound"] = sl.merge_bound(config.depths) / 2
    assert not _verdicts(result, config)["no depth solves a lookahead beyond its bound 2^depth"]


@pytest.mark.parametrize("kind", harness.WRONG_KINDS)
def test_a_wrong_bound_is_rejected(kind):
    """Flipped (negative: every lookahead "beyond") or doubled (depth 1 would have to solve
    L = 3, which it does not) bounds fail a claim."""
    result, config = _synthetic()
    verdicts = _verdicts(harness.corrupt(result, sl.PREDICTIONS, kind), config)
    assert not all(verdicts.values()), kind


def test_claims_over_an_empty_set_are_not_judged_as_holding():
    """max_lookahead 2 puts nothing beyond depth >= 1's bound, one depth makes no pair: the
    claims that could not have failed are reported as not holding, with a note."""
    config = sl.Config(n_seeds=5, depths=(1,), max_lookahead=2, steps=200, eval_every=100)
    result = {"depths": np.asarray([1.0]), "bound": sl.merge_bound(config.depths),
              "lookaheads": np.arange(1.0, 3.0), "guess": np.full(2, 0.5),
              "eval_step": np.asarray([100.0, 200.0]),
              "acc_d1": np.ones((5, 2, 2)), "loss_d1": np.full((5, 200), 0.1)}
    claims = {c.name: c for c in sl.claims(result, config)}
    assert claims["every depth solves every lookahead within its bound 2^depth"].holds
    for name in ("no depth solves a lookahead beyond its bound 2^depth",
                 "beyond the bound: accuracy = guessing among s's children, E[1/k]",
                 "solved lookahead L* is non-decreasing in depth"):
        assert not claims[name].holds and "not judged" in claims[name].note, name


def test_untrained_models_fail_the_learning_claim():
    v = _verdicts(*_synthetic(reach=(1, 1, 1, 1)))
    assert not v["every depth solves every lookahead within its bound 2^depth"]
    assert v["no depth solves a lookahead beyond its bound 2^depth"]  # one-sided, see docs


def test_quick_run_end_to_end(tmp_path):
    config = sl.quick_config()
    run_dir = runner.execute(sl, config, tmp_path)
    assert (run_dir / "figure.png").exists() and (run_dir / "claims.json").exists()
    result = dict(np.load(run_dir / "metrics.npz"))
    acc = result["acc_d1"]
    assert acc.shape == (2, 2, 3) and np.all((acc >= 0) & (acc <= 1))
    found = sl.claims(result, config)
    assert len(found) == 5 and all(np.isfinite(float(c.measured)) for c in found)


@pytest.mark.slow
def test_full_run_judges_every_claim(tmp_path):
    """Completion and a verdict for every claim only (docs/theory_circuits.md has the
    measured numbers)."""
    config = sl.Config(seed=11)  # other seeds than the figure's
    run_dir = runner.execute(sl, config, tmp_path)
    found = sl.claims(dict(np.load(run_dir / "metrics.npz")), config)
    assert len(found) == 5 and all(isinstance(c.holds, bool) for c in found)
