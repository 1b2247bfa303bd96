"""Monte Carlo diagnostics of the ``clipping-entropy`` figure (docs/theory_rl_dynamics.md §3):
the expected one-step change of π(base mode) and of H split into the first-order part
∇f·E[Δz] (Cui et al. 2025, arXiv 2505.22617, Lemma 1, applied to the mean update, which
carries the clip bias) and the rest, the second-order drift ½ tr(∇²f Cov Δz) + ...; and the
sums of that split along one trajectory. Not part of the figure's run: the docs and tests
use them to explain why a claim holds or fails, and to check the closed-form on-policy drift
``theory.entropy.onpolicy_entropy_drift`` against the engine's own step.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from experiments.clipping_entropy import Config, _base, _p_mode, _rl_step
from theory import entropy as E


def _schedule(cfg: Config, on_policy: bool) -> tuple[int, int]:
    """(epochs, minibatches) of one RL step: the on-policy run's (1, 1) or the config's."""
    return (1, 1) if on_policy else (cfg.epochs, cfg.minibatches)


def step_decomposition(z, mode, eps, cfg: Config, key, replicates: int = 128,
                       on_policy: bool = False) -> dict:
    """The expected one-step change of f ∈ {π(mode), H} at logits z [contexts, answers],
    split as in docs/theory_rl_dynamics.md §3 into the first-order part ∇f·E[Δz] (the mean
    update, which carries the clip bias) and the rest E[Δf] − ∇f·E[Δz] = ½ E[Δzᵀ∇²f Δz]
    + O(Δz³) = ½ tr(∇²f Cov Δz) + ½ E[Δz]ᵀ∇²f E[Δz] + O(Δz³) (the neutral drift, plus the
    curvature along the mean update), by Monte Carlo over ``replicates`` rollouts of the
    same step. Means over contexts. ``on_policy``: the step of the on-policy run (1 epoch,
    1 minibatch; E[Δz] = 0, so everything is drift)."""
    keys = jax.random.split(key, replicates)
    epochs, minibatches = _schedule(cfg, on_policy)
    z_new = jax.vmap(lambda k: _rl_step(z, k, eps, cfg, epochs, minibatches)[0])(keys)
    mean_dz = (z_new - z).mean(axis=0)
    out = {}
    for name, f in (("p_mode", lambda x: _p_mode(x, mode)), ("entropy", E.entropy)):
        first = jax.jvp(f, (z,), (mean_dz,))[1]
        total = (jax.vmap(f)(z_new) - f(z)).mean(axis=0)
        out[f"{name}_first"], out[f"{name}_drift"] = first.mean(), (total - first).mean()
    return out


def decomposition_along_trajectory(config: Config, eps=None, every: int = 5,
                                   replicates: int = 128, on_policy: bool = False) -> dict:
    """Sums over one trajectory (the first seed of ``config.seed``; default eps: symmetric)
    of ``step_decomposition`` taken every ``every`` steps (times ``every``), with the
    trajectory's own realised changes of π(base mode) and H. Each evaluation stands for the
    ``every`` steps after it (fewer at the end when ``every`` does not divide ``steps``).
    ``on_policy``: along the on-policy run's trajectory instead."""
    eps = (config.eps_sym, config.eps_sym) if eps is None else eps
    cfg = dataclasses.replace(config, seed=0)
    z, k_run = _base(jax.random.split(jax.random.key(config.seed), config.n_seeds)[0], cfg)
    k_mc = jax.random.fold_in(k_run, config.steps)  # Monte Carlo keys, apart from the run's
    mode, z0 = jnp.argmax(z, axis=-1), z
    epochs, minibatches = _schedule(cfg, on_policy)
    step = jax.jit(lambda x, k: _rl_step(x, k, eps, cfg, epochs, minibatches)[0])
    decompose = jax.jit(lambda x, k: step_decomposition(x, mode, eps, cfg, k, replicates,
                                                        on_policy))
    sums = {}
    for i in range(config.steps):
        if i % every == 0:
            span = min(every, config.steps - i)
            for k, v in decompose(z, jax.random.fold_in(k_mc, i)).items():
                sums[k] = sums.get(k, 0.0) + span * float(v)
        z = step(z, jax.random.fold_in(k_run, i))
    sums["p_mode_realised"] = float((_p_mode(z, mode) - _p_mode(z0, mode)).mean())
    sums["entropy_realised"] = float((E.entropy(z) - E.entropy(z0)).mean())
    return sums
