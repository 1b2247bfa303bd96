"""Circuit formation over training time: any score at every checkpoint of a run, the step at
which it forms, and a plot of score against step aligned with the loss curve.

A run with ``NTPConfig(checkpoint_schedule='log')`` keeps log-spaced snapshots
(``toymodels.loop.log_spaced_steps``). The *formation step* of a score s(step) for threshold
theta is the first checkpoint from which the score is >= theta at that checkpoint and at every
later one ("crosses and stays"; ``direction='below'`` for scores that fall, e.g. a loss):

    formation_step = min { step_i : s(step_j) >= theta for all j >= i }   (None if no such i).

A score equal to theta counts as across it (both directions); a curve that is across at the
last checkpoint only forms there. Steps must be strictly increasing; NaN scores or a NaN
threshold are an error (a failed evaluation must not read as "never formed").
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import jax
import numpy as np

from toymodels import checkpoint, train

DIRECTIONS = ("above", "below")


def formation_step(steps: Sequence[int], scores: Sequence[float], threshold: float, *,
                   direction: str = "above") -> int | None:
    """First step whose score crosses ``threshold`` and stays across it (module docstring)."""
    steps, scores = np.asarray(steps), np.asarray(scores, np.float64)
    if steps.ndim != 1 or scores.shape != steps.shape or steps.size == 0:
        raise ValueError(f"formation_step: steps and scores must be 1-D of one non-zero "
                         f"length, got {steps.shape} and {scores.shape}")
    if not (np.issubdtype(steps.dtype, np.integer)
            or (np.issubdtype(steps.dtype, np.floating) and np.all(np.isfinite(steps))
                and np.all(steps == np.round(steps)))):
        raise ValueError("formation_step: steps must be whole numbers (training steps)")
    if np.any(np.diff(steps) <= 0):
        raise ValueError("formation_step: steps must be strictly increasing")
    if direction not in DIRECTIONS:
        raise ValueError(f"formation_step: direction={direction!r} is not allowed: one of "
                         f"{DIRECTIONS}")
    if np.isnan(scores).any():
        raise ValueError("formation_step: scores contain NaN")
    if np.isnan(threshold):  # every comparison with NaN is False: it would read as "never"
        raise ValueError("formation_step: threshold is NaN")
    ok = scores >= threshold if direction == "above" else scores <= threshold
    stays = np.flip(np.logical_and.accumulate(np.flip(ok)))  # ok here and at every later step
    return int(steps[np.argmax(stays)]) if stays.any() else None


def scores_over_checkpoints(steps: Sequence[int], load: Callable[[int], object],
                            score: Callable[[object], float | Mapping[str, float]]
                            ) -> dict[str, np.ndarray]:
    """``{name: float64[len(steps)]}``: ``score(load(step))`` at every step. A score that
    returns a float is named ``score``; a dict of floats gives one curve per key."""
    curves: dict[str, list[float]] = {}
    for i, step in enumerate(steps):
        value = score(load(int(step)))
        value = value if isinstance(value, Mapping) else {"score": value}
        if i and set(value) != set(curves):
            raise ValueError(f"scores_over_checkpoints: step {step} returned keys "
                             f"{sorted(value)}, earlier steps {sorted(curves)}")
        for name, v in value.items():
            curves.setdefault(name, []).append(float(v))
    return {k: np.asarray(v) for k, v in curves.items()}


def ntp_checkpoints(run_dir: Path | str, seed_index: int = 0):
    """``(graphdef, steps, load)`` for the checkpoints of an NTP run (``toymodels.train``):
    ``load(step)`` restores that step's params of seed ``seed_index``.

    ``steps`` are the checkpoints whose checksum verifies; a damaged one is left out with a
    warning that names it (a formation step read off the others may then move)."""
    run_dir = Path(run_dir)
    config, seed_axis, n_seeds = train.run_layout(run_dir)
    if not 0 <= seed_index < n_seeds:
        raise ValueError(f"ntp_checkpoints: seed_index={seed_index} is not allowed: in "
                         f"[0, {n_seeds})")
    like = train.checkpoint_template(config, n_seeds=n_seeds, seed_axis=seed_axis)

    def load(step: int):
        path = checkpoint.checkpoint_dir(run_dir) / str(step)
        reason = checkpoint.verify(path)
        if reason is not None:
            raise ValueError(f"ntp_checkpoints: checkpoint {path} is not usable: {reason}")
        params = checkpoint.restore(path, like(step))["carry"]["params"]
        return jax.tree.map(lambda x: x[seed_index], params) if seed_axis else params

    good, damaged = [], []
    for step in checkpoint.steps(run_dir):
        reason = checkpoint.verify(checkpoint.checkpoint_dir(run_dir) / str(step))
        if reason is None:
            good.append(step)
        else:
            damaged.append(f"{step} ({reason})")
    if damaged:
        warnings.warn(f"ntp_checkpoints: damaged checkpoints left out of {run_dir}: "
                      + "; ".join(damaged), stacklevel=2)
    return train._parts(config).graphdef, good, load


def plot_formation(steps: Sequence[int], scores: Mapping[str, Sequence[float]], *,
                   loss_steps: Sequence[int] | None = None, loss: Sequence[float] | None = None,
                   thresholds: Mapping[str, float] | None = None, direction: str = "above",
                   path: Path | str | None = None):
    """Scores against step (log x axis) above the loss curve on the same x axis, with a
    dashed line at each score's formation step (for the scores given a threshold; crossing
    in ``direction``, as in :func:`formation_step`).
    Returns the matplotlib Figure; writes it to ``path`` when given."""
    import matplotlib

    matplotlib.use("Agg")  # files only; as experiments.harness does
    import matplotlib.pyplot as plt

    has_loss = loss is not None
    fig, axes = plt.subplots(2 if has_loss else 1, 1, sharex=True, squeeze=False,
                             figsize=(6, 5 if has_loss else 3))
    ax = axes[0, 0]
    for i, (name, values) in enumerate(scores.items()):
        color = f"C{i}"
        ax.plot(steps, values, "o-", color=color, label=name, ms=3)
        theta = (thresholds or {}).get(name)
        if theta is not None:
            formed = formation_step(steps, values, theta, direction=direction)
            ax.axhline(theta, color=color, lw=0.5, ls=":")
            for a in axes[:, 0]:
                if formed is not None:
                    a.axvline(formed, color=color, ls="--", lw=1)
    ax.set_ylabel("score")
    ax.legend(fontsize="small")
    ax.set_xscale("log")
    if has_loss:
        lx = np.arange(1, len(loss) + 1) if loss_steps is None else np.asarray(loss_steps)
        axes[1, 0].plot(lx, loss, color="k", lw=1)
        axes[1, 0].set_ylabel("loss")
        axes[1, 0].set_yscale("log")
    axes[-1, 0].set_xlabel("training step")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig
