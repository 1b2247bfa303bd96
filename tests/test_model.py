"""Specification of the model: its config, its init and its teacher-forced forward."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toymodels.config import ModelConfig
from toymodels.model import forward, init

# Compiled once per (graphdef, capture): eager op-by-op dispatch is far slower on 2 cores.
jit_forward = jax.jit(forward, static_argnums=0, static_argnames=("capture",))
TINY = dict(vocab_size=11, max_len=16, n_layers=2, n_heads=2, d_model=16, d_mlp=32)


def tiny(**overrides) -> ModelConfig:
    return ModelConfig(**{**TINY, **overrides})


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(vocab_size=1), "vocab_size"),
        (dict(vocab_size=3.0), "vocab_size"),
        (dict(max_len=0), "max_len"),
        (dict(n_layers=-1), "n_layers"),
        (dict(n_heads=0), "n_heads"),
        (dict(d_model=18, n_heads=4), "d_model"),  # 18 is not a multiple of 4
        (dict(d_mlp=-1), "d_mlp"),
        (dict(d_head=0), "d_head"),
        (dict(pos_enc="alibi"), "pos_enc"),
        (dict(pos_enc="rope", d_model=12, n_heads=4), "d_head"),  # d_head 3 is odd
        (dict(pos_enc="rope", d_head=5), "d_head"),
        (dict(norm="post"), "norm"),
        (dict(tied_embed=1), "tied_embed"),
        (dict(init_scale=0.0), "init_scale"),
        (dict(init_scale=float("nan")), "init_scale"),
        (dict(n_layers=True), "n_layers"),
    ],
)
def test_config_rejects_bad_field_naming_it(overrides, field):
    with pytest.raises(ValueError, match=rf"ModelConfig\.{field}="):
        tiny(**overrides)


def test_config_defaults_and_derived_head_dim():
    c = ModelConfig(vocab_size=64, max_len=64)
    assert (c.n_layers, c.n_heads, c.d_model, c.d_mlp) == (2, 4, 128, 512)
    assert c.head_dim == 32 and c.has_mlp
    assert tiny(d_head=7).head_dim == 7  # explicit d_head need not divide d_model
    assert not tiny(d_mlp=0).has_mlp
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.d_model = 3


# --------------------------------------------------------------------------- init
def test_init_is_deterministic_and_has_the_configured_shapes():
    cfg = tiny()
    _, p1 = init(cfg, jax.random.key(0))
    _, p2 = init(cfg, jax.random.key(0))
    _, p3 = init(cfg, jax.random.key(1))
    leaves1, leaves2, leaves3 = (jax.tree.leaves(p) for p in (p1, p2, p3))
    assert all(np.array_equal(a, b) for a, b in zip(leaves1, leaves2, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(leaves1, leaves3, strict=True))
    n_params = sum(x.size for x in leaves1)
    d, m, v, h, e, n = 16, 32, 11, 2, 8, 16
    per_block = (d * 3 * h * e + 3 * h * e) + (h * e * d + d) + (d * m + m + m * d + d) + 4 * d
    expected = v * d + n * d + 2 * per_block + 2 * d + d * v + v
    assert n_params == expected


def test_init_rejects_a_non_config():
    with pytest.raises(ValueError, match="ModelConfig"):
        init(dict(TINY), jax.random.key(0))


# --------------------------------------------------------------------------- forward
VARIANTS = [
    dict(),
    dict(pos_enc="rope"),
    dict(pos_enc="none"),
    dict(norm="none"),
    dict(tied_embed=True),
    dict(d_mlp=0),
    dict(d_head=6, pos_enc="rope"),
    dict(n_layers=0),
]


@pytest.mark.parametrize("overrides", VARIANTS, ids=str)
def test_every_variant_gives_finite_causal_logits(overrides):
    cfg = tiny(**overrides)
    g, p = init(cfg, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 7), 0, cfg.vocab_size)
    logits, captured = jit_forward(g, p, tokens)
    assert logits.shape == (2, 7, cfg.vocab_size) and logits.dtype == jnp.float32
    assert captured == {}
    assert np.isfinite(logits).all()
    # Causality: changing the last token leaves every earlier position's logits unchanged.
    edited = tokens.at[:, -1].set((tokens[:, -1] + 1) % cfg.vocab_size)
    logits2, _ = jit_forward(g, p, edited)
    np.testing.assert_array_equal(logits[:, :-1], logits2[:, :-1])


@pytest.mark.parametrize("pos_enc", ["learned", "rope", "none"])
def test_left_padding_gives_the_unpadded_logits(pos_enc):
    cfg = tiny(pos_enc=pos_enc)
    g, p = init(cfg, jax.random.key(0))
    real = jax.random.randint(jax.random.key(2), (6,), 2, cfg.vocab_size)
    logits, _ = jit_forward(g, p, real[None])
    # Row 0: 4 pads then the 6 real tokens. Row 1: 1 pad, the 6 real tokens, 3 more tokens
    # (causal, so they cannot touch the positions compared). Pad ids are arbitrary (7).
    padded = jnp.stack([jnp.concatenate([jnp.full(4, 7), real]),
                        jnp.concatenate([jnp.full(1, 7), real, jnp.array([3, 4, 5])])])
    valid = jnp.arange(10)[None] >= jnp.array([[4], [1]])
    logits_padded, _ = jit_forward(g, p, padded, valid=valid)
    np.testing.assert_allclose(logits_padded[0, 4:], logits[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(logits_padded[1, 1:7], logits[0], atol=1e-5, rtol=0)


def test_without_valid_padding_does_change_the_logits():
    """The padding test above could pass vacuously if pads were ignored anyway."""
    g, p = init(tiny(init_scale=0.5), jax.random.key(0))
    real = jax.random.randint(jax.random.key(2), (1, 6), 2, 11)
    padded = jnp.concatenate([jnp.zeros((1, 3), jnp.int32), real], axis=1)
    logits, _ = jit_forward(g, p, real)
    logits_padded, _ = jit_forward(g, p, padded)
    assert np.abs(logits_padded[:, 3:] - logits).max() > 1e-3


def test_forward_rejects_bad_inputs_clearly():
    cfg = tiny()
    g, p = init(cfg, jax.random.key(0))
    ok = jnp.zeros((2, 4), jnp.int32)
    with pytest.raises(ValueError, match=r"tokens: ids must lie in \[0, 11\)"):
        forward(g, p, ok.at[0, 0].set(11))
    with pytest.raises(ValueError, match="tokens: ids"):
        forward(g, p, ok.at[0, 0].set(-1))
    with pytest.raises(ValueError, match="max_len=16"):
        forward(g, p, jnp.zeros((1, 17), jnp.int32))
    with pytest.raises(ValueError, match=r"\[batch, time\]"):
        forward(g, p, jnp.zeros((4,), jnp.int32))
    with pytest.raises(ValueError, match="integer dtype"):
        forward(g, p, jnp.zeros((2, 4), jnp.float32))
    with pytest.raises(ValueError, match="valid must have the shape"):
        forward(g, p, ok, valid=jnp.ones((2, 3), bool))


def test_out_of_range_token_under_jit_gives_a_nan_row_not_another_tokens_logits():
    g, p = init(tiny(), jax.random.key(0))
    f = jax.jit(lambda params, t: forward(g, params, t)[0])
    tokens = jnp.array([[3, 4, 5], [3, 99, 5]])
    logits = f(p, tokens)
    assert np.isfinite(logits[0]).all()
    # NaN reaches every position of its row (0 * NaN = NaN in attention), no other row.
    assert np.isnan(logits[1]).all()


def test_forward_is_differentiable_wrt_params():
    g, p = init(tiny(), jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 5), 0, 11)

    def loss(params):
        logits, _ = forward(g, params, tokens)
        return -jax.nn.log_softmax(logits)[..., 3].mean()

    grads = jax.jit(jax.grad(loss))(p)
    norms = [float(jnp.abs(x).sum()) for x in jax.tree.leaves(grads)]
    assert all(np.isfinite(norms)) and all(n > 0 for n in norms)
