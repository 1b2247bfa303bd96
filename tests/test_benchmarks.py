"""The benchmark scripts run at their smallest settings and print their figures (the model
benchmarks against the matmul peak measured in the same process). Speed itself is not
asserted: it is what the scripts print. Marked slow: about a minute of compiles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.slow
@pytest.mark.parametrize("script, args, expect", [
    ("ntp_step.py", ["--steps", "2", "--repeats", "1"], "ratio to peak"),
    ("sampler_throughput.py", ["--batch", "8", "--new", "4", "--repeats", "1"], "of peak"),
    ("tasks_throughput.py", ["--n", "100", "--repeats", "1", "--task", "seq/copy"], "seq/copy"),
    ("rl_throughput.py", ["--steps", "1"], "of peak"),
])
def test_benchmark_script_runs_and_reports_against_the_peak(script, args, expect):
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert expect in done.stdout, done.stdout[-2000:]
