"""Sampling and reward throughput of every registered task (default configs).

    .venv/bin/python benchmarks/tasks_throughput.py [--n 10000] [--repeats 5] [--task NAME]

For each task: compile time of ``jax.jit(task.sample)``, then the best of ``repeats`` timed
calls of ``sample(key, n)`` and of ``reward(batch, batch.targets)`` after compilation.
The target (issue "Done when") is a sample of 10,000 examples in under a second.
"""

from __future__ import annotations

import argparse
import time

import jax

import tasks


def best_time(fn, repeats: int) -> float:
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(i))
        times.append(time.perf_counter() - start)
    return min(times)


def measure(name: str, n: int, repeats: int) -> dict[str, float]:
    task = tasks.make(name)
    sample = jax.jit(task.sample, static_argnums=(1, 2))
    reward = jax.jit(task.reward)
    start = time.perf_counter()
    batch = jax.block_until_ready(sample(jax.random.key(0), n, "train"))
    compile_s = time.perf_counter() - start
    jax.block_until_ready(reward(batch, batch.targets))
    return {
        "compile_s": compile_s,
        "sample_s": best_time(lambda i: sample(jax.random.key(i + 1), n, "train"), repeats),
        "reward_s": best_time(lambda i: reward(batch, batch.targets), repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="examples per call")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls (best is kept)")
    parser.add_argument("--task", action="append", help="task name (repeatable); default all")
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, n = {args.n}")
    print(f"{'task':28s} {'compile s':>10s} {'sample s':>10s} {'reward s':>10s}  < 1 s?")
    for name in args.task or tasks.names():
        m = measure(name, args.n, args.repeats)
        ok = "yes" if m["sample_s"] < 1.0 else "NO"
        print(f"{name:28s} {m['compile_s']:10.2f} {m['sample_s']:10.4f} {m['reward_s']:10.4f}"
              f"  {ok}")


if __name__ == "__main__":
    main()
