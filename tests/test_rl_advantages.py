"""Advantage estimators as specifications (rlax style: chex variants, values derived in
comments). Population std convention, eps = 1e-6 (see toymodels/rl/advantages.py)."""

import functools

import chex
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from toymodels.rl import advantages as adv

SQRT3 = np.sqrt(3.0)


class AdvantageTest(parameterized.TestCase):
    def _run(self, rewards, estimator, **kw):
        fn = functools.partial(adv.compute_advantages, estimator=estimator, **kw)
        return self.variant(fn)(jnp.asarray(rewards, jnp.float32))

    @chex.variants(with_jit=True, without_jit=True)
    def test_grpo_group_std(self):
        # r = [1,1,1,0]: mean 0.75, population std sqrt(0.75 * 0.25) = sqrt(3)/4.
        # A = (1 - 0.75) / (sqrt(3)/4) = 1/sqrt(3) = 0.577; (0 - 0.75) / (sqrt(3)/4) = -sqrt(3).
        out = self._run([[1, 1, 1, 0]], "grpo")
        expected = [[1 / SQRT3, 1 / SQRT3, 1 / SQRT3, -SQRT3]]
        np.testing.assert_allclose(out, expected, rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_dr_grpo_no_std(self):
        # Dr.GRPO: A = r - mean = [0.25, 0.25, 0.25, -0.75].
        out = self._run([[1, 1, 1, 0]], "dr_grpo")
        np.testing.assert_allclose(out, [[0.25, 0.25, 0.25, -0.75]], rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_grpo_with_scale_none_equals_dr_grpo(self):
        # Each bias is a switch: GRPO minus the std division is exactly Dr.GRPO's advantage.
        r = [[1, 0, 0, 1], [1, 1, 1, 0]]
        np.testing.assert_allclose(self._run(r, "grpo", scale_rewards="none"),
                                   self._run(r, "dr_grpo"), rtol=0, atol=0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_grpo_groups_are_independent(self):
        # Group 0 [1,0,1,0]: mean 0.5, std 0.5 -> +-1. Group 1 all equal -> 0 (0 / (0 + eps)).
        out = self._run([[1, 0, 1, 0], [1, 1, 1, 1]], "grpo")
        np.testing.assert_allclose(out, [[1, -1, 1, -1], [0, 0, 0, 0]], atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_batch_scaling(self):
        # Centred per group: [[0.5, -0.5], [0, 0]]. Batch rewards {1,0,1,1}: mean 0.75,
        # population std sqrt(3)/4, so A = +-0.5 * 4/sqrt(3) = +-2/sqrt(3) = +-1.1547.
        out = self._run([[1, 0], [1, 1]], "grpo", scale_rewards="batch")
        np.testing.assert_allclose(out, [[2 / SQRT3, -2 / SQRT3], [0, 0]], rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_rloo(self):
        # A_i = r_i - mean of the others: 1 - (1+1+0)/3 = 1/3 for the ones, 0 - 1 = -1.
        out = self._run([[1, 1, 1, 0]], "rloo")
        np.testing.assert_allclose(out, [[1 / 3, 1 / 3, 1 / 3, -1]], rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_reinforce(self):
        # No baseline: A = r.
        out = self._run([[1, 0], [1, 1]], "reinforce")
        np.testing.assert_allclose(out, [[1, 0], [1, 1]])
        # Batch baseline: mean of all four rewards 0.75 -> [[0.25, -0.75], [0.25, 0.25]].
        out = self._run([[1, 0], [1, 1]], "reinforce", batch_baseline=True)
        np.testing.assert_allclose(out, [[0.25, -0.75], [0.25, 0.25]], rtol=1e-6)


def test_registry_and_defaults():
    assert set(adv.ADVANTAGE_ESTIMATORS) == {"reinforce", "rloo", "grpo", "dr_grpo"}
    assert adv.DEFAULT_SCALE_REWARDS["grpo"] == "group"
    assert adv.DEFAULT_SCALE_REWARDS["dr_grpo"] == "none"


@pytest.mark.parametrize("kwargs, match", [
    (dict(estimator="ppo"), "advantage estimator 'ppo'"),
    (dict(estimator="grpo", scale_rewards="global"), "scale_rewards='global'"),
])
def test_bad_names_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        adv.compute_advantages(jnp.ones((2, 4)), **kwargs)


def test_rloo_needs_two_samples():
    with pytest.raises(ValueError, match="group_size >= 2"):
        adv.compute_advantages(jnp.ones((2, 1)), "rloo")


def test_an_estimator_with_a_std_default_must_be_group_centred():
    """A default std scaling of an uncentred signal would make every RLConfig using the
    estimator fail later; it is refused when the estimator is registered."""
    with pytest.raises(ValueError, match="group_centred=True"):
        adv.register_advantage_estimator("uncentred_for_test", default_scale="group")(
            lambda rewards, **_: rewards)
    assert "uncentred_for_test" not in adv.ADVANTAGE_ESTIMATORS
