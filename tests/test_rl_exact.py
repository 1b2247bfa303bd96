"""Exact small-space objectives, and sampled policy-gradient estimators checked against them.

Bandit: π = softmax(z) over K answers, one-token completions, G answers per "prompt".
For a batch a_1..a_G the loss path of the RL step (objectives.policy_loss, first epoch so
ρ = 1) gives the gradient estimate ĝ = (1/G) Σ_i A_i ∇_z log π(a_i), with
∇_z log π(a) = e_a - π. Which expectation E[ĝ] is, per estimator:

* reinforce (A_i = r_i):         E[r_i (e_a - π)] = ∇J.                        unbiased
* rloo (A_i = r_i - mean_{j≠i}): the baseline is independent of a_i and E[e_a - π] = 0,
                                 so E[ĝ] = ∇J.                                  unbiased
* dr_grpo (A_i = r_i - r̄):       r̄ contains r_i with weight 1/G; the other terms vanish as for
                                 RLOO, so E[ĝ] = (1 - 1/G) ∇J.
* reinforce + batch baseline:    same as dr_grpo with the batch (here one group): (1 - 1/G) ∇J.
* grpo (÷ group std):            no closed form; E[ĝ] is computed exactly by summing over
                                 all K^G answer tuples (bandit_expected_estimate).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toymodels.rl import exact
from toymodels.rl.advantages import compute_advantages
from toymodels.rl.objectives import policy_loss

LN2 = np.log(2.0)
Z = jnp.log(jnp.array([0.5, 0.25, 0.25]))
R = jnp.array([1.0, 0.0, 0.0])


def test_bandit_by_hand():
    # π = [.5, .25, .25], r = [1, 0, 0]: J = 0.5; ∇J = π(r - J) = [.25, -.125, -.125].
    np.testing.assert_allclose(exact.bandit_expected_reward(Z, R), 0.5, rtol=1e-6)
    np.testing.assert_allclose(exact.bandit_policy_gradient(Z, R), [0.25, -0.125, -0.125],
                               rtol=1e-6)
    # The closed form is the autodiff gradient of J.
    np.testing.assert_allclose(jax.grad(exact.bandit_expected_reward)(Z, R),
                               exact.bandit_policy_gradient(Z, R), rtol=1e-5)
    # pass@3 with p = 0.5: 1 - 0.5^3 = 0.875.
    np.testing.assert_allclose(exact.bandit_pass_at_k(Z, R, 3), 0.875, rtol=1e-6)
    # KL to uniform = ln 3 - H(π), H = .5 ln 2 + 2 * .25 ln 4 = 1.5 ln 2.
    np.testing.assert_allclose(exact.bandit_kl(Z, jnp.zeros(3)), np.log(3) - 1.5 * LN2,
                               rtol=1e-5)
    np.testing.assert_allclose(exact.bandit_entropy(Z), 1.5 * LN2, rtol=1e-6)


G = 4
ZB = jnp.array([0.4, -0.3, 0.1])
RB = jnp.array([1.0, 0.0, 0.3])  # a non-binary reward, so GRPO's std varies by tuple
ESTIMATORS = [("reinforce", False), ("reinforce", True), ("rloo", False), ("grpo", False),
              ("dr_grpo", False)]


def estimate(z, answers, r, name, batch_baseline):
    """ĝ for one group: -∇_z of the RL loss (policy_loss) on one-token completions."""
    rewards = r[answers][None, :]
    a = compute_advantages(rewards, name, batch_baseline=batch_baseline)[0]

    def loss(z):
        logits = jnp.broadcast_to(z, (answers.shape[0], 1, z.shape[0]))
        old = jax.lax.stop_gradient(jax.nn.log_softmax(z)[answers])[:, None]
        return policy_loss(logits, answers[:, None], jnp.ones((answers.shape[0], 1), bool),
                           old, a, None, eps_low=0.2, eps_high=0.2, kl_coef=0.0,
                           kl_estimator="k3", entropy_coef=0.0,
                           loss_agg="sequence-mean-token-mean", max_tokens=1)[0]

    return -jax.grad(loss)(z)


@functools.cache
def expected(name, batch_baseline):
    fn = functools.partial(estimate, r=RB, name=name, batch_baseline=batch_baseline)
    return jax.jit(lambda z: exact.bandit_expected_estimate(z, RB, G, fn))(ZB)


def test_enumerated_expectations_match_closed_forms():
    grad_j = exact.bandit_policy_gradient(ZB, RB)
    np.testing.assert_allclose(expected("reinforce", False), grad_j, atol=1e-6)
    np.testing.assert_allclose(expected("rloo", False), grad_j, atol=1e-6)
    np.testing.assert_allclose(expected("dr_grpo", False), (1 - 1 / G) * grad_j, atol=1e-6)
    np.testing.assert_allclose(expected("reinforce", True), (1 - 1 / G) * grad_j, atol=1e-6)
    # GRPO's expectation is not parallel-scaled by a known factor; it only shares the sign
    # pattern here (it is a positive reweighting of per-tuple terms).
    assert np.all(np.sign(expected("grpo", False)) == np.sign(grad_j))


@pytest.mark.parametrize("name, batch_baseline", ESTIMATORS)
def test_sampled_gradient_mean_within_3_standard_errors(name, batch_baseline):
    n_batches = 4000
    keys = jax.random.split(jax.random.PRNGKey(7), n_batches)
    answers = jax.vmap(lambda k: jax.random.categorical(k, ZB, shape=(G,)))(keys)
    fn = functools.partial(estimate, ZB, r=RB, name=name, batch_baseline=batch_baseline)
    grads = np.asarray(jax.jit(jax.vmap(fn))(answers))
    mean = grads.mean(0)
    se = grads.std(0, ddof=1) / np.sqrt(n_batches)
    target = np.asarray(expected(name, batch_baseline))
    assert np.all(np.abs(mean - target) < 3 * se), (mean, target, se)
    if name == "dr_grpo":
        # Power check: the test can tell (1 - 1/G) ∇J from ∇J with this many samples.
        grad_j = np.asarray(exact.bandit_policy_gradient(ZB, RB))
        assert np.any(np.abs(mean - grad_j) > 3 * se)


# --------------------------------------------------------------------------- tiny model
def _tiny_model():
    from toymodels.config import ModelConfig
    from toymodels.model import init
    cfg = ModelConfig(vocab_size=6, max_len=8, n_layers=1, n_heads=2, d_model=16, d_mlp=32,
                      init_scale=0.5)
    return init(cfg, jax.random.PRNGKey(3))


def _reward(tokens):
    # 1 for the answers "3 5" and "5 3" (about 40 % of this model's mass), 0 otherwise.
    a, b = tokens[:, 0], tokens[:, 1]
    return (((a == 3) & (b == 5)) | ((a == 5) & (b == 3))).astype(jnp.float32)


def test_enumeration_counts_and_probabilities_sum_to_one():
    graphdef, params = _tiny_model()
    tokens, mask = exact.enumerate_completions(6, 2)
    assert tokens.shape == (1 + 5 * 6, 2)  # "<eos>" alone, or a non-eos token then any token
    prompts = jnp.array([[2, 3, 4], [0, 5, 2]])
    valid = prompts != 0
    fn = jax.jit(functools.partial(exact.completion_logprob, graphdef))
    for x, v in zip(prompts, valid, strict=True):
        logp = fn(params, x, v, tokens, mask)
        np.testing.assert_allclose(jnp.sum(jnp.exp(logp)), 1.0, rtol=1e-5)


def test_tiny_model_sampled_reinforce_matches_exact_gradient():
    from toymodels.sampler import generate
    graphdef, params = _tiny_model()
    tokens, mask = exact.enumerate_completions(6, 2)
    prompt, valid = jnp.array([[0, 5, 2]]), jnp.array([[False, True, True]])
    r_enum = _reward(tokens)[None]

    def j(p):
        return exact.exact_expected_reward(graphdef, p, prompt, valid, tokens, mask, r_enum)

    j_exact, g_exact = jax.jit(jax.value_and_grad(j))(params)
    n = 4096
    samples = generate(graphdef, params, jax.random.PRNGKey(11), jnp.repeat(prompt, n, 0),
                       jnp.repeat(valid, n, 0), max_new_tokens=2)
    r = _reward(samples.tokens)
    # Monte Carlo reward mean vs the enumerated J (sampler and forward agree).
    assert abs(float(r.mean() - j_exact)) < 3 * float(r.std()) / np.sqrt(n)
    # REINFORCE: ĝ_s = r_s ∇ log P(o_s). Project on u = ∇J/|∇J|: E[ĝ·u] = |∇J|.
    norm = jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(g_exact)))
    u = jax.tree.map(lambda x: x / norm, g_exact)

    def logp(p):
        # log P(o_s) of every sample at once: completion_logprob treats rows independently.
        return exact.completion_logprob(graphdef, p, prompt[0], valid[0], samples.tokens,
                                        samples.mask)

    _, dlogp = jax.jit(lambda p, u: jax.jvp(logp, (p,), (u,)))(params, u)
    proj = np.asarray(r * dlogp)
    se = proj.std(ddof=1) / np.sqrt(n)
    assert abs(proj.mean() - float(norm)) < 3 * se, (proj.mean(), float(norm), se)
