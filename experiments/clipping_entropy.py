"""Figure 4, clipping-entropy (Park et al. 2025, arXiv 2509.26114): PPO/GRPO clipping biases
the entropy even when the reward is pure noise.

Setting. A contextual softmax bandit: ``n_states`` contexts, ``n_actions`` answers, one free
logit per (context, answer), initial logits z ~ N(0, logit_scale²) (the "base model"; its
mode is argmax z per context). Each RL step samples G answers per context from π_old,
draws rewards r ~ Bernoulli(½) independent of the answer, computes GRPO advantages
Â = (r − mean r)/(std r + 1e-6) per group with the engine's ``compute_advantages``, and then
takes ``epochs`` × ``minibatches`` SGD steps (step size ``lr``) on the engine's clipped
surrogate (``toymodels.rl.objectives.policy_loss``, token-mean aggregation):

    l_i = −min(ρ_i Â_i, clip(ρ_i, 1 − ε_low, 1 + ε_high) Â_i),   ρ_i = π_θ(a_i)/π_old(a_i).

Predictions (Park et al. 2025, arXiv 2509.26114, abstract and §3; the direction argument is
written out in docs/theory_rl_dynamics.md §3):

* the rewards carry no information, so without clipping the expected first-order entropy
  change is 0; a single on-policy epoch has ρ ≡ 1, no token is clipped, and H drifts only
  within noise;
* with several epochs, tokens whose ratio leaves the clip range stop receiving gradient.
  Clip-high removes *positive* updates of low-probability answers (their log-ratio grows
  fastest, ∝ 1 − π_a): entropy falls. Clip-low removes *negative* updates of
  low-probability answers: entropy rises. At ε = 0.2 the upper bound log(1.2) = 0.18 is
  reached before the lower one −log(0.8) = 0.22, so clip-high dominates: H falls;
* a small ε_low makes clip-low dominate (H rises); a small ε_high makes H fall further;
* falling entropy concentrates mass on the base model's mode: π(mode) rises. To first
  order, removing a positive push c·(e_a − π) on an answer a ≠ mode changes
  log π(mode) by c (π_a + π_mode − Σ_b π_b²) ≥ c π_a > 0 (ours; Σ π_b² ≤ max π): every
  clip-high event on another answer raises π(mode), every clip-low event lowers it.

Second order (ours, docs/theory_rl_dynamics.md §3): a function f of z changes on average by
E[Δf] = ∇f·E[Δz] + ½ E[Δzᵀ∇²f Δz] + O(Δz³). The first term carries the clip bias; the second
(the "neutral drift" of a martingale π) lowers H and π(mode) even for zero-mean updates. The
clip range caps how far any answer's ratio moves within one step, so the drift per step is
O(ε²) whatever the group size G, while the clip bias sums over the clipped tokens and grows
with G at a fixed per-token push lr/m (m = 8 answers per minibatch).
``clipping_decomposition.step_decomposition`` measures both terms. At seed 0 with the former
G = 64 for 100 steps, the first-order change of π(mode) summed to +0.11 and the drift to
−0.13: they cancelled, and the mode claim failed at seeds 0-4 and 977000. Hence G = 256 for
25 steps: the same answers, SGD updates and (about) clip events as 64 × 100, but a quarter
of the steps over which the drift accrues (measured at seed 0 before the claims were re-run:
first order +0.12, drift −0.05; +0.13 and −0.05 with the Monte Carlo keys now derived from
the seed). The ``noclip`` diagnostic (many epochs, no clipping) shows an uncapped drift.

On-policy (ours, docs §3). One epoch, one minibatch: ρ ≡ 1 and the update is
Δz = (lr/G) Σ_i Â_i (e_{a_i} − π). The advantages are exchangeable and independent of the
answers, so E[Δz] = 0 and the first-order change ∇H·E[Δz] (Cui et al. 2025, arXiv
2505.22617, Lemma 1) is exactly 0, while Cov Δz = (lr²/G) κ F, F = diag π − ππᵀ,
κ = E[Σ_i Â_i²]/G ≈ 1, so E[ΔH] = ½ (lr²/G) κ tr(∇²_z H F) + O(Δz³) per step: negative unless
the context's policy is very peaked (``theory.entropy.onpolicy_entropy_drift``; closed form
in docs §3). ``_onpolicy_trajectory`` evaluates it at every step z_t of each seed's own
on-policy trajectory, with the first-order change of the step actually taken.
(``clipping_decomposition.step_decomposition`` estimates the same drift by Monte Carlo over
the engine's own step; a test checks the two agree.)

Claims (tolerances fixed here, before measuring): each is a sign test on the seed aggregate
of a per-seed statistic (the change from step 0 to the end, averaged over contexts): the
95 % t-interval of sign · Δ lies above 0. The on-policy claims: (i) the 95 % interval of ΔH
contains 0 (kept as first stated; its note gives the predicted drift); (ii) ΔH equals the
first-order change ∇H·Δz of the steps actually taken plus the analytic second-order drift,
summed along the seed's own trajectory: holds iff the 95 % t-interval over seeds of the
per-seed difference ΔH − prediction contains 0. The realised first order is the dominant
noise of ΔH (sd ≈ 1e-3 per seed against a drift of ≈ 2.5e-4), so without it the drift is not
resolved at 5 seeds; with it the residual sd is ≈ 5e-6 per seed, 3 % of the drift: (ii)
tests the derivation's constant, third-order terms included; (iii) the clipped fraction is 0.

Measured (full mode, start seeds 0, 1000, 2000, 6660000 and the unseen 424242, 90210; table
in docs §3): the drift is −0.00024 to −0.00025 over 25 steps (Monte Carlo = analytic to
< 1 %), about 0.56 standard errors of the 5-seed mean ΔH: (i) fails only at 6660000 (ΔH
−0.00068 = −0.00043 first-order noise − 0.00025 drift), (ii) fails at 2000 (+7.7e-6) and
424242 (−4.2e-6), in opposite directions, and holds at the other four. Full mode ≈ 25 s.
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
from experiments.harness import sign_claim
from tasks.core import check_ints, check_numbers, check_seed
from theory import entropy as E
from toymodels.rl.advantages import compute_advantages
from toymodels.rl.objectives import policy_loss

NAME = "clipping-entropy"
PAPER = "Park et al. 2025, arXiv 2509.26114"
DESCRIPTION = ("Clipping biases entropy under Bernoulli(1/2) rewards: symmetric clip lowers H, "
               "small eps_low raises it, small eps_high lowers it more, on-policy drifts by noise")

# Predicted signs of the per-seed changes (the wrong-prediction tests flip these).
SIGNS = {"sign_sym": -1.0, "sign_low": 1.0, "sign_high_vs_sym": -1.0, "sign_mode": 1.0,
         "sign_mode_high": 1.0}
# The on-policy drift predictions are per-seed arrays computed in ``run``.
PREDICTIONS = (*SIGNS, "onpolicy_pred_second")


@dataclasses.dataclass(frozen=True)
class Config:
    seed: int = 0
    n_seeds: int = 5
    n_states: int = 128
    n_actions: int = 8
    logit_scale: float = 1.5  # initial entropies from ~0.8 to ~2 nats; a clear mode
    # Minibatches of 8 answers, 8 epochs: each sampled answer's ratio leaves [0.8, 1.2] within
    # the step. (Pilot, seeds 0-4: minibatches of 1 answer reverse every sign: the drift and
    # the per-token pushes then dominate.) G = 256 for 25 steps rather than 64 for 100: the
    # same tokens, a quarter of the steps over which the neutral drift accrues (docs §3).
    group_size: int = 256
    steps: int = 25
    epochs: int = 8
    minibatches: int = 32
    lr: float = 0.2  # SGD on the logits
    eps_sym: float = 0.2
    eps_small: float = 0.05  # the "aggressive" bound of the low and high settings

    def __post_init__(self):
        check_seed(NAME, "seed", self.seed)
        check_ints(NAME, self, ("n_seeds", "n_states", "n_actions", "group_size", "steps", "epochs",
                                "minibatches"))
        if self.n_seeds < 2:
            raise ValueError("n_seeds must be >= 2 (claims are judged on a seed aggregate)")
        if self.n_actions < 2 or self.group_size < 2 or self.group_size % self.minibatches:
            raise ValueError("need n_actions >= 2, group_size >= 2 divisible by minibatches")
        if self.epochs * self.minibatches < 2:
            raise ValueError("epochs * minibatches must be >= 2 (else the ratio stays 1)")
        check_numbers(NAME, self, ("lr",), positive=True)
        check_numbers(NAME, self, ("logit_scale",))
        if not 0 < self.eps_small < self.eps_sym < 1:
            raise ValueError("need 0 < eps_small < eps_sym < 1")


def quick_config() -> Config:
    return Config(n_states=64, steps=10)


def settings(config: Config) -> dict[str, tuple[float, float]]:
    """(ε_low, ε_high) of the multi-epoch runs; ``noclip`` is a diagnostic (no claim)."""
    s, e = config.eps_sym, config.eps_small
    return {"sym": (s, s), "low": (e, s), "high": (s, e), "noclip": (0.999, 1e6)}


# ------------------------------------------------------------------------------ dynamics
def _state_loss(z, actions, old_logp, adv, eps_low, eps_high):
    """The engine's clipped surrogate for one context: answers are length-1 completions."""
    logits = jnp.broadcast_to(z, (actions.shape[0], 1, z.shape[-1]))
    mask = jnp.ones((actions.shape[0], 1), bool)
    loss, aux = policy_loss(logits, actions[:, None], mask, old_logp[:, None], adv, None,
                            eps_low=eps_low, eps_high=eps_high, kl_coef=0.0,
                            kl_estimator="k3", entropy_coef=0.0, loss_agg="token-mean",
                            max_tokens=1)
    return loss, (aux["clipped_low"].sum() + aux["clipped_high"].sum())


def _rl_step(z, key, eps, cfg: Config, epochs: int, minibatches: int):
    """One RL step for every context: G answers from π_old = softmax(z), Bernoulli(½) rewards,
    GRPO advantages, then epochs × minibatches SGD updates on the clipped surrogate.
    Returns (z_new, number of clipped token-updates)."""
    g, mb = cfg.group_size, cfg.group_size // minibatches
    grad = jax.vmap(jax.grad(_state_loss, has_aux=True), in_axes=(0, 0, 0, 0, None, None))
    k_a, k_r, k_p = jax.random.split(key, 3)
    actions = jax.random.categorical(k_a, z[:, None, :], shape=(z.shape[0], g))
    rewards = jax.random.bernoulli(k_r, 0.5, (z.shape[0], g)).astype(jnp.float32)
    adv = compute_advantages(rewards, "grpo")
    old_logp = jnp.take_along_axis(jax.nn.log_softmax(z), actions, axis=-1)

    def update(zc, rows):
        gz, clipped = grad(zc, actions[:, rows], old_logp[:, rows], adv[:, rows], *eps)
        return zc - cfg.lr * gz, clipped.sum()

    orders = jax.vmap(lambda k: jax.random.permutation(k, g).reshape(minibatches, mb))(
        jax.random.split(k_p, epochs)).reshape(epochs * minibatches, mb)
    z_new, clipped = jax.lax.scan(update, z, orders)
    return z_new, clipped.sum()


def _p_mode(z, mode):
    """π(mode) per context."""
    return jnp.take_along_axis(jax.nn.softmax(z), mode[:, None], axis=-1)[:, 0]


def _base(key, cfg: Config):
    """One seed's base logits z ~ N(0, logit_scale²) [contexts, answers] and its run key."""
    k0, k_run = jax.random.split(key)
    return cfg.logit_scale * jax.random.normal(k0, (cfg.n_states, cfg.n_actions)), k_run


def _trajectory(key, eps, cfg: Config, epochs: int, minibatches: int):
    """One seed, one (ε_low, ε_high): per-step mean entropy, mode probability, clip count."""
    z0, k_run = _base(key, cfg)
    mode = jnp.argmax(z0, axis=-1)

    def step(z, i):
        z_new, clipped = _rl_step(z, jax.random.fold_in(k_run, i), eps, cfg, epochs,
                                  minibatches)
        frac = clipped / (epochs * cfg.group_size * cfg.n_states)
        return z_new, (E.entropy(z).mean(), _p_mode(z, mode).mean(), frac)

    z_end, (h, pm, clip) = jax.lax.scan(step, z0, jnp.arange(cfg.steps))
    return {"entropy": jnp.append(h, E.entropy(z_end).mean()),
            "p_mode": jnp.append(pm, _p_mode(z_end, mode).mean()), "clip_frac": clip}


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _simulate(keys, eps, cfg: Config, epochs: int, minibatches: int):
    """[settings, seeds, ...]: the same keys (paired samples) for every setting."""
    per_seed = lambda e: jax.vmap(lambda k: _trajectory(k, e, cfg, epochs, minibatches))(keys)
    return jax.vmap(per_seed)(eps)


# ---------------------------------------------------------------------------- on-policy
def _onpolicy_trajectory(key, cfg: Config):
    """One seed's on-policy run (1 epoch, 1 minibatch; the keys of ``_trajectory``): per-step
    mean entropy, mode probability and clip count as ``_trajectory``, and, summed over the
    steps, the two parts of its predicted entropy change at each z_t of this trajectory:
    Cui et al.'s first-order change of the step actually taken, ∇H·(z_{t+1} − z_t)
    (``pred_realised_first``), and the expected second-order change
    ``theory.entropy.onpolicy_entropy_drift`` (``pred_second``)."""
    z0, k_run = _base(key, cfg)
    mode = jnp.argmax(z0, axis=-1)
    eps = (jnp.asarray(cfg.eps_sym),) * 2  # nothing is clipped on-policy (checked)
    mean_entropy = lambda x: E.entropy(x).mean()

    def step(z, i):
        z_new, clipped = _rl_step(z, jax.random.fold_in(k_run, i), eps, cfg, 1, 1)
        return z_new, {"entropy": mean_entropy(z), "p_mode": _p_mode(z, mode).mean(),
                       "clip_frac": clipped / (cfg.group_size * cfg.n_states),
                       "pred_second": E.onpolicy_entropy_drift(z, cfg.lr,
                                                               cfg.group_size).mean(),
                       "pred_realised_first": jax.jvp(mean_entropy, (z,), (z_new - z,))[1]}

    z_end, per_step = jax.lax.scan(step, z0, jnp.arange(cfg.steps))
    out = {k: v.sum() for k, v in per_step.items() if k.startswith("pred_")}
    out["entropy"] = jnp.append(per_step["entropy"], mean_entropy(z_end))
    out["p_mode"] = jnp.append(per_step["p_mode"], _p_mode(z_end, mode).mean())
    out["clip_frac"] = per_step["clip_frac"]
    return out


@functools.partial(jax.jit, static_argnums=1)
def _simulate_onpolicy(keys, cfg: Config):
    """[seeds, ...]: ``_onpolicy_trajectory`` per seed."""
    return jax.vmap(lambda k: _onpolicy_trajectory(k, cfg))(keys)


def run(config: Config, run_dir: Path) -> dict:
    keys = jax.random.split(jax.random.key(config.seed), config.n_seeds)
    cfg = dataclasses.replace(config, seed=0)  # the seed enters through the keys only
    names = list(settings(config))
    eps = tuple(jnp.asarray([settings(config)[n][j] for n in names]) for j in (0, 1))
    multi = _simulate(keys, eps, cfg, config.epochs, config.minibatches)
    onp = _simulate_onpolicy(keys, cfg)
    result = {}
    for i, n in enumerate(names):
        for k, v in multi.items():
            result[f"{n}_{k}"] = np.asarray(v[i])
    for k, v in onp.items():
        result[f"onpolicy_{k}"] = np.asarray(v)
    for n in [*names, "onpolicy"]:
        result[f"{n}_dh"] = result[f"{n}_entropy"][:, -1] - result[f"{n}_entropy"][:, 0]
        result[f"{n}_dmode"] = result[f"{n}_p_mode"][:, -1] - result[f"{n}_p_mode"][:, 0]
    result.update({k: np.array(v) for k, v in SIGNS.items()})
    return result


# --------------------------------------------------------------------------------- claims
def claims(result: dict, config: Config) -> list[C.Claim]:
    s, e = config.eps_sym, config.eps_small
    out = [
        sign_claim("sym clip (0.2, 0.2): entropy change", result["sign_sym"],
                   result["sym_dh"], f"eps=({s:g}, {s:g}), {config.epochs} epochs"),
        sign_claim("small eps_low: entropy change", result["sign_low"], result["low_dh"],
                   f"eps=({e:g}, {s:g})"),
        sign_claim("small eps_high minus sym: entropy change", result["sign_high_vs_sym"],
                   result["high_dh"] - result["sym_dh"], f"eps=({s:g}, {e:g}), paired"),
        sign_claim("sym clip: base mode probability change", result["sign_mode"],
                   result["sym_dmode"], "pi(argmax of the base logits), mean over contexts"),
        sign_claim("small eps_high: base mode probability change", result["sign_mode_high"],
                   result["high_dmode"], "added after the pilot (seeds 0-4) showed the sym "
                   "claim failing"),
    ]
    onp = harness.seed_aggregate(result["onpolicy_dh"])
    drift = float(np.mean(result["onpolicy_pred_second"]))
    out.append(C.Claim("on-policy (1 epoch): entropy change", "0 in 95% CI", float(onp.mean),
                       f"[{onp.lo:.4f}, {onp.hi:.4f}]", bool(onp.lo <= 0.0 <= onp.hi),
                       f"ratio 1: drift within noise; {onp.n} seeds; the predicted second-order "
                       f"drift is {drift:+.5f}"))
    realised = np.asarray(result["onpolicy_pred_realised_first"])
    out.append(_paired_claim(
        "on-policy: entropy change = realised first order + second-order drift",
        result["onpolicy_dh"], realised + result["onpolicy_pred_second"],
        f"Cui et al. first order of the steps taken {realised.mean():+.5f}, analytic "
        f"second-order drift {drift:+.5f}"))
    clipped = float(np.max(result["onpolicy_clip_frac"]))
    out.append(C.at_most("on-policy: fraction of clipped tokens", 0.0, clipped,
                         "ratio is exactly 1 on the rollout's own data (1 epoch, 1 minibatch): "
                         "true by construction, a check of the engine"))
    return out


def _paired_claim(name, measured, predicted, note):
    """Holds iff the 95 % t-interval over seeds of measured − predicted (per seed, both along
    the same trajectory) contains 0."""
    diff = harness.seed_aggregate(np.asarray(measured) - np.asarray(predicted))
    return C.Claim(name, float(np.mean(predicted)), float(np.mean(measured)),
                   "95% CI of meas-pred per seed contains 0",
                   bool(np.isfinite(diff.lo) and diff.lo <= 0.0 <= diff.hi),
                   f"{note}; meas-pred {diff.mean:+.6f}, 95% CI [{diff.lo:+.6f}, "
                   f"{diff.hi:+.6f}] over {diff.n} seeds")


# ----------------------------------------------------------------------------------- plot
def plot(result: dict, config: Config, run_dir: Path) -> None:
    fig, axes = harness.new_figure(3)
    steps = np.arange(config.steps + 1)
    labels = {n: f"eps=({lo:g}, {hi:g})" for n, (lo, hi) in settings(config).items()}
    labels["noclip"] = "no clip (diagnostic)"
    labels["onpolicy"] = f"1 epoch, eps=({config.eps_sym:g}, {config.eps_sym:g})"
    for n in [*settings(config), "onpolicy"]:
        harness.plot_mean_ci(axes[0], steps, result[f"{n}_entropy"], label=labels[n], marker="")
        harness.plot_mean_ci(axes[1], steps, result[f"{n}_p_mode"], label=labels[n], marker="")
    axes[0].set(xlabel="RL step", ylabel="mean entropy (nats)")
    axes[0].set_title("Bernoulli(1/2) rewards", fontsize=9)
    axes[1].set(xlabel="RL step", ylabel="π(base mode)")
    axes[1].set_title("the base model's mode", fontsize=9)
    for n in settings(config):
        harness.plot_mean_ci(axes[2], steps[:-1], result[f"{n}_clip_frac"], label=labels[n],
                             marker="")
    axes[2].set(xlabel="RL step", ylabel="fraction of tokens clipped")
    axes[2].set_title(f"{config.epochs} epochs x {config.minibatches} minibatches", fontsize=9)
    for ax in axes:
        ax.legend(fontsize=6)
    harness.save_figure(fig, run_dir)
