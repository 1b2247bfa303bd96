"""``RLConfig``: one frozen, validated dataclass for an RL run (tunix style: each bias a field).

Names of estimators and aggregations are looked up in the registries of
:mod:`toymodels.rl.advantages` and :mod:`toymodels.rl.objectives`; ``None`` in
``scale_rewards``, ``loss_agg``, ``max_new_tokens`` and ``max_tokens`` means "the default of
the chosen estimator / task", resolved by :meth:`RLConfig.resolved`.
"""

from __future__ import annotations

import dataclasses

from tasks.core import check, check_int, check_number, check_seed
from toymodels.loop import MAX_STEPS
from toymodels.rl.advantages import (
    ADVANTAGE_ESTIMATORS,
    DEFAULT_SCALE_REWARDS,
    SCALE_REWARDS,
    scaling_is_centred,
)
from toymodels.rl.objectives import DEFAULT_LOSS_AGG, KL_NAMES, LOSS_AGGREGATIONS


@dataclasses.dataclass(frozen=True)
class RLConfig:
    """An RL run after next-token training.

    task, task_config: ``tasks.make(task, **task_config)``.
    advantage: 'reinforce' | 'rloo' | 'grpo' | 'dr_grpo'. batch_baseline: reinforce only,
        subtract the batch-mean reward.
    scale_rewards: 'group' | 'batch' | 'none' | None (estimator default: grpo 'group').
        'group' needs a group-centred estimator (grpo, dr_grpo, rloo); 'batch' also allows
        reinforce with batch_baseline=True; the rest is refused (a std of 0 on equal rewards
        would divide an uncentred reward).
    loss_agg: 'token-mean' | 'sequence-mean-token-mean' | 'sequence-mean-token-sum-norm' |
        None (grpo: seq-mean-token-mean, dr_grpo: seq-mean-token-sum-norm, else token-mean).
    max_tokens: the constant normaliser of sequence-mean-token-sum-norm (None = max_new_tokens).
    group_size: G completions per prompt; prompts_per_step: prompts per RL step.
    max_new_tokens: completion budget (None = the task's max_target_len); temperature, top_k:
        sampling (log-probs are always those of the temperature-1 policy).
    eps_low, eps_high: clip range [1 - eps_low, 1 + eps_high] of the importance ratio (0 is
        allowed, but on-policy it clips float noise: see ``objectives.clipped_surrogate``).
    epochs, minibatches: passes over each rollout batch and optimiser steps per pass.
    kl_coef, kl_estimator: β and 'k1' | 'k2' | 'k3' | 'exact' for KL(π_θ ‖ π_ref). As a loss
        term only 'k2' and 'exact' have the gradient of KL(π_θ ‖ π_ref) in expectation; 'k1'
        has zero expected gradient and 'k3' (GRPO's) that of KL(π_ref ‖ π_θ) (derived in
        :mod:`toymodels.rl.objectives`; Tang & Munos 2025, arXiv 2506.09477).
    entropy_coef: weight of the entropy bonus.
    lr, grad_clip: Adam step size and max global gradient norm.
    steps, chunk_size: RL steps, and steps per compiled chunk (checkpoint in between).
    eval_every: evaluate on held-out prompts every this many steps (0 = never); eval_n:
        held-out prompts, drawn once from ``eval_split`` ('test' is often a harder,
        out-of-distribution split, e.g. longer numbers); passk_ks: the k of pass@k
        (max(ks) samples per prompt).
    seed, n_seeds: RL seeds seed .. seed + n_seeds - 1 (vmapped).
    init_from: an NTP run directory (None: pass ``init=(graphdef, params)`` to make_train);
        init_seed_index: which NTP seed to start every RL seed from.
    """

    task: str
    task_config: dict = dataclasses.field(default_factory=dict)
    advantage: str = "grpo"
    batch_baseline: bool = False
    scale_rewards: str | None = None
    loss_agg: str | None = None
    max_tokens: int | None = None
    group_size: int = 8
    prompts_per_step: int = 16
    max_new_tokens: int | None = None
    temperature: float = 1.0
    top_k: int = 0
    eps_low: float = 0.2
    eps_high: float = 0.2
    epochs: int = 1
    minibatches: int = 1
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    entropy_coef: float = 0.0
    lr: float = 1e-4
    grad_clip: float = 1.0
    steps: int = 100
    chunk_size: int = 25
    eval_every: int = 0
    eval_n: int = 128
    eval_split: str = "test"
    passk_ks: tuple[int, ...] = (1, 4)
    seed: int = 0
    n_seeds: int = 1
    init_from: str | None = None
    init_seed_index: int = 0

    def __post_init__(self):
        o = "RLConfig"
        check(isinstance(self.task, str), o, "task", self.task, "a task name (str)")
        check(isinstance(self.task_config, dict), o, "task_config", self.task_config, "a dict")
        check(self.advantage in ADVANTAGE_ESTIMATORS, o, "advantage", self.advantage,
              f"one of {sorted(ADVANTAGE_ESTIMATORS)}")
        check(isinstance(self.batch_baseline, bool), o, "batch_baseline", self.batch_baseline,
              "True or False")
        check(not self.batch_baseline or self.advantage == "reinforce", o, "batch_baseline",
              self.batch_baseline, "True only with advantage='reinforce'")
        check(self.scale_rewards is None or self.scale_rewards in SCALE_REWARDS, o,
              "scale_rewards", self.scale_rewards, f"None or one of {SCALE_REWARDS}")
        scale = self.scale_rewards or DEFAULT_SCALE_REWARDS[self.advantage]
        check(scaling_is_centred(self.advantage, scale, self.batch_baseline), o,
              "scale_rewards", self.scale_rewards,
              "a std scaling of a signal centred at that level (group: grpo, dr_grpo, rloo; "
              "batch: those or reinforce with batch_baseline=True); otherwise 'none', since "
              "the std is 0 on equal rewards (see toymodels.rl.advantages)")
        check(self.loss_agg is None or self.loss_agg in LOSS_AGGREGATIONS, o, "loss_agg",
              self.loss_agg, f"None or one of {sorted(LOSS_AGGREGATIONS)}")
        for name in ("max_tokens", "max_new_tokens"):
            if getattr(self, name) is not None:
                check_int(o, name, getattr(self, name), 1)
        # a group of one has a zero group-relative advantage: training would do nothing
        check_int(o, "group_size", self.group_size, 1 if self.advantage == "reinforce" else 2)
        check_int(o, "prompts_per_step", self.prompts_per_step, 1)
        check_int(o, "top_k", self.top_k, 0)
        check_int(o, "epochs", self.epochs, 1)
        check_int(o, "minibatches", self.minibatches, 1)
        batch = self.prompts_per_step * self.group_size
        check(batch % self.minibatches == 0, o, "minibatches", self.minibatches,
              f"a divisor of prompts_per_step * group_size = {batch}")
        check_number(o, "temperature", self.temperature, positive=True)
        for name in ("eps_low", "eps_high", "kl_coef", "entropy_coef", "lr"):
            check_number(o, name, getattr(self, name))
        check(self.eps_low < 1, o, "eps_low", self.eps_low, "a number in [0, 1)")
        check_number(o, "grad_clip", self.grad_clip, positive=True)
        check(self.kl_estimator in KL_NAMES, o, "kl_estimator", self.kl_estimator,
              f"one of {KL_NAMES}")
        check_int(o, "steps", self.steps, 1, MAX_STEPS)  # the int32 step counter
        check_int(o, "chunk_size", self.chunk_size, 1)
        check_int(o, "eval_every", self.eval_every, 0)
        check_int(o, "eval_n", self.eval_n, 1)
        check(isinstance(self.eval_split, str), o, "eval_split", self.eval_split,
              "a split name of the task (str)")
        ks_ok = isinstance(self.passk_ks, tuple) and len(self.passk_ks) > 0 and all(
            isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in self.passk_ks)
        check(ks_ok, o, "passk_ks", self.passk_ks, "a non-empty tuple of integers >= 1")
        check_seed(o, "seed", self.seed)
        check_int(o, "n_seeds", self.n_seeds, 1)
        check(self.init_from is None or isinstance(self.init_from, str), o, "init_from",
              self.init_from, "None or an NTP run directory (str)")
        check_int(o, "init_seed_index", self.init_seed_index, 0)

    def resolved(self, task) -> RLConfig:
        """The config with every ``None`` default filled in (needs the task for lengths)."""
        new_tokens = self.max_new_tokens or task.max_target_len
        return dataclasses.replace(
            self,
            scale_rewards=self.scale_rewards or DEFAULT_SCALE_REWARDS[self.advantage],
            loss_agg=self.loss_agg or DEFAULT_LOSS_AGG[self.advantage],
            max_new_tokens=new_tokens,
            max_tokens=self.max_tokens or new_tokens)
