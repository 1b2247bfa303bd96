"""Weights in, activations out: the loader for compiled circuits, ``run_with_cache`` and
attention patterns, all on the one ``toymodels.model.forward``.

A site filter is a site name, a glob pattern (``"blocks.*.attn.pattern"``), a tuple of them,
or a predicate ``name -> bool`` over ``toymodels.hooks.site_names(config)``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from toymodels import model
from toymodels.config import ModelConfig
from toymodels.hooks import resolve_capture, site_names

# graphdef and the capture tuple are static: the same capture reuses the compiled function.
_forward = jax.jit(model.forward, static_argnums=0, static_argnames=("capture",))


def config_of(graphdef, params) -> ModelConfig:
    """The ModelConfig of a split model."""
    return nnx.merge(graphdef, params).config


def weight(params, name: str) -> jax.Array:
    """The array of the parameter ``name`` (dotted layout path, e.g. ``blocks.0.attn.W_O``)."""
    node = params
    for part in name.split("."):
        try:
            node = node[int(part) if part.isdigit() else part]
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"weight: the model has no parameter {name!r}") from None
    return node[...] if isinstance(node, nnx.Variable) else node


def _layout_name(path) -> str:
    return ".".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))


def layout(params) -> dict[str, tuple[int, ...]]:
    """``{dotted parameter name: shape}`` of a model's params (the names theory builds)."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {_layout_name(path): tuple(x.shape) for path, x in flat}


def load_weights(config: ModelConfig | dict, weights: dict) -> tuple:
    """``(graphdef, params)`` of the model ``config`` holding exactly ``weights``.

    ``weights`` maps every dotted parameter name of the layout (``layout(params)``) to an
    array of its shape, as ``theory.circuits`` builds them. A missing, unknown or misshapen
    entry is a ValueError naming it.
    """
    if isinstance(config, dict):
        try:
            config = ModelConfig(**config)
        except TypeError as err:
            raise ValueError(f"load_weights: config: {err}") from None
    if not isinstance(config, ModelConfig):
        raise ValueError(f"load_weights: config must be a ModelConfig or a dict of its fields, "
                         f"got {type(config).__name__}")
    # Abstract init: shapes only, no random numbers drawn (the weights replace them all).
    graphdef, params = nnx.split(nnx.eval_shape(
        lambda: model.Transformer(config, rngs=nnx.Rngs(params=0))))
    shapes = layout(params)
    missing, unknown = sorted(set(shapes) - set(weights)), sorted(set(weights) - set(shapes))
    if missing or unknown:
        raise ValueError(f"load_weights: weights must name every parameter of the layout; "
                         f"missing {missing}, unknown {unknown}")
    for name, shape in shapes.items():
        got = np.shape(weights[name])
        if got != shape:
            raise ValueError(f"load_weights: weights[{name!r}] has shape {got}, the layout "
                             f"needs {shape}")
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.asarray(weights[_layout_name(path)], x.dtype), params)
    return graphdef, params


def select_sites(config: ModelConfig, names) -> tuple[str, ...]:
    """The site names chosen by ``names`` (see the module docstring), in forward order."""
    all_names = site_names(config)
    if callable(names):
        chosen = tuple(n for n in all_names if names(n))
        if not chosen:
            raise ValueError("run_with_cache: the names predicate selects no site; sites are: "
                             f"{', '.join(all_names)}")
        return chosen
    picked = resolve_capture(config, names)
    return tuple(n for n in all_names if n in picked)


def run_with_cache(graphdef, params, tokens, *, names: str | tuple | Callable = ("*",),
                   valid=None, interventions=None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``(logits [B, T, V], {site: activation})`` for the sites selected by ``names``."""
    capture = select_sites(config_of(graphdef, params), names)
    return _forward(graphdef, params, tokens, valid=valid, capture=capture,
                    interventions=interventions)


def attention_patterns(graphdef, params, tokens, *, valid=None) -> jax.Array:
    """float32[n_layers, B, H, T_query, T_key]: every layer's attention pattern."""
    _, cache = run_with_cache(graphdef, params, tokens, names="blocks.*.attn.pattern",
                              valid=valid)
    n_layers = config_of(graphdef, params).n_layers
    return jnp.stack([cache[f"blocks.{l}.attn.pattern"] for l in range(n_layers)])


def pattern_score(pattern: jax.Array, queries, keys) -> jax.Array:
    """Mean attention weight on designated keys: float32[H] from pattern [B, H, T, T].

    ``queries``, ``keys``: int[P] column pairs (``keys[i]`` is where ``queries[i]`` should
    look), or int[B, P] per example. This is E16's "peaky_abs" (arXiv 2406.02128, official
    code AttentionEval): 1 for a head that always attends exactly the designated key.
    """
    b = pattern.shape[0]
    queries = jnp.broadcast_to(jnp.asarray(queries), (b, np.shape(queries)[-1]))
    keys = jnp.broadcast_to(jnp.asarray(keys), queries.shape)
    rows = jnp.arange(b)[:, None]
    picked = pattern[rows, :, queries, keys]  # [B, P, H]
    return picked.mean(axis=(0, 1))
