"""Figure 2, grpo-length-bias (Liu et al. 2025, "Understanding R1-Zero-Like Training",
arXiv 2503.20783): GRPO's 1/|o| normalisation lengthens wrong answers and shortens right ones;
under Dr.GRPO the expected drift is zero (measured: within 0.25 tokens, the Adam drift below).

Task. ``n_prompts`` problems, each with a correct answer a*_p among ``n_answers``. A completion
is ``d <fill>^k <ans> a <eos>``, 0 <= k <= F = ``max_fill`` (|o| = k + 4): first a committed
draft d (a first reasoning step that fixes the answer), then k filler tokens, then the answer a,
which copies the draft (forced: a = d). Reward 1{a = a*_p}: length carries no reward and the
fillers precede the answer. Policy (autoregressive, tabular): draft logits δ[p, :]; at filler
position t <= k a length decision, <fill> logit s[p, d, t] against <ans> at 0 (<fill> banned
at t = F), which *sees the draft* as a transformer's would (the draft is in its context); the
answer and <eos> are forced. Base: δ ~ N(0, 1) plus a N(``boost``, 1) bonus on the correct
answer; s[p, d, t] = log(F − t), so the base length is uniform on 4 .. F + 4 for every draft.

Why the draft. If correctness were independent of length, E[Σ_i Â_i c(|o_i|) ∇ log π(length_i)]
= 0 for any weighting c: the length bias moves lengths only through a correlation of length
and correctness (docs/theory_rl_dynamics.md §1). Here the length decisions condition on the
draft, which decides the reward, so the bias acts on them directly. Forcing a = d (instead of
learnable answer logits per (p, d)) keeps one path to correctness; a learnable read-out could
not see the length either, so it would not change the length analysis, only add parameters.

RL. G completions per problem, rewards, advantages from the engine
(``toymodels.rl.advantages.compute_advantages``), and the loss from the engine's clipped
surrogate and aggregation (``toymodels.rl.objectives``), one on-policy epoch (ratio 1):

* GRPO: Â_i = (r_i − mean r)/(std r + 1e-6), sequence-mean-token-mean,
  per-token weight Â_i/(B·|o_i|)  (Liu et al. Eq. 3; B = P·G rows);
* Dr.GRPO: Â_i = r_i − mean r, sequence-mean-token-sum-norm, per-token weight
  Â_i/(B·MAX_TOKENS), MAX_TOKENS = max_fill + 4 (Liu et al. §3.2, Listing 1).

Update: Adam (optax, default betas) with the same ``lr`` for both methods, as Liu et al. train
with Adam. The length bias is a *sign* effect on the stop logits given the draft, which
survives per-parameter scaling; Adam removes the magnitude differences (std scaling, 1/|o|
against 1/MAX) that under plain SGD amount to different step sizes, so equal accuracy is a
fair comparison at matched step size.
Adam's price: it is not linear in the gradient, and on the skewed zero-mean score of a stop
logit it drifts, towards shorter wrong and longer right completions (measured under Dr.GRPO,
docs/theory_rl_dynamics.md §1); the GRPO bias acts on top of it.

Predictions (derivations in docs/theory_rl_dynamics.md §1, §2):

* Expected update of the stop/continue logits (exact, any G; ours): given the drafts, Â is a
  function of the drafts and the lengths are independent draws, so
  E[−∂loss/∂s[p, d, t]] = (1/B)·A_d·E_k[c(|o|) ∂ log π(k | d)/∂s_t], where A_d = E[Σ_{i: d_i = d}
  Â_i] (> 0 for the correct draft, < 0 for a wrong one:
  ``theory.grpo_weights.correct_advantage_sum``) and the second factor is
  ``theory.grpo_weights.stop_chain_length_score``: < 0 for c = 1/|o| (GRPO), = 0 for
  c = 1/MAX (Dr.GRPO). So under GRPO wrong drafts' filler logits rise (wrong completions
  lengthen) and the correct draft's fall (correct completions shorten); under Dr.GRPO the
  length logits take zero-mean steps only.
* Per-prompt gradient weight W = Σ_i Σ_t |∂loss/∂log π(o_{i,t})| of a group with success
  rate q (exact at ratio 1): GRPO W = (2/P) q(1−q)/(sqrt(q(1−q)) + 1e-6) ≈ (2/P)
  sqrt(q(1−q)); Dr.GRPO W = q(1−q)(L̄_correct + L̄_wrong)/(P·MAX_TOKENS), computed from
  ``theory.grpo_weights.sequence_weight`` per group and compared with the weight measured by
  autodiff through the engine's loss.

Claims (tolerances fixed here, before measuring this design; seed aggregates of the change
Δ = mean over the last ``window`` steps − mean over the first ``window``, 95 % t-intervals):

* GRPO: Δ mean incorrect length > 0 (CI above 0);
* Dr.GRPO minus GRPO, paired: Δ mean incorrect length is smaller (CI below 0);
* Dr.GRPO: |Δ mean incorrect length| <= 0.25 tokens (1/24 of the 4..10 token range; the
  expected SGD drift is exactly 0, Adam turns zero-mean noise into lr-sized steps);
* GRPO: Δ mean correct length < 0 (CI below 0);
* Dr.GRPO: |Δ mean correct length| <= 0.25 tokens;
* accuracy about equal: |final accuracy GRPO − Dr.GRPO| <= 0.05 (seed mean of the paired
  difference of the last-``window`` accuracies);
* the measured per-prompt weight equals the derived one: max |error| / max |weight| over all
  groups <= 1e-4 (float32 arithmetic on O(1) numbers), for each method.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import claims as C
from experiments import harness
from tasks.core import check_finite, check_ints, check_numbers, check_seed
from theory import grpo_weights as W
from toymodels.rl.advantages import compute_advantages
from toymodels.rl.objectives import aggregate, clipped_surrogate, policy_loss

NAME = "grpo-length-bias"
PAPER = "Liu et al. 2025, arXiv 2503.20783"
DESCRIPTION = ("GRPO vs Dr.GRPO with a committed draft and filler tokens: wrong answers lengthen "
               "and right ones shorten under GRPO only; per-prompt gradient weight against q")

METHODS = {"grpo": ("grpo", "sequence-mean-token-mean"),
           "dr_grpo": ("dr_grpo", "sequence-mean-token-sum-norm")}
PREDICTIONS = ("grpo_w_pred", "dr_grpo_w_pred")
PAD, EOS, FILL, ANS, FIRST_ANSWER = 0, 1, 2, 3, 4
N_FIXED = 4  # draft, <ans>, answer, <eos>: |o| = k + N_FIXED
BIG = 1e9
LEN_TOL, ACC_TOL, W_RTOL = 0.25, 0.05, 1e-4


@dataclasses.dataclass(frozen=True)
class Config:
    seed: int = 0
    n_seeds: int = 10  # the quick mode runs 5
    n_prompts: int = 64
    n_answers: int = 8
    max_fill: int = 6
    boost: float = 0.5  # mean bonus of the correct draft's logit (base accuracy ~ 0.25)
    group_size: int = 8
    steps: int = 200
    # Adam. Chosen from the accuracy alone (seeds 0-4, before the length claims were looked
    # at): final accuracy ~ 0.82, so incorrect completions are left to measure.
    lr: float = 0.015
    window: int = 20  # steps averaged at the start and the end

    def __post_init__(self):
        check_seed(NAME, "seed", self.seed)
        check_ints(NAME, self, ("n_seeds", "n_prompts", "n_answers", "max_fill", "group_size",
                                "steps", "window"))
        for f in ("n_seeds", "group_size", "n_answers"):
            if getattr(self, f) < 2:
                raise ValueError(f"{f} must be >= 2, got {getattr(self, f)}")
        if 2 * self.window > self.steps:
            raise ValueError(f"window={self.window} needs 2 * window <= steps={self.steps}")
        check_numbers(NAME, self, ("lr",), positive=True)
        check_finite(NAME, "boost", self.boost)


def quick_config() -> Config:
    # The full setting with 5 seeds: the run is compile-bound (~1 s of simulation), and a
    # smaller pilot quick mode (48 prompts, 100 steps at lr 0.03) lacked the power for the
    # GRPO incorrect-length claim (docs/theory_rl_dynamics.md §1).
    return Config(n_seeds=5)


def max_tokens(cfg: Config) -> int:
    return cfg.max_fill + N_FIXED


# ------------------------------------------------------------------------------ the policy
def _logits(params, prompt, draft, tau, cfg: Config):
    """Logits [B, L, V] of the rows' completions ``d <fill>^τ <ans> d <eos>``: at t = 0 the
    draft logits δ[p]; at t = 1 + j, j <= τ, the length decision (<fill> logit s[p, d, j]
    against <ans> at 0, <fill> banned at j = F); at t = τ + 2 the answer, forced to copy the
    draft; then <eos> forced. V = 4 + n_answers."""
    b, k = prompt.shape[0], cfg.n_answers
    v, t = FIRST_ANSWER + k, jnp.arange(max_tokens(cfg))[None, :]
    s = params["fill"][prompt, draft]  # [B, F]
    s = jnp.concatenate([jnp.zeros((b, 1)), s, jnp.full((b, 3), -BIG)], axis=1)  # by t
    decide = jnp.full((b, max_tokens(cfg), v), -BIG)
    decide = decide.at[..., FILL].set(s).at[..., ANS].set(0.0)
    first = jnp.full((b, v), -BIG).at[:, FIRST_ANSWER:].set(params["draft"][prompt])
    copy = jnp.where(jax.nn.one_hot(FIRST_ANSWER + draft, v) > 0, 0.0, -BIG)
    eos = jnp.full((v,), -BIG).at[EOS].set(0.0)
    out = jnp.where((t <= tau[:, None] + 1)[..., None], decide, eos)
    out = jnp.where((t == tau[:, None] + 2)[..., None], copy[:, None, :], out)
    return jnp.where((t == 0)[..., None], first[:, None, :], out)


def _sample(key, params, prompt, cfg: Config):
    """Completions: the draft, then per filler position an independent continue draw (the
    first stop is τ: the same law as drawing in order)."""
    k_draft, k_len = jax.random.split(key)
    draft = jax.random.categorical(k_draft, params["draft"][prompt])
    fill = jax.random.bernoulli(k_len, jax.nn.sigmoid(params["fill"][prompt, draft]))
    tau = jnp.argmin(jnp.concatenate([fill, jnp.zeros_like(fill[:, :1])], axis=1), axis=-1)
    t = jnp.arange(max_tokens(cfg))[None, :]
    tau_ = tau[:, None]
    tokens = jnp.where(t <= tau_, FILL, PAD)
    tokens = jnp.where(t == 0, FIRST_ANSWER + draft[:, None], tokens)
    tokens = jnp.where(t == tau_ + 1, ANS, tokens)
    tokens = jnp.where(t == tau_ + 2, FIRST_ANSWER + draft[:, None], tokens)
    tokens = jnp.where(t == tau_ + 3, EOS, tokens).astype(jnp.int32)
    return tokens, tokens != PAD, draft, tau


def init_params(key, cfg: Config):
    """Base policy and correct answers of one seed (module docstring)."""
    p, k, f = cfg.n_prompts, cfg.n_answers, cfg.max_fill
    k_noise, k_bonus, k_ans = jax.random.split(key, 3)
    correct = jax.random.randint(k_ans, (p,), 0, k)
    bonus = (cfg.boost + jax.random.normal(k_bonus, (p, 1))) * jax.nn.one_hot(correct, k)
    # Hazard log(F − t): P(<fill> at t) = (F − t)/(F − t + 1), a uniform base length.
    hazard = jnp.log(f - jnp.arange(f, dtype=jnp.float32))
    return {"draft": jax.random.normal(k_noise, (p, k)) + bonus,
            "fill": jnp.broadcast_to(hazard, (p, k, f))}, correct


def rollout_gradient(key, params, correct, cfg: Config, method: str):
    """One on-policy batch: the engine's loss gradient w.r.t. the tabular params and the
    step's metrics (per-prompt weights measured by autodiff w.r.t. log π)."""
    estimator, agg = METHODS[method]
    p, g = cfg.n_prompts, cfg.group_size
    prompt = jnp.repeat(jnp.arange(p), g)
    tokens, mask, draft, tau = _sample(key, params, prompt, cfg)
    reward = (draft == correct[prompt]).astype(jnp.float32)
    adv = compute_advantages(reward.reshape(p, g), estimator).reshape(-1)
    old = jax.lax.stop_gradient(jnp.take_along_axis(jax.nn.log_softmax(
        _logits(params, prompt, draft, tau, cfg)), tokens[..., None], axis=-1)[..., 0])

    def loss_of_logp(logp):  # the engine's surrogate and aggregation, as a function of logp
        return aggregate(clipped_surrogate(logp, old, adv[:, None], 0.2, 0.2)[0], mask, agg,
                         max_tokens(cfg))

    w = jnp.where(mask, jnp.abs(jax.grad(loss_of_logp)(old)), 0.0)

    def loss(prm):
        return policy_loss(_logits(prm, prompt, draft, tau, cfg), tokens, mask, old, adv,
                           None, eps_low=0.2, eps_high=0.2, kl_coef=0.0, kl_estimator="k3",
                           entropy_coef=0.0, loss_agg=agg, max_tokens=max_tokens(cfg))[0]

    length = mask.sum(-1).astype(jnp.float32)
    ok = reward > 0
    mean_where = lambda x, m: jnp.where(m.any(), jnp.sum(jnp.where(m, x, 0)) / jnp.maximum(
        m.sum(), 1), jnp.nan)
    out = {"accuracy": reward.mean(), "len_correct": mean_where(length, ok),
           "len_incorrect": mean_where(length, ~ok), "len_mean": length.mean(),
           "w_meas": w.sum(-1).reshape(p, g).sum(-1), "q": reward.reshape(p, g).mean(-1),
           "rewards": reward.reshape(p, g), "lengths": length.reshape(p, g)}
    return jax.grad(loss)(params), out


def _one_seed(key, cfg: Config, method: str):
    k_init, k_run = jax.random.split(key)
    params0, correct = init_params(k_init, cfg)
    opt = optax.adam(cfg.lr)

    def step(state, i):
        params, opt_state = state
        grads, out = rollout_gradient(jax.random.fold_in(k_run, i), params, correct, cfg,
                                      method)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), out

    return jax.lax.scan(step, (params0, opt.init(params0)), jnp.arange(cfg.steps))[1]


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


def predicted_fill_update(draft_logits, fill_logits, correct, cfg: Config, method: str):
    """Derived E[−∂loss/∂s[p, d, t]] = (1/B)·A_d·E_k[c(|o|) ∂ log π(k | d)/∂s_t] (module
    docstring; docs/theory_rl_dynamics.md §1). draft_logits [P, K], fill_logits [P, K, F],
    correct [P]; returns [P, K, F]."""
    z = np.asarray(draft_logits, dtype=np.float64)
    pi = np.exp(z - z.max(-1, keepdims=True))
    pi /= pi.sum(-1, keepdims=True)
    is_correct = np.arange(cfg.n_answers)[None, :] == np.asarray(correct)[:, None]
    p_ok = np.sum(np.where(is_correct, pi, 0.0), axis=-1, keepdims=True)
    a_ok = W.correct_advantage_sum(p_ok, cfg.group_size, method, eps=1e-6)
    with np.errstate(invalid="ignore", divide="ignore"):  # p_ok = 1: no wrong draft is drawn
        share = np.where(p_ok < 1.0, pi / (1.0 - p_ok), 0.0)
    a_draft = np.where(is_correct, a_ok, -a_ok * share)
    score = W.stop_chain_length_score(fill_logits, N_FIXED, method, max_tokens=max_tokens(cfg))
    return a_draft[..., None] * score / (cfg.n_prompts * cfg.group_size)


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
            max_tokens(config))
    return result


# --------------------------------------------------------------------------------- claims
def _delta(x, window):
    """Per seed: mean over the last ``window`` steps − mean over the first ``window``; NaN
    (quietly: the claim's note says why) where a window has no completion of the kind."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "Mean of empty slice"
        return np.nanmean(x[:, -window:], axis=1) - np.nanmean(x[:, :window], axis=1)


def _note(agg, length: bool = True):
    text = f"seed mean {agg.mean:.4f}, 95% CI [{agg.lo:.4f}, {agg.hi:.4f}], {agg.n} seeds"
    if length and not np.isfinite(agg.mean):
        text += ("; not judged: in some seed a window sampled no completion of this kind "
                 "(its mean length is NaN)")
    return text


def claims(result: dict, config: Config) -> list[C.Claim]:
    w = config.window
    d = {(m, kind): _delta(result[f"{m}_len_{kind}"], w) for m in METHODS
         for kind in ("correct", "incorrect")}
    g_wrong = harness.seed_aggregate(d["grpo", "incorrect"])
    diff = harness.seed_aggregate(d["dr_grpo", "incorrect"] - d["grpo", "incorrect"])
    dr_wrong = harness.seed_aggregate(d["dr_grpo", "incorrect"])
    g_right = harness.seed_aggregate(d["grpo", "correct"])
    dr_right = harness.seed_aggregate(d["dr_grpo", "correct"])
    acc = harness.seed_aggregate(result["grpo_accuracy"][:, -w:].mean(1)
                                 - result["dr_grpo_accuracy"][:, -w:].mean(1))
    out = [
        C.at_least("GRPO: incorrect length change (CI low end)", 0.0, g_wrong.lo,
                   _note(g_wrong)),
        C.at_most("Dr.GRPO minus GRPO: incorrect length change (CI high end)", 0.0, diff.hi,
                  f"paired by seed; {_note(diff)}"),
        C.within("Dr.GRPO: incorrect length change", 0.0, dr_wrong.mean, LEN_TOL,
                 _note(dr_wrong)),
        C.at_most("GRPO: correct length change (CI high end)", 0.0, g_right.hi,
                  _note(g_right)),
        C.within("Dr.GRPO: correct length change", 0.0, dr_right.mean, LEN_TOL,
                 _note(dr_right)),
        C.within("final accuracy GRPO - Dr.GRPO", 0.0, acc.mean, ACC_TOL,
                 _note(acc, length=False)),
    ]
    for m, label in (("grpo", "GRPO"), ("dr_grpo", "Dr.GRPO")):
        meas, pred = result[f"{m}_w_meas"], result[f"{m}_w_pred"]
        scale, worst = float(np.max(np.abs(pred))), float(np.max(np.abs(meas - pred)))
        # every predicted weight 0 (every group's rewards equal): an engine weight that is not
        # 0 is a bug (error inf); all 0 on both sides leaves nothing to check (NaN, not holding)
        err = worst / scale if scale > 0 else (float("inf") if worst > 0 else float("nan"))
        why = ("" if scale > 0 else "; every predicted weight is 0 (no group with mixed "
               "rewards): " + ("the engine's are not" if worst > 0 else
                               "not judged, nothing to compare"))
        out.append(C.at_most(f"{label}: per-prompt weight, max error / max weight", W_RTOL,
                             err, f"all {meas.size} groups of all steps and seeds; autodiff "
                             "of the engine's loss against the formula on the same rewards "
                             "and lengths: a check of the implementation, not of the bias"
                             + why))
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
    axes[2].plot(qs, 2 * qs * (1 - qs) * lbar / max_tokens(config), "b-", lw=0.8,
                 label="Dr.GRPO 2q(1-q) L/MAX (L at step 0)")
    axes[0].set(xlabel="RL step", ylabel="mean completion length (solid: incorrect)")
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
