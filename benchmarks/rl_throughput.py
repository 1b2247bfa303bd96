"""RL step throughput against the float32 matmul peak measured in the same process.

    python benchmarks/rl_throughput.py [--steps 5]

Reference workload: 2 layers, d_model 128, 4 heads, d_mlp 512, vocab 64; 32 prompts x G = 8;
32-token prompts, 32 new tokens; GRPO with KL (k3, β = 0.04) on; 1 epoch, 1 minibatch.
Theory workload: 1 layer, d_model 64 (4 heads, d_mlp 256), vocab 64; 64 prompts x G = 8;
16-token prompts, 16 new tokens; 1 seed against 8 seeds vmapped.
Floors: the reference step at >= 50 % of the matmul peak; 8 vmapped theory seeds in <= 3x the
time of one.

The task is synthetic (random prompts; reward 1 when the first completion token is even) so
the prompt length and vocabulary match the workload exactly; the step is
:func:`toymodels.rl.step.make_step`, unchanged. FLOPs are counted analytically for the work
the algorithm must do: sampling (``sampler_throughput.sampling_flops``), one reference forward
and one policy forward + backward (3 forwards) over the B x (P + N - 1) teacher-forced tokens.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or with -m
from peak import matmul_peak_flops  # noqa: E402
from sampler_throughput import sampling_flops  # noqa: E402

from tasks.core import Batch
from toymodels.config import ModelConfig
from toymodels.model import init
from toymodels.rl.config import RLConfig
from toymodels.rl.step import make_optimizer, make_step


class RandomPromptTask:
    """Duck-typed task: random prompts of ``prompt_len`` tokens; reward = first token even."""

    def __init__(self, vocab: int, prompt_len: int, new_tokens: int):
        self.vocab_size, self.prompt_len, self.max_target_len = vocab, prompt_len, new_tokens

    def sample(self, key, n, split="train"):
        prompts = jax.random.randint(key, (n, self.prompt_len), 2, self.vocab_size)
        zeros = jnp.zeros((n,), jnp.int32)
        return Batch(prompts, zeros + self.prompt_len, jnp.ones((n, 1), jnp.int32), zeros + 1,
                     {})

    def reward(self, batch, completions):
        return (completions[:, 0] % 2 == 0).astype(jnp.float32)

    def counters(self, batch, completions):
        return {}


def forward_flops(cfg: ModelConfig, batch: int, t: int) -> float:
    """Teacher-forced forward of ``batch`` rows of ``t`` tokens (full causal context)."""
    d, m, v, n_layers = cfg.d_model, cfg.d_mlp, cfg.vocab_size, cfg.n_layers
    w = cfg.n_heads * cfg.head_dim
    per_token = 2 * (n_layers * (3 * d * w + w * d + 2 * d * m) + d * v)
    return batch * (t * per_token + t * (t + 1) / 2 * n_layers * 4 * w)


def rl_step_flops(cfg: ModelConfig, rows: int, p: int, n: int, epochs: int = 1) -> float:
    t = p + n - 1
    return (sampling_flops(cfg, rows, p, n) + forward_flops(cfg, rows, t)
            + epochs * 3 * forward_flops(cfg, rows, t))


def build(cfg: ModelConfig, prompts: int, group: int, p: int, n: int, n_seeds: int, steps: int):
    """A jitted scan of ``steps`` RL steps over ``n_seeds`` vmapped seeds, and its carry."""
    task = RandomPromptTask(cfg.vocab_size, p, n)
    config = RLConfig(task="seq/copy", group_size=group, prompts_per_step=prompts,
                      max_new_tokens=n, max_tokens=n, scale_rewards="group",
                      loss_agg="sequence-mean-token-mean", kl_coef=0.04, kl_estimator="k3")
    graphdef, params = init(cfg, jax.random.key(0))
    step = make_step(graphdef, task, config)
    opt = make_optimizer(config)
    keys = jax.random.split(jax.random.key(1), n_seeds)
    state = jax.vmap(lambda k: {"params": params, "opt": opt.init(params), "key": k})(keys)

    def chunk(state):
        def body(s, i):
            s, m = jax.vmap(step, in_axes=(0, None, None))(s, params, i)
            return s, m["reward_mean"]
        return jax.lax.scan(body, state, jnp.arange(steps))

    return jax.jit(chunk), state


def time_workload(cfg, prompts, group, p, n, n_seeds, steps, repeats=2):
    fn, state = build(cfg, prompts, group, p, n, n_seeds, steps)
    t0 = time.perf_counter()
    compiled = fn.lower(state).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(state))  # warm up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(state))
        best = min(best, time.perf_counter() - t0)
    return best / steps, compile_s


def main(steps: int = 5) -> None:
    peak = matmul_peak_flops()
    print(f"device: {jax.devices()[0].device_kind}; float32 matmul peak {peak / 1e9:.1f} GFLOP/s")

    ref = ModelConfig(vocab_size=64, max_len=64, n_layers=2, n_heads=4, d_model=128, d_mlp=512)
    sec, comp = time_workload(ref, 32, 8, 32, 32, 1, steps)
    flops = rl_step_flops(ref, 32 * 8, 32, 32)
    frac = flops / sec / peak
    print(f"reference: {sec:.3f} s/step (compile {comp:.1f} s), {32 * 8 / sec:.0f} sequences/s, "
          f"{flops / sec / 1e9:.1f} GFLOP/s = {100 * frac:.0f} % of peak "
          f"(floor 50 %: {'met' if frac >= 0.5 else 'MISSED'})")

    theory = ModelConfig(vocab_size=64, max_len=32, n_layers=1, n_heads=4, d_model=64,
                         d_mlp=256)
    one, comp1 = time_workload(theory, 64, 8, 16, 16, 1, steps)
    eight, comp8 = time_workload(theory, 64, 8, 16, 16, 8, steps)
    ratio = eight / one
    print(f"theory: 1 seed {one:.3f} s/step (compile {comp1:.1f} s); 8 seeds vmapped "
          f"{eight:.3f} s/step (compile {comp8:.1f} s); ratio {ratio:.2f}x "
          f"(floor <= 3x: {'met' if ratio <= 3 else 'MISSED'})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    main(parser.parse_args().steps)
