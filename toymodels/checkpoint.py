"""Checkpoints of any pytree, with a checksum, and a walk back over damaged ones.

Layout: ``run_dir/checkpoints/<step>/`` is one Orbax checkpoint (Orbax writes into a
temporary directory and renames it when complete, so a half-written save never carries a
step's name); after the rename we write ``<step>/checksum.sha256``: the sha256 of every other
file under ``<step>/`` (relative path and bytes). A checkpoint is *good* when its checksum file
exists and matches. A run killed between the rename and the checksum leaves a checkpoint
without a checksum, which :func:`latest_good` skips like a corrupt one.

The tree is flattened to its leaves before saving (so NNX ``State``, optax states and
named tuples need no special handling) and unflattened into a template on restore. Typed PRNG
keys are stored as their raw ``uint32`` key data (``jax.random.key_data``) and rebuilt with
``jax.random.wrap_key_data``.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from toymodels.runs import RunDirError

CHECKSUM_FILE = "checksum.sha256"


class CheckpointMismatch(RunDirError):
    """A checkpoint whose checksum verifies (its files are exactly as saved) but which does not
    fit the template: it belongs to another run (config, seed layout), not a damaged save, so
    it is never set aside or overwritten."""


class Skipped(NamedTuple):
    """A checkpoint that :func:`latest_good` or :func:`restore_latest` passed over, and why."""

    step: int
    path: Path
    reason: str


def checkpoint_dir(run_dir: Path | str) -> Path:
    return Path(run_dir) / "checkpoints"


def steps(run_dir: Path | str) -> list[int]:
    """Steps with a finalised checkpoint directory (good or not), ascending."""
    return sorted(int(p.name) for p in _step_named(run_dir) if p.is_dir())


def blocking_files(run_dir: Path | str) -> list[Path]:
    """Files (not checkpoint directories) named like a step in ``checkpoints/``: a save at
    that step would fail, so a run refuses to start beside them."""
    return sorted(p for p in _step_named(run_dir) if not p.is_dir())


def _step_named(run_dir: Path | str) -> list[Path]:
    """Entries of ``checkpoints/`` named like a step (ASCII digits: "²" is not one)."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if p.name.isascii() and p.name.isdigit()]


def save(run_dir: Path | str, step: int, tree: Any) -> Path:
    """Save ``tree`` as ``run_dir/checkpoints/<step>/``; returns that path once durable."""
    path = checkpoint_dir(run_dir) / str(int(step))
    if path.exists():
        raise FileExistsError(f"checkpoint {path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves = _to_storable(jax.tree.leaves(tree))
    checkpointer = ocp.StandardCheckpointer()
    try:
        checkpointer.save(path.absolute(), {"leaves": leaves})
        checkpointer.wait_until_finished()
    finally:
        checkpointer.close()
    tmp = path / (CHECKSUM_FILE + ".tmp")
    tmp.write_text(_digest(path) + "\n")
    tmp.replace(path / CHECKSUM_FILE)
    return path


def restore(path: Path | str, like: Any) -> Any:
    """Restore the checkpoint at ``path`` into the structure, shapes and dtypes of ``like``.

    ``like`` may hold arrays or ``jax.ShapeDtypeStruct``s. Raises ``ValueError`` if the
    checkpoint does not fit the template.
    """
    leaves, treedef = jax.tree.flatten(like)
    target = {"leaves": _to_storable([jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves])}
    absolute = Path(path).absolute()
    checkpointer = ocp.StandardCheckpointer()
    try:
        # Compare with the stored shapes first: a checkpoint of another layout gets one clear
        # error, and Orbax is never asked for a restore it would abandon half way. What
        # Orbax then returns has the checked shapes and dtypes.
        _check_fits(path, checkpointer.metadata(absolute), target["leaves"])
        got = checkpointer.restore(absolute, target)["leaves"]
    finally:
        checkpointer.close()
    out = []
    for i, leaf in enumerate(leaves):
        value = got[_name(i)] if _name(i) in got else np.zeros(leaf.shape, leaf.dtype)
        if _is_key(leaf):  # a template of shapes only carries no impl: use the default one
            impl = jax.random.key_impl(leaf) if isinstance(leaf, jax.Array) else None
            value = jax.random.wrap_key_data(value, impl=impl)
        out.append(value)
    return jax.tree.unflatten(treedef, out)


def verify(path: Path | str) -> str | None:
    """None if the checkpoint at ``path`` is good, else the reason it is not."""
    path = Path(path)
    check = path / CHECKSUM_FILE
    if not check.is_file():
        return "no checksum file (the save did not complete)"
    want = check.read_text().strip()
    got = _digest(path)
    if got != want:
        return f"checksum mismatch (files truncated or changed): {got[:12]} != {want[:12]}"
    return None


def latest_good(run_dir: Path | str) -> tuple[int | None, list[Skipped]]:
    """The newest step whose checkpoint verifies, and the newer ones skipped (with reasons)."""
    skipped = []
    for step in reversed(steps(run_dir)):
        path = checkpoint_dir(run_dir) / str(step)
        reason = verify(path)
        if reason is None:
            return step, skipped
        skipped.append(Skipped(step, path, reason))
    return None, skipped


def restore_latest(run_dir: Path | str, like: Any) -> tuple[int | None, Any, list[Skipped]]:
    """Restore the newest checkpoint that verifies *and* restores into ``like``.

    ``like`` is a template, or a function ``step -> template`` where the shapes depend on the
    step (metrics stacked over the steps so far). Returns ``(step, tree, skipped)``, or
    ``(None, None, skipped)`` when there is none. Raises :class:`CheckpointMismatch` when a
    checkpoint verifies but does not restore into ``like`` (another run's layout).
    """
    skipped = []
    for step in reversed(steps(run_dir)):
        path = checkpoint_dir(run_dir) / str(step)
        reason = verify(path)
        if reason is None:
            try:
                return step, restore(path, like(step) if callable(like) else like), skipped
            except Exception as err:  # noqa: BLE001 - the files are intact: not damage
                raise CheckpointMismatch(
                    f"checkpoint {path} is intact but does not fit this run's state "
                    f"({type(err).__name__}: {str(err)[:200]}): it was saved by another "
                    "config or seed layout; use a fresh run_dir") from err
        skipped.append(Skipped(step, path, reason))
    return None, None, skipped


def prune(run_dir: Path | str, *, keep_last: int = 2, keep_steps: Sequence[int] = ()) -> None:
    """Delete checkpoints except the newest ``keep_last`` and those at ``keep_steps``."""
    all_steps = steps(run_dir)
    protected = set(all_steps[-keep_last:] if keep_last > 0 else []) | set(keep_steps)
    for step in all_steps:
        if step not in protected:
            shutil.rmtree(checkpoint_dir(run_dir) / str(step))


def remove_partial(run_dir: Path | str) -> list[Path]:
    """Delete Orbax's temporary directories of saves that never completed (a process killed
    mid-save leaves ``<step>.orbax-checkpoint-tmp-*``); they hold nothing recoverable."""
    root = checkpoint_dir(run_dir)
    partial = [p for p in root.glob("*.orbax-checkpoint-tmp*")] if root.is_dir() else []
    for path in partial:
        shutil.rmtree(path, ignore_errors=True)
    return partial


def set_aside(skipped: Skipped) -> Path:
    """Rename a damaged checkpoint to ``<step>.bad`` (``<step>.bad.1``, ... if that exists:
    earlier ones are kept), ignored by :func:`steps`, so that the step can be saved again."""
    target = skipped.path.with_name(f"{skipped.step}.bad")
    n = 0
    while target.exists():
        n += 1
        target = skipped.path.with_name(f"{skipped.step}.bad.{n}")
    skipped.path.rename(target)
    return target


# --------------------------------------------------------------------------- internals
def _check_fits(path, metadata, wanted: dict) -> None:
    """``ValueError`` unless the checkpoint stores exactly ``wanted``'s arrays, each with
    its shape and dtype (from Orbax's metadata, without reading the arrays)."""
    stored = getattr(metadata, "item_metadata", metadata)
    stored = getattr(stored, "tree", stored)["leaves"]
    if sorted(stored) != sorted(wanted):
        raise ValueError(f"checkpoint {path} has {len(stored)} arrays, expected {len(wanted)}")
    for name, want in wanted.items():
        got = stored[name]
        if tuple(got.shape) != tuple(want.shape) or np.dtype(got.dtype) != np.dtype(want.dtype):
            raise ValueError(f"checkpoint {path}: array {int(name)} is {got.dtype}{got.shape}, "
                             f"expected {want.dtype}{want.shape}")


def _name(i: int) -> str:
    return f"{i:05d}"


def _is_key(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _to_storable(leaves: list) -> dict[str, Any]:
    """Leaves as a flat dict; keys as their uint32 data, numbers as arrays."""
    out = {}
    for i, x in enumerate(leaves):
        if isinstance(x, jax.ShapeDtypeStruct):
            if _is_key(x):
                x = jax.eval_shape(jax.random.key_data, x)
        elif _is_key(x):
            x = jax.random.key_data(x)
        elif not isinstance(x, jax.Array | np.ndarray):
            x = np.asarray(x)
        if x.size > 0:  # Orbax refuses zero-size arrays; restore() rebuilds them from `like`
            out[_name(i)] = x
    return out


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if rel.startswith(CHECKSUM_FILE):
            continue
        h.update(rel.encode() + b"\0")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()
