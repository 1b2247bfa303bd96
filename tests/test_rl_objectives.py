"""Loss pieces as specifications (rlax style: chex variants, values derived in comments)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from toymodels.rl import objectives as obj

LN2 = np.log(2.0)


class SurrogateTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_clipping_cases(self):
        # eps_low = 0.2, eps_high = 0.3; l = -min(ρA, clip(ρ, 0.8, 1.3) A).
        ratio = jnp.array([1.0, 1.5, 0.5, 0.5, 1.5, 1.25])
        a = jnp.array([2.0, 1.0, 1.0, -1.0, -1.0, 1.0])
        # ρ=1   A=2 : -2                                  no clip
        # ρ=1.5 A=1 : -min(1.5, 1.3) = -1.3               clipped high (grad 0)
        # ρ=0.5 A=1 : -min(0.5, 0.8) = -0.5               not clipped (pessimistic branch)
        # ρ=0.5 A=-1: -min(-0.5, -0.8) = 0.8              clipped low (grad 0)
        # ρ=1.5 A=-1: -min(-1.5, -1.3) = 1.5              not clipped
        # ρ=1.25 A=1: inside [0.8, 1.3] -> -1.25          not clipped (asymmetric bound)
        fn = self.variant(functools.partial(obj.clipped_surrogate, eps_low=0.2, eps_high=0.3))
        loss, low, high = fn(jnp.log(ratio), jnp.zeros(6), a)
        np.testing.assert_allclose(loss, [-2, -1.3, -0.5, 0.8, 1.5, -1.25], rtol=1e-6)
        np.testing.assert_array_equal(low, [0, 0, 0, 1, 0, 0])
        np.testing.assert_array_equal(high, [0, 1, 0, 0, 0, 0])
        # Gradient w.r.t. log π: -ρA where unclipped, 0 where clipped.
        grad = jax.grad(lambda lp: fn(lp, jnp.zeros(6), a)[0].sum())(jnp.log(ratio))
        np.testing.assert_allclose(grad, [-2, 0, -0.5, 0, 1.5, -1.25], rtol=1e-6)


class KLTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_estimators_by_hand(self):
        # π(o) = 0.5, π_ref(o) = 0.25: log-ratio log π - log π_ref = ln 2.
        # k1 = ln 2 = 0.6931; k2 = ½ ln²2 = 0.2402; k3 = (0.5 - 1) - ln 0.5 = 0.1931.
        lp, ref = jnp.log(jnp.array([0.5])), jnp.log(jnp.array([0.25]))
        np.testing.assert_allclose(self.variant(obj.kl_k1)(lp, ref), [LN2], rtol=1e-6)
        np.testing.assert_allclose(self.variant(obj.kl_k2)(lp, ref), [0.5 * LN2**2], rtol=1e-6)
        np.testing.assert_allclose(self.variant(obj.kl_k3)(lp, ref), [LN2 - 0.5], rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_exact_kl_by_hand(self):
        # KL([.5,.5] ‖ [.25,.75]) = .5 ln(.5/.25) + .5 ln(.5/.75) = .5 (ln 2 + ln(2/3)) = 0.1438.
        out = self.variant(obj.kl_exact)(jnp.log(jnp.array([0.5, 0.5])),
                                         jnp.log(jnp.array([0.25, 0.75])))
        np.testing.assert_allclose(out, 0.5 * (LN2 + np.log(2 / 3)), rtol=1e-5)

    def test_k1_and_k3_are_unbiased_k2_is_not(self):
        # E_{o~π}[k1] = Σ π (log π - log π_ref) = KL. E[k3] = Σ π (π_ref/π - 1) - Σ π log(π_ref/π)
        # = (1 - 1) + KL = KL. E[k2] = ½ E[log²(π/π_ref)] ≠ KL in general.
        logits = jnp.array([0.3, -1.0, 2.0, 0.0])
        ref_logits = jnp.array([1.0, 0.5, -0.5, 0.2])
        lp, ref = jax.nn.log_softmax(logits), jax.nn.log_softmax(ref_logits)
        pi = jnp.exp(lp)
        kl = obj.kl_exact(logits, ref_logits)
        np.testing.assert_allclose(jnp.sum(pi * obj.kl_k1(lp, ref)), kl, rtol=1e-5)
        np.testing.assert_allclose(jnp.sum(pi * obj.kl_k3(lp, ref)), kl, rtol=1e-5)
        assert abs(float(jnp.sum(pi * obj.kl_k2(lp, ref)) - kl)) > 1e-2

    @chex.variants(with_jit=True, without_jit=True)
    def test_entropy(self):
        # Uniform over 4: ln 4. One-hot (up to float): 0.
        out = self.variant(obj.entropy_from_logits)(jnp.array([[0.0, 0, 0, 0], [50.0, 0, 0, 0]]))
        np.testing.assert_allclose(out, [np.log(4.0), 0.0], atol=1e-6)


LOSS = jnp.array([[1.0, 2.0, 7.0], [3.0, 9.0, 9.0]])
MASK = jnp.array([[True, True, False], [True, False, False]])


class AggregationTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        # token-mean: (1 + 2 + 3) / 3 tokens = 2.
        ("token_mean", "token-mean", 2.0),
        # sequence-mean-token-mean: ((1 + 2)/2 + 3/1) / 2 = 2.25.
        ("seq_mean_token_mean", "sequence-mean-token-mean", 2.25),
        # sequence-mean-token-sum-norm, max_tokens 4: (1 + 2 + 3) / (2 seqs * 4) = 0.75.
        ("seq_mean_token_sum_norm", "sequence-mean-token-sum-norm", 0.75),
    )
    def test_values(self, mode, expected):
        fn = self.variant(functools.partial(obj.aggregate, mode=mode, max_tokens=4))
        np.testing.assert_allclose(fn(LOSS, MASK), expected, rtol=1e-6)

    @parameterized.named_parameters(
        # l = -A_i log π_t; ∂L/∂log π_{i,t} is the per-token weight (negated).
        # token-mean: A_i / Σ m = A_i / 3 for every token.
        ("token_mean", "token-mean", [[2 / 3, 2 / 3, 0], [-1 / 3, 0, 0]]),
        # GRPO: A_i / (B |o_i|): 2/(2*2) = 0.5 on row 0, -1/(2*1) = -0.5 on row 1.
        ("seq_mean_token_mean", "sequence-mean-token-mean", [[0.5, 0.5, 0], [-0.5, 0, 0]]),
        # Dr.GRPO: A_i / (B * max_tokens) = 2/8 and -1/8, whatever the length.
        ("seq_mean_token_sum_norm", "sequence-mean-token-sum-norm",
         [[0.25, 0.25, 0], [-0.125, 0, 0]]),
    )
    def test_per_token_weight(self, mode, expected):
        a = jnp.array([2.0, -1.0])
        loss = lambda lp: obj.aggregate(-a[:, None] * lp, MASK, mode, 4)
        grad = jax.grad(loss)(jnp.zeros((2, 3)))
        np.testing.assert_allclose(-grad, expected, rtol=1e-6)

    def test_unknown_mode_raises(self):
        with pytest.raises(ValueError, match="loss_agg='seq-mean'"):
            obj.aggregate(LOSS, MASK, "seq-mean", 4)


def test_grpo_loss_is_zero_but_gradient_is_not():
    # On-policy first epoch: old log-probs = current, so ρ = 1 and the surrogate is -A per token.
    # With group-centred advantages (Σ_i A_i = 0) and equal lengths the aggregated loss is
    # -(1/B) Σ_i A_i = 0, yet its gradient (-A_i/(B|o|) per token) is not zero.
    key = jax.random.PRNGKey(0)
    logits = jax.random.normal(key, (4, 3, 5))
    tokens = jnp.array([[2, 1, 0], [3, 4, 1], [0, 0, 1], [4, 1, 0]])
    mask = jnp.ones((4, 3), bool)
    a = jnp.array([1.0, 1.0, 1.0, -3.0]) / jnp.sqrt(3.0)
    old = jax.lax.stop_gradient(obj.token_logprobs(logits, tokens))

    def loss_fn(lg):
        return obj.policy_loss(lg, tokens, mask, old, a, None, eps_low=0.2, eps_high=0.2,
                               kl_coef=0.0, kl_estimator="k3", entropy_coef=0.0,
                               loss_agg="sequence-mean-token-mean", max_tokens=3)[0]

    loss, grad = jax.value_and_grad(loss_fn)(logits)
    assert abs(float(loss)) < 1e-6
    assert float(jnp.abs(grad).max()) > 1e-2
