"""Next-token training step: time, tokens/s and achieved FLOP/s against the matmul peak.

    python benchmarks/ntp_step.py [--steps 20] [--repeats 3]

Model: 2 layers, d_model 128, 4 heads, d_mlp 512, learned positions; batch 64 sequences of
64 tokens (``seq/copy`` with 31 symbols: prompt 32 + target 32 tokens, 63 model inputs).
The step is the real one (``toymodels.train``: in-graph sampling, forward, backward, clipped
AdamW), run through ``loop.run_chunks`` as a chunk of ``--steps`` steps; compilation is
excluded (first call), the best of ``--repeats`` timed calls is kept.

FLOPs are counted analytically for the matmuls only (2 FLOPs per multiply-add), training =
3 x forward (the backward pass computes two matmuls per forward matmul):
    per token and layer: QKV 2*d*3d, scores 2*T*d, mix 2*T*d, out 2*d*d, MLP 2 * 2*d*d_mlp;
    per token: unembedding 2*d*V.
The float32 matmul peak is measured in this process (``benchmarks/peak.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak import matmul_peak_flops  # noqa: E402

from toymodels import loop  # noqa: E402
from toymodels.config import ModelConfig  # noqa: E402
from toymodels.train import NTPConfig, _parts, seed_keys  # noqa: E402

LENGTH = 31  # symbols: prompt = 31 + <sep>, target = 31 + <eos>: 64 tokens per sequence
BATCH = 64


def benchmark_config(steps: int) -> NTPConfig:
    model = ModelConfig(vocab_size=3 + 32, max_len=64, n_layers=2, n_heads=4, d_model=128,
                        d_mlp=512)
    return NTPConfig(model=model, task="seq/copy",
                     task_config={"length": LENGTH, "n_symbols": 32}, steps=steps,
                     batch_size=BATCH, warmup_steps=0, chunk_size=steps)


def train_flops_per_step(m: ModelConfig, batch: int, t: int) -> float:
    d, f, v = m.d_model, m.d_mlp, m.vocab_size
    per_token_layer = 2 * d * 3 * d + 2 * t * d + 2 * t * d + 2 * d * d + 2 * 2 * d * f
    forward = batch * t * (m.n_layers * per_token_layer + 2 * d * v)
    return 3.0 * forward


def time_chunk(config: NTPConfig, repeats: int) -> float:
    parts = _parts(config)
    carry = parts.init_one(seed_keys(config.seed, 1)[0])
    loop.run_chunks(parts.step, carry, total_steps=config.steps, chunk_size=config.steps)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = loop.run_chunks(parts.step, carry, total_steps=config.steps,
                              chunk_size=config.steps)
        jax.block_until_ready(out.carry)
        best = min(best, time.perf_counter() - start)
    return best / config.steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be >= 1")
    config = benchmark_config(args.steps)
    t = 2 * (LENGTH + 1) - 1  # model inputs per sequence
    peak = matmul_peak_flops()
    step_s = time_chunk(config, args.repeats)
    peak_after = matmul_peak_flops()
    flops = train_flops_per_step(config.model, BATCH, t)
    achieved = flops / step_s
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(
        _parts(config).init_one(seed_keys(0, 1)[0])["params"]))
    print(f"backend {jax.default_backend()}, devices {jax.devices()}")
    print(f"model: 2 layers, d_model 128, 4 heads, d_mlp 512, {n_params / 1e6:.3f} M params")
    print(f"batch {BATCH} x {t + 1} tokens ({BATCH * t} model inputs per step)")
    print(f"step time        {step_s * 1e3:8.2f} ms")
    print(f"tokens/s         {BATCH * t / step_s:8.0f}")
    print(f"model FLOP/step  {flops / 1e9:8.3f} GFLOP (matmuls, fwd + bwd)")
    print(f"achieved         {achieved / 1e9:8.1f} GFLOP/s")
    print(f"matmul peak      {peak / 1e9:8.1f} GFLOP/s before, {peak_after / 1e9:.1f} after")
    print(f"ratio to peak    {achieved / max(peak, peak_after):8.1%}  (floor 40 %)")


if __name__ == "__main__":
    main()
