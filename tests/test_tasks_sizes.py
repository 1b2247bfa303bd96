"""Every registered task away from its default config: the contract of tasks/core.py (and
docs/architecture.md) at the edges of what each ``Config`` accepts.

tests/test_tasks_contract.py checks each task at its default config only; people run the
tasks at other sizes. Here, per task:

* configs at the edges of validation (mostly the largest sizes and values validation
  accepts, a 3-node graph, a 1-symbol alphabet) pass the core checks on a small batch of
  both splits: shapes, dtypes, padding, token ids inside the vocabulary, same key same
  batch, gold reward 1 from ``reward`` and ``reference_reward``, the two verifiers agreeing
  on mutated golds (the contract's mutation families), per-example counters;
* configs that cannot work are refused with a ``ValueError`` naming the field, before any
  expensive work;
* curriculum levels 0..5 give a working config or a ``ValueError`` naming ``level``;
* hypothesis draws valid configs (2 per task, derandomized; its first, simplest draw is the
  smallest config, 1 bit / 1 digit / 1 symbol / 2-node graph, for most tasks), whose gold
  completions must have the contract's shapes and earn reward 1 from both verifiers.

Defects found at these configs, now fixed (each has a case below):

* ``graph/graph_search`` with ``max_edges > n_nodes**2`` (e.g. ``n_nodes=2`` and the
  default ``max_edges=16``): ``tasks.pairs.corrupt_pairs`` crashed with a JAX broadcasting
  ``TypeError``, because ``sample_context_graph`` returned ``min(max_edges, n_nodes**2)``
  edge slots instead of the documented ``max_edges``.
* ``graph/path_finding`` with ``edge_prob=1`` or ``train_frac=1``: the test split is empty
  on every graph; the refusal came only after building D, named ``edge_prob`` even for
  ``train_frac=1`` and advised to *raise* edge_prob. Now refused by the ``Config`` with
  the reason; a graph whose split happens to be empty names both causes.
* ``graph/path_finding`` with ``n_nodes=400, paths_per_pair=1000`` (both within their
  ranges): building D (~40M sequences) would take minutes and tens of GB. Now refused
  before D is built (``path_finding.MAX_TRAIN_SEQUENCES``).
* ``arith/addition`` at ``digits=64``: a jitted ``sample`` took 19 s to compile (the
  schoolbook loop was unrolled over 66 positions); now a ``lax.scan``, 0.8 s. Timing is not
  asserted here; the digits=64 case checks the scan's sums against Python integers.

Cost: every new shape compiles, so the batches are small (N rows) and both splits share n.
"""

from __future__ import annotations

import re
import time

import jax
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_tasks_contract import _mutated_completions  # the contract's mutation families

import tasks
from tasks import graphs, path_finding
from tasks.core import EOS, PAD
from tasks.graph_in_context import graph_noise, sample_context_graph

N = 16  # examples per split (the drawn configs too, so that equal shapes share compiles)
GIC, GS = "graph/graph_in_context", "graph/graph_search"

# (task, config): the edges of each Config's validation.
EDGES = [
    ("seq/copy", dict(length=1, n_symbols=1)),
    ("seq/reverse", dict(length=4096, n_symbols=2)),  # the longest string
    ("arith/parity", dict(n_bits=4096, p_long=1.0, format="iteration_head")),
    ("arith/modular_sum", dict(n_terms=4096, n_steps=1, modulus=100_000)),  # int32 limit
    ("arith/countdown", dict(n_numbers=8, max_number=10_000, max_target=10_000)),  # largest
    ("arith/multiplication", dict(digits_a=8, digits_b=1, scratchpad=True)),
    ("arith/addition", dict(digits=64)),  # the widest numbers
    ("graph/path_star", dict(degree=32, path_len=32, n_labels=1000)),
    (GIC, dict(n_nodes=16, label_range=64, edge_prob=1.0, max_edges=64, p_unreachable=0.5)),
    (GS, dict(n_nodes=16, label_range=64, edge_prob=0.2, max_edges=64, graph_kind="digraph",
              p_mistake=1.0, dead_end_depth=4)),
    ("graph/path_finding", dict(n_nodes=3, edge_prob=0.5, graph_seed=10)),  # 3 nodes, a test pair
]

# (task, config, field the ValueError must name, what its message must say): configs that
# cannot work, refused before any sampling.
REFUSED = [
    ("graph/path_finding", dict(edge_prob=1.0), "edge_prob", "test split would be empty"),
    ("graph/path_finding", dict(train_frac=1.0), "train_frac", "test split would be empty"),
    ("graph/path_finding", dict(n_nodes=3, edge_prob=0.5, graph_seed=0), "edge_prob",
     "lower edge_prob or train_frac"),
    ("graph/path_finding", dict(n_nodes=10, edge_prob=1e-9), "edge_prob", "raise edge_prob"),
    ("graph/path_finding", dict(n_nodes=400, paths_per_pair=1000), "paths_per_pair",
     "D would hold"),
    ("graph/path_finding", dict(n_nodes=2), "n_nodes", "in \\[3, 400\\]"),
    (GIC, dict(n_nodes=8, label_range=7), "label_range", "in \\[8, 64\\]"),
    (GS, dict(n_nodes=17), "n_nodes", "in \\[2, 16\\]"),
    ("graph/path_star", dict(degree=3, path_len=5, n_labels=12), "n_labels", "own label"),
    ("arith/addition", dict(digits=2, n_carries=3), "n_carries", "in \\[0, 2\\]"),
    ("arith/multiplication", dict(digits_a=5, digits_b=5), "digits_b", "in \\[1, 4\\]"),
    ("arith/modular_sum", dict(n_terms=6, n_steps=4), "n_steps", "divisor"),
    ("arith/countdown", dict(max_number=10, max_target=9), "max_target", "in \\[10, 10000\\]"),
    ("arith/parity", dict(n_bits=0), "n_bits", "in \\[1, 4096\\]"),
    ("seq/copy", dict(length=0), "length", "in \\[1, 4096\\]"),
]


def case_id(case) -> str:
    name, config = case[0], case[1]
    return name.split("/")[1] + "-" + "-".join(f"{k}={v}" for k, v in config.items())


def tree_equal(x, y) -> bool:
    return all(np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(x), jax.tree.leaves(y), strict=True))


def assert_batch_layout(task, batch, n):
    """Shapes, dtypes, token ids in the vocabulary, left-padded prompts, and targets with one
    ``<eos>`` at ``target_lens - 1`` followed by ``<pad>``."""
    b, P, C = batch.to_numpy(), task.prompt_len, task.max_target_len
    assert b.prompts.shape == (n, P) and b.targets.shape == (n, C)
    assert b.prompt_lens.shape == b.target_lens.shape == (n,)
    for leaf in (b.prompts, b.prompt_lens, b.targets, b.target_lens):
        assert leaf.dtype == np.int32
    for key, leaf in b.meta.items():
        assert leaf.shape[0] == n, key
    for rows in (b.prompts, b.targets):
        assert ((rows >= 0) & (rows < task.vocab.size)).all()
    assert ((b.prompt_lens >= 1) & (b.prompt_lens <= P)).all()
    assert ((b.prompts == PAD) == (np.arange(P)[None] < (P - b.prompt_lens)[:, None])).all()
    assert ((b.target_lens >= 1) & (b.target_lens <= C)).all()
    col = np.arange(C)[None]
    assert ((b.targets == EOS) == (col == (b.target_lens - 1)[:, None])).all()
    assert ((b.targets == PAD) == (col >= b.target_lens[:, None])).all()


def both_rewards(task, batch, completions):
    fast = np.asarray(task.reward(batch, completions))
    slow = np.asarray(task.reference_reward(batch.to_numpy(), completions))
    return fast, slow


def assert_contract(task, n=N):
    """The core checks of tests/test_tasks_contract.py, on n examples of each split. The gold
    and the mutation families of width C + 6 go through the verifiers in one call (one
    compile); completions shorter than C are left to the default-config contract tests."""
    V, C = task.vocab.size, task.max_target_len
    rng = np.random.default_rng(0)
    for split in task.splits:
        batch = task.sample(jax.random.key(0), n, split)
        assert tree_equal(batch, task.sample(jax.random.key(0), n, split)), "same key"
        assert_batch_layout(task, batch, n)
        targets, lens = np.asarray(batch.targets), np.asarray(batch.target_lens)
        families = _mutated_completions(targets, lens, V, rng)
        gold = np.pad(targets, ((0, 0), (0, 6)), constant_values=PAD)  # width C + 6 as theirs
        wide = [gold] + [f for f in families.values() if f.shape[1] == C + 6]
        tiled = batch.take(np.tile(np.arange(n), len(wide)))
        fast, slow = both_rewards(task, tiled, np.concatenate(wide))
        assert (fast[:n] == 1).all() and (slow[:n] == 1).all(), f"{split}: gold reward"
        bad = np.flatnonzero(fast != slow)
        assert bad.size == 0, f"{split}: row {bad[0]} jnp={fast[bad[0]]} ref={slow[bad[0]]}"
        for key, value in task.counters(batch, gold).items():
            assert value.shape == (n,) and value.dtype == np.float32, key
        b = batch.to_numpy()
        for i in range(min(n, 8)):
            row = b.targets[i]
            assert task.vocab.encode(task.vocab.decode(row)) == row[row != PAD].tolist()


# --------------------------------------------------------------------------- edge configs
@pytest.mark.parametrize("case", EDGES, ids=case_id)
def test_contract_holds_at_the_edges_of_validation(case):
    name, config = case
    assert_contract(tasks.make(name, **config))


@pytest.mark.parametrize("case", REFUSED, ids=case_id)
def test_configs_that_cannot_work_are_refused_naming_the_field(case):
    name, config, field, says = case
    start = time.perf_counter()
    with pytest.raises(ValueError, match=rf"\.{field}=") as refused:
        tasks.make(name, **config)
    assert re.search(says, str(refused.value)), str(refused.value)
    # Refused before any expensive work (building 400 x 1000 paths would take minutes).
    assert time.perf_counter() - start < 20


@pytest.mark.parametrize("name", tasks.names())
def test_curriculum_levels_0_to_5_work_or_are_refused_naming_the_level(name):
    cls = tasks.resolve(name)
    for level in range(6):
        try:
            config = cls.curriculum(level)
        except ValueError as err:
            assert re.search(r"\blevel=", str(err)), str(err)
            assert level > 0, "level 0 must exist"
            continue
        task = cls(config)
        assert task.vocab.size >= 2 and task.prompt_len >= 1 and task.max_target_len >= 2
    # A level far beyond the largest size is refused naming the level, not a config field.
    with pytest.raises(ValueError, match=r"\blevel="):
        cls.curriculum(10**6)


def test_context_graph_has_max_edges_slots_even_when_the_graph_has_fewer_pairs():
    """``sample_context_graph`` documents its edge slots as int32[max_edges]; with
    ``max_edges > n_nodes**2`` it returned n_nodes**2 of them, and graph_search's corrupt
    pairs (``tasks.pairs_graph``), which index the slots with ``arange(max_edges)``, crashed
    with a broadcasting TypeError (e.g. ``n_nodes=4, max_edges=20``)."""
    config = tasks.resolve(GS).Config(n_nodes=4, label_range=4, max_edges=20)
    u = graphs.uniforms(jax.random.key(0), **graph_noise(config))
    g = sample_context_graph(u, config, 0.0)
    assert g["edge_u"].shape == g["edge_v"].shape == (20,)


def test_path_finding_training_set_cap_allows_any_graph_at_the_default_paths_per_pair():
    """The cap on D refuses only oversized requests: with the default paths per pair, even
    400 nodes with every pair reachable and in train fit under it."""
    most_pairs = 400 * 399 // 2
    paths = path_finding.PathFindingConfig().paths_per_pair
    assert most_pairs * paths <= path_finding.MAX_TRAIN_SEQUENCES


# --------------------------------------------------------------------------- drawn configs
def _graph_fields(draw, search: bool) -> dict:
    n = draw(st.integers(2, 8))
    config = dict(n_nodes=n, label_range=draw(st.integers(n, n + 8)),
                  edge_prob=draw(st.sampled_from([1.0, 0.5, 0.2, 0.02])),
                  max_edges=draw(st.integers(1, 20)),
                  graph_kind=draw(st.sampled_from(["dag", "digraph"])))
    p = draw(st.sampled_from([0.0, 0.3, 1.0]))
    if search:
        return {**config, "p_mistake": p, "dead_end_depth": draw(st.integers(1, 4))}
    return {**config, "p_unreachable": p}


@st.composite
def configs(draw, name):
    """A valid config of task ``name``. Each draw with new shapes compiles anew (seconds), so
    sizes are small, and for the costliest samplers the simplest draw (hypothesis tries it
    first) has the shapes of the task's edge config, compiled already."""
    if name.startswith("seq/"):
        return dict(length=draw(st.integers(1, 12)), n_symbols=draw(st.integers(1, 50)))
    if name == "arith/parity":
        return dict(n_bits=draw(st.integers(1, 12)), p_long=draw(st.sampled_from([0.0, 0.4, 1.0])),
                    format=draw(st.sampled_from(["tsilivis", "iteration_head"])))
    if name == "arith/modular_sum":
        steps = draw(st.integers(1, 4))
        return dict(n_steps=steps, n_terms=steps * draw(st.integers(1, 4)),
                    modulus=draw(st.integers(2, 50)))
    if name == "arith/countdown":  # the values vary; the shapes (n_numbers) are those of
        top = draw(st.integers(1, 20))  # the edge config or the smallest, to share compiles
        return dict(n_numbers=draw(st.sampled_from([8, 2])), max_number=top,
                    max_target=draw(st.integers(top, top + 100)))
    if name == "arith/multiplication":  # simplest draw: the edge config (8, 1, scratchpad)
        a = 8 - draw(st.integers(0, 7))
        return dict(digits_a=a, digits_b=draw(st.integers(1, 9 - a)),
                    scratchpad=not draw(st.booleans()))
    if name == "arith/addition":  # simplest draw: the edge config (digits=64)
        d = draw(st.sampled_from([64, 1, 2, 3, 4, 5, 6]))
        return dict(digits=d, min_digits=draw(st.integers(1, d)),
                    test_digits=draw(st.none() | st.integers(d + 1, min(d + 3, 66))),
                    n_carries=draw(st.none() | st.integers(0, d)),
                    reversed_output=draw(st.booleans()))
    if name in (GIC, GS):
        return _graph_fields(draw, search=name == GS)
    if name == "graph/path_star":
        degree, length = draw(st.integers(2, 5)), draw(st.integers(2, 6))
        return dict(degree=degree, path_len=length,
                    n_labels=degree * (length - 1) + 1 + draw(st.integers(0, 10)))
    if name == "graph/path_finding":
        return dict(n_nodes=draw(st.integers(6, 24)),
                    edge_prob=draw(st.sampled_from([0.15, 0.3, 0.6])),
                    paths_per_pair=draw(st.integers(1, 4)),
                    train_frac=draw(st.sampled_from([0.0, 0.5, 0.9])),
                    graph_seed=draw(st.integers(0, 10_000)))
    raise AssertionError(f"no config strategy for task {name!r}: add one")


@pytest.mark.parametrize("name", tasks.names())
@settings(max_examples=2, deadline=None, derandomize=True)
@given(data=st.data())
def test_drawn_valid_configs_give_gold_that_both_verifiers_accept(name, data):
    config = data.draw(configs(name), label="config")
    try:
        task = tasks.make(name, **config)
    except ValueError as err:  # only path_finding may refuse: a graph without a test pair
        assert name == "graph/path_finding" and "test pairs" in str(err), str(err)
        assume(False)
    for split in task.splits:
        batch = task.sample(jax.random.key(1), N, split)
        assert_batch_layout(task, batch, N)
        fast, slow = both_rewards(task, batch, np.asarray(batch.targets))
        assert (fast == 1).all() and (slow == 1).all(), split


def test_every_registered_task_has_edge_configs():
    assert {name for name, _ in EDGES} == set(tasks.names())
