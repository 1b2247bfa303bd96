"""Specification of named activation capture and interventions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toymodels.config import ModelConfig
from toymodels.hooks import Intervention, site_names
from toymodels.model import forward, init

jit_forward = jax.jit(forward, static_argnums=0, static_argnames=("capture",))
CFG = ModelConfig(vocab_size=11, max_len=16, n_layers=2, n_heads=3, d_model=12, d_mlp=24,
                  init_scale=0.3)
ALL_SITES_2_LAYERS_WITH_MLP = [
    "embed", "pos_embed",
    "blocks.0.resid_pre", "blocks.0.attn.q", "blocks.0.attn.k", "blocks.0.attn.v",
    "blocks.0.attn.pattern", "blocks.0.attn.z", "blocks.0.attn.out", "blocks.0.resid_mid",
    "blocks.0.mlp.pre", "blocks.0.mlp.post", "blocks.0.resid_post",
    "blocks.1.resid_pre", "blocks.1.attn.q", "blocks.1.attn.k", "blocks.1.attn.v",
    "blocks.1.attn.pattern", "blocks.1.attn.z", "blocks.1.attn.out", "blocks.1.resid_mid",
    "blocks.1.mlp.pre", "blocks.1.mlp.post", "blocks.1.resid_post",
    "ln_final", "logits",
]


@pytest.fixture(scope="module")
def model():
    g, p = init(CFG, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (4, 6), 0, CFG.vocab_size)
    logits, captured = jit_forward(g, p, tokens, capture=("*",))
    return g, p, tokens, logits, captured


def test_capture_star_covers_every_named_site_with_its_shape(model):
    _, _, _, logits, captured = model
    assert list(site_names(CFG)) == ALL_SITES_2_LAYERS_WITH_MLP
    assert set(captured) == set(ALL_SITES_2_LAYERS_WITH_MLP)
    b, t, d, h, e, m, v = 4, 6, 12, 3, 4, 24, 11
    for name, x in captured.items():
        leaf = name.split(".")[-1]
        expected = {"q": (b, t, h, e), "k": (b, t, h, e), "v": (b, t, h, e),
                    "z": (b, t, h, e), "pattern": (b, h, t, t), "pre": (b, t, m),
                    "post": (b, t, m), "logits": (b, t, v)}.get(leaf, (b, t, d))
        assert x.shape == expected, name
    np.testing.assert_array_equal(captured["logits"], logits)


def test_captured_values_are_the_real_activations(model):
    """Spot-check the captures against their definitions, recomputed from other captures."""
    _, p, tokens, _, c = model
    np.testing.assert_allclose(c["embed"], p["embed"][...][tokens], atol=0)
    pattern = c["blocks.0.attn.pattern"]
    np.testing.assert_allclose(pattern.sum(-1), 1.0, atol=1e-6)
    assert (np.triu(np.ones((6, 6)), k=1) * pattern).max() == 0  # causal
    z = jnp.einsum("bhqk,bkhe->bqhe", pattern, c["blocks.0.attn.v"])
    np.testing.assert_allclose(z, c["blocks.0.attn.z"], atol=1e-6)
    np.testing.assert_allclose(c["blocks.1.resid_pre"], c["blocks.0.resid_post"], atol=0)
    np.testing.assert_allclose(c["blocks.0.mlp.post"], jax.nn.gelu(c["blocks.0.mlp.pre"]),
                               atol=1e-6)
    np.testing.assert_allclose(c["blocks.0.resid_mid"],
                               c["blocks.0.resid_pre"] + c["blocks.0.attn.out"], atol=1e-6)


def test_attention_only_and_norm_free_models_have_no_mlp_or_ln_sites():
    cfg = ModelConfig(vocab_size=11, max_len=8, n_layers=1, n_heads=2, d_model=8, d_mlp=0,
                      pos_enc="rope", norm="none")
    names = site_names(cfg)
    assert names == ("embed", "blocks.0.resid_pre", "blocks.0.attn.q", "blocks.0.attn.k",
                     "blocks.0.attn.v", "blocks.0.attn.pattern", "blocks.0.attn.z",
                     "blocks.0.attn.out", "blocks.0.resid_mid", "blocks.0.resid_post",
                     "logits")
    g, p = init(cfg, jax.random.key(0))
    _, captured = jit_forward(g, p, jnp.ones((1, 3), jnp.int32), capture=("*",))
    assert set(captured) == set(names)


def test_glob_patterns_select_and_a_pattern_matching_nothing_is_an_error(model):
    g, p, tokens, _, _ = model
    _, c = jit_forward(g, p, tokens, capture=("blocks.*.attn.pattern", "embed"))
    assert set(c) == {"blocks.0.attn.pattern", "blocks.1.attn.pattern", "embed"}
    with pytest.raises(ValueError, match="matches no site"):
        forward(g, p, tokens, capture=("blocks.0.attn.patern",))


def test_jit_traces_once_per_capture_filter(model):
    g, p, tokens, _, _ = model
    traces = []

    def counted(graphdef, params, tokens, capture):
        traces.append(capture)
        return forward(graphdef, params, tokens, capture=capture)

    f = jax.jit(counted, static_argnums=(0, 3))
    for seed in range(3):  # new token values, a new (equal) tuple each call
        other = jax.random.randint(jax.random.key(seed), tokens.shape, 0, 11)
        f(g, p, other, tuple(["blocks.0.attn.z", "logits"]))
    assert len(traces) == 1
    f(g, p, tokens, ("logits",))
    assert len(traces) == 2


# --------------------------------------------------------------------------- interventions
def test_writing_every_captured_value_back_leaves_the_logits_bitwise_unchanged(model):
    g, p, tokens, logits, captured = model
    every = {name: Intervention.replace(x) for name, x in captured.items()}
    patched, _ = jit_forward(g, p, tokens, interventions=every)
    np.testing.assert_array_equal(patched, logits)
    for name in ("blocks.0.attn.pattern", "blocks.1.mlp.pre", "embed"):
        one = {name: Intervention.replace(captured[name])}
        np.testing.assert_array_equal(jit_forward(g, p, tokens, interventions=one)[0], logits)


def test_zero_ablating_one_head_changes_only_that_heads_contribution(model):
    g, p, tokens, _, clean = model
    head = 1
    ablate = {"blocks.0.attn.z": Intervention.zero(head_mask=jnp.arange(3) == head)}
    _, abl = jit_forward(g, p, tokens, capture=("*",), interventions=ablate)
    z_clean, z_abl = clean["blocks.0.attn.z"], abl["blocks.0.attn.z"]
    others = [0, 2]
    np.testing.assert_array_equal(z_abl[:, :, others], z_clean[:, :, others])
    assert (z_abl[:, :, head] == 0).all() and np.abs(z_clean[:, :, head]).max() > 1e-3
    for upstream in ("q", "k", "v", "pattern"):
        np.testing.assert_array_equal(abl[f"blocks.0.attn.{upstream}"],
                                      clean[f"blocks.0.attn.{upstream}"])
    # out_ablated = out_clean - z_h W_O[h]: exactly the removed head's path, nothing else.
    w_o = p["blocks"][0]["attn"]["W_O"][...]
    head_contribution = jnp.einsum("bte,ed->btd", z_clean[:, :, head], w_o[head])
    np.testing.assert_allclose(abl["blocks.0.attn.out"],
                               clean["blocks.0.attn.out"] - head_contribution, atol=1e-6)
    assert np.abs(abl["logits"] - clean["logits"]).max() > 1e-4  # the ablation mattered


def test_mean_ablation_writes_the_given_mean_into_the_selected_head(model):
    g, p, tokens, _, clean = model
    z = clean["blocks.1.attn.z"]
    mean = z.mean(axis=0)  # [T, H, E], mean over the batch
    iv = {"blocks.1.attn.z": Intervention.mean(mean, head_mask=jnp.array([False, False, True]))}
    _, abl = jit_forward(g, p, tokens, capture=("blocks.1.attn.z",), interventions=iv)
    z_abl = abl["blocks.1.attn.z"]
    np.testing.assert_array_equal(z_abl[:, :, 2], jnp.broadcast_to(mean[:, 2], z[:, :, 2].shape))
    np.testing.assert_array_equal(z_abl[:, :, :2], z[:, :, :2])


def test_mean_ablation_on_identical_examples_is_a_no_op(model):
    """If every example is the same, the mean activation is the activation itself."""
    g, p, tokens, _, _ = model
    same = jnp.repeat(tokens[:1], 3, axis=0)
    logits, c = jit_forward(g, p, same, capture=("blocks.0.resid_mid",))
    mean = c["blocks.0.resid_mid"].mean(axis=0)
    iv = {"blocks.0.resid_mid": Intervention.mean(mean)}
    ablated, _ = jit_forward(g, p, same, interventions=iv)
    np.testing.assert_allclose(ablated, logits, atol=1e-6, rtol=0)


def test_position_mask_edits_only_later_positions_causally(model):
    g, p, tokens, logits, _ = model
    at_3 = jnp.arange(6) == 3
    push = jnp.linspace(-1.0, 1.0, 12)  # not constant: LayerNorm would erase a constant
    iv = {"blocks.0.resid_pre": Intervention.add(push, pos_mask=at_3)}
    edited, c = jit_forward(g, p, tokens, capture=("blocks.0.resid_pre", "embed"),
                            interventions=iv)
    np.testing.assert_array_equal(edited[:, :3], logits[:, :3])
    assert (np.abs(edited[:, 3:] - logits[:, 3:]).max(axis=-1) > 1e-3).all()
    delta = c["blocks.0.resid_pre"] - (c["embed"] + p["pos_embed"][...][:6])
    expected = jnp.where(at_3[None, :, None], push, 0.0)
    np.testing.assert_allclose(delta, jnp.broadcast_to(expected, delta.shape), atol=1e-6)


def test_per_example_masks_and_pattern_query_positions(model):
    g, p, tokens, _, clean = model
    heads = jnp.array([[True, False, False]] * 2 + [[False, False, False]] * 2)  # [B, H]
    queries = jnp.arange(6) >= 4
    iv = {"blocks.0.attn.pattern": Intervention.zero(head_mask=heads, pos_mask=queries)}
    _, abl = jit_forward(g, p, tokens, capture=("blocks.0.attn.pattern",), interventions=iv)
    got, ref = abl["blocks.0.attn.pattern"], clean["blocks.0.attn.pattern"]
    assert (got[:2, 0, 4:] == 0).all()
    np.testing.assert_array_equal(got[:2, 0, :4], ref[:2, 0, :4])
    np.testing.assert_array_equal(got[:2, 1:], ref[:2, 1:])
    np.testing.assert_array_equal(got[2:], ref[2:])


def test_vmap_over_interventions_equals_a_loop(model):
    g, p, tokens, _, clean = model

    def ablate_head(head_mask):
        iv = {"blocks.1.attn.z": Intervention.zero(head_mask=head_mask)}
        return forward(g, p, tokens, interventions=iv)[0]

    masks = jnp.eye(3, dtype=bool)
    swept = jax.jit(jax.vmap(ablate_head))(masks)
    looped = jnp.stack([jax.jit(ablate_head)(m) for m in masks])
    # vmap batches the matmuls, so they may sum in another order: float32 rounding of logits
    # of size ~2 through two blocks (1.5e-6 seen with SSE4.2 code); a wrong head or position
    # moves them by more than 1e-2 (the guards below)
    np.testing.assert_allclose(swept, looped, atol=1e-5, rtol=0)
    assert np.abs(swept[0] - swept[1]).max() > 1e-2

    # Activation patching: replace resid_mid at one position with values from other runs.
    sources = clean["blocks.0.resid_mid"][:, 2]  # [B, D]: four different donor vectors

    def patch(value):
        iv = {"blocks.0.resid_mid": Intervention.replace(value, pos_mask=jnp.arange(6) == 2)}
        return forward(g, p, tokens, interventions=iv)[0]

    swept = jax.jit(jax.vmap(patch))(sources)
    looped = jnp.stack([jax.jit(patch)(s) for s in sources])
    np.testing.assert_allclose(swept, looped, atol=1e-5, rtol=0)
    assert np.abs(swept[0] - swept[1]).max() > 1e-2


@pytest.mark.parametrize(
    "interventions, message",
    [
        ({"blocks.9.attn.z": Intervention.zero()}, "unknown site"),
        ({"blocks.0.resid_pre": Intervention.zero(head_mask=jnp.ones(3, bool))}, "head_mask"),
        ({"embed": Intervention(None, None, None, "replace")}, "needs a value"),
        ({"embed": Intervention(jnp.zeros(12), None, None, "scale")}, "mode='scale'"),
        ({"embed": jnp.zeros(12)}, "must be an Intervention"),
        ([Intervention.zero()], "must be a dict"),
    ],
)
def test_bad_interventions_are_rejected_clearly(model, interventions, message):
    g, p, tokens, _, _ = model
    with pytest.raises(ValueError, match=message):
        jit_forward(g, p, tokens, interventions=interventions)
