"""Figure 2, grpo-length-bias (Liu et al. 2025, "Understanding R1-Zero-Like Training",
arXiv 2503.20783): GRPO's 1/|o| normalisation lengthens wrong answers; Dr.GRPO does not.

Task. ``n_prompts`` problems, each with a correct answer a*_p among ``n_answers``. A completion
is ``<fill>^k <ans> a <eos>`` with 0 <= k <= F = ``max_fill`` filler tokens (|o| = k + 3);
reward 1{a = a*_p}: length carries no reward. Policy (autoregressive, tabular): at each
position t <= k a length decision, <fill> logit s[p, t] against <ans> at 0 (<fill> banned at
t = F); then the answer from logits θ[p, k, :] (the answer after k fillers has its own
logits); then <eos>. Base: θ ~ N(0, 1) plus a N(``boost``, 1) bonus on the correct answer (so
success rates spread); s[p, t] = log(F − t), so P(<fill> at t) = (F − t)/(F − t + 1) and the
base length is uniform on 3 .. F + 3: every position's answer logits are visited equally
often, and only the loss weighting can make correctness depend on length. (If correctness
were independent of length, E[Σ_i Â_i c(|o_i|) ∇ log π(length_i)] = 0 for any c: the length
bias acts only through a correlation of length and correctness; docs/theory_rl_dynamics.md.)

RL. G completions per problem, rewards, advantages from the engine
(``toymodels.rl.advantages.compute_advantages``), and the loss from the engine's clipped
surrogate and aggregation (``toymodels.rl.objectives``), one on-policy epoch (ratio 1):

* GRPO: Â_i = (r_i − mean r)/(std r + 1e-6), sequence-mean-token-mean,
  per-token weight Â_i/(B·|o_i|)  (Liu et al. Eq. 3; B = P·G rows);
* Dr.GRPO: Â_i = r_i − mean r, sequence-mean-token-sum-norm, per-token weight
  Â_i/(B·MAX_TOKENS), MAX_TOKENS = max_fill + 3 (Liu et al. §3.2, Listing 1).

Update: plain SGD on the logits with step ``lr``·B (GRPO) and ``lr``·B·MAX_TOKENS (Dr.GRPO,
its constant normaliser undone). Not Adam: in a tabular model Adam's per-parameter scaling
would cancel the constant factor 1/|o| that every answer logit at one position receives.

Predictions (derivations in docs/theory_rl_dynamics.md §1, §2):

* Under GRPO a wrong answer after k fillers is pushed down with total weight |Â|/B
  spread over k + 3 tokens, so its answer token gets only |Â|/(B(k+3)): long wrong answers
  are unlearned more slowly, correctness becomes correlated with shortness and the mean
  length of *incorrect* completions grows. Under
  Dr.GRPO every answer token gets |Â|/(B·MAX_TOKENS) whatever k: no such drift.
* Per-prompt gradient weight W = Σ_i Σ_t |∂loss/∂log π(o_{i,t})| of a group with success
  rate q (exact at ratio 1): GRPO W = (2/P) q(1−q)/(sqrt(q(1−q)) + 1e-6) ≈ (2/P)
  sqrt(q(1−q)); Dr.GRPO W = q(1−q)(L̄_correct + L̄_wrong)/(P·MAX_TOKENS), computed from
  ``theory.grpo_weights.sequence_weight`` per group and compared with the weight measured by
  autodiff through the engine's loss.

Claims (tolerances fixed here, before measuring; seed aggregates, 95 % t-intervals):

* GRPO: Δ mean incorrect length (last ``window`` steps − first ``window``) > 0 (CI above 0);
* Dr.GRPO minus GRPO, paired: the same Δ is smaller (CI below 0);
* Dr.GRPO: Δ mean incorrect length <= 0.25 tokens (does not grow; 0.25 = 1/24 of the
  3..9 token range; one-sided since the pilot at seeds 0-4, where it fell by 0.3 tokens);
* accuracy about equal: |final accuracy GRPO − Dr.GRPO| <= 0.05;
* the measured per-prompt weight equals the derived one: max relative error over all
  groups <= 1e-4 (float32 arithmetic on O(1) numbers), for each method.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import claims as C
from experiments import harness
from theory import grpo_weights as W
from toymodels.rl.advantages import compute_advantages
from toymodels.rl.objectives import aggregate, clipped_surrogate, policy_loss

NAME = "grpo-length-bias"
PAPER = "Liu et al. 2025, arXiv 2503.20783"
DESCRIPTION = ("GRPO vs Dr.GRPO with filler tokens: wrong answers lengthen under GRPO only; "
               "per-prompt gradient weight against the group success rate")

METHODS = {"grpo": ("grpo", "sequence-mean-token-mean"),
           "dr_grpo": ("dr_grpo", "sequence-mean-token-sum-norm")}
PREDICTIONS = ("grpo_w_pred", "dr_grpo_w_pred")
PAD, EOS, FILL, ANS = 0, 1, 2, 3
LEN_TOL, ACC_TOL, W_RTOL = 0.25, 0.05, 1e-4


@dataclasses.dataclass(frozen=True)
class Config:
    seed: int = 0
    n_seeds: int = 5
    n_prompts: int = 64
    n_answers: int = 8
    max_fill: int = 6
    boost: float = 0.5  # mean bonus of the correct answer's logit (base accuracy ~ 0.25)
    group_size: int = 8
    steps: int = 150
    lr: float = 0.1  # final accuracy ~ 0.85: enough incorrect completions left to measure
    window: int = 15  # steps averaged at the start and the end

    def __post_init__(self):
        for f in ("n_seeds", "n_prompts", "n_answers", "max_fill", "group_size", "steps",
                  "window"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) < 1:
                raise ValueError(f"{f} must be a positive integer, got {getattr(self, f)!r}")
        if self.n_seeds < 2 or self.group_size < 2 or self.n_answers < 2:
            raise ValueError("need n_seeds >= 2, group_size >= 2 and n_answers >= 2")
        if 2 * self.window > self.steps or self.lr <= 0:
            raise ValueError("need 2 * window <= steps and lr > 0")


def quick_config() -> Config:
    return Config(n_prompts=48, steps=80, window=10)


# ------------------------------------------------------------------------------ the policy
def _logits(params, prompt, tau, cfg: Config):
    """Logits [B, L, V] of the rows' completions ``<fill>^τ <ans> a <eos>``: at t <= τ the
    length decision (<fill> logit s[p, t] against <ans> at 0; <fill> banned at t = F), at
    t = τ + 1 the answer logits θ[p, τ], then <eos> forced. V = 4 + n_answers."""
    b, big, f, k = prompt.shape[0], 1e9, cfg.max_fill, cfg.n_answers
    t = jnp.arange(f + 3)[None, :]
    s = jnp.concatenate([params["fill"][prompt], jnp.zeros((b, 2))], axis=1)
    s = jnp.where(t == f, -big, s)
    decide = jnp.full((b, f + 3, 4 + k), -big)
    decide = decide.at[..., FILL].set(s).at[..., ANS].set(0.0)
    answer = jnp.full((b, 4 + k), -big).at[:, 4:].set(
        jnp.take_along_axis(params["ans"][prompt], tau[:, None, None], axis=1)[:, 0])
    eos = jnp.full((4 + k,), -big).at[EOS].set(0.0)
    out = jnp.where((t <= tau[:, None])[..., None], decide, eos)
    return jnp.where((t == tau[:, None] + 1)[..., None], answer[:, None, :], out)


def _sample(key, params, prompt, cfg: Config):
    """Completions: per position an independent stop draw (the first stop is τ, the same law
    as drawing in order), then the answer from θ[p, τ]."""
    k_len, k_ans = jax.random.split(key)
    f = cfg.max_fill
    fill = jax.random.bernoulli(k_len, jax.nn.sigmoid(params["fill"][prompt]))
    fill = fill & (jnp.arange(f + 1)[None, :] < f)
    tau = jnp.argmin(fill, axis=-1)  # the first position that does not fill
    logits = jnp.take_along_axis(params["ans"][prompt], tau[:, None, None], axis=1)[:, 0]
    answer = jax.random.categorical(k_ans, logits)
    t = jnp.arange(f + 3)[None, :]
    tokens = jnp.where(t < tau[:, None], FILL, PAD)
    tokens = jnp.where(t == tau[:, None], ANS, tokens)
    tokens = jnp.where(t == tau[:, None] + 1, 4 + answer[:, None], tokens)
    tokens = jnp.where(t == tau[:, None] + 2, EOS, tokens).astype(jnp.int32)
    return tokens, tokens != PAD, tau, answer


def _one_seed(key, cfg: Config, method: str):
    estimator, agg = METHODS[method]
    p, g, k, f = cfg.n_prompts, cfg.group_size, cfg.n_answers, cfg.max_fill
    max_tokens, rows = f + 3, p * g
    k_init, k_ans, k_run = jax.random.split(key, 3)
    noise = jax.random.normal(k_init, (2, p, f + 1, k))
    correct = jax.random.randint(k_ans, (p,), 0, k)
    bonus = (cfg.boost + noise[1, :, :1, :1]) * jax.nn.one_hot(correct, k)[:, None, :]
    # Hazard log(F − t): P(<fill> at t) = (F − t)/(F − t + 1), a uniform base length.
    hazard = jnp.log(jnp.maximum(f - jnp.arange(f + 1), 1.0))
    params0 = {"fill": jnp.broadcast_to(hazard, (p, f + 1)), "ans": noise[0] + bonus}
    prompt = jnp.repeat(jnp.arange(p), g)
    lr = cfg.lr * rows * (max_tokens if method == "dr_grpo" else 1)

    def step(params, i):
        tokens, mask, tau, answer = _sample(jax.random.fold_in(k_run, i), params, prompt, cfg)
        reward = (answer == correct[prompt]).astype(jnp.float32)
        adv = compute_advantages(reward.reshape(p, g), estimator).reshape(-1)
        logits = _logits(params, prompt, tau, cfg)
        old = jax.lax.stop_gradient(jnp.take_along_axis(
            jax.nn.log_softmax(logits), tokens[..., None], axis=-1)[..., 0])

        def loss_of_logp(logp):  # the engine's surrogate and aggregation, as a function of logp
            return aggregate(clipped_surrogate(logp, old, adv[:, None], 0.2, 0.2)[0], mask,
                             agg, max_tokens)

        w = jnp.where(mask, jnp.abs(jax.grad(loss_of_logp)(old)), 0.0)
        w_meas = w.sum(-1).reshape(p, g).sum(-1)

        def loss(prm):
            return policy_loss(_logits(prm, prompt, tau, cfg), tokens, mask, old, adv, None,
                               eps_low=0.2, eps_high=0.2, kl_coef=0.0, kl_estimator="k3",
                               entropy_coef=0.0, loss_agg=agg, max_tokens=max_tokens)[0]

        length = mask.sum(-1).astype(jnp.float32)
        ok = reward > 0
        mean_where = lambda x, m: jnp.where(m.any(), jnp.sum(jnp.where(m, x, 0)) / jnp.maximum(
            m.sum(), 1), jnp.nan)
        out = {"accuracy": reward.mean(), "len_correct": mean_where(length, ok),
               "len_incorrect": mean_where(length, ~ok), "len_mean": length.mean(),
               "w_meas": w_meas, "q": reward.reshape(p, g).mean(-1),
               "rewards": reward.reshape(p, g), "lengths": length.reshape(p, g)}
        grads = jax.grad(loss)(params)
        return jax.tree.map(lambda x, d: x - lr * d, params, grads), out

    return jax.lax.scan(step, params0, jnp.arange(cfg.steps))[1]


@functools.partial(jax.jit, static_argnums=(1, 2))
def _simulate(keys, cfg: Config, method: str):
    return jax.vmap(lambda k: _one_seed(k, cfg, method))(keys)


def predicted_weight(rewards, lengths, method: str, n_prompts: int, max_tokens: int):
    """Derived per-prompt weight Σ_i |sequence weight_i| / P from ``theory.grpo_weights``
    (Liu et al. 2025, arXiv 2503.20783, Eq. 3 and §3.2): the theory's 1/G per group times
    G/B = 1/P for the engine's batch of B = P·G rows. rewards, lengths: [..., G]."""
    adv = W.group_advantages(rewards, method, ddof=0, eps=1e-6)
    seq = W.sequence_weight(adv, lengths, method, max_tokens=max_tokens)
    return np.abs(seq).sum(-1) / n_prompts


def run(config: Config, run_dir: Path) -> dict:
    keys = jax.random.split(jax.random.key(config.seed), config.n_seeds)
    cfg = dataclasses.replace(config, seed=0)
    result = {}
    for method in METHODS:
        out = {k: np.asarray(v) for k, v in _simulate(keys, cfg, method).items()}
        for k in ("accuracy", "len_correct", "len_incorrect", "len_mean"):
            result[f"{method}_{k}"] = out[k]  # [seeds, steps]
        result[f"{method}_q"], result[f"{method}_w_meas"] = out["q"], out["w_meas"]
        result[f"{method}_w_pred"] = predicted_weight(
            out["rewards"].astype(np.float64), out["lengths"], method, config.n_prompts,
            config.max_fill + 3)
    return result


# --------------------------------------------------------------------------------- claims
def _delta(x, window):
    """Per seed: mean over the last ``window`` steps − mean over the first ``window``."""
    return np.nanmean(x[:, -window:], axis=1) - np.nanmean(x[:, :window], axis=1)


def _note(agg):
    return f"seed mean {agg.mean:.4f}, 95% CI [{agg.lo:.4f}, {agg.hi:.4f}], {agg.n} seeds"


def claims(result: dict, config: Config) -> list[C.Claim]:
    w = config.window
    d_grpo = _delta(result["grpo_len_incorrect"], w)
    d_dr = _delta(result["dr_grpo_len_incorrect"], w)
    g, diff = harness.seed_aggregate(d_grpo), harness.seed_aggregate(d_dr - d_grpo)
    dr = harness.seed_aggregate(d_dr)
    acc = harness.seed_aggregate(result["grpo_accuracy"][:, -w:].mean(1)
                                 - result["dr_grpo_accuracy"][:, -w:].mean(1))
    out = [
        C.at_least("GRPO: incorrect length change (CI low end)", 0.0, g.lo, _note(g)),
        C.at_most("Dr.GRPO minus GRPO: incorrect length change (CI high end)", 0.0, diff.hi,
                  f"paired by seed; {_note(diff)}"),
        C.at_most("Dr.GRPO: incorrect length change (does not grow)", LEN_TOL, dr.mean,
                  f"one-sided (the issue's 'not under Dr.GRPO'; two-sided before the pilot, "
                  f"where it fell by 0.3); {_note(dr)}"),
        C.within("final accuracy GRPO - Dr.GRPO", 0.0, acc.mean, ACC_TOL, _note(acc)),
    ]
    for m, label in (("grpo", "GRPO"), ("dr_grpo", "Dr.GRPO")):
        meas, pred = result[f"{m}_w_meas"], result[f"{m}_w_pred"]
        err = float(np.max(np.abs(meas - pred)) / np.max(np.abs(pred)))
        out.append(C.at_most(f"{label}: per-prompt weight, max rel. error vs derived", W_RTOL,
                             err, f"all {meas.size} groups of all steps and seeds"))
    return out


# ----------------------------------------------------------------------------------- plot
def plot(result: dict, config: Config, run_dir: Path) -> None:
    fig, axes = harness.new_figure(3)
    steps = np.arange(config.steps)
    for m, label, color in (("grpo", "GRPO", "tab:red"), ("dr_grpo", "Dr.GRPO", "tab:blue")):
        harness.plot_mean_ci(axes[0], steps, _fill_nan(result[f"{m}_len_incorrect"]),
                             label=f"{label} incorrect", color=color, marker="")
        harness.plot_mean_ci(axes[0], steps, _fill_nan(result[f"{m}_len_correct"]),
                             label=f"{label} correct", color=color, marker="")
        axes[0].lines[-1].set_linestyle("--")
        harness.plot_mean_ci(axes[1], steps, result[f"{m}_accuracy"], label=label,
                             color=color, marker="")
        q, meas = result[f"{m}_q"].ravel(), result[f"{m}_w_meas"].ravel() * config.n_prompts
        bins = np.unique(q)
        axes[2].scatter(bins, [meas[q == b].mean() for b in bins], color=color, s=14,
                        label=f"{label} measured (bin means)")
    qs = np.linspace(0.0, 1.0, 101)
    axes[2].plot(qs, 2 * np.sqrt(qs * (1 - qs)), "r-", lw=0.8, label="GRPO 2 sqrt(q(1-q))")
    lbar = np.nanmean(result["dr_grpo_len_incorrect"][:, 0])
    axes[2].plot(qs, 2 * qs * (1 - qs) * lbar / (config.max_fill + 3), "b-", lw=0.8,
                 label="Dr.GRPO 2q(1-q) L/MAX (L at step 0)")
    axes[0].set(xlabel="RL step", ylabel="mean completion length")
    axes[1].set(xlabel="RL step", ylabel="training accuracy")
    axes[2].set(xlabel="group success rate q", ylabel="P x per-prompt sum |weight|")
    for ax in axes:
        ax.legend(fontsize=6)
    harness.save_figure(fig, run_dir)


def _fill_nan(x):
    """Steps with no incorrect (or correct) completion are NaN; carry the last value."""
    x = np.array(x, dtype=np.float64)
    for row in x:
        for i in range(1, row.size):
            if np.isnan(row[i]):
                row[i] = row[i - 1]
    return x
