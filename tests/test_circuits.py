"""Compiled reference circuits (theory.circuits) solve their tasks exactly, in our model.

tracr's central test (reference semantics == compiled model), for two theories: ALPINE's
path-finding transformer (arXiv 2405.09220, Theorem 2) and the iteration head for parity with
chain of thought (arXiv 2406.02128). Correctness is judged by the task's own verifiers and
gold completions, never by numbers computed from the construction.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import tasks
from tasks.core import EOS, PAD, Batch
from theory.circuits import alpine, empty_weights, iteration_head
from toymodels.interp import load_weights, run_with_cache
from toymodels.sampler import generate

MAX_BITS = 64  # the longest input build() accepts (float32 keeps its scores exact)


@pytest.fixture(scope="module")
def graph_task():
    # 12 nodes, dense enough for paths of several edges; graph_seed fixes the DAG.
    return tasks.make("graph/path_finding", n_nodes=12, edge_prob=0.3, paths_per_pair=2,
                      graph_seed=1)


@pytest.fixture(scope="module")
def parity_model():
    return load_weights(*iteration_head.build(MAX_BITS))


def reachable_pairs(task):
    n, r = task.config.n_nodes, task.reachability
    return np.array([(s, t) for s in range(n) for t in range(n) if s != t and r[t, s]])


def test_alpine_greedy_decoding_finds_a_valid_path_for_every_reachable_pair(graph_task):
    g, p = load_weights(*alpine.build(graph_task.adjacency, graph_task.reachability))
    pairs = reachable_pairs(graph_task)
    assert len(pairs) > 30 and graph_task.max_target_len > 4  # a non-trivial graph
    prompts = jnp.asarray(graph_task.vocab.num(pairs), jnp.int32)
    out = generate(g, p, jax.random.key(0), prompts, prompts != PAD,
                   max_new_tokens=graph_task.config.n_nodes + 1, greedy=True)
    batch = Batch(prompts, jnp.full(len(pairs), 2), out.tokens, out.lengths,
                  {"source": jnp.asarray(pairs[:, 0]), "target": jnp.asarray(pairs[:, 1])})
    np.testing.assert_array_equal(graph_task.reference_reward(batch, np.asarray(out.tokens)), 1)
    np.testing.assert_array_equal(graph_task.reward(batch, out.tokens), 1)
    lengths = np.asarray(out.lengths)
    assert lengths.max() > 3  # some answers need more than one edge


def cot_sequence(bits) -> np.ndarray:
    """The parity task's 'iteration_head' format, written independently of the circuit:
    <parity> x_1 .. x_L <eoi> s_1 .. s_L <eos>, s_t = (x_1 + .. + x_t) mod 2, bit b = 4 + b."""
    bits = np.asarray(bits)
    return np.concatenate([[2], 4 + bits, [3], 4 + np.cumsum(bits) % 2, [EOS]])


def test_cot_sequence_is_the_task_format():
    task = tasks.make("arith/parity", n_bits=5, p_long=1.0, format="iteration_head")
    b = task.sample(jax.random.key(0), 16).to_numpy()
    for i in range(16):
        np.testing.assert_array_equal(np.concatenate([b.prompts[i], b.targets[i]]),
                                      cot_sequence(b.meta["bits"][i]))


def all_lengths_batch(max_bits, rng):
    """Every input of length <= 8 and 16 random inputs of each longer length, left-padded to
    one width: (inputs, valid, labels, cot_mask) for teacher forcing."""
    rows = []
    for n_bits in range(1, max_bits + 1):
        if n_bits <= 8:
            inputs = (np.arange(2 ** n_bits)[:, None] >> np.arange(n_bits)) & 1
        else:
            inputs = rng.integers(0, 2, (16, n_bits))
        rows += [cot_sequence(x) for x in inputs]
    width = 2 * max_bits + 3
    seqs = np.zeros((len(rows), width), np.int32)
    cot = np.zeros((len(rows), width), bool)
    for i, r in enumerate(rows):
        seqs[i, width - len(r):] = r
        cot[i, width - (len(r) - 1) // 2:] = True  # the L bits and <eos> after <eoi>
    return seqs[:, :-1], seqs[:, :-1] != PAD, seqs[:, 1:], cot[:, 1:]


def test_iteration_head_writes_the_whole_parity_cot_for_every_length(parity_model):
    """Greedy decoding reproduces the gold CoT iff the argmax at every CoT column is the gold
    next token (by induction over the columns); checked teacher-forced, all lengths in one
    left-padded batch, so this also checks that padding does not move the positions."""
    g, p = parity_model
    inputs, valid, labels, cot = all_lengths_batch(MAX_BITS, np.random.default_rng(0))
    logits, _ = run_with_cache(g, p, jnp.asarray(inputs), valid=jnp.asarray(valid),
                               names=("logits",))
    pred = np.asarray(jnp.argmax(logits, -1))
    per_row_ok = ((pred == labels) | ~cot).all(axis=1)
    assert per_row_ok.all(), f"{(~per_row_ok).sum()} of {len(per_row_ok)} CoTs wrong"
    assert (labels[cot] == EOS).sum() == len(inputs)  # every row's CoT ends with <eos>
    assert cot.sum(1).min() == 2 and cot.sum(1).max() == MAX_BITS + 1  # L bits + <eos>


def test_iteration_head_through_the_sampler(parity_model):
    g, p = parity_model
    task = tasks.make("arith/parity", n_bits=9, p_long=1.0, format="iteration_head")
    batch = task.sample(jax.random.key(0), 128)
    out = generate(g, p, jax.random.key(1), batch.prompts, batch.prompts != PAD,
                   max_new_tokens=task.max_target_len, greedy=True)
    np.testing.assert_array_equal(out.tokens, batch.targets)
    np.testing.assert_array_equal(task.reference_reward(batch, np.asarray(out.tokens)), 1)


def test_iteration_head_fails_beyond_its_length():
    """The construction is length-generic only up to max_bits: its positional table ends
    there (the model refuses longer inputs rather than silently extrapolating)."""
    g, p = load_weights(*iteration_head.build(4))
    five_bits = jnp.asarray(cot_sequence([1, 0, 1, 1, 0])[None, :-1])
    with pytest.raises(ValueError, match="max_len"):
        run_with_cache(g, p, five_bits, names=("logits",))


@pytest.mark.parametrize("adj, reach, match", [
    (np.zeros((3, 4)), np.eye(3), "square"),
    (np.eye(3, k=1) * 2, np.eye(3), "0/1"),
    (np.eye(3, k=1), np.zeros((3, 3)), "reflexive"),
    (np.eye(3, k=1), np.eye(4), "nodes"),
])
def test_alpine_rejects_bad_matrices(adj, reach, match):
    with pytest.raises(ValueError, match=match):
        alpine.build(adj, reach)


def test_alpine_rejects_a_gap_too_small_for_exactness():
    with pytest.raises(ValueError, match="attn_gap"):
        alpine.build(np.eye(3, k=1), np.eye(3), attn_gap=1.0)


@pytest.mark.parametrize("bad", [0, 65, 2.5, "8"])
def test_iteration_head_rejects_bad_lengths(bad):
    with pytest.raises(ValueError, match="max_bits"):
        iteration_head.build(bad)


def test_load_weights_names_the_missing_unknown_or_misshapen_parameter():
    cfg, w = iteration_head.build(3)
    missing = {k: v for k, v in w.items() if k != "blocks.1.mlp.W_in"}
    with pytest.raises(ValueError, match="blocks.1.mlp.W_in"):
        load_weights(cfg, missing)
    with pytest.raises(ValueError, match="W_extra"):
        load_weights(cfg, {**w, "W_extra": np.zeros(3)})
    with pytest.raises(ValueError, match=r"W_U.*\(9, 6\)"):
        load_weights(cfg, {**w, "W_U": np.zeros((6, 9))})
    with pytest.raises(ValueError, match="n_layers"):
        load_weights({**cfg, "n_layers": -1}, w)


def test_empty_weights_match_the_model_layout():
    """theory cannot import the model, so its copy of the layout is checked against it."""
    from toymodels.config import ModelConfig
    from toymodels.interp import layout
    from toymodels.model import Transformer

    cfg = alpine.config(5)
    _, params = nnx.split(nnx.eval_shape(lambda: Transformer(ModelConfig(**cfg),
                                                             rngs=nnx.Rngs(params=0))))
    want = layout(params)
    got = {k: v.shape for k, v in empty_weights(cfg).items()}
    assert got == want
