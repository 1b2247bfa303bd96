"""Shared by the resume tests: SIGKILL a child training run at a checkpoint it announces."""

from __future__ import annotations

import signal
import subprocess


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
