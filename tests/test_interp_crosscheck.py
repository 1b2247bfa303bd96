"""The interpretability toolkit against an independent numpy reference, on small RANDOM models.

``tests/test_interp.py`` checks the tools on compiled circuits (one head, special weights).
Here every tool is compared, number by number, with a float64 numpy implementation written
from the equations of ``toymodels/layers.py``, ``toymodels/model.py`` and
``toymodels/interp/attribution.py`` (module docstrings), on models with several heads and
layers, layer norms on and off, non-zero biases, rotary and learned positions, tied and
untied unembeddings, and left-padded rows:

    block:     x += sum_h softmax(q_h k_h^T / sqrt(E) + mask) v_h W_O[h] + b_O   (q, k, v
                    from LN1(x), rotated when pos_enc='rope')
               x += gelu_tanh(LN2(x) W_in + b_in) W_out + b_out
    mask:      query t sees key s iff s <= t and (valid_s or s == t)
    positions: max(cumsum(valid) - 1, 0)
    logits:    LN_final(x) W_U + b_U

(``jax.nn.gelu`` is the tanh approximation, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))).

Tolerance, fixed before any comparison: |library - reference| <= TOL * max(1, max|reference|)
with TOL = 1e-4. The library runs in float32 (eps 1.2e-7); a forward pass here is a few
layers of sums of at most 32 terms plus softmax/LayerNorm, which keeps relative errors near
1e-6, so 1e-4 leaves a wide margin while a wrong head, position, sign or normalisation gives
errors of order one (the tests also check that the reference tells heads and positions
apart by far more than TOL, so a swap could not pass). On seeds 0, 1000, 2000 and 6660000
the worst relative error over all comparisons was 2.9e-7 .. 3.7e-7.
"""

import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from toymodels.config import ModelConfig
from toymodels.interp import (
    PatchPairs,
    ablate_neurons,
    attention_patterns,
    direct_logit_attribution,
    head_ablation,
    layout,
    load_weights,
    logit_lens,
    mean_activation,
    ov_circuit,
    patch_sweep,
    qk_circuit,
    residual_parts,
    run_with_cache,
)
from toymodels.model import Transformer

TOL = 1e-4
LN_EPS = 1e-5
# Weights and tokens are drawn from SEED (0); to rerun everything on another draw:
# INTERP_CROSSCHECK_SEED=1000 python -m pytest tests/test_interp_crosscheck.py
SEED = int(os.environ.get("INTERP_CROSSCHECK_SEED", "0"))
T = 7  # sequence length of every test batch

CONFIGS = {
    # pre-norm, learned positions, untied unembedding, MLP
    "pre-learned": ModelConfig(vocab_size=11, max_len=8, n_layers=2, n_heads=3, d_model=24,
                               d_mlp=32, norm="pre", pos_enc="learned"),
    # no norm, rotary, tied embedding, attention only, n_heads * d_head != d_model
    "none-rope-tied": ModelConfig(vocab_size=9, max_len=8, n_layers=2, n_heads=4, d_model=16,
                                  d_mlp=0, d_head=6, norm="none", pos_enc="rope",
                                  tied_embed=True),
}


def close(lib, ref, what=""):
    ref = np.asarray(ref, np.float64)
    atol = TOL * max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(np.asarray(lib, np.float64), ref, rtol=0, atol=atol, err_msg=what)
    return atol


# ------------------------------------------------------------------ the numpy reference
def gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def layer_norm(x, scale, bias):
    centred = x - x.mean(-1, keepdims=True)
    return centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + LN_EPS) * scale + bias


def rotate(x, positions):
    """Rotate-half RoPE on x [B, T, H, E]: pair (i, i + E/2) turned by pos * 10000^(-2i/E)."""
    half = x.shape[-1] // 2
    angle = positions[:, :, None, None] * 10000.0 ** (-2 * np.arange(half) / x.shape[-1])
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * np.cos(angle) - x2 * np.sin(angle),
                           x1 * np.sin(angle) + x2 * np.cos(angle)], -1)


def unembed(W, cfg):
    return W["embed"].T if cfg.tied_embed else W["W_U"]


def reference(W, cfg, tokens, valid, edit=None):
    """The forward pass: a dict of every intermediate. ``edit(kind, layer, array)`` may
    replace a layer's ``z`` [B, T, H, E] or MLP hidden activation ``post`` [B, T, M]."""
    edit = edit or (lambda kind, layer, a: a)
    pre = cfg.norm == "pre"
    ln = lambda x, name: layer_norm(x, W[f"{name}.scale"], W[f"{name}.bias"]) if pre else x
    tokens, valid = np.asarray(tokens), np.asarray(valid, bool)
    positions = np.maximum(np.cumsum(valid, 1) - 1, 0)
    s, t = np.arange(tokens.shape[1])[None, :], np.arange(tokens.shape[1])[:, None]
    sees = (s <= t) & (valid[:, None, :] | (s == t))  # [B, query, key]
    run = {"embed": W["embed"][tokens]}
    x = run["embed"]
    if cfg.pos_enc == "learned":
        run["pos_embed"] = W["pos_embed"][positions]
        x = x + run["pos_embed"]
    for key in ("resid_pre", "resid_mid", "pattern", "z", "heads", "attn_bias", "post", "mlp"):
        run[key] = []
    for l in range(cfg.n_layers):
        b = f"blocks.{l}"
        run["resid_pre"].append(x)
        h = ln(x, f"{b}.ln1")
        w, bias = W[f"{b}.attn.W_QKV"], W[f"{b}.attn.b_QKV"]
        q, k, v = (np.einsum("btd,dhe->bthe", h, w[:, i]) + bias[i] for i in range(3))
        if cfg.pos_enc == "rope":
            q, k = rotate(q, positions), rotate(k, positions)
        scores = np.einsum("bqhe,bkhe->bhqk", q, k) / np.sqrt(cfg.head_dim)
        scores = np.where(sees[:, None], scores, -np.inf)
        pattern = np.exp(scores - scores.max(-1, keepdims=True))
        pattern /= pattern.sum(-1, keepdims=True)
        z = edit("z", l, np.einsum("bhqk,bkhe->bqhe", pattern, v))
        heads = np.einsum("bthe,hed->hbtd", z, W[f"{b}.attn.W_O"])  # each head's write
        x = x + heads.sum(0) + W[f"{b}.attn.b_O"]
        run["pattern"].append(pattern), run["z"].append(z), run["heads"].append(heads)
        run["attn_bias"].append(np.broadcast_to(W[f"{b}.attn.b_O"], x.shape))
        run["resid_mid"].append(x)
        if cfg.has_mlp:
            post = edit("post", l, gelu(ln(x, f"{b}.ln2") @ W[f"{b}.mlp.W_in"]
                                        + W[f"{b}.mlp.b_in"]))
            run["post"].append(post)
            run["mlp"].append(post @ W[f"{b}.mlp.W_out"] + W[f"{b}.mlp.b_out"])
            x = x + run["mlp"][-1]
    run["final"] = x
    run["logits"] = ln(x, "ln_final") @ unembed(W, cfg) + W["b_U"]
    return run


def reference_parts(cfg, run):
    """(labels, parts [C, B, T, D]) in the library's documented order; they sum to x_final."""
    labels, parts = ["embed"], [run["embed"]]
    if cfg.pos_enc == "learned":
        labels, parts = labels + ["pos_embed"], parts + [run["pos_embed"]]
    for l in range(cfg.n_layers):
        labels += [f"L{l}H{h}" for h in range(cfg.n_heads)] + [f"L{l}.attn_bias"]
        parts += list(run["heads"][l]) + [run["attn_bias"][l]]
        if cfg.has_mlp:
            labels, parts = labels + [f"L{l}.mlp"], parts + [run["mlp"][l]]
    return labels, np.stack(parts)


def reference_dla(W, cfg, run):
    """Each part through the unembedding (without a final norm: part @ W_U, and b_U is the
    part 'bias'); under the final LayerNorm the scale sigma is frozen
    at the full residual's: part c -> ((c - mean c) / sigma * gamma) W_U, and beta W_U + b_U
    is the part 'bias' (docs of toymodels.interp.attribution)."""
    labels, parts = reference_parts(cfg, run)
    w_u, bias = unembed(W, cfg), W["b_U"]
    if cfg.norm == "pre":
        final = run["final"]
        sigma = np.sqrt(((final - final.mean(-1, keepdims=True)) ** 2).mean(-1, keepdims=True)
                        + LN_EPS)
        parts = (parts - parts.mean(-1, keepdims=True)) / sigma * W["ln_final.scale"]
        bias = W["ln_final.bias"] @ w_u + bias
    dla = parts @ w_u
    return labels + ["bias"], np.concatenate([dla, np.broadcast_to(bias, dla.shape[1:])[None]])


# ------------------------------------------------------------------ random models and inputs
def random_weights(cfg, seed):
    """Every parameter random: matrices N(0, 1/fan_in) (embeddings N(0, 1)), biases
    N(0, 0.3^2), LayerNorm scales 1 + N(0, 0.2^2). Cast to float32 once, so the reference
    (float64) sees exactly the library's numbers."""
    abstract = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(params=0))))[1]
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in layout(abstract).items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "scale":
            w = 1 + 0.2 * rng.normal(size=shape)
        elif leaf == "bias" or leaf.startswith("b_"):
            w = 0.3 * rng.normal(size=shape)
        else:
            fan_in = {"embed": 1, "pos_embed": 1, "W_O": shape[0] * shape[1]}.get(leaf, shape[0])
            w = rng.normal(size=shape) / np.sqrt(fan_in)
        weights[name] = w.astype(np.float32)
    return weights


PADS = np.array([0, 2, 1, 3])  # left pads per row: row 0 unpadded


def batch(cfg, seed):
    rng = np.random.default_rng(seed + 1)
    tokens = rng.integers(0, cfg.vocab_size, (len(PADS), T)).astype(np.int32)
    valid = np.arange(T)[None, :] >= PADS[:, None]
    return tokens, valid


class Setup:
    def __init__(self, name, seed=SEED):
        self.name, self.cfg = name, CONFIGS[name]
        self.W = {k: v.astype(np.float64) for k, v in random_weights(self.cfg, seed).items()}
        self.g, self.p = load_weights(self.cfg, random_weights(self.cfg, seed))
        self.tokens, self.valid = batch(self.cfg, seed)
        self.run = reference(self.W, self.cfg, self.tokens, self.valid)

    def ref(self, edit=None, tokens=None):
        return reference(self.W, self.cfg, self.tokens if tokens is None else tokens,
                         self.valid, edit)

    def lib(self, tokens=None, **kw):
        return run_with_cache(self.g, self.p, jnp.asarray(self.tokens if tokens is None
                                                          else tokens),
                              valid=jnp.asarray(self.valid), **kw)


@pytest.fixture(scope="module", params=list(CONFIGS))
def setup(request):
    return Setup(request.param)


# ------------------------------------------------------------------ cache and patterns
def test_cache_holds_the_reference_residuals_patterns_and_z(setup):
    cfg, run = setup.cfg, setup.run
    logits, cache = setup.lib()
    close(logits, run["logits"], "logits")
    for l in range(cfg.n_layers):
        for site, key in (("resid_pre", "resid_pre"), ("resid_mid", "resid_mid"),
                          ("attn.pattern", "pattern"), ("attn.z", "z")):
            close(cache[f"blocks.{l}.{site}"], run[key][l], f"blocks.{l}.{site}")
        if cfg.has_mlp:
            close(cache[f"blocks.{l}.mlp.post"], run["post"][l], f"blocks.{l}.mlp.post")
    close(cache[f"blocks.{cfg.n_layers - 1}.resid_post"], run["final"], "final residual")
    if cfg.norm == "pre":  # one model only: a compile saved, and the wrapper is model-blind
        close(attention_patterns(setup.g, setup.p, jnp.asarray(setup.tokens),
                                 valid=jnp.asarray(setup.valid)), np.stack(run["pattern"]),
              "attention_patterns")
    # The comparison can see a head swap: the reference's heads differ by far more than TOL.
    heads_apart = np.abs(run["pattern"][0] - run["pattern"][0][:, ::-1]).max()
    assert heads_apart > 100 * TOL


def test_pad_keys_are_invisible_and_a_padded_row_reads_as_its_unpadded_self(setup):
    _, cache = setup.lib()
    patterns = np.stack([cache[f"blocks.{l}.attn.pattern"] for l in range(setup.cfg.n_layers)])
    np.testing.assert_allclose(patterns.sum(-1), 1.0, atol=1e-5)
    row, pads = 3, PADS[3]
    assert patterns[:, row, :, pads:, :pads].max() == 0.0  # real queries, pad keys
    # Its DLA at the real columns is the reference DLA of the row without its pads.
    alone = setup.tokens[row:row + 1, pads:]
    alone_run = reference(setup.W, setup.cfg, alone, np.ones(alone.shape, bool))
    _, dla = direct_logit_attribution(setup.g, setup.p, jnp.asarray(setup.tokens),
                                      valid=jnp.asarray(setup.valid))
    close(dla[:, row, pads:], reference_dla(setup.W, setup.cfg, alone_run)[1][:, 0],
          "DLA of a left-padded row")


# ------------------------------------------------------------------ attribution
# Pre-norm model only: on the norm-free one DLA (next test) is exactly parts @ W_U.
@pytest.mark.parametrize("setup", ["pre-learned"], indirect=True)
def test_residual_parts_are_each_heads_and_layers_write(setup):
    labels, parts = residual_parts(setup.g, setup.p, jnp.asarray(setup.tokens),
                                   valid=jnp.asarray(setup.valid))
    parts = np.asarray(parts)
    ref_labels, ref_parts = reference_parts(setup.cfg, setup.run)
    assert labels == ref_labels
    for label, got, want in zip(labels, parts, ref_parts, strict=True):
        close(got, want, label)
    close(parts.sum(0), setup.run["final"], "parts sum to the final residual")


def test_dla_per_part_matches_the_reference_and_the_parts_sum_to_the_logits(setup):
    labels, dla = direct_logit_attribution(setup.g, setup.p, jnp.asarray(setup.tokens),
                                           valid=jnp.asarray(setup.valid))
    ref_labels, ref_dla = reference_dla(setup.W, setup.cfg, setup.run)
    assert labels == ref_labels
    dla = np.asarray(dla)
    for label, got, want in zip(labels, dla, ref_dla, strict=True):
        close(got, want, label)
    close(dla.sum(0), setup.run["logits"], "DLA parts sum to the logits")
    # Heads of a layer write different logits, so attributing to the wrong head would fail.
    first = [i for i, name in enumerate(labels) if name.startswith("L0H")]
    assert np.abs(ref_dla[first[0]] - ref_dla[first[1]]).max() > 100 * TOL


def test_logit_lens_is_the_unembedded_residual_before_each_block_and_after_the_last(setup):
    cfg, W, run = setup.cfg, setup.W, setup.run
    lens = logit_lens(setup.g, setup.p, jnp.asarray(setup.tokens), valid=jnp.asarray(setup.valid))
    norm = ((lambda x: layer_norm(x, W["ln_final.scale"], W["ln_final.bias"]))
            if cfg.norm == "pre" else (lambda x: x))
    resid = run["resid_pre"] + [run["final"]]
    assert lens.shape[0] == cfg.n_layers + 1
    for l, x in enumerate(resid):
        close(lens[l], norm(x) @ unembed(W, cfg) + W["b_U"], f"lens entry {l}")
    close(lens[-1], run["logits"], "the last entry is the logits")


def test_ov_and_qk_circuits_are_the_per_head_weight_products(setup):
    cfg, W = setup.cfg, setup.W
    for l in range(cfg.n_layers):
        w = W[f"blocks.{l}.attn.W_QKV"]
        for h in range(cfg.n_heads):
            ov = W["embed"] @ w[:, 2, h] @ W[f"blocks.{l}.attn.W_O"][h] @ unembed(W, cfg)
            close(ov_circuit(setup.g, setup.p, l, h), ov, f"OV L{l}H{h}")
            sources = ["embed"] + (["pos_embed"] if cfg.pos_enc == "learned" else [])
            for source in sources:
                x = W[source]
                qk = (x @ w[:, 0, h]) @ (x @ w[:, 1, h]).T / np.sqrt(cfg.head_dim)
                close(qk_circuit(setup.g, setup.p, l, h, source=source), qk, f"QK L{l}H{h}")


# ------------------------------------------------------------------ ablation
def test_head_ablation_removes_exactly_that_head(setup):
    """Every head of one layer, set to its batch mean per position (pre-norm model, layer 0,
    so layer 1 sees the change) or zeroed (norm-free model, layer 1)."""
    cfg = setup.cfg
    l = 0 if cfg.norm == "pre" else cfg.n_layers - 1
    mean = None
    if cfg.norm == "pre":
        mean = mean_activation(setup.g, setup.p, jnp.asarray(setup.tokens),
                               f"blocks.{l}.attn.z", valid=jnp.asarray(setup.valid))
        real = setup.valid[:, :, None, None]  # pad slots do not enter the mean
        want_mean = (setup.run["z"][l] * real).sum(0) / np.maximum(real.sum(0), 1)
        assert not np.allclose(want_mean, setup.run["z"][l].mean(0), atol=1e-3)  # pads matter
        close(mean, want_mean, "mean z over the rows real at each position")
        mean = np.asarray(mean)
    for h in range(cfg.n_heads):
        def ablate(kind, layer, z, h=h):
            if kind != "z" or layer != l:
                return z
            z = z.copy()
            z[:, :, h] = 0.0 if mean is None else mean[:, h]
            return z

        want = setup.ref(ablate)
        logits, cache = setup.lib(
            names=("logits", f"blocks.{l}.resid_pre", f"blocks.{l}.attn.pattern"),
            interventions=head_ablation(l, [h], cfg.n_heads, mean_z=mean))
        what = f"{'zero' if mean is None else 'mean'} ablation of L{l}H{h}"
        close(logits, want["logits"], what)
        # Nothing upstream of the head moves: its layer's input and attention patterns.
        close(cache[f"blocks.{l}.resid_pre"], setup.run["resid_pre"][l], what)
        close(cache[f"blocks.{l}.attn.pattern"], setup.run["pattern"][l], what)
        assert np.abs(want["logits"] - setup.run["logits"]).max() > 100 * TOL


def test_mean_of_a_pattern_weights_by_the_query_and_an_all_pad_column_is_zero(setup):
    """``mean_activation`` of ``attn.pattern`` [B, H, T_q, T_k] averages each query row over
    the rows whose query column is real; on rows 1..3 (all padded at column 0) column 0 has
    no real row, so its mean is 0 for every site."""
    rows = slice(1, None)
    tokens, valid = jnp.asarray(setup.tokens[rows]), setup.valid[rows]
    assert not valid[:, 0].any()
    pattern = mean_activation(setup.g, setup.p, tokens, "blocks.0.attn.pattern",
                              valid=jnp.asarray(valid))
    real = valid[:, None, :, None]
    ref = setup.run["pattern"][0][rows]
    close(pattern, (ref * real).sum(0) / np.maximum(real.sum(0), 1), "mean pattern")
    assert np.all(np.asarray(pattern)[:, 0] == 0)
    resid = mean_activation(setup.g, setup.p, tokens, "blocks.0.resid_pre",
                            valid=jnp.asarray(valid))
    assert np.all(np.asarray(resid)[0] == 0) and np.abs(np.asarray(resid)[1:]).min() > 0


@pytest.mark.parametrize("setup", ["pre-learned"], indirect=True)  # the model with an MLP
def test_neuron_ablation_zeroes_or_means_exactly_those_neurons(setup):
    cfg, l = setup.cfg, setup.cfg.n_layers - 1
    assert cfg.has_mlp
    neurons = [0, 5, cfg.d_mlp - 1]
    for mean in (None, setup.run["post"][l].mean(0)):
        def ablate(kind, layer, post, mean=mean):
            if kind != "post" or layer != l:
                return post
            post = post.copy()
            post[..., neurons] = 0.0 if mean is None else mean[:, neurons]
            return post

        want = setup.ref(ablate)["logits"]
        got = ablate_neurons(setup.g, setup.p, jnp.asarray(setup.tokens), l, neurons,
                             valid=jnp.asarray(setup.valid),
                             mean_post=None if mean is None else jnp.asarray(mean))
        close(got, want, f"{'zero' if mean is None else 'mean'} ablation of neurons {neurons}")
        assert np.abs(want - setup.run["logits"]).max() > 100 * TOL


# ------------------------------------------------------------------ activation patching
def patch_pairs(setup):
    """Corrupt = clean with one real token changed per row (at column ``changed[b]``); the
    answers are read at ``answer_pos[b] >= changed[b]``, all before the last column (so
    patching the last column can change nothing)."""
    rng = np.random.default_rng(SEED + 2)
    changed, answer_pos = np.array([2, 3, 4, 5]), np.array([5, 5, 4, 5])
    assert (changed >= PADS).all() and (answer_pos >= changed).all()
    corrupt = setup.tokens.copy()
    rows = np.arange(len(PADS))
    corrupt[rows, changed] = (corrupt[rows, changed] + 1 + rng.integers(
        0, setup.cfg.vocab_size - 1, len(PADS))) % setup.cfg.vocab_size
    # The answer pair is the one the corruption moves most (per row, by the reference), so
    # the clean - corrupt span is well away from 0 at any seed and the scores well defined.
    shift = (setup.run["logits"] - setup.ref(tokens=corrupt)["logits"])[rows, answer_pos]
    clean_answer, corrupt_answer = shift.argmax(-1), shift.argmin(-1)
    pairs = PatchPairs(jnp.asarray(setup.tokens), jnp.asarray(corrupt), jnp.asarray(answer_pos),
                       jnp.asarray(clean_answer), jnp.asarray(corrupt_answer),
                       jnp.asarray(setup.valid))
    return pairs, corrupt, changed, answer_pos, clean_answer, corrupt_answer


def test_patching_one_head_at_one_position_matches_the_reference(setup):
    """Every (layer, head, position) cell of an ``attn.z`` sweep: 'denoise' on the pre-norm
    model, 'noise' on the norm-free one."""
    cfg, direction = setup.cfg, "denoise" if setup.cfg.norm == "pre" else "noise"
    pairs, corrupt, changed, answer_pos, right, wrong = patch_pairs(setup)
    rows = np.arange(len(PADS))
    diff = lambda logits: (logits[rows, answer_pos, right] - logits[rows, answer_pos, wrong]).mean()
    clean_run, corrupt_run = setup.run, setup.ref(tokens=corrupt)
    source, target = (clean_run, corrupt) if direction == "denoise" else (corrupt_run,
                                                                          setup.tokens)
    base = diff(corrupt_run["logits"] if direction == "denoise" else clean_run["logits"])
    want = np.zeros((cfg.n_layers, cfg.n_heads, T))
    for l, h, p in np.ndindex(*want.shape):
        def patch(kind, layer, z, l=l, h=h, p=p):
            if kind != "z" or layer != l:
                return z
            z = z.copy()
            z[:, p, h] = source["z"][l][:, p, h]
            return z

        want[l, h, p] = diff(setup.ref(patch, tokens=target)["logits"])
    result = patch_sweep(setup.g, setup.p, pairs, site="attn.z", direction=direction)
    close(result.clean, diff(clean_run["logits"]), "clean logit difference")
    close(result.corrupt, diff(corrupt_run["logits"]), "corrupt logit difference")
    atol = close(result.patched, want, "patched logit difference per (layer, head, pos)")
    span = diff(source["logits"]) - base
    assert abs(span) > 0.1  # the pair moves the metric, so scores are well defined
    # Scores divide three differences by the span: 10x the difference tolerance, over |span|.
    np.testing.assert_allclose(result.scores, (want - base) / span, atol=10 * atol / abs(span))
    # Only what depends on the patch changes: z is the same in both runs before the first
    # changed column, and nothing at the last column reaches an answer column.
    untouched = np.abs(result.patched[:, :, list(range(changed.min())) + [T - 1]] - base)
    assert untouched.max() <= atol
    # The reference tells heads and positions apart, so a swap in the library would fail.
    assert np.abs(want - want[:, ::-1]).max() > 100 * atol
    assert np.abs(want[..., 1:] - want[..., :-1]).max() > 100 * atol
