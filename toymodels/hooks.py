"""Named activation sites: the list of names, capture selection and interventions.

Names follow TransformerLens: ``embed``, ``pos_embed`` (learned positions only),
``blocks.{l}.resid_pre``, ``blocks.{l}.attn.{q,k,v,pattern,z,out}``, ``blocks.{l}.resid_mid``
and ``blocks.{l}.mlp.{pre,post}`` (models with an MLP only), ``blocks.{l}.resid_post``,
``ln_final`` (``norm='pre'`` only) and ``logits``.

Layouts (B batch, T positions, H heads, E = d_head, D = d_model, M = d_mlp, V = vocab):

* residual-like sites ``[B, T, D]`` (``mlp.*``: ``[B, T, M]``, ``logits``: ``[B, T, V]``);
* ``attn.q``, ``attn.k``, ``attn.v``, ``attn.z``: ``[B, T, H, E]``; q and k are taken
  *before* the rotary embedding, as in TransformerLens;
* ``attn.pattern``: ``[B, H, T_query, T_key]``, rows are softmax distributions.

Interventions are a pure pytree argument: ``{site_name: Intervention}``. Each intervention
computes ``new = value`` (replace, mean), ``x + value`` (add) or ``0`` (zero) and writes
``where(head_mask & pos_mask, new, x)``, so a patching sweep is a ``vmap`` over the values
or masks. The mode is static (pytree metadata); value and masks are array leaves.
"""

from __future__ import annotations

import dataclasses
import fnmatch

import jax
import jax.numpy as jnp

from toymodels.config import ModelConfig

MODES = ("replace", "add", "zero", "mean")
HEAD_SITES = ("q", "k", "v", "z", "pattern")


def site_names(config: ModelConfig) -> tuple[str, ...]:
    """Every site of this model, in the order the forward pass computes them."""
    names = ["embed"] + (["pos_embed"] if config.pos_enc == "learned" else [])
    for l in range(config.n_layers):
        b = f"blocks.{l}"
        names += [f"{b}.resid_pre"] + [f"{b}.attn.{s}" for s in ("q", "k", "v", "pattern", "z")]
        names += [f"{b}.attn.out", f"{b}.resid_mid"]
        if config.has_mlp:
            names += [f"{b}.mlp.pre", f"{b}.mlp.post"]
        names += [f"{b}.resid_post"]
    names += (["ln_final"] if config.norm == "pre" else []) + ["logits"]
    return tuple(names)


def resolve_capture(config: ModelConfig, capture) -> frozenset[str]:
    """The site names selected by ``capture``: a tuple of names or fnmatch patterns.

    A pattern that matches no site of this model is an error (a typo would otherwise
    silently capture nothing).
    """
    if isinstance(capture, str):
        capture = (capture,)
    names = site_names(config)
    chosen: set[str] = set()
    for pattern in capture:
        if not isinstance(pattern, str):
            raise ValueError(f"capture entries must be site names or glob patterns, "
                             f"got {pattern!r}")
        hits = fnmatch.filter(names, pattern)
        if not hits:
            raise ValueError(f"capture pattern {pattern!r} matches no site of this model; "
                             f"sites are: {', '.join(names)}")
        chosen.update(hits)
    return frozenset(chosen)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Intervention:
    """An edit at one site: ``x <- where(mask, new, x)``, ``new`` set by ``mode``.

    mode: 'replace' (new = value), 'add' (new = x + value), 'zero' (new = 0) or 'mean'
        (new = value, where value is the mean activation you computed, e.g. over a batch).
    value: broadcastable to the site's shape (None for 'zero').
    head_mask: bool[H] (or broadcastable per example, [B, H]); only at per-head sites
        (q, k, v, z, pattern). None = all heads.
    pos_mask: bool[T] or bool[B, T] over the site's positions (for ``pattern``: the query
        positions). None = all positions.
    Use the constructors ``Intervention.replace(...)`` etc.; they check the mode.
    """

    value: jax.Array | None = None
    head_mask: jax.Array | None = None
    pos_mask: jax.Array | None = None
    mode: str = dataclasses.field(default="replace", metadata=dict(static=True))

    @classmethod
    def replace(cls, value, *, head_mask=None, pos_mask=None) -> Intervention:
        return cls(value, head_mask, pos_mask, "replace")

    @classmethod
    def add(cls, value, *, head_mask=None, pos_mask=None) -> Intervention:
        return cls(value, head_mask, pos_mask, "add")

    @classmethod
    def zero(cls, *, head_mask=None, pos_mask=None) -> Intervention:
        return cls(None, head_mask, pos_mask, "zero")

    @classmethod
    def mean(cls, mean_value, *, head_mask=None, pos_mask=None) -> Intervention:
        return cls(mean_value, head_mask, pos_mask, "mean")


def _site_kind(name: str) -> str:
    leaf = name.rsplit(".", 1)[-1]
    if ".attn." in name and leaf in HEAD_SITES:
        return "pattern" if leaf == "pattern" else "heads"
    return "positions"


def check_interventions(config: ModelConfig, interventions) -> None:
    """Raise a clear ValueError for unknown sites, bad modes and misplaced head masks."""
    if interventions is None:
        return
    if not isinstance(interventions, dict):
        raise ValueError("interventions must be a dict {site_name: Intervention} or None, "
                         f"got {type(interventions).__name__}")
    names = site_names(config)
    for name, iv in interventions.items():
        if name not in names:
            raise ValueError(f"interventions: unknown site {name!r}; sites are: "
                             f"{', '.join(names)}")
        if not isinstance(iv, Intervention):
            raise ValueError(f"interventions[{name!r}] must be an Intervention, got {iv!r}")
        if iv.mode not in MODES:
            raise ValueError(f"interventions[{name!r}].mode={iv.mode!r} is not allowed: "
                             f"one of {MODES}")
        if iv.mode != "zero" and iv.value is None:
            raise ValueError(f"interventions[{name!r}]: mode {iv.mode!r} needs a value")
        if iv.head_mask is not None and _site_kind(name) == "positions":
            raise ValueError(f"interventions[{name!r}]: head_mask is only allowed at "
                             f"per-head sites (attn.{', attn.'.join(HEAD_SITES)})")


def _mask_shape(kind: str, mask: jax.Array, which: str, ndim: int) -> jax.Array:
    """Reshape a [H]/[B,H] head mask or [T]/[B,T] position mask to broadcast to the site."""
    mask = jnp.asarray(mask, bool)
    batch = mask.ndim == 2
    lead = mask.shape[0] if batch else 1
    n = mask.shape[-1]
    if kind == "pattern":  # [B, H, Tq, Tk]
        shape = (lead, n, 1, 1) if which == "head" else (lead, 1, n, 1)
    elif kind == "heads":  # [B, T, H, E]
        shape = (lead, 1, n, 1) if which == "head" else (lead, n, 1, 1)
    else:  # [B, T, ...]
        shape = (lead, n) + (1,) * (ndim - 2)
    return mask.reshape(shape)


def apply_intervention(name: str, x: jax.Array, iv: Intervention) -> jax.Array:
    """The activation at ``name`` after ``iv`` (see the module docstring)."""
    if iv.mode == "zero":
        new = jnp.zeros_like(x)
    elif iv.mode == "add":
        new = x + jnp.asarray(iv.value, x.dtype)
    else:  # replace, mean
        new = jnp.broadcast_to(jnp.asarray(iv.value, x.dtype), x.shape)
    kind = _site_kind(name)
    mask = None
    for which, m in (("head", iv.head_mask), ("pos", iv.pos_mask)):
        if m is not None:
            m = _mask_shape(kind, m, which, x.ndim)
            mask = m if mask is None else mask & m
    return new if mask is None else jnp.where(mask, new, x)


class Sites:
    """Trace-time helper: ``sites(name, x)`` applies the intervention at ``name`` (if any),
    records the result if ``name`` is captured, and returns it."""

    def __init__(self, capture: frozenset[str] = frozenset(), interventions=None):
        self.capture = capture
        self.interventions = interventions or {}
        self.captured: dict[str, jax.Array] = {}

    def __call__(self, name: str, x: jax.Array) -> jax.Array:
        iv = self.interventions.get(name)
        if iv is not None:
            x = apply_intervention(name, x, iv)
        if name in self.capture:
            self.captured[name] = x
        return x
