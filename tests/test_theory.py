"""theory/: each analytic function against values derived by hand (in the comments)."""

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from theory import entropy as E
from theory import grpo_weights as W
from theory import passk as P
from theory import reflection as R
from theory import support as S

LOG3 = math.log(3.0)
# A two-answer policy used throughout: z = (0, log 3) gives π = (1/4, 3/4).
Z2 = np.array([0.0, LOG3])


# ------------------------------------------------------------------------------ entropy
def test_entropy_of_uniform_is_log_k():
    assert E.entropy(np.zeros(4)) == pytest.approx(math.log(4))


def test_entropy_two_answers():
    # H = −(1/4)log(1/4) − (3/4)log(3/4) = log 4 − (3/4) log 3
    assert E.entropy(Z2) == pytest.approx(math.log(4) - 0.75 * LOG3)


def test_entropy_ignores_zero_probability_answers():
    # z = (0, −inf): π = (1, 0), 0·log 0 = 0, H = 0 (no NaN)
    assert E.entropy(np.array([0.0, -np.inf])) == 0.0


def test_first_order_change_vanishes_at_uniform():
    # log π is constant under the uniform policy, so Cov(log π, Δz) = 0 for every Δz:
    # the uniform policy is the entropy maximum.
    dz = np.array([0.3, -1.0, 2.0])
    assert E.entropy_change_first_order(np.zeros(3), dz) == pytest.approx(0.0, abs=1e-15)


def test_first_order_change_two_answers():
    # For two answers Cov(x, y) = π1 π2 (x1 − x2)(y1 − y2). With π = (1/4, 3/4),
    # x1 − x2 = log π1 − log π2 = −log 3 and Δz = (1, 0): Cov = (3/16)(−log 3), so
    # ΔH ≈ +(3/16) log 3: raising the rare answer's logit raises the entropy.
    dz = np.array([1.0, 0.0])
    assert E.entropy_change_first_order(Z2, dz) == pytest.approx(3 / 16 * LOG3)
    # ... and it is the derivative: a small step agrees to O(ε²).
    eps = 1e-6
    fd = (E.entropy(Z2 + eps * dz) - E.entropy(Z2)) / eps
    assert fd == pytest.approx(3 / 16 * LOG3, rel=1e-5)


def test_pg_and_npg_predictions_two_answers():
    # r = (1, 0): the rare answer is correct. E_π r = 1/4, A = (3/4, −1/4).
    # PG: Δz = η π A = η (3/16, −3/16), Δz1 − Δz2 = 3η/8,
    #     ΔH ≈ −(3/16)(−log 3)(3η/8) = (9/128) η log 3.
    # NPG: Δz = η A, Δz1 − Δz2 = η, ΔH ≈ (3/16) η log 3.
    r, eta = np.array([1.0, 0.0]), 0.1
    np.testing.assert_allclose(E.pg_logit_update(Z2, r, eta), [3 / 160, -3 / 160])
    np.testing.assert_allclose(E.npg_logit_update(Z2, r, eta), [0.075, -0.025])
    assert E.predicted_entropy_change_pg(Z2, r, eta) == pytest.approx(9 / 128 * eta * LOG3)
    assert E.predicted_entropy_change_npg(Z2, r, eta) == pytest.approx(3 / 16 * eta * LOG3)
    # The likely answer correct instead (r = (0, 1)): the signs flip, entropy falls.
    assert E.predicted_entropy_change_pg(Z2, 1 - r, eta) == pytest.approx(-9 / 128 * eta * LOG3)


def test_theorem_forms_equal_lemma_on_their_own_updates():
    # Theorems 1 and 2 are Lemma 1 applied to Δz = η π A and Δz = η A.
    rng = np.random.default_rng(0)
    z, r = rng.normal(size=(5, 6)), rng.integers(0, 2, (5, 6)).astype(float)
    np.testing.assert_allclose(E.predicted_entropy_change_pg(z, r, 0.3),
                               E.entropy_change_first_order(z, E.pg_logit_update(z, r, 0.3)))
    np.testing.assert_allclose(E.predicted_entropy_change_npg(z, r, 0.3),
                               E.entropy_change_first_order(z, E.npg_logit_update(z, r, 0.3)))


def test_entropy_law_fit_recovers_coefficients():
    # H = (0, log 2, log 3) so exp(H) = (1, 2, 3); R = −2·exp(H) + 5 = (3, 1, −1).
    a, b = E.fit_entropy_performance([0.0, math.log(2), LOG3], [3.0, 1.0, -1.0])
    assert (a, b) == (pytest.approx(2.0), pytest.approx(5.0))
    assert E.performance_ceiling(a, b) == pytest.approx(3.0)  # −a + b at H = 0
    assert E.predict_performance(math.log(4), a, b) == pytest.approx(-3.0)  # −2·4 + 5
    with pytest.raises(ValueError):
        E.fit_entropy_performance([1.0, 1.0], [0.0, 1.0])


# ------------------------------------------------------------------------------- pass@k
def test_pass_at_k_unbiased_hand_values():
    assert P.pass_at_k_unbiased(4, 1, 2) == pytest.approx(0.5)  # 1 − C(3,2)/C(4,2) = 1 − 3/6
    assert P.pass_at_k_unbiased(5, 2, 1) == pytest.approx(0.4)  # k = 1: c/n
    assert P.pass_at_k_unbiased(5, 2, 3) == pytest.approx(0.9)  # 1 − C(3,3)/C(5,3) = 1 − 1/10
    assert P.pass_at_k_unbiased(5, 2, 4) == 1.0  # n − c = 3 < k: every 4-subset has a hit
    assert P.pass_at_k_unbiased(5, 0, 3) == 0.0
    np.testing.assert_allclose(P.pass_at_k_unbiased(4, np.array([0, 1, 3, 4]), 2),
                               [0.0, 0.5, 1.0, 1.0])


def test_pass_at_k_unbiased_is_unbiased():
    # E_{c ~ Bin(n, p)}[estimator] = 1 − (1 − p)^k exactly.
    n, k, p = 8, 3, 0.3
    mean = sum(math.comb(n, c) * p**c * (1 - p) ** (n - c) * P.pass_at_k_unbiased(n, c, k)
               for c in range(n + 1))
    assert mean == pytest.approx(1 - (1 - p) ** k, abs=1e-12)


def exact_pass_at_k(n, c, k):
    """1 − C(n−c, k)/C(n, k) in exact rational arithmetic."""
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def test_pass_at_k_unbiased_equals_exact_fractions():
    for n in range(1, 25):
        for k in range(1, n + 1):
            got = P.pass_at_k_unbiased(n, np.arange(n + 1), k)
            want = [float(exact_pass_at_k(n, c, k)) for c in range(n + 1)]
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_pass_at_k_large_n_is_stable():
    assert P.pass_at_k_unbiased(1000, 1, 1) == pytest.approx(1e-3)
    # C(400, 200) overflows a float; the exact value is 1 − C(250, 200)/C(400, 200).
    want = exact_pass_at_k(400, 150, 200)
    assert P.pass_at_k_unbiased(400, 150, 200) == pytest.approx(float(want), abs=1e-15)
    assert P.pass_at_k_unbiased(400, 2, 5) == pytest.approx(float(exact_pass_at_k(400, 2, 5)))
    with pytest.raises(ValueError):
        P.pass_at_k_unbiased(4, 1, 5)


@pytest.mark.parametrize("c, error", [(np.nan, ValueError), (1.5, ValueError),
                                      ([1, np.nan], ValueError), (True, TypeError)])
def test_pass_at_k_refuses_counts_that_are_not_whole_numbers(c, error):
    with pytest.raises(error):
        P.pass_at_k_unbiased(4, c, 2)
    assert P.pass_at_k_unbiased(4, 1.0, 2) == 0.5  # a float holding a whole count is a count


def test_pass_at_k_exact_hand_values():
    assert P.pass_at_k_exact([0.5], 2) == pytest.approx(0.75)  # 1 − (1/2)²
    np.testing.assert_allclose(P.pass_at_k_exact([0.0, 1.0], [1, 5]), [0.5, 0.5])
    # p = (0.2, 0.5): k=1 → 0.35; k=3 → ((1 − 0.8³) + (1 − 0.5³))/2 = (0.488 + 0.875)/2
    np.testing.assert_allclose(P.pass_at_k_exact([0.2, 0.5], [1, 3]), [0.35, 0.6815])
    np.testing.assert_allclose(P.pass_at_k_curve(4, [1, 3], [1, 2]), [0.5, 0.75])


# --------------------------------------------------------------------------- GRPO weights
def test_group_advantages_hand_values():
    np.testing.assert_allclose(W.group_advantages([1, 0]), [1, -1])  # p = 1/2, std 1/2
    np.testing.assert_allclose(W.group_advantages([1, 0], "dr_grpo"), [0.5, -0.5])
    # ddof=1: mean 3/4, s² = (3/16 + 9/16)/3 = 1/4, s = 1/2
    np.testing.assert_allclose(W.group_advantages([1, 1, 1, 0], ddof=1), [.5, .5, .5, -1.5])
    # ddof=0: σ = sqrt(3)/4: ±(1/4)/σ = 1/sqrt(3), −(3/4)/σ = −sqrt(3)
    s3 = math.sqrt(3)
    np.testing.assert_allclose(W.group_advantages([1, 1, 1, 0]), [1 / s3] * 3 + [-s3])
    np.testing.assert_array_equal(W.group_advantages([1, 1, 1]), [0, 0, 0])


def test_token_and_sequence_weights_hand_values():
    # Â = (+1, −1), lengths (2, 4), G = 2.
    a, n = np.array([1.0, -1.0]), np.array([2, 4])
    np.testing.assert_allclose(W.token_weight(a, n), [1 / 4, -1 / 8])  # Â/(G|o|)
    np.testing.assert_allclose(W.token_weight(a, n, "dr_grpo", max_tokens=8), [1 / 16, -1 / 16])
    np.testing.assert_allclose(W.sequence_weight(a, n), [0.5, -0.5])  # Â/G for any length
    np.testing.assert_allclose(W.sequence_weight(a, n, "dr_grpo", max_tokens=8), [1 / 8, -1 / 4])
    with pytest.raises(ValueError):
        W.token_weight(a, n, "dr_grpo")


def test_prompt_weights_hand_values():
    assert W.prompt_scale(0.5) == pytest.approx(2.0)  # 1/sqrt(1/4)
    assert W.prompt_scale(0.5, "dr_grpo") == 1.0
    # G = 2, p = 1/2 (derivation in theory/grpo_weights.py): GRPO 1, Dr.GRPO 1 − 1/2.
    assert W.expected_prompt_weight(0.5, 2) == pytest.approx(1.0)
    assert W.expected_prompt_weight(0.5, 2, "dr_grpo") == pytest.approx(0.5)
    # G = 3, p = 1/2: c ∈ {1, 2} each with prob 3/8, sqrt(q(1−q)) = sqrt(2)/3, so
    # w = 2·(3/8)·(sqrt 2/3)/(1/4) = sqrt 2.  Dr.GRPO: 1 − 1/3.
    assert W.expected_prompt_weight(0.5, 3) == pytest.approx(math.sqrt(2))
    assert W.expected_prompt_weight(0.3, 3, "dr_grpo") == pytest.approx(2 / 3)
    # Large G: 1/sqrt(p(1−p)); the delta-method correction is −1/(8G p(1−p)) ≈ −3e-4.
    assert W.expected_prompt_weight(0.3, 2000) == pytest.approx(1 / math.sqrt(0.21), rel=1e-3)


@pytest.mark.parametrize("method", W.METHODS)
def test_prompt_weight_matches_enumerated_update(method):
    # The derivation's claim, checked without it: enumerate every group of G = 3 answers of a
    # 3-answer softmax (answer 0 correct), sum prob × (1/G) Σ_i Â_i (e_{a_i} − π), and compare
    # with w(p, G)·∇p where ∇_z p = π_0 (e_0 − π).
    z, g = np.array([0.4, -0.2, 0.1]), 3
    pi = np.exp(E.log_softmax(z))
    expected = np.zeros(3)
    for group in itertools.product(range(3), repeat=g):
        prob = np.prod(pi[list(group)])
        adv = W.group_advantages(np.array([a == 0 for a in group], float), method)
        expected += prob * sum(adv[i] * (np.eye(3)[a] - pi) for i, a in enumerate(group)) / g
    grad_p = pi[0] * (np.eye(3)[0] - pi)
    w = W.expected_prompt_weight(pi[0], g, method)
    np.testing.assert_allclose(expected, w * grad_p, atol=1e-12)


# ------------------------------------------------------------------------------- support
def test_pg_gradient_hand_value_and_zero_on_zero_probability():
    # z = (0, 0), r = (1, 0): π = (1/2, 1/2), E r = 1/2, gradient π(r − 1/2) = (1/4, −1/4)
    np.testing.assert_allclose(S.pg_logit_gradient([0.0, 0.0], np.array([1.0, 0.0])),
                               [0.25, -0.25])
    # The only correct answer has probability 0: it gets gradient 0 (and so does the rest).
    g = S.pg_logit_gradient([0.0, 0.0, -np.inf], np.array([0.0, 0.0, 1.0]))
    np.testing.assert_array_equal(g, [0.0, 0.0, 0.0])


def test_reinforce_gradient_hand_value():
    # π = (1/2, 1/2, 0), answers (0, 1, 0), Â = (1, −1, 1):
    # 1·(1/2, −1/2, 0) + (−1)·(−1/2, 1/2, 0) + 1·(1/2, −1/2, 0) = 3·(1/2, −1/2, 0); mean /3.
    g = S.reinforce_logit_gradient([0.0, 0.0, -np.inf], [0, 1, 0], [1.0, -1.0, 1.0])
    np.testing.assert_allclose(g, [0.5, -0.5, 0.0])


def test_gradient_bounded_by_probability():
    rng = np.random.default_rng(1)
    z, r = 3 * rng.normal(size=(20, 7)), rng.integers(0, 2, (20, 7)).astype(float)
    assert np.all(np.abs(S.pg_logit_gradient(z, r)) <= S.gradient_bound(z, r) + 1e-15)


def test_pg_training_never_leaves_the_support():
    # 200 exact PG steps: the unreachable correct answer keeps probability exactly 0 while
    # the policy moves mass between the answers it can reach.
    z0 = np.array([0.0, 1.0, -np.inf, 0.5])
    r = np.array([0.0, 1.0, 1.0, 0.0])
    z = z0.copy()
    for _ in range(200):
        z = z + 1.0 * S.pg_logit_gradient(z, r)
    p0, p1 = np.exp(E.log_softmax(z0)), np.exp(E.log_softmax(z))
    assert p1[2] == 0.0 and p1[1] > 0.9 > p0[1]
    assert S.support_preserved(p0, p1)
    assert not S.support_preserved(np.array([1.0, 0.0]), np.array([0.9, 0.1]))


def test_correct_advantage_sum_hand_values():
    # G = 2, p = 1/2: only c = 1 (prob 1/2) counts; Â_+ = 1 (GRPO), 1/2 (Dr.GRPO).
    assert W.correct_advantage_sum(0.5, 2) == pytest.approx(0.5)
    assert W.correct_advantage_sum(0.5, 2, "dr_grpo") == pytest.approx(0.25)
    # Dr.GRPO: E[c(1 − c/G)] = (G − 1)p(1 − p).
    assert W.correct_advantage_sum(0.3, 8, "dr_grpo") == pytest.approx(7 * 0.21)
    # GRPO, G = 3, p = 1/2: c ∈ {1, 2} with prob 3/8 each, c·Â_+ = G sqrt(q(1−q)) = sqrt 2.
    assert W.correct_advantage_sum(0.5, 3) == pytest.approx(2 * 3 / 8 * math.sqrt(2))


def test_stop_chain_length_score_hand_value_and_enumeration():
    # F = 1, s_0 = 0, n = 4: k ∈ {0, 1} with prob 1/2 each; score at t = 0 is +1/2 (k = 1)
    # or −1/2 (k = 0), so E[score/|o|] = (1/2)(1/2)/5 − (1/2)(1/2)/4 = −1/80.
    assert W.stop_chain_length_score([0.0], 4)[0] == pytest.approx(-1 / 80)
    # Enumerate every k of a 3-step chain: E[c(k + n) ∂ log π(k)/∂s_t] term by term.
    s = np.array([0.3, -0.2, 1.0])
    sig = 1 / (1 + np.exp(-s))
    for method, c in (("grpo", lambda n: 1 / n), ("dr_grpo", lambda n: 1 / 9)):
        expected = np.zeros(3)
        for k in range(4):
            prob = np.prod(sig[:k]) * (1 - sig[k] if k < 3 else 1.0)
            score = [(1 - sig[t]) if t < k else (-sig[t] if t == k else 0.0) for t in range(3)]
            expected += prob * c(k + 2) * np.array(score)
        np.testing.assert_allclose(W.stop_chain_length_score(s, 2, method, max_tokens=9),
                                   expected, atol=1e-15)
    assert np.all(W.stop_chain_length_score(s, 2) < 0)  # 1/|o| pushes every filler logit down
    with pytest.raises(ValueError):
        W.stop_chain_length_score(s, 2, "dr_grpo")


def test_shared_strategy_first_step_hand_value():
    # G = 2, w_a = 1/2: g = 1/2 on both classes; n_a = 3, n_b = 1, r = 1:
    # Δz_A = 3/2 − 1/2 + 1/2 = 3/2, Δz_B = 1 − 1/2 = 1/2; Δ log p_A = 3/4, Δ log p_B = −1/4
    assert S.shared_strategy_first_step(0.5, 3, 1, 2, 1.0) == pytest.approx((0.75, -0.25))
    # equal classes, no own kernel: the pushes cancel whatever w_a (g(p) = g(1 − p))
    assert S.shared_strategy_first_step(0.7, 32, 32, 8, 0.0) == pytest.approx((0.0, 0.0))
    # S_B loses iff n_a − n_b exceeds r
    assert S.shared_strategy_first_step(0.7, 3, 1, 8, 1.9)[1] < 0
    assert S.shared_strategy_first_step(0.7, 3, 1, 8, 2.1)[1] > 0


def test_strategy_logit_push_by_enumeration():
    # One problem, a group of G two-way choices, A with probability p = σ(z); the problem is
    # solved by A (S_A) or by B (S_B). Σ_i Â_i ∂z log π(y_i) (population-std GRPO, ∂z log π
    # = 1 − p for A, −p for B) averaged over all 2^G groups is +g(p) on S_A, −g(1 − p) on S_B.
    G, p = 3, 0.7
    for solved_by_a, expected in ((True, W.correct_advantage_sum(p, G, "grpo")),
                                  (False, -W.correct_advantage_sum(1 - p, G, "grpo"))):
        total = 0.0
        for picks in itertools.product((True, False), repeat=G):  # True: strategy A
            prob = math.prod(p if a else 1 - p for a in picks)
            r = np.array([float(a == solved_by_a) for a in picks])
            adv = (r - r.mean()) / r.std() if r.std() > 0 else np.zeros(G)
            score = np.where(picks, 1 - p, -p)  # ∂z log π of each pick
            total += prob * float(np.sum(adv * score))
        assert total == pytest.approx(expected)


# --------------------------------------- second-order entropy change of a zero-mean update
def test_grpo_bernoulli_kappa_hand_values():
    # G = 2: the rewards tie half the time (all advantages 0), else the advantages are ±1.
    assert E.grpo_bernoulli_kappa(2) == pytest.approx(0.5, rel=1e-5)
    assert E.grpo_bernoulli_kappa(4) == pytest.approx(1 - 2.0**-3, rel=1e-5)
    assert E.grpo_bernoulli_kappa(256) == pytest.approx(1.0, abs=1e-5)


def test_entropy_hessian_fisher_trace_closed_form_against_autodiff():
    import jax
    import jax.numpy as jnp

    def autodiff(z):
        p = jax.nn.softmax(z)
        return jnp.trace(jax.hessian(E.entropy)(z) @ (jnp.diag(p) - jnp.outer(p, p)))

    for seed in range(3):
        z = 1.5 * jax.random.normal(jax.random.key(seed), (8,))
        assert float(E.entropy_hessian_fisher_trace(z)) == pytest.approx(
            float(autodiff(z)), rel=1e-4, abs=1e-6)
    # uniform over K: -(K - 1)/K^2; two answers: -1/4 at gap 0, positive at gap 2
    assert E.entropy_hessian_fisher_trace(np.zeros(8)) == pytest.approx(-7 / 64)
    assert E.entropy_hessian_fisher_trace(np.array([0.0, 0.0])) == pytest.approx(-0.25)
    assert E.entropy_hessian_fisher_trace(np.array([2.0, 0.0])) > 0


def test_onpolicy_entropy_drift_uniform_hand_value():
    # 1/2 (lr^2/G) kappa (-(K - 1)/K^2) for a uniform policy over K = 4, lr 0.2, G = 2
    got = E.onpolicy_entropy_drift(np.zeros(4), 0.2, 2)
    assert got == pytest.approx(0.5 * 0.04 / 2 * 0.5 * (-3 / 16), rel=1e-5)


def test_rl_metric_pass_at_k_equals_the_float64_reference_and_is_0_without_a_hit():
    """toymodels.rl.metrics (float32, inside the jitted RL step) against theory.passk."""
    from toymodels.rl.metrics import pass_at_k_unbiased as in_rl

    for n in (1, 4, 8, 64):
        c = np.arange(n + 1)
        for k in sorted({1, min(2, n), n // 2 or 1, n}):
            got = np.asarray(in_rl(n, c, k))
            np.testing.assert_allclose(got, P.pass_at_k_unbiased(n, c, k), atol=1e-6)
            assert got[0] == 0.0 and got[-1] == 1.0 and np.all((got >= 0) & (got <= 1))


# --------------------------------------------------------------------------- degenerate input
def test_a_one_hot_policy_has_zero_entropy_change_not_nan():
    # logit −inf: the p = 0 answer carries no weight (0·log 0 = 0), so every form gives 0.
    z, dz = np.array([0.0, -np.inf]), np.array([0.0, 1.0])
    assert E.entropy_change_first_order(z, dz) == 0.0
    assert E.predicted_entropy_change_pg(z, np.array([1.0, 0.0]), 0.1) == 0.0
    assert E.predicted_entropy_change_npg(z, np.array([1.0, 0.0]), 0.1) == 0.0
    assert E.entropy_hessian_fisher_trace(z) == 0.0
    # three answers, one impossible: the same values as the two live answers alone
    z3 = np.array([0.3, -np.inf, -0.2])
    assert E.entropy_change_first_order(z3, np.array([1.0, 5.0, -1.0])) == pytest.approx(
        E.entropy_change_first_order(np.array([0.3, -0.2]), np.array([1.0, -1.0])))
    np.testing.assert_array_equal(S.pg_logit_gradient([0, 0, -np.inf], [0, 0, np.inf]), 0.0)


def test_a_nan_measurement_gives_nan_not_an_error():
    # A diverged seed's success rate is NaN: the figure must report a failed claim, not
    # crash after training.
    assert np.isnan(S.at_least_once(np.nan, 3))
    assert np.isnan(S.unsolved_bound([0.2, np.nan], [0.5, 0.5], 4))
    assert np.isnan(R.logit(np.nan)) and np.isnan(R.mixture_accuracy(np.nan))


def test_no_tries_means_no_success():
    assert S.at_least_once(1.0, 0) == 0.0 and S.at_least_once(0.3, 0) == 0.0
    assert S.rl_reach(1.0, 8, 0, 1) == 0.0
    with pytest.raises(ValueError, match="tries"):
        S.at_least_once(0.5, -1)
    with pytest.raises(ValueError, match="probabilities"):
        S.at_least_once(1.5, 3)
    assert str(S.at_least_once(0.3, 0)) == "0.0"  # not -0.0


def test_undefined_inputs_are_refused():
    with pytest.raises(ValueError, match="finite"):
        W.group_advantages([1.0, np.nan])
    assert np.isnan(S.unsolved_bound([1.0, 1.0], [0.0, 0.0], 4))  # 0/0: none can be unsolved
    with pytest.raises(ValueError, match="probabilities"):
        S.unsolved_bound([0.0], [2.0], 4)  # a reach probability of 2
    with pytest.raises(ValueError, match="probabilities"):
        R.star_round(1.5)
    with pytest.raises(ValueError, match="rate"):
        R.steps_to_reach(0.2, 0.8, 0.0)
