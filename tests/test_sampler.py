"""Specification of the KV-cache sampler: it agrees with teacher forcing through forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tasks.core import EOS, PAD, completion_mask
from toymodels.config import ModelConfig
from toymodels.model import forward, init
from toymodels.sampler import generate

jit_forward = jax.jit(forward, static_argnums=0)
CFG = ModelConfig(vocab_size=9, max_len=16, n_layers=2, n_heads=2, d_model=16, d_mlp=32,
                  init_scale=0.5)
P, N = 6, 7
PROMPT_LENS = jnp.array([6, 3, 1, 4])


def left_padded_prompts(key, cfg=CFG):
    real = jax.random.randint(key, (4, P), 2, cfg.vocab_size)
    valid = jnp.arange(P)[None] >= P - PROMPT_LENS[:, None]
    return jnp.where(valid, real, PAD), valid


def teacher_forced(g, p, prompts, valid, samples):
    """log pi(token) and entropy of pi at each generated position, by one forward pass."""
    seq = jnp.concatenate([prompts, samples.tokens], axis=1)
    seq_valid = jnp.concatenate([valid, jnp.ones_like(samples.mask)], axis=1)
    logits, _ = jit_forward(g, p, seq, valid=seq_valid)
    logp = jax.nn.log_softmax(logits[:, P - 1:-1], axis=-1)  # predicts columns P .. P+N-1
    chosen = jnp.take_along_axis(logp, samples.tokens[..., None], axis=-1)[..., 0]
    entropy = -(jnp.exp(logp) * logp).sum(-1)
    return logits[:, P - 1:-1], chosen, entropy


@pytest.fixture(scope="module")
def model():
    return init(CFG, jax.random.key(0))


@pytest.mark.parametrize("temperature, top_k", [(1.0, 0), (0.7, 3)])
def test_logprobs_and_entropies_equal_teacher_forcing(model, temperature, top_k):
    g, p = model
    prompts, valid = left_padded_prompts(jax.random.key(1))
    s = generate(g, p, jax.random.key(2), prompts, valid, max_new_tokens=N,
                 temperature=temperature, top_k=top_k)
    assert s.tokens.shape == s.logprobs.shape == s.entropies.shape == s.mask.shape == (4, N)
    assert s.tokens.dtype == jnp.int32 and s.mask.dtype == bool
    _, logp, entropy = teacher_forced(g, p, prompts, valid, s)
    np.testing.assert_allclose(s.logprobs, jnp.where(s.mask, logp, 0.0), atol=1e-5, rtol=0)
    np.testing.assert_allclose(s.entropies, jnp.where(s.mask, entropy, 0.0), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "overrides",
    [dict(pos_enc="rope"), dict(pos_enc="none", tied_embed=True), dict(norm="none", d_mlp=0)],
    ids=["rope", "none-tied", "nonorm-attnonly"],
)
def test_every_variant_samples_consistently_with_teacher_forcing(overrides):
    cfg = ModelConfig(**{**CFG.__dict__, **overrides})
    g, p = init(cfg, jax.random.key(3))
    prompts, valid = left_padded_prompts(jax.random.key(4), cfg)
    s = generate(g, p, jax.random.key(5), prompts, valid, max_new_tokens=N)
    _, logp, _ = teacher_forced(g, p, prompts, valid, s)
    np.testing.assert_allclose(s.logprobs, jnp.where(s.mask, logp, 0.0), atol=1e-5, rtol=0)


def test_greedy_is_deterministic_and_the_argmax_of_teacher_forcing(model):
    g, p = model
    prompts, valid = left_padded_prompts(jax.random.key(6))
    a = generate(g, p, jax.random.key(0), prompts, valid, max_new_tokens=N, greedy=True)
    b = generate(g, p, jax.random.key(1), prompts, valid, max_new_tokens=N, greedy=True,
                 temperature=0.0)  # greedy ignores the temperature, so 0 is allowed
    np.testing.assert_array_equal(a.tokens, b.tokens)
    logits, _, _ = teacher_forced(g, p, prompts, valid, a)
    np.testing.assert_array_equal(a.tokens, jnp.where(a.mask, logits.argmax(-1), PAD))
    top1 = generate(g, p, jax.random.key(2), prompts, valid, max_new_tokens=N, top_k=1)
    np.testing.assert_array_equal(top1.tokens, a.tokens)


def test_top_k_samples_only_among_the_k_most_likely(model):
    g, p = model
    prompts, valid = left_padded_prompts(jax.random.key(7))
    s = generate(g, p, jax.random.key(8), prompts, valid, max_new_tokens=N, top_k=2)
    logits, _, _ = teacher_forced(g, p, prompts, valid, s)
    rank = (logits > jnp.take_along_axis(logits, s.tokens[..., None], -1)).sum(-1)
    assert (rank[s.mask] < 2).all()
    assert (rank[s.mask] == 1).any()  # the second choice does get sampled


def test_same_key_same_samples_other_key_other_samples(model):
    g, p = model
    prompts, valid = left_padded_prompts(jax.random.key(9))
    kwargs = dict(max_new_tokens=N, temperature=1.3)
    a = generate(g, p, jax.random.key(10), prompts, valid, **kwargs)
    b = generate(g, p, jax.random.key(10), prompts, valid, **kwargs)
    c = generate(g, p, jax.random.key(11), prompts, valid, **kwargs)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.tokens, c.tokens)


def test_eos_ends_a_row_pads_after_it_and_sets_mask_and_lengths(model):
    g, p = model
    # Raise <eos>'s unembedding bias so rows stop at many different steps.
    p = jax.tree.map(lambda x: x, p)
    p["b_U"][...] = p["b_U"][...].at[EOS].set(1.5)
    prompts, valid = left_padded_prompts(jax.random.key(12))
    prompts, valid = jnp.tile(prompts, (16, 1)), jnp.tile(valid, (16, 1))  # 64 rows
    s = generate(g, p, jax.random.key(13), prompts, valid, max_new_tokens=N)
    first_eos = np.where((s.tokens == EOS).any(1), np.argmax(s.tokens == EOS, 1), N)
    assert len(set(first_eos.tolist())) >= 4  # stops at several steps, and some never
    np.testing.assert_array_equal(s.mask, completion_mask(s.tokens))
    np.testing.assert_array_equal(s.lengths, np.minimum(first_eos + 1, N))
    assert (s.tokens[~s.mask] == PAD).all()
    assert (s.logprobs[~s.mask] == 0).all() and (s.entropies[~s.mask] == 0).all()
    assert (s.logprobs[s.mask] < 0).all() and (s.entropies[s.mask] > 0).all()
    assert (np.asarray(s.tokens == EOS).sum(1) <= 1).all()


def test_generate_runs_under_an_outer_jit_and_vmap_over_keys(model):
    g, p = model
    prompts, valid = left_padded_prompts(jax.random.key(14))
    keys = jax.random.split(jax.random.key(16), 3)

    @jax.jit
    def sample_per_key(params, keys, temperature):
        return jax.vmap(lambda k: generate(g, params, k, prompts, valid, max_new_tokens=N,
                                           temperature=temperature))(keys)

    many = sample_per_key(p, keys, 0.8)
    assert many.tokens.shape == (3, 4, N)
    one = generate(g, p, keys[1], prompts, valid, max_new_tokens=N, temperature=0.8)
    np.testing.assert_array_equal(many.tokens[1], one.tokens)
    np.testing.assert_allclose(many.logprobs[1], one.logprobs, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_new_tokens=11), "exceeds max_len=16"),
        (dict(max_new_tokens=0), "max_new_tokens=0"),
        (dict(max_new_tokens=2, top_k=10), "top_k=10"),
        (dict(max_new_tokens=2, top_k=-1), "top_k=-1"),
        (dict(max_new_tokens=2, temperature=0.0), "temperature=0.0"),
        (dict(max_new_tokens=2, temperature=float("inf")), "temperature=inf"),
        (dict(max_new_tokens=2, greedy=1), "greedy=1"),
    ],
)
def test_bad_arguments_are_rejected_clearly(model, kwargs, message):
    g, p = model
    prompts, valid = left_padded_prompts(jax.random.key(1))
    with pytest.raises(ValueError, match=message):
        generate(g, p, jax.random.key(0), prompts, valid, **kwargs)


def test_bad_prompts_are_rejected_clearly(model):
    g, p = model
    prompts, valid = left_padded_prompts(jax.random.key(1))
    with pytest.raises(ValueError, match="tokens: ids"):
        generate(g, p, jax.random.key(0), prompts.at[0, -1].set(9), valid, max_new_tokens=2)
    with pytest.raises(ValueError, match="valid must have the shape"):
        generate(g, p, jax.random.key(0), prompts, valid[:, 1:], max_new_tokens=2)
    with pytest.raises(ValueError, match="prompt_valid"):
        generate(g, p, jax.random.key(0), prompts, None, max_new_tokens=2)
