"""Quickstart: train a small transformer on a toy task by next-token prediction, then sample.

What it shows: the whole pipeline in one command. ``toyreason run quickstart`` trains a
one-layer model on ``seq/reverse`` (reverse a string of symbols; one attention head
suffices), samples greedy completions of held-out prompts with the KV-cache sampler, scores
them with ``task.reward`` (exact match) and prints the accuracy with a few samples.

Expected (2 CPU cores): full mode about 1-2 minutes, ``--quick`` about 30 s; held-out
accuracy near 1.0. Claims (floors fixed here, before measuring):

* greedy exact-match accuracy on held-out prompts, mean over seeds, >= ``min_accuracy``;
* teacher-forced token accuracy over the last 10 % of training >= ``min_token_accuracy``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

from experiments import claims as C
from experiments import harness
from tasks.core import check_int, check_number, check_prob, check_seed
from toymodels.config import ModelConfig
from toymodels.train import NTPConfig, evaluate, make_task, make_train

NAME = "quickstart"
PAPER = "none (pipeline smoke run: next-token training, then sampling)"
DESCRIPTION = "Train a 1-layer transformer on seq/reverse, sample greedily, print accuracy"


@dataclasses.dataclass(frozen=True)
class Config:
    seed: int = 0
    n_seeds: int = 2
    task: str = "seq/reverse"
    task_config: dict = dataclasses.field(
        default_factory=lambda: {"length": 8, "n_symbols": 10})
    n_layers: int = 1  # one layer reverses: output t attends to input n+1-t
    n_heads: int = 2
    d_model: int = 64
    d_mlp: int = 0  # attention-only is enough for a permutation of the input
    steps: int = 600
    batch_size: int = 64
    lr: float = 3e-3  # tiny models tolerate (and need) a large step to finish in seconds
    warmup_steps: int = 30
    chunk_size: int = 100
    n_eval: int = 512  # held-out prompts per seed
    min_accuracy: float = 0.95
    min_token_accuracy: float = 0.95

    def __post_init__(self):
        o = "quickstart.Config"
        for name in ("n_seeds", "n_layers", "n_heads", "d_model", "steps", "batch_size",
                     "chunk_size", "n_eval"):
            check_int(o, name, getattr(self, name), 1)
        check_seed(o, "seed", self.seed)
        check_int(o, "d_mlp", self.d_mlp, 0)
        check_int(o, "warmup_steps", self.warmup_steps, 0, self.steps - 1)
        check_number(o, "lr", self.lr, positive=True)
        check_prob(o, "min_accuracy", self.min_accuracy)
        check_prob(o, "min_token_accuracy", self.min_token_accuracy)
        self.ntp_config()  # the task, its fields and the model shape are checked there

    def ntp_config(self) -> NTPConfig:
        """The next-token training run this config describes (model sized to the task)."""
        task = make_task(self)  # reads .task and .task_config, as for an NTPConfig
        model = ModelConfig(vocab_size=task.vocab.size,
                            max_len=task.prompt_len + task.max_target_len,
                            n_layers=self.n_layers, n_heads=self.n_heads,
                            d_model=self.d_model, d_mlp=self.d_mlp)
        return NTPConfig(model=model, task=self.task, task_config=self.task_config,
                         steps=self.steps, batch_size=self.batch_size, lr=float(self.lr),
                         warmup_steps=self.warmup_steps, chunk_size=self.chunk_size,
                         seed=self.seed, n_seeds=self.n_seeds)


def quick_config() -> Config:
    return Config(n_seeds=1, task_config={"length": 6, "n_symbols": 8}, d_model=32,
                  steps=250, chunk_size=125, n_eval=256, min_accuracy=0.9,
                  min_token_accuracy=0.9)


def run(config: Config, run_dir: Path) -> dict:
    ntp = config.ntp_config()
    train = make_train(ntp, run_dir)
    params, metrics = train()
    task = make_task(ntp)
    accuracy, lines = [], []
    for s in range(config.n_seeds):
        seed_params = jax.tree.map(lambda x, s=s: x[s], params)
        key = jax.random.key(1_000_003 + config.seed + s)  # held out: not a training key
        out = evaluate(train.graphdef, seed_params, task, key, config.n_eval)
        accuracy.append(out["accuracy"])
        batch = task.sample(jax.random.split(key)[0], config.n_eval, "test")
        for i in range(min(3, config.n_eval)):  # three examples, or all there are
            prompt = task.vocab.decode(np.asarray(batch.prompts[i]))
            lines.append(f"seed {config.seed + s}: {prompt} => "
                         f"{task.vocab.decode(out['tokens'][i])}")
        print(f"seed {config.seed + s}: held-out greedy accuracy {out['accuracy']:.4f}")
    print("\n".join(lines))
    (Path(run_dir) / "samples.txt").write_text("\n".join(lines) + "\n")
    tail = max(1, config.steps // 10)
    return {**{k: np.asarray(v) for k, v in metrics.items()},
            "accuracy": np.asarray(accuracy, np.float32),
            "final_token_acc": float(np.mean(metrics["token_acc"][-tail:]))}


def claims(result: dict, config: Config) -> list[C.Claim]:
    acc = np.asarray(result["accuracy"], np.float64)
    return [
        C.at_least("held-out greedy exact-match accuracy (mean over seeds)",
                   config.min_accuracy, float(acc.mean()),
                   note=f"per seed: {', '.join(f'{a:.3f}' for a in acc)}"),
        C.at_least("teacher-forced token accuracy, last 10% of steps",
                   config.min_token_accuracy, float(result["final_token_acc"])),
    ]


def plot(result: dict, config: Config, run_dir: Path) -> None:
    fig, (ax_loss, ax_acc) = harness.new_figure(2)
    steps = np.arange(1, result["loss"].shape[0] + 1)
    for s in range(result["loss"].shape[1]):
        ax_loss.plot(steps, result["loss"][:, s], lw=0.8, label=f"seed {config.seed + s}")
        ax_acc.plot(steps, result["token_acc"][:, s], lw=0.8)
    ax_loss.set(yscale="log", xlabel="step", ylabel="target cross-entropy",
                title=f"{config.task}: training loss")
    ax_acc.set(xlabel="step", ylabel="token accuracy", ylim=(0, 1.02),
               title="teacher-forced token accuracy")
    ax_loss.legend(fontsize=7)
    harness.save_figure(fig, run_dir)
