"""Sampler throughput against the float32 matmul peak measured in the same process.

    python benchmarks/sampler_throughput.py [--batch 256] [--prompt-len 32] [--new 32]

Model: 2 layers, d_model 128, 4 heads, d_mlp 512, vocab 64, learned positions, pre-norm.
Floor: sampling (prefill and decode together) at >= 20 % of the matmul peak.

FLOPs are counted analytically, for the work the algorithm must do (not for what the
implementation happens to compute, e.g. masked cache columns are not counted):

    per token through the model, with D = d_model, M = d_mlp, V = vocab, L = layers,
        matmul  = 2 * [L * (3 D^2 + D^2 + 2 D M) + D V]       (QKV, W_O, MLP, unembed)
        attn    = L * 2 * 2 * ctx * D                          (q k^T and pattern v)
    where ctx is the number of keys the token attends to (itself and all before it).
    Prefill: B prompts of P tokens, token t has ctx = t + 1 (unembedding counted for all
    P; the implementation only computes the last one, so this overcounts by
    2 (P - 1) D V per prompt, i.e. < 2 % here). Decode: N - 1 steps (the last token is
    sampled but never fed back), step i feeds one token per row with ctx = P + i + 1.
    Sampling itself (softmax, log-softmax, categorical) is O(V) per token and not counted.
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

from toymodels.config import ModelConfig
from toymodels.model import init
from toymodels.sampler import generate


def sampling_flops(cfg: ModelConfig, batch: int, prompt_len: int, new_tokens: int) -> float:
    """Analytic FLOPs of one ``generate`` call (formula in the module docstring)."""
    d, m, v, n_layers = cfg.d_model, cfg.d_mlp, cfg.vocab_size, cfg.n_layers
    attn_width = cfg.n_heads * cfg.head_dim
    per_token_matmul = 2 * (n_layers * (3 * d * attn_width + attn_width * d + 2 * d * m)
                            + d * v)
    per_key = n_layers * 2 * 2 * attn_width
    prefill_ctx = sum(t + 1 for t in range(prompt_len))
    decode_ctx = sum(prompt_len + i + 1 for i in range(new_tokens - 1))
    tokens = prompt_len + new_tokens - 1
    return batch * (tokens * per_token_matmul + (prefill_ctx + decode_ctx) * per_key)


def main(batch: int = 256, prompt_len: int = 32, new_tokens: int = 32, repeats: int = 5):
    cfg = ModelConfig(vocab_size=64, max_len=prompt_len + new_tokens, n_layers=2, n_heads=4,
                      d_model=128, d_mlp=512)
    graphdef, params = init(cfg, jax.random.key(0))
    prompts = jax.random.randint(jax.random.key(1), (batch, prompt_len), 2, cfg.vocab_size)
    valid = jnp.ones((batch, prompt_len), bool)

    def run(seed):
        out = generate(graphdef, params, jax.random.key(seed), prompts, valid,
                       max_new_tokens=new_tokens)
        return jax.block_until_ready(out)

    run(0)  # compile
    times = []
    for seed in range(1, repeats + 1):
        start = time.perf_counter()
        run(seed)
        times.append(time.perf_counter() - start)
    best = min(times)
    flops = sampling_flops(cfg, batch, prompt_len, new_tokens)
    peak = matmul_peak_flops()
    print(f"backend {jax.default_backend()}; {batch} prompts x {prompt_len} tokens, "
          f"{new_tokens} new tokens; times {[round(t, 4) for t in times]} s")
    print(f"sequences/s   {batch / best:10.1f}")
    print(f"new tokens/s  {batch * new_tokens / best:10.1f}")
    print(f"sampling      {flops / best / 1e9:10.2f} GFLOP/s ({flops / 1e9:.3f} GFLOP per call)")
    print(f"matmul peak   {peak / 1e9:10.2f} GFLOP/s (float32, same process)")
    ratio = flops / best / peak
    print(f"ratio         {100 * ratio:10.1f} % of peak (floor 20 %: "
          f"{'met' if ratio >= 0.2 else 'MISSED'})")
    return dict(seconds=best, flops=flops, peak=peak, ratio=ratio)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    a = parser.parse_args()
    main(a.batch, a.prompt_len, a.new, a.repeats)
