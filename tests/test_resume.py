"""Interrupted runs: a process killed with SIGKILL mid-training and resumed ends bitwise equal
to an uninterrupted run, and two processes with the same seed give the same numbers (CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from helpers import sigkill_when

from toymodels import checkpoint
from toymodels.config import ModelConfig
from toymodels.configs import to_dict
from toymodels.train import NTPConfig, make_train

# The values of test_train's four-seed run (TINY, seeds 3..6): in one pytest process the
# compiled chunk is then shared (the cache is keyed by the config hash). Checkpoints at 4, 8.
CONFIG = NTPConfig(model=ModelConfig(vocab_size=7, max_len=8, n_layers=1, n_heads=1,
                                     d_model=16, d_mlp=0),
                   task="seq/copy", task_config={"length": 3, "n_symbols": 4}, steps=8,
                   batch_size=8, lr=1e-2, warmup_steps=2, chunk_size=4, seed=3, n_seeds=4)

# Trains CONFIG (argv[1], JSON) into run_dir (argv[2]) and saves params and metrics to argv[3].
# With argv[4] == "slow" it prints each checkpoint it saves and then pauses, so the test can
# kill it at a known point (after a complete checkpoint, with training still to do).
CHILD = textwrap.dedent("""
    import json, sys, time
    import jax, numpy as np
    from toymodels import checkpoint
    from toymodels.configs import from_dict
    from toymodels.train import NTPConfig, make_train

    config = from_dict(NTPConfig, json.loads(sys.argv[1]))
    if sys.argv[4] == "slow":
        save = checkpoint.save
        def announced_save(run_dir, step, tree):
            path = save(run_dir, step, tree)
            print(f"saved {step}", flush=True)
            time.sleep(2.0)
            return path
        checkpoint.save = announced_save
    params, metrics = make_train(config, sys.argv[2])()
    arrays = {f"param_{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(params))}
    np.savez(sys.argv[3], **arrays, **{f"metric_{k}": v for k, v in metrics.items()})
""")


def child(tmp_path, name: str, mode: str) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    args = [sys.executable, str(script), json.dumps(to_dict(CONFIG)), str(tmp_path / name),
            str(tmp_path / f"{name}.npz"), mode]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})


def as_arrays(params, metrics) -> dict[str, np.ndarray]:
    out = {f"param_{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(params))}
    return out | {f"metric_{k}": v for k, v in metrics.items()}


def assert_bitwise_equal(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def uninterrupted():
    """CONFIG trained in this process, in one go, without checkpoints."""
    return as_arrays(*make_train(CONFIG)())


def test_sigkilled_run_resumes_bitwise_equal(tmp_path, uninterrupted):
    proc = child(tmp_path, "run", "slow")
    assert sigkill_when(proc, "saved 4", timeout=120) == -signal.SIGKILL  # killed, not finished
    run_dir = tmp_path / "run"
    assert checkpoint.steps(run_dir)[-1] == 4 and not (tmp_path / "run.npz").exists()

    train = make_train(CONFIG, run_dir)
    resumed = as_arrays(*train())
    assert train.stats["resumed_from"] == 4
    assert_bitwise_equal(resumed, uninterrupted)


def test_two_processes_give_the_same_numbers(tmp_path, uninterrupted):
    proc = child(tmp_path, "other", "fast")
    assert proc.wait(timeout=300) == 0
    with np.load(tmp_path / "other.npz") as data:
        other = {k: data[k] for k in data.files}
    assert_bitwise_equal(other, uninterrupted)
