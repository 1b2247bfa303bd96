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

A std division needs a signal centred at least at the level of the std: group scaling needs a
group baseline (grpo, dr_grpo, rloo), batch scaling any baseline. The other combinations
(``reinforce`` without a baseline and any scaling, or with the batch baseline and group
scaling) divide a non-zero signal by a std that is 0 on a group of equal rewards, i.e. give
advantages of order r / 1e-6; :func:`compute_advantages` refuses them (:func:`check_scaling`).

Equal rewards give exactly zero: the centring of a group (or, for the batch baseline, a batch)
whose rewards are all equal is set to 0. In float32 the mean of G equal rewards such as 0.3 or
0.93 is off by an ulp, and the std division (std ≈ 1e-8, + eps 1e-6) inflated that rounding to
an advantage of 0.05 to 0.3 with one sign for the whole group (every task's rewards are 0/1,
whose means are exact, so no figure met this).

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
# Whether each estimator centres every group by a group baseline (see scaling_is_centred).
GROUP_CENTRED: dict[str, bool] = {}
STD_EPS = 1e-6


def register_advantage_estimator(name: str, *, default_scale: str = "none",
                                 group_centred: bool = False):
    """Decorator: ``@register_advantage_estimator("grpo", default_scale="group",
    group_centred=True)``. ``group_centred``: the signal sums to 0 over each group (then any
    std scaling is allowed; otherwise only 'none', see :func:`scaling_is_centred`)."""

    def decorator(fn: AdvantageEstimator) -> AdvantageEstimator:
        if name in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage estimator {name!r} registered twice")
        if default_scale != "none" and not group_centred:
            raise ValueError(f"advantage estimator {name!r}: default_scale={default_scale!r} "
                             f"needs group_centred=True (see scaling_is_centred)")
        ADVANTAGE_ESTIMATORS[name] = fn
        DEFAULT_SCALE_REWARDS[name] = default_scale
        GROUP_CENTRED[name] = group_centred
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
        return _centre(rewards, jnp.mean(rewards), axis=None)
    return rewards


@register_advantage_estimator("rloo", group_centred=True)
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
    return _centre(rewards, (total - rewards) / (g - 1), axis=-1)


@register_advantage_estimator("grpo", default_scale="group", group_centred=True)
def grpo(rewards: jnp.ndarray, **_) -> jnp.ndarray:
    """GRPO (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300, §4.1.2 outcome supervision).

    Centring: A_i = r_i - mean_j r_j over the group. GRPO's division by the group std is the
    default ``scale_rewards="group"``, applied by :func:`compute_advantages`, giving
    Â_i = (r_i - mean(r)) / (std(r) + eps).
    """
    return _centre(rewards, jnp.mean(rewards, axis=-1, keepdims=True), axis=-1)


@register_advantage_estimator("dr_grpo", default_scale="none", group_centred=True)
def dr_grpo(rewards: jnp.ndarray, **_) -> jnp.ndarray:
    """Dr.GRPO (Liu et al. 2025, arXiv 2503.20783, §3.2, the Â of the Dr.GRPO objective).

    Â_i = r_i - mean_j r_j over the group, with no std division (``scale_rewards="none"``).
    Same centring as ``grpo``; the name selects the unscaled default (and, in
    :class:`~toymodels.rl.train.RLConfig`, the constant-normaliser loss aggregation).
    """
    return _centre(rewards, jnp.mean(rewards, axis=-1, keepdims=True), axis=-1)


def _centre(rewards: jnp.ndarray, baseline: jnp.ndarray, axis) -> jnp.ndarray:
    """rewards - baseline, exactly 0 where every reward along ``axis`` is equal (then the
    exact baseline is the reward itself; float32 may miss it by an ulp, see module doc)."""
    equal = (jnp.max(rewards, axis=axis, keepdims=True)
             == jnp.min(rewards, axis=axis, keepdims=True))
    return jnp.where(equal, 0.0, rewards - baseline)


def scaling_is_centred(estimator: str, scale_rewards: str, batch_baseline: bool = False) -> bool:
    """Whether the std division divides a signal centred at the std's level (module
    docstring): 'none' always; 'group' needs a group-centred estimator; 'batch' needs a group-
    centred estimator or reinforce's batch baseline."""
    if scale_rewards == "none":
        return True
    if scale_rewards == "group":
        return GROUP_CENTRED[estimator]
    return GROUP_CENTRED[estimator] or batch_baseline


def check_scaling(estimator: str, scale_rewards: str, batch_baseline: bool = False) -> None:
    """ValueError unless :func:`scaling_is_centred`."""
    if not scaling_is_centred(estimator, scale_rewards, batch_baseline):
        raise ValueError(
            f"scale_rewards={scale_rewards!r} is not allowed with advantage={estimator!r} and "
            f"batch_baseline={batch_baseline}: it divides a signal that is not "
            f"{scale_rewards}-centred by the {scale_rewards} std, which is 0 on equal rewards "
            f"(advantages of order r / {STD_EPS:g}); use 'none'"
            + (", or 'batch' with batch_baseline=True" if estimator == "reinforce" else ""))


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
    if scale in SCALE_REWARDS:  # an unknown name is refused by scale_advantages
        check_scaling(estimator, scale, batch_baseline)
    centred = fn(rewards, batch_baseline=batch_baseline)
    return scale_advantages(centred, rewards, scale, eps)
