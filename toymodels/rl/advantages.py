"""Outcome-reward advantage estimators, registered by name (tunix style).

Every estimator maps the rewards of one rollout batch, shaped ``float32[P, G]`` (P prompts,
G completions each), to a learning signal of the same shape, centred by a baseline, except
``reinforce`` with ``batch_baseline=False`` (the default), which returns the raw rewards
(plain REINFORCE: no baseline). Scaling by a standard
deviation is a separate switch (``scale_rewards``), applied afterwards by
:func:`compute_advantages`, so that the two biases Liu et al. 2025 (Dr.GRPO, arXiv 2503.20783,
§3.1) identify can be turned on and off one at a time:

* ``scale_rewards="group"``: A / (std_group + eps): GRPO's question-level difficulty bias.
* ``scale_rewards="batch"``: A / (std_batch + eps): the batch-level scaling TRL offers.
* ``scale_rewards="none"``: A unchanged (Dr.GRPO).

The length bias lives in the loss aggregation (:mod:`toymodels.rl.objectives`).

Standard-deviation convention: the **population** standard deviation (divide by G), plus
``eps = 1e-6`` (verl's value). The official Dr.GRPO / GRPO code (``torch.std``) uses Bessel's
correction (divide by G - 1): with it, rewards [1, 1, 1, 0] give [0.5, 0.5, 0.5, -1.5]
instead of our [0.577, 0.577, 0.577, -1.732]. The two differ by the constant factor
sqrt((G - 1) / G) per group, i.e. a learning-rate rescaling.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

AdvantageEstimator = Callable[..., jnp.ndarray]

ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {}
# The scaling each estimator uses when the config leaves ``scale_rewards`` unset (None).
DEFAULT_SCALE_REWARDS: dict[str, str] = {}
SCALE_REWARDS = ("group", "batch", "none")
STD_EPS = 1e-6


def register_advantage_estimator(name: str, *, default_scale: str = "none"):
    """Decorator: ``@register_advantage_estimator("grpo", default_scale="group")``."""

    def decorator(fn: AdvantageEstimator) -> AdvantageEstimator:
        if name in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage estimator {name!r} registered twice")
        ADVANTAGE_ESTIMATORS[name] = fn
        DEFAULT_SCALE_REWARDS[name] = default_scale
        return fn

    return decorator


def get_advantage_estimator(name: str) -> AdvantageEstimator:
    if name not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"advantage estimator {name!r} is not registered; "
                         f"allowed: {sorted(ADVANTAGE_ESTIMATORS)}")
    return ADVANTAGE_ESTIMATORS[name]


@register_advantage_estimator("reinforce")
def reinforce(rewards: jnp.ndarray, *, batch_baseline: bool = False) -> jnp.ndarray:
    """REINFORCE (Williams 1992, Machine Learning 8:229, Eq. 11 with b = 0 or the batch mean).

    A_i = r_i - b, with b = 0, or b = mean over the whole batch (all P·G rewards) when
    ``batch_baseline``. The batch-mean baseline contains r_i itself, so the expected gradient
    is (1 - 1/(P·G)) ∇J rather than ∇J (derived in ``tests/test_rl_exact.py``).
    """
    if batch_baseline:
        return rewards - jnp.mean(rewards)
    return rewards


@register_advantage_estimator("rloo")
def rloo(rewards: jnp.ndarray, **_) -> jnp.ndarray:
    """REINFORCE leave-one-out (Kool et al. 2019, "Buy 4 REINFORCE samples, get a baseline
    for free!"; Ahmadian et al. 2024, arXiv 2402.14740, Eq. 6).

    A_i = r_i - (1/(G-1)) Σ_{j≠i} r_j = (G/(G-1)) (r_i - mean_j r_j): an unbiased estimator,
    since the baseline of sample i is independent of sample i.
    """
    g = rewards.shape[-1]
    if g < 2:
        raise ValueError(f"rloo needs group_size >= 2, got {g}")
    total = jnp.sum(rewards, axis=-1, keepdims=True)
    return rewards - (total - rewards) / (g - 1)


@register_advantage_estimator("grpo", default_scale="group")
def grpo(rewards: jnp.ndarray, **_) -> jnp.ndarray:
    """GRPO (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300, §4.1.2 outcome supervision).

    Centring: A_i = r_i - mean_j r_j over the group. GRPO's division by the group std is the
    default ``scale_rewards="group"``, applied by :func:`compute_advantages`, giving
    Â_i = (r_i - mean(r)) / (std(r) + eps).
    """
    return rewards - jnp.mean(rewards, axis=-1, keepdims=True)


@register_advantage_estimator("dr_grpo", default_scale="none")
def dr_grpo(rewards: jnp.ndarray, **_) -> jnp.ndarray:
    """Dr.GRPO (Liu et al. 2025, arXiv 2503.20783, §3.2, the Â of the Dr.GRPO objective).

    Â_i = r_i - mean_j r_j over the group, with no std division (``scale_rewards="none"``).
    Same centring as ``grpo``; the name selects the unscaled default (and, in
    :class:`~toymodels.rl.train.RLConfig`, the constant-normaliser loss aggregation).
    """
    return rewards - jnp.mean(rewards, axis=-1, keepdims=True)


def _population_std(x: jnp.ndarray, axis) -> jnp.ndarray:
    mean = jnp.mean(x, axis=axis, keepdims=True)
    return jnp.sqrt(jnp.mean(jnp.square(x - mean), axis=axis, keepdims=True))


def scale_advantages(centred: jnp.ndarray, rewards: jnp.ndarray, scale_rewards: str,
                     eps: float = STD_EPS) -> jnp.ndarray:
    """Divide a centred signal by the std of the *rewards* (group or whole batch) + eps."""
    if scale_rewards == "group":
        return centred / (_population_std(rewards, axis=-1) + eps)
    if scale_rewards == "batch":
        return centred / (_population_std(rewards, axis=None) + eps)
    if scale_rewards == "none":
        return centred
    raise ValueError(f"scale_rewards={scale_rewards!r} is not allowed: one of {SCALE_REWARDS}")


def compute_advantages(rewards: jnp.ndarray, estimator: str, *,
                       scale_rewards: str | None = None, batch_baseline: bool = False,
                       eps: float = STD_EPS) -> jnp.ndarray:
    """Advantages float32[P, G] from rewards float32[P, G].

    ``scale_rewards=None`` takes the estimator's default (``grpo``: "group", others: "none").
    """
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be float32[P, G], got shape {rewards.shape}")
    fn = get_advantage_estimator(estimator)
    scale = DEFAULT_SCALE_REWARDS[estimator] if scale_rewards is None else scale_rewards
    centred = fn(rewards, batch_baseline=batch_baseline)
    return scale_advantages(centred, rewards, scale, eps)
