"""Reflection metrics: the per-example counters of a task with a ``<back>`` token
(``graph/graph_search``'s ``counters``, exact from the prompt's graph) aggregated into
per-step scalars, and the step at which a metric's trajectory first crosses a threshold.

Pure jnp, so the RL step can call :func:`step_metrics` on ``rollout.counters`` inside the
compiled step, and a figure can call it on counters of its own evaluation samples.

Definitions over the B completions of a step (ratios of sums, not means of ratios, so a
completion with many steps weighs as many steps; NaN when the denominator is 0):

    backs_per_completion   = Σ backtracks / B
    p_back_given_mistake   = Σ back_after_mistake / Σ mistake_then_back_opportunities
    p_back_given_correct   = Σ back_after_correct / Σ correct_then_back_opportunities
    mistake_rate           = Σ mistakes / Σ steps
    p_recover_given_back   = #(recovered) / #(backtracks > 0)
    length_mean            = Σ length / B
    back_rate              = #(backtracks > 0) / B    (the support check: "<back> appears")
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

NEEDED = ("backtracks", "steps", "mistakes", "back_after_mistake", "back_after_correct",
          "mistake_then_back_opportunities", "correct_then_back_opportunities", "recovered",
          "length")
METRICS = ("backs_per_completion", "back_rate", "p_back_given_mistake",
           "p_back_given_correct", "mistake_rate", "p_recover_given_back", "length_mean")


def _ratio(num, den):
    num, den = jnp.sum(num), jnp.sum(den)
    return jnp.where(den > 0, num / jnp.maximum(den, 1e-12), jnp.nan)


def step_metrics(counters: dict, where=None) -> dict:
    """Per-step reflection scalars from per-completion ``counters`` (float32[B] each).

    ``where`` (bool[B], optional) restricts the aggregate to some completions (e.g. one
    prompt group). Raises ``KeyError`` naming the counters a task does not provide.
    """
    missing = [k for k in NEEDED if k not in counters]
    if missing:
        raise KeyError(f"reflection metrics need the counters {missing}")
    c = {k: jnp.asarray(counters[k], jnp.float32) for k in NEEDED}
    w = jnp.ones_like(c["length"]) if where is None else jnp.asarray(where, jnp.float32)
    c = {k: v * w for k, v in c.items()}
    backed = (c["backtracks"] > 0).astype(jnp.float32)
    return {
        "backs_per_completion": _ratio(c["backtracks"], w),
        "back_rate": _ratio(backed, w),
        "p_back_given_mistake": _ratio(c["back_after_mistake"],
                                       c["mistake_then_back_opportunities"]),
        "p_back_given_correct": _ratio(c["back_after_correct"],
                                       c["correct_then_back_opportunities"]),
        "mistake_rate": _ratio(c["mistakes"], c["steps"]),
        "p_recover_given_back": _ratio((c["recovered"] > 0) * backed, backed),
        "length_mean": _ratio(c["length"], w),
    }


def first_crossing(series, threshold: float, *, above: bool = True, steps=None):
    """The first step at which ``series`` (last axis = steps) is >= ``threshold``
    (``above``) or <= it (not ``above``); NaN where it never crosses. NaN entries (no
    denominator that step) never count as a crossing. ``steps`` labels the last axis
    (default 0, 1, ...).

    Hand value: series (0.1, 0.4, 0.7, 0.9), threshold 0.5 -> step 2.
    """
    x = np.asarray(series, dtype=np.float64)
    steps = np.arange(x.shape[-1], dtype=np.float64) if steps is None else np.asarray(
        steps, dtype=np.float64)
    hit = (x >= threshold) if above else (x <= threshold)
    hit &= np.isfinite(x)
    first = np.argmax(hit, axis=-1)
    return np.where(hit.any(axis=-1), steps[first], np.nan)


def crossing_steps(trajectories: dict, thresholds: dict) -> dict:
    """``{name: first_crossing(trajectories[name], value, above=above)}`` for
    ``thresholds = {name: (value, above)}``: the step at which each metric first crosses."""
    return {k: first_crossing(trajectories[k], v, above=a) for k, (v, a) in thresholds.items()}
