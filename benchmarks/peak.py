"""The float32 matmul peak of this process: the yardstick for every FLOP/s benchmark.

    python benchmarks/peak.py

A square matmul C = A B of size n costs 2 n^3 FLOPs. We jit it, run it once to compile,
then time several runs and keep the best (the least disturbed by other processes). Measure
it in the same process as the benchmark it normalises: thread pools, frequency scaling and
other users of the machine make a number from another process a poor reference.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp


def matmul_peak_flops(n: int | tuple[int, ...] = (1024, 2048), dtype=jnp.float32,
                      repeats: int = 5) -> float:
    """Best FLOP/s over ``repeats`` jitted n x n matmuls, for each n given (1024..2048)."""
    sizes = (n,) if isinstance(n, int) else tuple(n)
    if not sizes or any(not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"n={n!r} is not allowed: a positive int or a tuple of them")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats={repeats!r} is not allowed: an integer >= 1")
    matmul = jax.jit(jnp.matmul)
    best = 0.0
    for size in sizes:
        ka, kb = jax.random.split(jax.random.key(size))
        a = jax.random.normal(ka, (size, size), dtype)
        b = jax.random.normal(kb, (size, size), dtype)
        matmul(a, b).block_until_ready()  # compile and warm up
        for _ in range(repeats):
            start = time.perf_counter()
            matmul(a, b).block_until_ready()
            best = max(best, 2.0 * size**3 / (time.perf_counter() - start))
    return best


if __name__ == "__main__":
    print(f"backend {jax.default_backend()}, devices {jax.devices()}")
    for size in (1024, 2048):
        print(f"n={size}: {matmul_peak_flops(size) / 1e9:8.1f} GFLOP/s (float32, best of 5)")
