"""Shared by several test files: SIGKILL a child training run at a checkpoint it announces;
a fake figure module for the runner and the report; the logit crossing step's reference."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import types

import numpy as np

from experiments.claims import at_least


def sigkill_when(proc: subprocess.Popen, line: str, timeout: float) -> int:
    """Read the child's stdout until it prints ``line``, SIGKILL it there, and return its exit
    code (``-SIGKILL`` when it was killed, not finished). The child never outlives the call."""
    try:
        for out in proc.stdout:
            if out.strip() == line:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=timeout)
    finally:
        proc.kill()
    return proc.returncode


# ----------------------------------------------------------------- a fake figure module
@dataclasses.dataclass(frozen=True)
class FakeConfig:
    seed: int = 0
    n_seeds: int = 1
    value: float = 2.0

    def __post_init__(self):
        if self.value < 0:
            raise ValueError(f"FakeConfig.value={self.value} is not allowed: >= 0")


def fake_module(fail_in_run: bool = False) -> types.ModuleType:
    def run(config, run_dir):
        if fail_in_run:
            raise RuntimeError("boom")
        return {"curve": np.arange(3.0) * config.value, "final": config.value}

    def plot(result, config, run_dir):
        (run_dir / "figure.png").write_bytes(b"png")

    module = types.ModuleType("fake")
    module.__dict__.update(
        NAME="fake", PAPER="none", DESCRIPTION="test double", Config=FakeConfig,
        quick_config=FakeConfig, run=run, plot=plot,
        claims=lambda result, config: [at_least("value >= 1", 1.0, result["final"])])
    return module


def crossing_reference(steps, q, q_star, clip):
    """First log j with q_j >= q*; between logs j−1 and j, the step where the straight line
    through (step, logit q) of the two logs meets logit q* (``harness.logit_crossing_step``'s
    definition, written out independently)."""
    q = np.clip(np.asarray(q, np.float64), clip, 1 - clip)
    logit = lambda p: np.log(p / (1 - p))
    for j, qj in enumerate(q):
        if qj >= q_star:
            if j == 0:
                return float(steps[0])
            a, b = logit(q[j - 1]), logit(qj)
            return float(steps[j - 1] + (logit(q_star) - a) / (b - a)
                         * (steps[j] - steps[j - 1]))
    return float("nan")
