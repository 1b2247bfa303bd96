"""The interpretability toolkit, specified on the compiled circuits of theory.circuits, where
the right attention patterns, attributions, ablations and patching results are known before
running: ALPINE (arXiv 2405.09220) keeps reachability in its head and adjacency in its MLP;
the iteration head (arXiv 2406.02128) reads <eoi> in layer 1 and x_t in layer 2.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import tasks
from tasks.core import EOS
from theory.circuits import alpine, iteration_head
from toymodels.config import ModelConfig
from toymodels.interp import (
    PatchPairs,
    ablate_neurons,
    attention_patterns,
    direct_logit_attribution,
    fit_probe,
    formation_step,
    gather_positions,
    head_ablation,
    layout,
    load_weights,
    logit_lens,
    mean_activation,
    ntp_checkpoints,
    ov_circuit,
    patch_sweep,
    pattern_score,
    plot_formation,
    qk_circuit,
    run_with_cache,
    scores_over_checkpoints,
)
from toymodels.model import Transformer

BIT0 = 4  # token of the bit 0 in the parity vocabulary (bit b is 4 + b)


def random_model(cfg: ModelConfig, seed: int = 0):
    """Random weights of every shape of the layout (cheaper than the eager init on CPU)."""
    abstract = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(params=0))))[1]
    rng = np.random.default_rng(seed)
    return load_weights(cfg, {k: rng.normal(1.0 if k.endswith("scale") else 0.0, 0.5, shape)
                              for k, shape in layout(abstract).items()})


# ------------------------------------------------------------------ ALPINE fixtures
@pytest.fixture(scope="module")
def alpine_setup():
    """The construction on a 12-node DAG and teacher-forcing rows ``s t s .. t <eos>`` of
    the task's own training paths (right-padded: columns only see their past)."""
    task = tasks.make("graph/path_finding", n_nodes=12, edge_prob=0.3, paths_per_pair=2,
                      graph_seed=1)
    g, p = load_weights(*alpine.build(task.adjacency, task.reachability))
    paths = sorted({tuple(q) for q in task.train_paths}, key=lambda q: (len(q), q))
    width = max(map(len, paths)) + 3
    rows = np.zeros((len(paths), width), np.int32)
    for i, q in enumerate(paths):
        rows[i, :len(q) + 3] = task.vocab.num(np.array([q[0], q[-1], *q])).tolist() + [EOS]
    # States (row, column, current u, target t) at every column >= 2 that holds a node u != t.
    states = [(i, c, q[c - 2], q[-1]) for i, q in enumerate(paths) for c in range(2, len(q) + 1)]
    states = np.array([s for s in states if s[2] != s[3]])
    return task, g, p, jnp.asarray(rows), states


def node_block(x):
    """The node tokens' slice of a vocabulary axis (tokens 2 .. n + 1 are nodes 0 .. n - 1,
    after <pad> = 0 and <eos> = 1: the path-finding vocabulary)."""
    return x[..., 2:]


def test_run_with_cache_selects_sites_by_glob_and_predicate(alpine_setup):
    _, g, p, rows, _ = alpine_setup
    logits, cache = run_with_cache(g, p, rows, names="blocks.*.attn.pattern")
    assert set(cache) == {"blocks.0.attn.pattern"} and logits.shape[:2] == rows.shape
    _, cache = run_with_cache(g, p, rows, names=lambda n: n.endswith("resid_post"))
    assert set(cache) == {"blocks.0.resid_post"}
    with pytest.raises(ValueError, match="matches no site"):
        run_with_cache(g, p, rows, names="blocks.*.attn.hook_typo")
    with pytest.raises(ValueError, match="selects no site"):
        run_with_cache(g, p, rows, names=lambda n: False)


def test_alpine_head_attends_to_the_target(alpine_setup):
    _, g, p, rows, _ = alpine_setup
    pattern = np.asarray(attention_patterns(g, p, rows))[0, :, 0]  # [B, T, T]
    assert pattern.shape == (rows.shape[0], rows.shape[1], rows.shape[1])
    assert pattern[:, 2:, 1].min() > 1 - 1e-6  # every later column reads t (column 1)
    assert pattern[:, 1, 0].min() > 1 - 1e-6  # column 1 reads s, which it must write next
    # The same from the weights alone: the positional QK circuit of the head.
    scores = np.asarray(qk_circuit(g, p, 0, 0, source="pos_embed"))
    causal = np.tril(np.ones_like(scores, bool))
    assert (np.where(causal, scores, -np.inf)[2:].argmax(-1) == 1).all()


def test_pattern_score_is_one_on_the_designated_key_and_zero_off_it(alpine_setup):
    _, g, p, rows, _ = alpine_setup
    pattern = attention_patterns(g, p, rows)[0]
    queries = np.arange(2, rows.shape[1])
    assert float(pattern_score(pattern, queries, np.ones_like(queries))[0]) > 1 - 1e-6
    assert float(pattern_score(pattern, queries, np.zeros_like(queries))[0]) < 1e-6


def test_dla_parts_sum_to_the_logits_without_and_with_final_layernorm(alpine_setup):
    _, g, p, rows, _ = alpine_setup
    labels, dla = direct_logit_attribution(g, p, rows)
    assert labels == ["embed", "pos_embed", "L0H0", "L0.attn_bias", "L0.mlp", "bias"]
    logits, _ = run_with_cache(g, p, rows, names=("logits",))
    np.testing.assert_allclose(dla.sum(0), logits, atol=1e-4)
    # A random pre-norm model: the frozen-sigma convention makes the sum exact as well.
    cfg = ModelConfig(vocab_size=9, max_len=8, n_layers=2, n_heads=2, d_model=8, d_mlp=16,
                      norm="pre", init_scale=0.5)
    g2, p2 = random_model(cfg)
    tokens = jax.random.randint(jax.random.key(1), (3, 8), 0, 9)
    labels2, dla2 = direct_logit_attribution(g2, p2, tokens)
    assert labels2[2:5] == ["L0H0", "L0H1", "L0.attn_bias"] and labels2[-1] == "bias"
    logits2, _ = run_with_cache(g2, p2, tokens, names=("logits",))
    np.testing.assert_allclose(dla2.sum(0), logits2, atol=1e-4)
    assert np.abs(np.asarray(dla2[:-1])).max() > 0.1  # the parts are not trivially zero


def test_alpine_reachability_is_in_the_head_and_adjacency_in_the_mlp(alpine_setup):
    """Theorem 2's division of labour, read off by DLA at every on-path state (u != t):
    the head writes R[t, :] and the MLP writes A[u, :] onto the node logits."""
    task, g, p, rows, states = alpine_setup
    labels, dla = direct_logit_attribution(g, p, rows)
    dla = np.asarray(node_block(dla))
    i, c, u, t = states.T
    np.testing.assert_allclose(dla[labels.index("L0H0"), i, c], task.reachability[t], atol=1e-5)
    np.testing.assert_allclose(dla[labels.index("L0.mlp"), i, c], task.adjacency[u], atol=1e-5)


def test_alpine_ov_circuit_is_the_reachability_matrix(alpine_setup):
    task, g, p, _, _ = alpine_setup
    ov = np.asarray(ov_circuit(g, p, 0, 0))
    np.testing.assert_allclose(node_block(ov)[2:], task.reachability, atol=1e-6)
    with pytest.raises(ValueError, match="head"):
        ov_circuit(g, p, 0, 1)


def test_ablating_the_alpine_head_leaves_only_adjacency(alpine_setup):
    """Zero ablation: node logits become A[u, :] exactly, so the choice is the first
    out-neighbour, right only when that neighbour happens to reach t. Mean ablation: the
    head writes the batch-average reachability row, the same whatever the target."""
    task, g, p, rows, states = alpine_setup
    i, c, u, t = states.T
    a, r = task.adjacency, task.reachability
    zeroed, _ = run_with_cache(g, p, rows, names=("logits",),
                               interventions=head_ablation(0, [0], n_heads=1))
    zeroed = np.asarray(node_block(zeroed))[i, c]
    np.testing.assert_allclose(zeroed, a[u], atol=1e-5)
    first_neighbour = a[u].argmax(-1)
    still_right = r[t, first_neighbour].mean()
    assert still_right < 0.9  # on this graph the head matters for many choices
    assert (r[t, zeroed.argmax(-1)]).mean() == pytest.approx(still_right)
    mean_z = mean_activation(g, p, rows, "blocks.0.attn.z")
    meaned, _ = run_with_cache(g, p, rows, names=("logits",),
                               interventions=head_ablation(0, [0], 1, mean_z=mean_z))
    target_freq = np.bincount(np.asarray(rows[:, 1]) - 2, minlength=a.shape[0]) / len(rows)
    np.testing.assert_allclose(np.asarray(node_block(meaned))[i, c], a[u] + target_freq @ r,
                               atol=1e-5)
    with pytest.raises(ValueError, match="heads"):
        head_ablation(0, [1], n_heads=1)


def target_swap_pairs(a, r):
    """Clean ``s t1 s`` vs corrupt ``s t2 s``: at column 2 the clean answer k1 is a next
    node allowed for t1 only, the corrupt answer k2 one allowed for t2 only (Algorithm 1)."""
    allowed = lambda s, t: set(np.flatnonzero(a[s] & r[t]))
    out = []
    for s in range(len(a)):
        targets = [t for t in range(len(a)) if t != s and r[t, s]]
        for t1 in targets:
            for t2 in targets:
                only1, only2 = allowed(s, t1) - allowed(s, t2), allowed(s, t2) - allowed(s, t1)
                if only1 and only2:
                    out.append((s, t1, t2, min(only1), min(only2)))
    s, t1, t2, k1, k2 = np.array(out).T + 2  # node -> token
    return PatchPairs(jnp.stack([s, t1, s], 1), jnp.stack([s, t2, s], 1),
                      jnp.full(len(s), 2), jnp.asarray(k1), jnp.asarray(k2))


def test_patching_the_target_restores_the_alpine_choice(alpine_setup):
    """Only the target token (column 1) and the head's read of it at column 2 carry which
    target the path is for."""
    task, g, p, _, _ = alpine_setup
    pairs = target_swap_pairs(task.adjacency, task.reachability)
    assert pairs.clean.shape[0] >= 5
    resid = patch_sweep(g, p, pairs, site="resid_pre")
    np.testing.assert_allclose(resid.scores, [[0.0, 1.0, 0.0]], atol=1e-4)
    assert resid.clean == pytest.approx(1.0, abs=1e-4)  # score 2 against 1 (A only)
    heads = patch_sweep(g, p, pairs, site="attn.z")
    np.testing.assert_allclose(heads.scores, [[[0.0, 0.0, 1.0]]], atol=1e-4)


# ------------------------------------------------------------------ iteration-head fixtures
@pytest.fixture(scope="module")
def parity_setup():
    """The construction for up to 8 bits and 256 random 8-bit CoT rows (teacher forcing)."""
    g, p = load_weights(*iteration_head.build(8))
    bits = np.random.default_rng(0).integers(0, 2, (256, 8))
    running = np.cumsum(bits, 1) % 2
    seqs = np.concatenate([np.full((256, 1), 2), 4 + bits, np.full((256, 1), 3), 4 + running,
                           np.full((256, 1), EOS)], axis=1).astype(np.int32)
    return g, p, bits, running, jnp.asarray(seqs[:, :-1])


def test_iteration_head_attention_matches_the_designated_keys(parity_setup):
    g, p, _, _, inputs = parity_setup
    keys = iteration_head.designated_keys(8)
    pattern = attention_patterns(g, p, inputs)
    assert float(pattern_score(pattern[0], keys["queries"], keys["layer1"])[0]) > 0.999
    assert float(pattern_score(pattern[1], keys["queries"], keys["layer2"])[0]) > 0.999
    # Off by one (the mistake E16 corrects) scores ~0: the score can tell the difference.
    assert float(pattern_score(pattern[1], keys["queries"], keys["layer2"] + 1)[0]) < 1e-3


def test_logit_lens_before_the_mlp_knows_no_parity(parity_setup):
    """Y (the parity) is written by the last MLP: earlier lenses read only ONE -> bit 0."""
    g, p, _, running, inputs = parity_setup
    lens = np.asarray(logit_lens(g, p, inputs))
    logits, _ = run_with_cache(g, p, inputs, names=("logits",))
    np.testing.assert_allclose(lens[-1], logits, atol=1e-5)
    cot = np.arange(9, 17)  # columns L + t, t = 1 .. 8, predict s_t
    assert (lens[:2, :, cot].argmax(-1) == BIT0).all()
    np.testing.assert_array_equal(lens[2, :, cot].argmax(-1).T, 4 + running)


def flip_pairs(bits, running, t):
    """Clean rows vs the same rows with x_t flipped; the answer at column L + t is s_t."""
    n, L = bits.shape
    flipped = bits.copy()
    flipped[:, t - 1] ^= 1

    def rows(b):
        r = np.cumsum(b, 1) % 2
        return np.concatenate([np.full((n, 1), 2), 4 + b, np.full((n, 1), 3), 4 + r], axis=1)

    s_t = running[:, t - 1]
    return PatchPairs(jnp.asarray(rows(bits), jnp.int32), jnp.asarray(rows(flipped), jnp.int32),
                      jnp.full(n, L + t), jnp.asarray(4 + s_t), jnp.asarray(5 - s_t))


def test_patching_clean_x_t_into_the_corrupt_run_restores_the_answer(parity_setup):
    """x_t reaches the answer only through column t (both layers' residual) and the
    layer-2 head at the answer column; every other cell leaves the corrupt answer."""
    g, p, bits, running, _ = parity_setup
    t = 3
    pairs = flip_pairs(bits[:64], running[:64], t)
    answer_col = 8 + t
    resid = patch_sweep(g, p, pairs, site="resid_pre")
    assert resid.clean > 5 and resid.corrupt < -5  # the flip really changes the answer
    expected = np.zeros((2, pairs.clean.shape[1]))
    expected[:, t] = 1.0
    np.testing.assert_allclose(resid.scores, expected, atol=1e-3)
    heads = patch_sweep(g, p, pairs, site="attn.z")
    expected = np.zeros((2, 1, pairs.clean.shape[1]))
    expected[1, 0, answer_col] = 1.0
    np.testing.assert_allclose(heads.scores, expected, atol=1e-3)
    noised = patch_sweep(g, p, pairs, site="resid_pre", direction="noise")
    np.testing.assert_allclose(noised.scores[:, t], 1.0, atol=1e-3)
    with pytest.raises(ValueError, match="site"):
        patch_sweep(g, p, pairs, site="attn.hook_z")
    same = PatchPairs(pairs.clean, pairs.clean, pairs.answer_pos, pairs.clean_answer,
                      pairs.corrupt_answer)
    with pytest.raises(ValueError, match="do not change the answer"):
        patch_sweep(g, p, same, site="resid_pre")


def test_patch_pairs_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="corrupt"):
        PatchPairs(jnp.zeros((2, 5), int), jnp.zeros((2, 4), int), jnp.zeros(2, int),
                   jnp.zeros(2, int), jnp.zeros(2, int))
    with pytest.raises(ValueError, match="answer_pos"):
        PatchPairs(jnp.zeros((2, 5), int), jnp.zeros((2, 5), int), jnp.array([0, 5]),
                   jnp.zeros(2, int), jnp.zeros(2, int))


def test_ablating_the_xor_correction_neuron_breaks_exactly_the_one_one_cases(parity_setup):
    """Neuron 1 of the layer-2 MLP subtracts 2 ReLU(a + b - 1); without it Y = a + b, wrong
    exactly where s_{t-1} = x_t = 1."""
    g, p, bits, running, inputs = parity_setup
    logits = np.asarray(ablate_neurons(g, p, inputs, 1, [1]))
    cot = np.arange(9, 17)
    pred = logits[:, cot].argmax(-1) - 4
    prev = np.concatenate([np.zeros((len(bits), 1), int), running[:, :-1]], axis=1)
    np.testing.assert_array_equal(pred != running, (prev == 1) & (bits == 1))
    with pytest.raises(ValueError, match="neurons"):
        ablate_neurons(g, p, inputs, 1, [2])  # d_mlp = 2


def test_probe_reads_running_parity_after_the_mlp_and_not_before(parity_setup):
    g, p, _, running, inputs = parity_setup
    _, cache = run_with_cache(g, p, inputs, names=("blocks.1.resid_mid", "blocks.1.resid_post"))
    cot = np.arange(9, 17)
    labels = running.reshape(-1)
    after = gather_positions(cache["blocks.1.resid_post"], cot)
    before = gather_positions(cache["blocks.1.resid_mid"], cot)
    key = jax.random.key(0)
    ridge = fit_probe(after, labels, key=key)
    assert ridge.test_acc > 0.99 and ridge.control_acc < 0.6
    logistic = fit_probe(after, labels, key=key, method="logistic")
    assert logistic.test_acc > 0.99 and logistic.control_acc < 0.6
    # Before the MLP the residual holds s_{t-1} and x_t; their XOR is not linear in them.
    assert fit_probe(before, labels, key=key).test_acc < 0.8


@pytest.mark.parametrize("kwargs, match", [
    (dict(features=np.zeros((10, 3)), labels=np.zeros(9, int)), "labels int"),
    (dict(features=np.zeros((10, 3)), labels=-np.ones(10, int)), "non-negative"),
    (dict(features=np.zeros((10, 3)), labels=np.zeros(10, int), method="svm"), "method"),
    (dict(features=np.zeros((10, 3)), labels=np.zeros(10, int), test_frac=1.0), "test_frac"),
])
def test_probe_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit_probe(key=jax.random.key(0), **kwargs)


# ------------------------------------------------------------------ formation over time
STEPS = [1, 2, 5, 10, 20, 50, 100, 200]
# A score that crosses 0.5 at step 2, falls back, and crosses for good at step 20.
SCORE = [0.1, 0.6, 0.2, 0.3, 0.55, 0.9, 0.95, 0.97]


def test_formation_step_is_the_first_crossing_that_stays():
    assert formation_step(STEPS, SCORE, 0.5) == 20
    assert formation_step(STEPS, SCORE, 0.1) == 1
    assert formation_step(STEPS, SCORE, 0.95) == 100  # equal to the threshold counts
    assert formation_step(STEPS, SCORE, 0.99) is None
    loss = [3.0, 2.0, 2.5, 1.0, 0.4, 0.45, 0.1, 0.05]
    assert formation_step(STEPS, loss, 0.5, direction="below") == 20


@pytest.mark.parametrize("steps, scores, kwargs, match", [
    ([1, 2], [0.1], {}, "one non-zero length"),
    ([2, 1], [0.1, 0.2], {}, "increasing"),
    ([1, 2], [0.1, np.nan], {}, "NaN"),
    ([1, 2], [0.1, 0.2], {"direction": "up"}, "direction"),
    ([1.5, 2.5], [0.1, 0.2], {}, "whole numbers"),
    ([1, np.inf], [0.1, 0.2], {}, "whole numbers"),
])
def test_formation_step_rejects_bad_input(steps, scores, kwargs, match):
    with pytest.raises(ValueError, match=match):
        formation_step(steps, scores, 0.5, **kwargs)


def test_scores_over_checkpoints_and_the_formation_plot(tmp_path):
    curves = scores_over_checkpoints(STEPS, load=lambda step: STEPS.index(step),
                                     score=lambda i: {"head": SCORE[i], "flat": 0.0})
    np.testing.assert_array_equal(curves["head"], SCORE)
    with pytest.raises(ValueError, match="keys"):
        scores_over_checkpoints([1, 2], load=lambda s: s,
                                score=lambda s: {"a": 1.0} if s == 1 else {"b": 1.0})
    fig = plot_formation(STEPS, curves, loss=np.linspace(3, 0.1, 200),
                         thresholds={"head": 0.5}, path=tmp_path / "formation.png")
    assert (tmp_path / "formation.png").stat().st_size > 0
    assert len(fig.axes) == 2 and fig.axes[0].get_xscale() == "log"
    vertical = [ln.get_xdata()[0] for ax in fig.axes for ln in ax.lines
                if len(set(ln.get_xdata())) == 1]
    assert vertical == [20, 20]  # the formation step, on the score and on the loss panel
    import matplotlib.pyplot as plt

    plt.close(fig)


@pytest.mark.slow  # ~25 s of NTP compile and checkpoint writes on 2 loaded cores
def test_scores_at_the_checkpoints_of_a_real_run(tmp_path):
    """A tiny NTP run with log-spaced checkpoints: ``ntp_checkpoints`` restores each step's
    params, and the last one is the params the run returned."""
    from toymodels import train

    cfg = train.NTPConfig(model=ModelConfig(vocab_size=6, max_len=6, n_layers=1, n_heads=1,
                                            d_model=8, d_mlp=0),
                          task="seq/copy", task_config={"length": 2, "n_symbols": 3},
                          steps=4, batch_size=8, warmup_steps=1, chunk_size=1,
                          checkpoint_schedule="log", n_log_checkpoints=3)
    final_params, _ = train.make_train(cfg, tmp_path)()
    graphdef, steps, load = ntp_checkpoints(tmp_path)
    assert steps[0] == 1 and steps[-1] == 4
    last = load(4)
    for got, want in zip(jax.tree.leaves(last), jax.tree.leaves(final_params), strict=True):
        np.testing.assert_array_equal(got, want[0])
    tokens = jnp.array([[2, 3, 4, 2, 3, 1]])
    curves = scores_over_checkpoints(
        steps, load, lambda p: float(run_with_cache(graphdef, p, tokens)[0].std()))
    assert curves["score"].shape == (len(steps),) and len(set(curves["score"])) > 1
    with pytest.raises(ValueError, match="seed_index"):
        ntp_checkpoints(tmp_path, seed_index=1)
    # a damaged snapshot is left out, and said so (a formation step may move without it)
    (tmp_path / "checkpoints" / str(steps[1]) / "checksum.sha256").write_text("0\n")
    with pytest.warns(UserWarning, match=f"damaged checkpoints left out.*{steps[1]} "):
        _, fewer, _ = ntp_checkpoints(tmp_path)
    assert fewer == [s for s in steps if s != steps[1]]
