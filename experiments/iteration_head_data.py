"""Data format and measurements of the iteration-head figure (``experiments.iteration_head``;
Cabannes et al., NeurIPS 2024, arXiv 2406.02128, E16 format of the official code
``facebookresearch/pal``, ``src/cot``).

Format (lengths L uniform in 1 .. ``n_max``, prompt left-padded to n_max + 2)::

    [task] x_1 .. x_L <eoi> | s_1 .. s_L <eos>
    parity      x_t in {0, 1},     s_t = (s_{t-1} + x_t) mod 2,        s_0 = 0
    polynomial  x_t in {1 .. 10},  s_t = (s_{t-1} x_t + 1) mod 11,     s_1 = x_1

Columns are counted from the task token (positions are ``cumsum(valid) - 1``, so padding is
invisible): x_t at t, <eoi> at L + 1, s_t at L + 1 + t; column L + t predicts s_t.
Tokens: <pad> 0, <eos> 1, <task> 2, <eoi> 3, value v = 4 + v.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tasks.core import PAD, Batch
from toymodels import model, train
from toymodels.hooks import Intervention

ABLATIONS = ("L1 head", "L1 MLP", "L2 head", "L2 MLP")
ABLATION_SITES = ("blocks.0.attn.z", "blocks.0.mlp.post", "blocks.1.attn.z",
                  "blocks.1.mlp.post")


def sample(key, n: int, kind: str, n_max: int, length: int | None = None) -> Batch:
    """A batch of the format above; ``length`` fixes L (else uniform in 1 .. n_max)."""
    k_len, k_x = jax.random.split(key)
    lens = (jnp.full((n,), length) if length else jax.random.randint(k_len, (n,), 1, n_max + 1))
    x = (jax.random.randint(k_x, (n, n_max), 0, 2) if kind == "parity"
         else jax.random.randint(k_x, (n, n_max), 1, 11))
    if kind == "parity":
        s = jnp.cumsum(x, 1) % 2
    else:
        poly = lambda prev, xt: ((prev * xt + 1) % 11,) * 2
        s = jnp.concatenate([x[:, :1], jax.lax.scan(poly, x[:, 0], x[:, 1:].T)[1].T], axis=1)
    i = jnp.arange(n_max + 2)[None] - (n_max - lens)[:, None]  # column from the task token
    xi = jnp.take_along_axis(x, jnp.clip(i - 1, 0, n_max - 1), 1) + 4
    prompts = jnp.where(i < 0, 0, jnp.where(i == 0, 2, jnp.where(i == lens[:, None] + 1, 3, xi)))
    j = jnp.arange(n_max + 1)[None]
    sj = jnp.take_along_axis(s, jnp.clip(j, 0, n_max - 1), 1) + 4
    targets = jnp.where(j < lens[:, None], sj, jnp.where(j == lens[:, None], 1, 0))
    return Batch(prompts.astype(jnp.int32), (lens + 2).astype(jnp.int32),
                 targets.astype(jnp.int32), (lens + 1).astype(jnp.int32),
                 {"L": lens, "s": s})


def pad_with_eos(batch: Batch) -> Batch:
    """The official code's loss targets: the targets after <eos> are <eos> too (the rows are
    padded with <eos> to the longest length, ``load_data``) and all of them count."""
    j = jnp.arange(batch.targets.shape[1])[None]
    targets = jnp.where(j > batch.meta["L"][:, None], 1, batch.targets).astype(jnp.int32)
    return Batch(batch.prompts, batch.prompt_lens, targets,
                 jnp.full_like(batch.target_lens, batch.targets.shape[1]), batch.meta)


def designated(batch: Batch, n_max: int):
    """Query/key columns of the full rows, int[B, n_max] each, a mask t <= L, and the
    chance weight 1 / (number of visible keys) of each query (E16 AttentionEval)."""
    lens, t = batch.meta["L"][:, None], jnp.arange(1, n_max + 1)[None]
    p0 = n_max - lens  # left padding
    mask = t <= lens
    return {"l1": (p0 + lens + 1 + t, jnp.broadcast_to(p0 + lens + 1, mask.shape),
                   1.0 / (lens + 2 + t)),
            "l2": (p0 + lens + t, p0 + t, 1.0 / (lens + t + 1))}, mask


def measure(graphdef, params, batch: Batch, n_max: int, interventions=None) -> dict:
    """Attention scores, chance levels and teacher-forced CoT token accuracy of one model."""
    rows = jnp.concatenate([batch.prompts, batch.targets], axis=1)
    logits, cache = model.forward(graphdef, params, rows, valid=rows != 0,
                                  capture=("blocks.*.attn.pattern",),
                                  interventions=interventions)
    cols, mask = designated(batch, n_max)
    b, m = jnp.arange(rows.shape[0])[:, None], mask.astype(jnp.float32)
    mean = lambda v: (v * m).sum() / m.sum()
    out = {}
    for layer, (q, k, chance) in cols.items():
        w = cache[f"blocks.{int(layer[1]) - 1}.attn.pattern"][b, 0, q, k]
        out |= {f"{layer}_abs": mean(w), f"{layer}_thr": mean(w > 0.5),
                f"{layer}_abs_chance": mean(chance * jnp.ones_like(w)),
                f"{layer}_thr_chance": mean(chance * jnp.ones_like(w) > 0.5)}
    pred = jnp.argmax(logits[b, cols["l2"][0]], -1)
    out["acc"] = mean(pred == batch.meta["s"] + 4)
    return out


def ablations(graphdef, params, batch: Batch, n_max: int) -> jax.Array:
    """Accuracy with each component of ABLATIONS zero-ablated (its output set to 0): one
    forward vmapped over the four ablations (a False position mask is a no-op)."""
    n_cols = batch.prompts.shape[1] + batch.targets.shape[1]

    def one(row):
        ivs = {site: Intervention.zero(pos_mask=jnp.broadcast_to(on, (n_cols,)))
               for site, on in zip(ABLATION_SITES, row, strict=True)}
        return measure(graphdef, params, batch, n_max, ivs)["acc"]

    return jax.vmap(one)(jnp.eye(len(ABLATION_SITES), dtype=bool))


# ---------------------------------------------------- the official code's init and dropout
def torch_init(params, key):
    """The official code's initialisation (PyTorch defaults, ``src/cot/models/transformer.py``):
    token and position embeddings ~ N(0, 1) (``nn.Embedding``), every weight matrix
    ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (``nn.Linear``); biases stay 0 (the official model
    has none), LayerNorm scales 1. toymodels' own init is N(0, 0.02^2) for all of them."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    out = []
    for i, (path, leaf) in enumerate(leaves):
        name, k = jax.tree_util.keystr(path), jax.random.fold_in(key, i)
        if "embed" in name:
            leaf = jax.random.normal(k, leaf.shape, leaf.dtype)
        elif "['W_" in name:  # W_QKV [D, 3, H, E] reads D; W_O [H, E, D], W_in, W_out, W_U
            fan_in = leaf.shape[0] if "W_QKV" in name else int(np.prod(leaf.shape[:-1]))
            bound = fan_in ** -0.5
            leaf = jax.random.uniform(k, leaf.shape, leaf.dtype, -bound, bound)
        out.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, out)


def ntp_loss_dropout(graphdef, params, batch: Batch, key, rate: float) -> jax.Array:
    """``toymodels.train.ntp_loss`` (mean cross-entropy over the target tokens) with the
    official code's embedding dropout: the summed token + position embedding (the input of
    block 0) has each coordinate zeroed with probability ``rate``, the rest scaled by
    1 / (1 - rate) (inverted dropout, ``F.dropout``). rate 0 is exactly ``ntp_loss``."""
    interventions = None
    if rate > 0:
        inputs = jnp.concatenate([batch.prompts, batch.targets], axis=1)[:, :-1]
        emb = (params["embed"][...][inputs]
               + params["pos_embed"][...][model.positions_from_valid(inputs != PAD)])
        keep = jax.random.bernoulli(key, 1.0 - rate, emb.shape)
        # resid_pre of block 0 is that sum: adding emb * (keep / (1 - rate) - 1) drops it
        interventions = {"blocks.0.resid_pre": Intervention.add(emb * (keep / (1.0 - rate)
                                                                       - 1.0))}
    return train.ntp_loss(graphdef, params, batch, interventions)[0]
