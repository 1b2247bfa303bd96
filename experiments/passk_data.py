"""Training and exact measurement for the ``passk-support`` figure (experiments/passk_support.py).

* ``train_base``: next-token training on ``arith/modular_sum`` (direct answer, N = 1) with one
  answer value *excluded* from the data: a problem whose answer is ``excluded`` has its last
  term shifted by one, so it becomes a problem with answer ``excluded + 1``. The base never
  sees the excluded answer as a target, so its probability on that class is what the
  softmax leaves there (small, measured, never exactly zero).
* ``train_rl``: GRPO (``toymodels.rl``) on the task's own distribution, which contains the
  excluded class: RL is free to discover it, if it ever samples it. ``grpo_seeds`` runs the
  library's RL step over vmapped seeds (as ``make_train`` does, bit for bit, at half the
  compile time); the competing-strategies toy (``passk_strategies``) uses it too.
* ``all_problems`` / ``gold_loglik``: every problem of the task (m^T of them) and the exact
  log π(gold answer, <eos> | prompt) by teacher forcing. With N = 1 and completions of
  ``max_target_len`` = 2 tokens the reward is 1 iff the completion is exactly (answer, <eos>),
  so the success probability of problem j is p_j = exp(log π(gold_j)) *exactly*, and pass@k is
  exact (``theory.passk.pass_at_k_exact``): no sampling error on the evaluation side.
* ``support_stats``: the expectations behind the support claims (``theory.support.rl_reach``
  and ``unsolved_bound``; derivation in docs/theory_rl_dynamics.md §4).
* ``grpo_tabular_gain`` / ``decompose_change``: what a per-problem (tabular) GRPO predicts for
  Δ log π(gold) against the base p, and the split of the measured Δ log π(gold) into a common
  shift, a part shared by the RL seeds and RL-seed noise (winner-take-all diagnostics, §4).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from theory import grpo_weights, support

TASK = "arith/modular_sum"
N_HEADS = 2  # both toys' models (model_config)


def task_config(config) -> dict:
    return {"n_terms": config.n_terms, "n_steps": 1, "modulus": config.modulus}


def make_task(config):
    from tasks import make

    return make(TASK, **task_config(config))


def model_config(config, task):
    from toymodels.config import ModelConfig

    return ModelConfig(vocab_size=task.vocab.size, n_layers=1, n_heads=N_HEADS,
                       d_model=config.d_model, d_mlp=2 * config.d_model,
                       max_len=task.prompt_len + task.max_target_len)


def exclude_answer(batch, task, excluded: int):
    """Problems with answer ``excluded`` get their last term shifted by +1 (mod m), hence
    answer ``excluded + 1``: the data then never contains the excluded answer as a target."""
    m, t = task.config.modulus, task.config.n_terms
    hit = (batch.meta["answer"] == excluded).astype(jnp.int32)
    num0 = task.vocab.num(0)
    last = (batch.prompts[:, t - 1] - num0 + hit) % m + num0
    answer = (batch.meta["answer"] + hit) % m
    targets = batch.targets.at[:, 0].set(task.vocab.num(answer).astype(jnp.int32))
    return dataclasses.replace(batch, prompts=batch.prompts.at[:, t - 1].set(last),
                               targets=targets, meta={**batch.meta, "answer": answer})


def base_ntp_config(config, task):
    """The ``NTPConfig`` whose optimizer ``train_base`` uses: 10 warmup steps
    (``ntp_steps − 1`` when ``ntp_steps`` <= 10: a short legal run must not fail inside
    training, and every longer one keeps its numbers)."""
    from toymodels.train import NTPConfig, short_warmup

    return NTPConfig(model=model_config(config, task), task=TASK,
                     task_config=task_config(config), steps=config.ntp_steps,
                     lr=config.ntp_lr, warmup_steps=short_warmup(config.ntp_steps, 10),
                     chunk_size=config.ntp_steps)


def train_base(config, task):
    """One base model (key ``config.seed``): Adam on the filtered data until the running mean
    of the batch accuracy reaches ``config.base_accuracy``. The learning rate warms up for 10
    steps (fewer for a shorter run: ``base_ntp_config``) and decays (cosine) to
    0.1·``ntp_lr`` at ``ntp_steps``, then stays there.
    ``ntp_max_steps`` only guards against a base that never gets there. Stopping there is not
    silent: the final running accuracy is returned and the figure judges "the base reached
    base_accuracy" as a claim (its precondition: a base short of it is not the mid-transition
    base the figure assumes; docs/theory_rl_dynamics.md §4, seed 4440000), so a run at any
    seed still writes all its claims.

    Why stop on accuracy: modular addition is learnt in a sudden, seed-dependent transition
    (pilot: at a fixed 450 steps the base pass@1 was 0.10, 0.63 or 0.80 by seed), and the
    figure needs a base in the middle of it, where per-problem success spreads from ~0 to ~1.
    Returns graphdef, params, the number of steps taken and the final running accuracy.
    """
    from toymodels import model
    from toymodels.train import make_optimizer, ntp_loss

    mc = model_config(config, task)
    ntp = base_ntp_config(config, task)
    opt, _ = make_optimizer(ntp)
    init_key, data_key = jax.random.split(jax.random.key(config.seed))
    graphdef, params = model.init(mc, init_key)

    def step(carry):
        params, state, i, acc = carry
        batch = exclude_answer(task.sample(jax.random.fold_in(data_key, i), ntp.batch_size),
                               task, config.excluded_answer)
        (_, aux), grads = jax.value_and_grad(lambda p: ntp_loss(graphdef, p, batch),
                                             has_aux=True)(params)
        updates, state = opt.update(grads, state, params)
        # running mean over ~20 batches: one batch of 64 is too noisy to stop on
        acc = 0.95 * acc + 0.05 * aux["seq_acc"]
        return optax.apply_updates(params, updates), state, i + 1, acc

    def going(carry):
        return (carry[2] < config.ntp_max_steps) & (carry[3] < config.base_accuracy)

    loop = jax.jit(lambda p: jax.lax.while_loop(going, step, (p, opt.init(p), 0, 0.0)))
    params, _, steps, acc = loop(params)
    return graphdef, params, int(steps), float(acc)


def train_rl(config, graphdef, base):
    """GRPO from the base for the seeds ``seed .. seed + n_seeds - 1`` (vmapped)."""
    from toymodels.rl.config import RLConfig

    task = make_task(config)
    rc = RLConfig(task=TASK, task_config=task_config(config), advantage="grpo",
                  group_size=config.group_size, prompts_per_step=config.prompts_per_step,
                  lr=config.rl_lr, steps=config.rl_steps, chunk_size=config.rl_steps,
                  seed=config.seed, n_seeds=config.n_seeds)
    return grpo_seeds(graphdef, base, task, rc)


def grpo_seeds(graphdef, base, task, rl_config, compiler_options=None):
    """The RL seeds ``seed .. seed + n_seeds - 1`` of ``rl_config`` from ``base``: the library's
    step (``toymodels.rl.step.make_step``, the one ``toymodels.rl.train.make_train`` scans),
    vmapped over seeds and scanned over steps like make_train's, in one compiled program that
    returns only the mean reward. XLA then drops the step's other metrics: half
    make_train's compile time here, and the same numbers bit for bit (checked: final
    params of the quick and full configs at seed 0). ``task`` need not be registered.
    Like make_train, raises ValueError when prompt_len + max_new_tokens > the model's max_len.
    Returns params [seeds, ...] and the reward [seeds, steps]."""
    from toymodels.rl.step import make_optimizer, make_step
    from toymodels.rl.train import check_fits
    from toymodels.train import seed_keys

    rc = rl_config.resolved(task)
    check_fits(task, rc, graphdef, base)
    rl_step, opt = make_step(graphdef, task, rc), make_optimizer(rc)
    states = jax.vmap(lambda k: {"params": base, "opt": opt.init(base), "key": k})(
        seed_keys(rc.seed, rc.n_seeds))

    def body(states, i):
        states, metrics = jax.vmap(rl_step, in_axes=(0, None, None))(states, base, i)
        return states, metrics["reward_mean"]

    lowered = jax.jit(lambda st: jax.lax.scan(body, st, jnp.arange(rc.steps))).lower(states)
    compiled = lowered.compile(compiler_options) if compiler_options else lowered.compile()
    states, reward = compiled(states)
    return states["params"], np.asarray(reward).T  # [seeds, steps]


def all_problems(task):
    """Every problem of the task in lexicographic order of its terms, as a Batch."""
    from tasks.core import EOS, Batch

    c = task.config
    terms = np.array(list(itertools.product(range(c.modulus), repeat=c.n_terms)), np.int32)
    answer = terms.sum(1) % c.modulus
    n = len(terms)
    prompts = np.concatenate([np.asarray(task.vocab.num(terms)),
                              np.full((n, 1), task.vocab.id("="))], 1).astype(np.int32)
    targets = np.stack([np.asarray(task.vocab.num(answer)), np.full(n, EOS)], 1)
    return Batch(prompts=jnp.asarray(prompts), prompt_lens=jnp.full(n, prompts.shape[1]),
                 targets=jnp.asarray(targets, jnp.int32), target_lens=jnp.full(n, 2),
                 meta={"terms": jnp.asarray(terms), "answer": jnp.asarray(answer)})


def gold_loglik(graphdef, params, batch, *, seed_axis: bool = False):
    """log π(gold completion | prompt) per problem by teacher forcing, float64 numpy
    ([problems], or [seeds, problems] for params with a leading seed axis): the sum of
    log π over the gold tokens up to and including <eos> (``target_lens``), a left-padded
    prompt read as its unpadded self (``prompt_lens``)."""
    fn = _gold_loglik_seeds if seed_axis else _gold_loglik
    return np.asarray(fn(graphdef, params, batch), np.float64)


@functools.partial(jax.jit, static_argnums=0)
def _gold_loglik(graphdef, params, batch):
    from tasks.core import prompt_valid
    from toymodels.rl.objectives import token_logprobs
    from toymodels.rl.rollout import completion_logits

    # Batch layout: prompts left-padded to prompt_lens, the gold completion's target_lens
    # tokens (up to its <eos>) then <pad>, which is no part of it (all_problems has neither)
    valid = prompt_valid(batch.prompts, batch.prompt_lens)
    gold = jnp.arange(batch.targets.shape[1])[None] < batch.target_lens[:, None]
    logits = completion_logits(graphdef, params, batch.prompts, valid, batch.targets)
    return jnp.where(gold, token_logprobs(logits, batch.targets), 0.0).sum(1)


@functools.partial(jax.jit, static_argnums=0)
def _gold_loglik_seeds(graphdef, params, batch):
    return jax.vmap(lambda p: _gold_loglik(graphdef, p, batch))(params)


# ---------------------------------------------------------------------------- statistics
def support_stats(p_base, p_rl, n: int, reach, reach_scale: float = 1.0) -> dict:
    """Expected fractions (over the sampling of n base and n RL samples) behind the support
    claims; ``p_rl`` [seeds, problems]. Weights w_j = P(c_base = 0) = (1 − p_j)^n.

    F_U = Σ w_j s_j / Σ w_j, s_j = 1 − (1 − q_j)^n: base-unsolved problems RL solves;
    F_S = Σ (1 − w_j) s_j / Σ (1 − w_j): the same for problems the base solves at least once;
    bound = ``theory.support.unsolved_bound`` with ρ_j = reach_scale · reach_j.
    """
    w = np.exp(support.log_all_miss(p_base, n))
    s_rl = support.at_least_once(p_rl, n)
    rho = np.clip(reach_scale * np.asarray(reach), 0.0, 1.0)
    bound = support.unsolved_bound(p_base, rho, n)
    return {"F_U": (s_rl * w).sum(-1) / w.sum(), "F_S": (s_rl * (1 - w)).sum(-1) / (1 - w).sum(),
            "bound": float(bound), "n_unsolved": float(w.sum()),
            "base_luck": float(np.sum(w * support.at_least_once(p_base, n)) / w.sum())}


def rank_correlation(x, y):
    """Spearman's ρ over the last axis: the Pearson correlation of the ranks, tied values
    sharing their average rank (the textbook definition). NaN where x or a row of y holds a
    NaN (a failed seed must not get a rank), or is constant. x [problems], y [..., problems]."""
    from scipy.stats import rankdata  # average ranks; a row with a NaN ranks as all NaN

    rx, ry = (rankdata(np.asarray(v, np.float64), axis=-1, nan_policy="propagate")
              for v in (x, y))
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):  # constant ranks: 0/0 = NaN
        return (rx * ry).sum(-1) / np.sqrt((rx ** 2).sum(-1) * (ry ** 2).sum(-1))


def grpo_tabular_gain(p, group_size: int):
    """Expected first-step Δ log p of a problem with success p under GRPO (population-std
    advantages, on-policy) if each problem had its own logits z (no shared parameters), in
    units of η (1 + κ) · P(problem drawn) (ours; docs/theory_rl_dynamics.md §4):

        f(p) = G (1 − p) E_{c ~ Bin(G, p)} sqrt(q (1 − q)),   q = c / G.

    Given c correct, E[Σ_i Â_i ∇_z log π(y_i)] = G sqrt(q(1−q)) / (1 − p) · (e_gold − π), and
    Δ log p = η (e_gold − π) · that, with ‖e_gold − π‖² = (1 − p)² (1 + κ), κ ∈ [1/(m−1), 1].
    Zero at p = 0 (never sampled) and at p = 1 (no mixed group); peak near p = 0.29 for G = 8.
    Hand value: p = 1/2, G = 2: only c = 1 (prob 1/2) is mixed, sqrt(1/4) = 1/2, so f = 1/4.
    """
    p = np.asarray(p, np.float64)
    # G E[sqrt(q(1−q))] is E[c·Â_+] of theory.grpo_weights (population std, no epsilon).
    return (1 - p) * grpo_weights.correct_advantage_sum(p, group_size, "grpo")


def decompose_change(d):
    """Split Δ [seeds, problems] into d = common_s + systematic_j + noise_sj: the common shift
    (mean over problems, per seed), the problem-specific part shared by the RL seeds (seed mean
    of d − common) and the rest (RL-seed noise). Returns the parts and their variances
    (population variances over all entries; they add up to the variance of d).

    The seed mean still carries noise: with S seeds and per-entry noise variance σ²,
    E var_systematic = var(a) + σ²/S and E var_noise = σ²(S − 1)/S, so
    var_systematic_debiased = var_systematic − var_noise/(S − 1) estimates var(a) itself."""
    d = np.asarray(d, np.float64)
    common = d.mean(-1, keepdims=True)
    systematic = (d - common).mean(0)
    noise = d - common - systematic
    return {"common": common[:, 0], "systematic": systematic,
            "var_common": float(np.var(np.broadcast_to(common, d.shape))),
            "var_systematic": float(np.var(systematic)), "var_noise": float(np.var(noise)),
            "var_systematic_debiased": float(np.var(systematic) - np.var(noise) / (len(d) - 1))}
