"""Ablations and activation patching, as interventions of the one forward function.

Ablation (head h of layer l): ``z[..., h, :]`` set to 0 ('zero') or to its mean over a
reference batch at each position ('mean'); neuron ablation does the same to ``mlp.post``.

Activation patching (Meng et al. 2022, arXiv 2202.05262; Heimersheim & Nanda 2024,
arXiv 2404.15255 for the metric): a pair of inputs, *clean* and *corrupt*, that differ in
one fact and so in the answer (``clean_answer`` vs ``corrupt_answer`` at ``answer_pos``). The
metric is the logit difference  m = logit(clean_answer) - logit(corrupt_answer)  at that
position. 'denoise' runs the corrupt input with one activation taken from the clean run;
'noise' the reverse. The normalised score of a patch is

    (m_patched - m_base) / (m_source - m_base),

the fraction of the clean-vs-corrupt logit difference it moves (1 = fully restored (denoise)
or destroyed (noise), 0 = no effect), from batch-mean logit differences.

A sweep patches one (layer, position) — or (layer, head, position) at per-head sites — at a
time: every cell is a set of masked interventions, and the cells are ``vmap``-ed into one
compiled call.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from toymodels import model
from toymodels.hooks import HEAD_SITES, Intervention
from toymodels.interp.cache import config_of, run_with_cache

SITES = ("resid_pre", "resid_mid", "resid_post", "attn.out", "mlp.post",
         "attn.q", "attn.k", "attn.v", "attn.z", "attn.pattern")
DIRECTIONS = ("denoise", "noise")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PatchPairs:
    """Clean/corrupt inputs int[B, T] (same shape, same ``valid``), and per example the
    column whose logits answer (``answer_pos`` int[B]) and the two answers (int[B])."""

    clean: jax.Array
    corrupt: jax.Array
    answer_pos: jax.Array
    clean_answer: jax.Array
    corrupt_answer: jax.Array
    valid: jax.Array | None = None

    def __post_init__(self):
        for f in dataclasses.fields(self):  # lists in, arrays out (frozen: set directly)
            if isinstance(getattr(self, f.name), list | tuple):
                object.__setattr__(self, f.name, jnp.asarray(getattr(self, f.name)))
        concrete = lambda x: isinstance(x, np.ndarray | jax.Array) and not isinstance(
            x, jax.core.Tracer)
        if not concrete(self.clean):  # rebuilt inside jit/vmap (or by tree utilities)
            return
        shape = np.shape(self.clean)
        if len(shape) != 2 or np.shape(self.corrupt) != shape:
            raise ValueError(f"PatchPairs.corrupt must have the shape of clean [B, T] "
                             f"{shape}, got {np.shape(self.corrupt)}")
        for name in ("answer_pos", "clean_answer", "corrupt_answer"):
            if np.shape(getattr(self, name)) != shape[:1]:
                raise ValueError(f"PatchPairs.{name} must be int[{shape[0]}] (one per pair), "
                                 f"got shape {np.shape(getattr(self, name))}")
        pos = np.asarray(self.answer_pos)
        if pos.min() < 0 or pos.max() >= shape[1]:
            raise ValueError(f"PatchPairs.answer_pos must lie in [0, {shape[1]}), got "
                             f"{pos.min()}..{pos.max()}")

    @classmethod
    def from_task_pairs(cls, pairs) -> PatchPairs:
        """``PatchPairs`` from ``tasks.pairs.corrupt_pairs(task, key, n)``: its teacher-forced
        clean/corrupt sequences, answer column, answers and left-padding mask. Pairs whose
        ``changed`` flag is False (possible only when the pairs were built under ``jit``) are
        dropped, so every kept pair changes the answer."""
        keep = np.asarray(pairs.changed, bool)
        if not keep.any():
            raise ValueError("PatchPairs.from_task_pairs: no pair changes the answer "
                             "(every `changed` flag is False)")
        take = lambda x: jnp.asarray(np.asarray(x)[keep])
        return cls(take(pairs.clean), take(pairs.corrupt), take(pairs.answer_pos),
                   take(pairs.clean_answer), take(pairs.corrupt_answer), take(pairs.valid))


def logit_diff(logits: jax.Array, pairs: PatchPairs) -> jax.Array:
    """float32[B]: logit(clean_answer) - logit(corrupt_answer) at each answer position."""
    row = logits[jnp.arange(logits.shape[0]), pairs.answer_pos]  # [B, V]
    take = lambda a: jnp.take_along_axis(row, a[:, None], axis=1)[:, 0]
    return take(pairs.clean_answer) - take(pairs.corrupt_answer)


def head_ablation(layer: int, heads, n_heads: int, *, mean_z=None) -> dict:
    """Interventions that ablate ``heads`` (ints) of ``layer``: zero, or the mean ``z`` when
    ``mean_z`` ([T, H, E], e.g. :func:`mean_activation` of ``blocks.{layer}.attn.z``) is given."""
    heads = np.atleast_1d(np.asarray(heads))
    if heads.size == 0 or heads.min() < 0 or heads.max() >= n_heads:
        raise ValueError(f"head_ablation: heads={heads.tolist()} is not allowed: indices in "
                         f"[0, {n_heads}) (n_heads)")
    mask = jnp.zeros(n_heads, bool).at[heads].set(True)
    site = f"blocks.{layer}.attn.z"
    iv = (Intervention.zero(head_mask=mask) if mean_z is None
          else Intervention.mean(mean_z, head_mask=mask))
    return {site: iv}


def mean_activation(graphdef, params, tokens, site: str, *, valid=None) -> jax.Array:
    """Mean of a site's activation over the batch, per column: the value for 'mean' ablation.

    With ``valid`` (bool[B, T], False on pad slots) the mean at column t is over the rows
    whose column t is a real token: ``Σ_b valid[b, t] x[b, t] / Σ_b valid[b, t]`` (0 where no
    row is real there), so that left padding does not average pad-slot activations into the
    value a real token is ablated to. For ``attn.pattern`` ([B, H, T_q, T_k]) the weight is
    the query's. Without ``valid`` every row counts."""
    _, cache = run_with_cache(graphdef, params, tokens, names=(site,), valid=valid)
    act = cache[site]
    if valid is None:
        return act.mean(axis=0)
    weight = jnp.asarray(valid, act.dtype)  # [B, T]
    if site.endswith("attn.pattern"):
        weight = weight[:, None, :, None]  # the query axis
    else:
        weight = weight.reshape(weight.shape + (1,) * (act.ndim - 2))
    count = weight.sum(axis=0)
    return (act * weight).sum(axis=0) / jnp.maximum(count, 1.0)


def ablate_neurons(graphdef, params, tokens, layer: int, neurons, *, valid=None,
                   mean_post=None) -> jax.Array:
    """Logits with MLP neurons ``neurons`` of ``layer`` set to 0 (or to ``mean_post`` [T, M]).

    The model's interventions mask heads and positions, not neurons, so this runs twice: the
    clean ``mlp.post`` is captured, edited per neuron and written back with 'replace' (exact:
    the same tokens give the same activation).
    """
    site = f"blocks.{layer}.mlp.post"
    _, cache = run_with_cache(graphdef, params, tokens, names=(site,), valid=valid)
    post = cache[site]
    neurons = np.atleast_1d(np.asarray(neurons))
    if neurons.size == 0 or neurons.min() < 0 or neurons.max() >= post.shape[-1]:
        raise ValueError(f"ablate_neurons: neurons={neurons.tolist()} is not allowed: indices "
                         f"in [0, {post.shape[-1]}) (d_mlp)")
    mask = jnp.zeros(post.shape[-1], bool).at[neurons].set(True)
    new = jnp.zeros_like(post) if mean_post is None else jnp.broadcast_to(mean_post, post.shape)
    ivs = {site: Intervention.replace(jnp.where(mask, new, post))}
    return run_with_cache(graphdef, params, tokens, names=("logits",), valid=valid,
                          interventions=ivs)[0]


@dataclasses.dataclass(frozen=True)
class PatchResult:
    """``scores``: normalised effect per cell, [n_layers, T] or [n_layers, H, T] at per-head
    sites; ``patched``: batch-mean patched logit difference per cell (same shape);
    ``clean``, ``corrupt``: batch-mean logit differences of the unpatched runs."""

    scores: np.ndarray
    patched: np.ndarray
    clean: float
    corrupt: float


def patch_sweep(graphdef, params, pairs: PatchPairs, *, site: str = "resid_pre",
                direction: str = "denoise") -> PatchResult:
    """Patch ``blocks.{l}.{site}`` at every (layer, [head,] position), one compiled call."""
    if site not in SITES:
        raise ValueError(f"patch_sweep: site={site!r} is not allowed: one of {SITES}")
    if direction not in DIRECTIONS:
        raise ValueError(f"patch_sweep: direction={direction!r} is not allowed: one of "
                         f"{DIRECTIONS}")
    config = config_of(graphdef, params)
    if site.startswith("mlp") and not config.has_mlp:
        raise ValueError("patch_sweep: site='mlp.post' needs a model with an MLP (d_mlp > 0)")
    per_head = site.split(".")[-1] in HEAD_SITES and site.startswith("attn")
    n_layers, n_heads, t = config.n_layers, config.n_heads, pairs.clean.shape[1]
    grid = (n_layers, n_heads, t) if per_head else (n_layers, t)
    cells = np.stack(np.unravel_index(np.arange(int(np.prod(grid))), grid), axis=1)
    patched = _sweep(graphdef, params, pairs, jnp.asarray(cells), site, per_head, direction)
    clean_m, corrupt_m, patched = (np.asarray(x) for x in patched)
    base, source = (corrupt_m, clean_m) if direction == "denoise" else (clean_m, corrupt_m)
    if not abs(source - base) > 1e-6:
        raise ValueError(f"patch_sweep: the pairs do not change the answer (mean logit "
                         f"difference clean {float(clean_m):.3g}, corrupt {float(corrupt_m):.3g})"
                         "; nothing to restore")
    scores = (patched - base) / (source - base)
    return PatchResult(scores.reshape(grid), patched.reshape(grid), float(clean_m),
                       float(corrupt_m))


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6))
def _sweep(graphdef, params, pairs, cells, site, per_head, direction):
    config = config_of(graphdef, params)
    names = tuple(f"blocks.{l}.{site}" for l in range(config.n_layers))
    fwd = functools.partial(model.forward, graphdef, params, valid=pairs.valid)
    clean_logits, clean_cache = fwd(pairs.clean, capture=names)
    corrupt_logits, corrupt_cache = fwd(pairs.corrupt, capture=names)
    source, target = ((clean_cache, pairs.corrupt) if direction == "denoise"
                      else (corrupt_cache, pairs.clean))
    t = pairs.clean.shape[1]

    def one_cell(cell):
        layer, pos = cell[0], cell[-1]
        ivs = {}
        for l, name in enumerate(names):
            pos_mask = (jnp.arange(t) == pos) & (layer == l)
            head_mask = (jnp.arange(config.n_heads) == cell[1]) if per_head else None
            ivs[name] = Intervention.replace(source[name], head_mask=head_mask,
                                             pos_mask=pos_mask)
        logits, _ = fwd(target, interventions=ivs)
        return logit_diff(logits, pairs).mean()

    return (logit_diff(clean_logits, pairs).mean(), logit_diff(corrupt_logits, pairs).mean(),
            jax.vmap(one_cell)(cells))
