"""One RL step for one seed, as a pure function: rollout, reward, advantages, update, metrics.

    state, metrics = rl_step(state, ref_params, step_index)

``state = {"params", "opt", "key"}``. The step's randomness is ``fold_in(key, step_index)``,
so chunk boundaries and a resume cannot change the numbers. ``make_step`` closes over the
static pieces (graphdef, task, resolved config, optimiser); :mod:`toymodels.rl.train` vmaps it
over seeds and scans it over steps.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from tasks.core import prompt_valid
from toymodels.rl import metrics as M
from toymodels.rl import reflection
from toymodels.rl.advantages import compute_advantages
from toymodels.rl.config import RLConfig
from toymodels.rl.objectives import KL_ESTIMATORS, kl_exact, policy_loss, token_logprobs
from toymodels.rl.rollout import completion_logits, sample_rollout
from toymodels.sampler import generate


class Minibatch(NamedTuple):
    prompts: jax.Array
    prompt_valid: jax.Array
    tokens: jax.Array
    mask: jax.Array
    old_logp: jax.Array
    advantages: jax.Array
    ref_logits: jax.Array


def make_optimizer(config: RLConfig) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), optax.adam(config.lr))


def make_step(graphdef, task, config: RLConfig, constrain=lambda x: x):
    """``rl_step(state, ref_params, i) -> (state, metrics)`` for one seed.

    ``config`` must be resolved (:meth:`RLConfig.resolved`). ``constrain`` is applied to
    every per-completion array (a sharding constraint on the batch axis, or identity).
    """
    c = config
    opt = make_optimizer(c)
    n_rows = c.prompts_per_step * c.group_size
    mb_rows = n_rows // c.minibatches

    def loss_fn(params, mb: Minibatch):
        logits = completion_logits(graphdef, params, mb.prompts, mb.prompt_valid, mb.tokens)
        loss, aux = policy_loss(
            logits, mb.tokens, mb.mask, mb.old_logp, mb.advantages, mb.ref_logits,
            eps_low=c.eps_low, eps_high=c.eps_high, kl_coef=c.kl_coef,
            kl_estimator=c.kl_estimator, entropy_coef=c.entropy_coef, loss_agg=c.loss_agg,
            max_tokens=c.max_tokens)
        m = mb.mask
        stats = {
            "loss": loss,
            "clip_low": jnp.sum(aux["clipped_low"] & m),
            "clip_high": jnp.sum(aux["clipped_high"] & m),
            "tokens": jnp.sum(m),
            "kl_exact": jnp.sum(jnp.where(m, kl_exact(logits, mb.ref_logits), 0.0)),
            "ratio_err": jnp.max(jnp.where(m, jnp.abs(aux["logp"] - mb.old_logp), 0.0)),
        }
        return loss, stats

    def update(carry, rows, data: Minibatch):
        params, opt_state = carry
        mb = jax.tree.map(lambda x: x[rows], data) if c.minibatches > 1 else data
        (_, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, mb)
        updates, opt_state = opt.update(grads, opt_state, params)
        stats["grad_norm"] = optax.tree.norm(grads)
        return (optax.apply_updates(params, updates), opt_state), stats

    def epoch(carry, key, data):
        if c.minibatches > 1:
            order = jax.random.permutation(key, n_rows).reshape(c.minibatches, mb_rows)
        else:
            order = jnp.zeros((1, 0), jnp.int32)  # unused: the minibatch is the whole batch
        return jax.lax.scan(lambda cr, rows: update(cr, rows, data), carry, order)

    def rl_step(state, ref_params, i):
        key = jax.random.fold_in(state["key"], i)
        k_data, k_sample, k_perm = jax.random.split(key, 3)
        batch = task.sample(k_data, c.prompts_per_step, "train")
        ro = sample_rollout(graphdef, state["params"], k_sample, task, batch,
                            group_size=c.group_size, max_new_tokens=c.max_new_tokens,
                            temperature=c.temperature, top_k=c.top_k)
        ro = jax.tree.map(constrain, ro)
        grouped = ro.rewards.reshape(c.prompts_per_step, c.group_size)
        adv = compute_advantages(grouped, c.advantage, scale_rewards=c.scale_rewards,
                                 batch_baseline=c.batch_baseline).reshape(-1)
        ref_logits = constrain(jax.lax.stop_gradient(completion_logits(
            graphdef, ref_params, ro.prompts, ro.prompt_valid, ro.tokens)))
        data = Minibatch(ro.prompts, ro.prompt_valid, ro.tokens, ro.mask, ro.old_logp, adv,
                         ref_logits)
        carry = (state["params"], state["opt"])
        carry, stats = jax.lax.scan(lambda cr, k: epoch(cr, k, data), carry,
                                    jax.random.split(k_perm, c.epochs))
        params, opt_state = carry
        out = _step_metrics(c, ro, grouped, adv, ref_logits, stats)
        return {"params": params, "opt": opt_state, "key": state["key"]}, out

    return rl_step


def _step_metrics(c: RLConfig, ro, grouped, adv, ref_logits, stats) -> dict:
    """Scalars of one step (see docs/metrics.md). ``stats`` are [epochs, minibatches]."""
    mask = ro.mask
    ref_logp = token_logprobs(ref_logits, ro.tokens)
    correct = ro.rewards >= 1.0
    lengths = jnp.sum(mask, axis=1).astype(jnp.float32)
    n_tok = jnp.maximum(jnp.sum(stats["tokens"]), 1)
    first = jax.tree.map(lambda x: x[0], stats)  # the first epoch: the rollout policy's data
    out = {
        "loss": jnp.mean(stats["loss"]),
        "reward_mean": jnp.mean(ro.rewards),
        "reward_std": jnp.std(ro.rewards),
        "frac_zero_std": M.frac_zero_std(grouped),
        "accuracy": jnp.mean(correct),
        "advantage_abs_mean": jnp.mean(jnp.abs(adv)),
        "clip_low_frac": jnp.sum(stats["clip_low"]) / n_tok,
        "clip_high_frac": jnp.sum(stats["clip_high"]) / n_tok,
        # The first minibatch of the first epoch is scored by the rollout policy itself.
        "kl_exact": first["kl_exact"][0] / jnp.maximum(first["tokens"][0], 1),
        "entropy": M.masked_mean(ro.entropy, mask),
        "logp_adv_cov": M.token_logp_advantage_cov(ro.old_logp, adv, mask),
        "length_mean": jnp.mean(lengths),
        "length_correct": M.mean_where(lengths, correct),
        "length_incorrect": M.mean_where(lengths, ~correct),
        "grad_norm": jnp.mean(stats["grad_norm"]),
        "first_ratio_err": first["ratio_err"][0],
    }
    for name, fn in KL_ESTIMATORS.items():
        out[f"kl_{name}"] = M.masked_mean(fn(ro.old_logp, ref_logp), mask)
    for name, value in ro.counters.items():
        out[f"counter_{name}"] = jnp.mean(value)
    if set(reflection.NEEDED) <= set(ro.counters):  # a task with <back> (graph_search)
        out.update({f"reflection_{k}": v
                    for k, v in reflection.step_metrics(ro.counters).items()})
    return out


def make_eval(graphdef, task, config: RLConfig, eval_key):
    """``evaluate(params) -> metrics`` on a fixed held-out set (``eval_n`` prompts of the
    ``eval_split`` drawn once from ``eval_key``): greedy accuracy and unbiased pass@k from
    max(passk_ks) samples per prompt at the training temperature."""
    c = config
    n = max(c.passk_ks)
    batch = task.sample(eval_key, c.eval_n, c.eval_split)
    valid = prompt_valid(batch.prompts, batch.prompt_lens)

    def evaluate(params, key):
        greedy = generate(graphdef, params, key, batch.prompts, valid,
                          max_new_tokens=c.max_new_tokens, greedy=True)
        out = {"eval_accuracy": jnp.mean(task.reward(batch, greedy.tokens) >= 1.0)}
        ro = sample_rollout(graphdef, params, key, task, batch, group_size=n,
                            max_new_tokens=c.max_new_tokens, temperature=c.temperature,
                            top_k=c.top_k)
        n_correct = jnp.sum((ro.rewards >= 1.0).reshape(c.eval_n, n), axis=1)
        for k in c.passk_ks:
            out[f"pass@{k}"] = jnp.mean(M.pass_at_k_unbiased(n, n_correct, k))
        return out

    return evaluate
