"""The one training driver (next-token and RL): chunks of steps, each one compiled ``lax.scan``.

    result = run_chunks(step_fn, carry, total_steps=1000, chunk_size=100, run_dir=run_dir)
    result.carry, result.metrics["loss"]  # metrics: numpy, stacked over steps (axis 0)

``step_fn(carry, None) -> (carry, metrics)`` is a pure function. It must keep its step index
in the carry and draw each step's randomness as ``fold_in(base_key, step)``: then the chunk
boundaries (and an interruption between chunks) cannot change the numbers. A carry with a
leading seed axis (a ``vmap``-ed step function) works unchanged.

Between chunks (in Python): metrics go to the host, the progress bar advances, the loss is
checked (a NaN or Inf raises :class:`TrainingDiverged` and the bad state is not saved), and
``carry`` plus the metrics so far are checkpointed. With ``resume=True`` a run starts from the
newest checkpoint that verifies, saying which damaged ones it skipped.

Returns ``LoopResult(carry, metrics, stats)``; ``stats`` holds ``resumed_from``, ``skipped``,
``checkpoints`` written, ``compile_s`` and ``run_s``. Compiled chunks are cached per step
function object and chunk length: pass the same ``step_fn`` again and nothing recompiles.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from toymodels import checkpoint, runs

KEEP_LAST = 2  # rolling checkpoints kept, so a damaged newest one has a predecessor

_COMPILE_SECONDS = [0.0]
_CHUNK_CACHE: dict = {}  # (step_fn, n, treedef, shapes) -> compiled chunk
_CHUNK_CACHE_SIZE = 32  # process total, read by the experiments runner for the manifest


class TrainingDiverged(RuntimeError):
    """A loss (or the state) became NaN or Inf; the last good checkpoint is kept."""


class LoopResult(NamedTuple):
    carry: Any
    metrics: dict[str, np.ndarray]  # each [total_steps, ...] (the step function's shapes)
    stats: dict[str, Any]  # start_step, resumed_from, skipped, compile_s, run_s, checkpoints


def compile_seconds() -> float:
    """Seconds this process has spent compiling chunks (for the run manifest)."""
    return _COMPILE_SECONDS[0]


def log_spaced_steps(total_steps: int, n: int) -> list[int]:
    """About ``n`` distinct steps in ``[1, total_steps]``, evenly spaced in log(step).

    Dense early in training, where circuits form; always includes ``total_steps``.
    """
    if n <= 0 or total_steps <= 0:
        return []
    points = np.geomspace(1, total_steps, num=n)
    return sorted({int(round(p)) for p in points} | {total_steps})


# The step counter in every training carry is int32 (it indexes the data key and the
# schedules inside the compiled step): a run of more steps would wrap it, repeating batches
# and restarting the learning-rate schedule silently. NTPConfig and RLConfig refuse more.
MAX_STEPS = 2**31 - 1


def chunk_ends(total_steps: int, chunk_size: int, extra: Iterable[int] = ()) -> list[int]:
    """Steps at which chunks end: every ``chunk_size`` steps, at ``total_steps`` and at
    every step in ``extra`` (the checkpoint schedule)."""
    ends = set(range(chunk_size, total_steps, chunk_size)) | {total_steps}
    ends |= {s for s in extra if 0 < s <= total_steps}
    return sorted(ends)


def run_chunks(step_fn: Callable, carry: Any, *, total_steps: int, chunk_size: int,
               run_dir: Path | str | None = None, resume: bool = True,
               checkpoint_steps: Sequence[int] | None = None, desc: str = "",
               metrics_to_check: Sequence[str] = ("loss",),
               on_chunk: Callable[[int, dict], None] | None = None) -> LoopResult:
    """Run ``total_steps`` steps of ``step_fn`` from ``carry``; see the module docstring.

    checkpoint_steps: extra steps at which a chunk ends and a checkpoint is written that is
        never pruned (snapshots for watching circuits form). Other checkpoints roll: the
        newest ``KEEP_LAST`` are kept.
    metrics_to_check: metric names whose non-finite value stops the run.
    on_chunk: called after each chunk's checkpoint as ``on_chunk(step, metrics_so_far)``.
    """
    if total_steps < 1 or chunk_size < 1:
        raise ValueError(f"total_steps={total_steps} and chunk_size={chunk_size} must be >= 1")
    keep = sorted(set(checkpoint_steps or ()))
    ends = chunk_ends(total_steps, chunk_size, keep)
    step_shapes = jax.eval_shape(lambda c: step_fn(c, None)[1], carry)
    start, metrics, stats = 0, None, {"skipped": [], "resumed_from": None, "checkpoints": []}

    if run_dir is not None:
        existing = checkpoint.steps(run_dir)
        if existing and not resume:
            raise FileExistsError(f"{checkpoint.checkpoint_dir(run_dir)} already holds "
                                  "checkpoints; resume=True continues from them")
        if max(existing, default=0) > total_steps:
            raise runs.RunDirError(f"{run_dir} has a checkpoint at step {max(existing)} "
                                   f"beyond total_steps={total_steps}: a different run")
        start, carry, metrics, stats["skipped"] = _resume(run_dir, carry, step_shapes)
        stats["resumed_from"] = start or None

    if start and start not in ends:
        ends = sorted(set(ends) | {start})  # only a foreign checkpoint could cause this
    pieces = [] if metrics is None else [metrics]
    compile_s, t0 = 0.0, time.perf_counter()
    bar = tqdm(total=total_steps, initial=start, desc=desc, disable=None, leave=False)
    try:
        for end in [e for e in ends if e > start]:
            n = end - start
            tc = time.perf_counter()
            chunk = _compiled_chunk(step_fn, carry, n)
            compile_s += time.perf_counter() - tc
            new_carry, chunk_metrics, carry_finite = chunk(carry)
            chunk_metrics = jax.tree.map(np.asarray, chunk_metrics)
            _check_finite(chunk_metrics, metrics_to_check, start, bool(carry_finite), end,
                          _kept_note(run_dir, stats["resumed_from"], stats["checkpoints"]))
            carry, start = new_carry, end
            pieces.append(chunk_metrics)
            bar.update(n)
            if run_dir is not None:
                so_far = _concat(pieces)
                pieces = [so_far]
                checkpoint.save(run_dir, end, {"carry": carry, "metrics": so_far})
                checkpoint.prune(run_dir, keep_last=KEEP_LAST, keep_steps=keep)
                stats["checkpoints"].append(end)
            if on_chunk is not None:
                on_chunk(end, _concat(pieces))
    finally:
        bar.close()
        _COMPILE_SECONDS[0] += compile_s
    stats.update(start_step=stats["resumed_from"] or 0, compile_s=compile_s,
                 run_s=time.perf_counter() - t0 - compile_s)
    return LoopResult(carry, _concat(pieces) if pieces else _empty(step_shapes), stats)


# --------------------------------------------------------------------------- internals
def _compiled_chunk(step_fn: Callable, carry: Any, n: int):
    """One jitted ``lax.scan`` of ``n`` steps, compiled ahead of time (to time compilation)
    and cached per (step function, n, carry shapes), so calling ``run_chunks`` again with the
    same step function does not compile again.

    The chunk also returns whether every floating leaf of the final carry is finite, so that a state
    poisoned by the last step's update is never checkpointed.
    """

    def chunk(c):
        c, ms = jax.lax.scan(step_fn, c, xs=None, length=n)
        finite = [jnp.isfinite(x).all() for x in jax.tree.leaves(c)
                  if jnp.issubdtype(x.dtype, jnp.inexact)]
        return c, ms, jnp.stack(finite).all() if finite else jnp.bool_(True)

    avals = tuple((x.shape, str(x.dtype)) for x in jax.tree.leaves(carry))
    cache_key = (step_fn, n, jax.tree.structure(carry), avals)
    if cache_key not in _CHUNK_CACHE:
        if len(_CHUNK_CACHE) >= _CHUNK_CACHE_SIZE:
            _CHUNK_CACHE.pop(next(iter(_CHUNK_CACHE)))  # oldest first
        _CHUNK_CACHE[cache_key] = jax.jit(chunk).lower(carry).compile()
    return _CHUNK_CACHE[cache_key]


def _kept_note(run_dir, resumed_from: int | None, saved: list[int]) -> str:
    if run_dir is None:
        return "no checkpoints were being written (run_dir=None)"
    last = saved[-1] if saved else resumed_from
    if last is None:
        return "no checkpoint had been written yet"
    return f"the last good checkpoint (step {last}) is kept"


def _check_finite(metrics: dict, names: Sequence[str], start: int, carry_ok: bool,
                  end: int, kept: str) -> None:
    for name in names:
        if name not in metrics:
            continue
        rows = metrics[name].reshape(metrics[name].shape[0], -1)  # [steps, seeds or 1]
        bad = ~np.isfinite(rows).all(axis=1)
        if bad.any():
            row = int(np.argmax(bad))
            where = ""
            if rows.shape[1] > 1:  # a vmapped run: say which seeds
                where = f" (seed index {np.flatnonzero(~np.isfinite(rows[row])).tolist()})"
            raise TrainingDiverged(f"{name} is not finite at step {start + row}{where}: "
                                   f"{metrics[name][row]}; stopped, {kept}")
    if not carry_ok:
        raise TrainingDiverged(f"the training state holds NaN/Inf after step {end - 1}; "
                               f"stopped, {kept}")


def _resume(run_dir, carry, step_shapes):
    """Restore the newest good checkpoint, or start from ``carry``."""
    for path in checkpoint.remove_partial(run_dir):
        print(f"removed the unfinished save {path}", file=sys.stderr)
    blocking = checkpoint.blocking_files(run_dir)
    if blocking:  # refused now, not after the first chunk has trained
        raise FileExistsError(f"{', '.join(map(str, blocking))}: a file where a checkpoint "
                              "directory would be saved; move it away")
    existing = checkpoint.steps(run_dir)
    if not existing:
        return 0, carry, None, []

    def like(step):
        metrics = jax.tree.map(lambda s: jax.ShapeDtypeStruct((step, *s.shape), s.dtype),
                               step_shapes)
        return {"carry": carry, "metrics": metrics}

    step, tree, skipped = checkpoint.restore_latest(run_dir, like)
    for skip in skipped:
        moved = checkpoint.set_aside(skip)
        print(f"checkpoint {skip.path} skipped: {skip.reason} (moved to {moved.name})",
              file=sys.stderr)
    if step is not None:
        print(f"resuming {run_dir} from step {step}", file=sys.stderr)
        return step, tree["carry"], jax.tree.map(np.asarray, tree["metrics"]), skipped
    print(f"no good checkpoint in {run_dir}; starting from step 0", file=sys.stderr)
    return 0, carry, None, skipped


def _concat(pieces: list[dict]) -> dict:
    if len(pieces) == 1:
        return pieces[0]
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *pieces)


def _empty(step_shapes) -> dict:
    return jax.tree.map(lambda s: np.zeros((0, *s.shape), s.dtype), step_shapes)
