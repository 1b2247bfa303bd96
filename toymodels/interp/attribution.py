"""Reading the residual stream in logit space: decomposition, direct logit attribution (DLA),
the logit lens, and the per-head OV and QK circuits (Elhage et al. 2021, "A Mathematical
Framework for Transformer Circuits"; names as in TransformerLens).

The final residual is a sum of what each part wrote (every block adds to the stream):

    x_final = embed + pos_embed + sum_l [ sum_h z_{l,h} W_O[l,h] + b_O[l] + mlp_out_l ],
    mlp_out_l = gelu(pre_l) W_out[l] + b_out[l].

With ``norm='none'`` the logits are ``x_final W_U + b_U``, linear in the parts, so the DLA of a
part c is ``c W_U`` and the parts plus ``b_U`` sum to the logits exactly. With
``norm='pre'`` the final LayerNorm is ``LN(x) = (x - mean x) / sigma(x) * gamma + beta``
with ``sigma(x) = sqrt(var x + 1e-5)``; we freeze sigma at its value for the full residual
(the usual convention, as TransformerLens's ``apply_ln_to_stack``): then LN is linear in
the parts, part c contributes
``((c - mean c) / sigma * gamma) W_U`` and the remaining term ``beta W_U + b_U`` is the part
named ``bias``; the sum is again exactly the logits. A part's DLA is *direct* only: what it
does through later layers is not in it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from toymodels import model
from toymodels.interp.cache import config_of, run_with_cache, weight
from toymodels.layers import LN_EPS


def _unembed_matrix(params, config) -> jax.Array:
    return weight(params, "embed").T if config.tied_embed else weight(params, "W_U")


def part_labels(config) -> list[str]:
    """Labels of :func:`residual_parts`, in order."""
    labels = ["embed"] + (["pos_embed"] if config.pos_enc == "learned" else [])
    for l in range(config.n_layers):
        labels += [f"L{l}H{h}" for h in range(config.n_heads)] + [f"L{l}.attn_bias"]
        labels += [f"L{l}.mlp"] if config.has_mlp else []
    return labels


def residual_parts(graphdef, params, tokens, *, valid=None) -> tuple[list[str], jax.Array]:
    """``(labels, parts float32[C, B, T, D])`` whose sum over C is the final residual.

    Labels: ``embed``, ``pos_embed`` (learned positions), ``L{l}H{h}`` (head h's output
    z W_O, without bias), ``L{l}.attn_bias``, ``L{l}.mlp`` (incl. b_out) per layer.
    """
    return part_labels(config_of(graphdef, params)), _parts(graphdef, params, tokens, valid)


@functools.partial(jax.jit, static_argnums=0)
def _parts(graphdef, params, tokens, valid):
    config = config_of(graphdef, params)
    names = ["embed"] + (["pos_embed"] if config.pos_enc == "learned" else [])
    names += [f"blocks.{l}.attn.z" for l in range(config.n_layers)]
    names += [f"blocks.{l}.mlp.post" for l in range(config.n_layers) if config.has_mlp]
    _, cache = model.forward(graphdef, params, tokens, valid=valid, capture=tuple(names))
    parts = [cache["embed"]] + ([cache["pos_embed"]] if config.pos_enc == "learned" else [])
    for l in range(config.n_layers):
        w_o = weight(params, f"blocks.{l}.attn.W_O")  # [H, E, D]
        heads = jnp.einsum("bthe,hed->hbtd", cache[f"blocks.{l}.attn.z"], w_o)
        parts += list(heads)
        parts.append(jnp.broadcast_to(weight(params, f"blocks.{l}.attn.b_O"), heads.shape[1:]))
        if config.has_mlp:
            post = cache[f"blocks.{l}.mlp.post"]
            parts.append(post @ weight(params, f"blocks.{l}.mlp.W_out")
                         + weight(params, f"blocks.{l}.mlp.b_out"))
    return jnp.stack(parts)


def direct_logit_attribution(graphdef, params, tokens, *, valid=None
                             ) -> tuple[list[str], jax.Array]:
    """``(labels, dla float32[C, B, T, V])``: each part's direct contribution to the logits.

    Labels are those of :func:`residual_parts` plus ``bias`` (``b_U``, and ``beta W_U`` under
    the final LayerNorm); ``dla.sum(0)`` equals the model's logits (module docstring).
    """
    return part_labels(config_of(graphdef, params)) + ["bias"], _dla(graphdef, params, tokens,
                                                                     valid)


@functools.partial(jax.jit, static_argnums=0)
def _dla(graphdef, params, tokens, valid):
    config = config_of(graphdef, params)
    parts = _parts(graphdef, params, tokens, valid)
    w_u, b_u = _unembed_matrix(params, config), weight(params, "b_U")
    if config.norm == "pre":
        total = parts.sum(0)
        centred_total = total - total.mean(-1, keepdims=True)
        sigma = jnp.sqrt((centred_total ** 2).mean(-1, keepdims=True) + LN_EPS)  # frozen
        gamma, beta = weight(params, "ln_final.scale"), weight(params, "ln_final.bias")
        parts = (parts - parts.mean(-1, keepdims=True)) / sigma * gamma
        bias = beta @ w_u + b_u
    else:
        bias = b_u
    dla = parts @ w_u
    bias = jnp.broadcast_to(bias, dla.shape[1:])
    return jnp.concatenate([dla, bias[None]])


def _final_norm(params, config, x: jax.Array) -> jax.Array:
    if config.norm != "pre":
        return x
    centred = x - x.mean(-1, keepdims=True)
    scale = jax.lax.rsqrt((centred ** 2).mean(-1, keepdims=True) + LN_EPS)
    return centred * scale * weight(params, "ln_final.scale") + weight(params, "ln_final.bias")


def logit_lens(graphdef, params, tokens, *, valid=None) -> jax.Array:
    """float32[n_layers + 1, B, T, V]: ``unembed(ln_final(resid))`` read before each block
    (entry l is ``blocks.l.resid_pre``; entry 0 is the embeddings alone: token, plus
    position when learned) and after the last
    (entry n_layers, which equals the model's logits). The final LayerNorm is applied as in
    the model, with the statistics of each intermediate residual (nostalgebraist 2020)."""
    config = config_of(graphdef, params)
    if config.n_layers == 0:
        raise ValueError("logit_lens: the model has no blocks (n_layers=0)")
    last = config.n_layers - 1
    _, cache = run_with_cache(graphdef, params, tokens, valid=valid,
                              names=("blocks.*.resid_pre", f"blocks.{last}.resid_post"))
    resid = jnp.stack([cache[f"blocks.{l}.resid_pre"] for l in range(config.n_layers)]
                      + [cache[f"blocks.{last}.resid_post"]])
    return _final_norm(params, config, resid) @ _unembed_matrix(params, config) + weight(
        params, "b_U")


def _check_head(config, layer: int, head: int) -> None:
    if not 0 <= layer < config.n_layers:
        raise ValueError(f"layer={layer} is not allowed: in [0, {config.n_layers})")
    if not 0 <= head < config.n_heads:
        raise ValueError(f"head={head} is not allowed: in [0, {config.n_heads})")


def ov_circuit(graphdef, params, layer: int, head: int) -> jax.Array:
    """float32[V_src, V_out] = W_E W_V[h] W_O[h] W_U: the logits that attending to a token
    writes, through the token embedding and the unembedding (LayerNorms and biases left out,
    as in Elhage et al. 2021 §"OV circuit")."""
    config = config_of(graphdef, params)
    _check_head(config, layer, head)
    w_v = weight(params, f"blocks.{layer}.attn.W_QKV")[:, 2, head]  # [D, E]
    w_o = weight(params, f"blocks.{layer}.attn.W_O")[head]  # [E, D]
    return weight(params, "embed") @ w_v @ w_o @ _unembed_matrix(params, config)


def qk_circuit(graphdef, params, layer: int, head: int, *, source: str = "embed") -> jax.Array:
    """float32[N_query, N_key] attention scores (q . k / sqrt(E), biases and LayerNorm left
    out) between the rows of ``source``: 'embed' (token x token, W_E W_Q W_K^T W_E^T) or
    'pos_embed' (position x position, learned positions only). With rotary positions the
    token circuit leaves the rotation out: it is the score at zero relative offset."""
    config = config_of(graphdef, params)
    _check_head(config, layer, head)
    if source not in ("embed", "pos_embed"):
        raise ValueError(f"qk_circuit: source={source!r} is not allowed: 'embed' or 'pos_embed'")
    if source == "pos_embed" and config.pos_enc != "learned":
        raise ValueError("qk_circuit: source='pos_embed' needs pos_enc='learned'")
    x = weight(params, source)
    w = weight(params, f"blocks.{layer}.attn.W_QKV")
    q, k = x @ w[:, 0, head], x @ w[:, 1, head]
    return q @ k.T * config.head_dim ** -0.5
