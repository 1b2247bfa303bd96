"""Reflection emergence, theory part (theory/reflection.py Part 2, docs/theory_reflection.md
§2): the derived rate of the log-odds of <back> after a mistake (Eq. 7) against autodiff of
the tabular objective, and the emergence time (Eq. 8) against a simulated gradient flow.

The figure module ``experiments/reflection_emergence.py`` is not written yet (see the
report); these tests cover the prediction it is to check."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from theory import reflection as T


def _objective(lam, m, r, s, s_clean):
    """Expected outcome reward of the tabular policy: a completion meets a mistake with
    probability m; there it backs out with σ(λ), recovers with r, then succeeds with s;
    without <back> the dead end gives 0; a clean completion succeeds with s_clean."""
    return (1 - m) * s_clean + m * jax.nn.sigmoid(lam) * r * s


@pytest.mark.parametrize("lam,m,r,s", [(0.0, 0.2, 0.5, 1.0), (-3.0, 0.05, 0.9, 0.7),
                                       (2.0, 0.6, 0.3, 0.4)])
def test_rate_is_the_exact_policy_gradient(lam, m, r, s):
    grad = jax.grad(_objective)(lam, m, r, s, 0.8)
    b = 1 / (1 + np.exp(-lam))
    assert T.back_logodds_rate(b, m, r, s) == pytest.approx(float(grad), rel=1e-5)
    assert T.back_logodds_rate(0.5, 0.2, 0.5) == pytest.approx(0.025)  # hand value


def test_emergence_time_matches_gradient_flow():
    m, r, s, eta = 0.1, 0.5, 1.0, 0.5
    b0, b_star = 0.01, 0.9
    predicted = T.emergence_steps(b0, b_star, m, r, s, eta)

    def flow(lam, _):
        return lam + eta * jax.grad(_objective)(lam, m, r, s, 0.8), lam

    n = int(np.ceil(predicted * 1.2))
    lams = np.asarray(jax.lax.scan(flow, jnp.float32(T.logit(b0)), None, length=n)[1])
    measured = np.argmax(lams >= T.logit(b_star))
    # Euler steps of a smooth flow: the step count agrees to within a few percent.
    assert measured == pytest.approx(predicted, rel=0.03)
    # Rare mistakes: 10x fewer mistakes, 10x slower emergence (Eq. 8 is ∝ 1/m).
    assert T.emergence_steps(b0, b_star, m / 10, r, s, eta) == pytest.approx(10 * predicted)


def test_hand_value_of_the_antiderivative():
    expected = (2 + np.e - 1 / np.e) / (0.1 * 0.5)
    assert T.emergence_steps(0.5, 1 / (1 + np.exp(-1)), 0.1, 0.5) == pytest.approx(expected)
