"""toymodels.rl.reflection: per-step reflection metrics from graph_search's exact counters,
checked against the generator's own per-position labels (``meta['mistake']``,
``meta['is_back']``), an independent path to the same numbers."""

import jax
import numpy as np
import pytest

import tasks
from toymodels.rl import reflection as R


@pytest.fixture(scope="module")
def gold():
    """Gold traces of one task config (one compile): about half take a wrong turn."""
    task = tasks.make("graph/graph_search", p_mistake=0.5, dead_end_depth=2)
    batch = task.sample(jax.random.key(3), 256)
    return batch, task.counters(batch, batch.targets)


def _from_labels(batch):
    """The same aggregates from the generator's labels, by plain numpy loops."""
    mis = np.asarray(batch.meta["mistake"])
    back = np.asarray(batch.meta["is_back"])
    after_mis = n_mis = n_back_rows = 0
    for m, b in zip(mis, back, strict=True):
        n_back_rows += b.any()
        for j in np.nonzero(m[:-1])[0]:
            n_mis += 1
            after_mis += b[j + 1]
    return {"p_back_given_mistake": after_mis / max(n_mis, 1), "back_rate": n_back_rows /
            len(mis), "backs_per_completion": back.sum() / len(mis)}


def test_gold_traces_match_the_generator_labels(gold):
    batch, counters = gold
    depth = 2
    m = {k: float(v) for k, v in R.step_metrics(counters).items()}
    ref = _from_labels(batch)
    for k in ("p_back_given_mistake", "back_rate", "backs_per_completion"):
        assert m[k] == pytest.approx(ref[k], abs=1e-6), k
    # Gold traces back out only from the end of a dead end: 1/depth of the mistake steps
    # are followed by <back> when every walk reaches full depth (shorter walks raise it).
    assert m["p_back_given_mistake"] >= 1 / depth - 1e-6
    assert m["p_back_given_correct"] == 0.0  # gold traces never back out of a good step
    assert m["p_recover_given_back"] == 1.0  # ... and always reach t after backing out
    assert 0 < m["mistake_rate"] < 1 and 0.2 < ref["back_rate"] < 0.8


def test_clean_traces_have_no_reflection(gold):
    batch, counters = gold
    m = R.step_metrics(counters, where=~np.asarray(batch.meta["has_mistake"]))
    assert float(m["backs_per_completion"]) == 0 and float(m["back_rate"]) == 0
    assert float(m["mistake_rate"]) == 0
    assert np.isnan(m["p_back_given_mistake"]) and np.isnan(m["p_recover_given_back"])


def test_where_restricts_and_jit_agrees(gold):
    _, counters = gold
    where = np.arange(256) < 100
    sub = {k: np.asarray(v)[:100] for k, v in counters.items()}
    a = jax.jit(R.step_metrics)(counters, where)
    b = R.step_metrics(sub)
    for k in R.METRICS:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6)


def test_missing_counter_is_named():
    with pytest.raises(KeyError, match="recovered"):
        R.step_metrics({"backtracks": np.zeros(3)})


def test_first_crossing_hand_values():
    assert R.first_crossing([0.1, 0.4, 0.7, 0.9], 0.5) == 2
    assert R.first_crossing([0.9, 0.4, 0.2], 0.3, above=False) == 2
    assert np.isnan(R.first_crossing([0.1, np.nan, 0.2], 0.5))
    np.testing.assert_array_equal(
        R.first_crossing([[0, 1, 1], [0, 0, 0]], 1, steps=[0, 10, 20]), [10, np.nan])
    out = R.crossing_steps({"a": [0.0, 2.0]}, {"a": (1.0, True)})
    assert out["a"] == 1


@pytest.mark.slow  # ~10-16 s of compiling: kept out of the 10-minute default suite
def test_rl_step_on_graph_search_reports_the_reflection_metrics():
    """The RL step adds every reflection metric (exact, from the prompt's graph) to its
    per-step metrics when the task's counters support them; ratios lie in [0, 1] or are NaN
    when nothing was at risk."""
    from toymodels import model
    from toymodels.config import ModelConfig
    from toymodels.rl.config import RLConfig
    from toymodels.rl.reflection import METRICS
    from toymodels.rl.train import make_train

    task_config = dict(n_nodes=5, max_edges=8)
    task = tasks.make("graph/graph_search", **task_config)
    cfg = ModelConfig(vocab_size=task.vocab.size, max_len=task.prompt_len + task.max_target_len,
                      n_layers=1, d_model=16, n_heads=1, d_mlp=0)
    rc = RLConfig(task="graph/graph_search", task_config=task_config, steps=2, chunk_size=2,
                  prompts_per_step=4, group_size=2, eval_every=0, n_seeds=1)
    _, metrics = make_train(rc, init=model.init(cfg, jax.random.key(0)))(jax.random.key(1))
    for name in METRICS:
        values = np.asarray(metrics[f"reflection_{name}"])
        assert values.shape == (2,), name
        if name.startswith("p_") or name in ("mistake_rate", "back_rate"):
            finite = values[np.isfinite(values)]
            assert ((finite >= 0) & (finite <= 1)).all(), (name, values)
