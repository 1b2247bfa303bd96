"""Runs on disk: ``runs/<name>/<config-hash>/`` with config, manifest, metrics, checkpoints.

    run_dir = run_dir_for("runs", "quickstart", config)   # runs/quickstart/3f2a9c0b1d4e
    run_dir.mkdir(parents=True, exist_ok=True)             # run_dir_for only names it
    write_config(run_dir, config)                          # config.json
    write_manifest(run_dir, config, seeds=[0, 1], command="toyreason run quickstart", ...)
    save_metrics(run_dir, {"loss": array, ...})            # metrics.npz + metrics.json summary

The id is the config hash, so the same config lands in the same directory (a rerun resumes
from its checkpoints where the run writes them: training through ``make_train(config,
run_dir)``, e.g. ``quickstart``; the theory figures train in memory and rerun from scratch)
while any changed value gets a directory of its own.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from toymodels.configs import config_hash, to_dict

MANIFEST_FILE = "manifest.json"
PACKAGES = ("toyreason", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "chex")


class RunDirError(ValueError):
    """A run directory that cannot be used as it is: a missing or damaged file, or the
    files of another run (config, seed layout, kind). Nothing in it is changed; the message
    names the file. A ``ValueError``, so callers that catch those keep working; the
    ``toyreason`` command prints it as one line instead of a traceback."""


def run_dir_for(root: Path | str, name: str, config: Any) -> Path:
    """``root/<name>/<config_hash(config)>`` (not created)."""
    return Path(root) / name / config_hash(config)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename): a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """The JSON in ``path``; a missing or unreadable file is a ``ValueError`` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError) as err:
        raise RunDirError(f"{path} does not exist: is this a run directory?") from err
    except (ValueError, UnicodeDecodeError, IsADirectoryError) as err:
        raise RunDirError(f"{path} is unreadable ({err}): the file is damaged") from err


def claim_json(path: Path, record: Any, what: str) -> None:
    """Write ``record`` to ``path`` unless the file already holds a different one.

    A run directory belongs to one run: a second run with another config or seed layout
    would otherwise overwrite this record and make the checkpoints beside it unreadable.
    ``what`` names the record in the error ("NTPConfig", "seed layout")."""
    path = Path(path)
    if path.parent.exists() and not path.parent.is_dir():
        raise RunDirError(f"run_dir {path.parent} exists and is not a directory")
    wanted = json.loads(json.dumps(record, default=_json_default))
    if path.exists():
        if read_json(path) != wanted:
            raise RunDirError(f"{path.parent} holds a run of another {what} ({path}); use a "
                              "fresh run_dir")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record)


def write_config(run_dir: Path, config: Any) -> Path:
    path = Path(run_dir) / "config.json"
    write_json(path, to_dict(config))
    return path


def write_manifest(run_dir: Path, config: Any, *, seeds: list[int], command: str = "",
                   wall_s: float | None = None, compile_s: float | None = None,
                   status: str = "complete", extra: dict | None = None,
                   filename: str = MANIFEST_FILE) -> Path:
    """``manifest.json``: what ran, where, with which software, and how to run it again."""
    manifest = {
        "config_hash": config_hash(config),
        "config_class": f"{type(config).__module__}.{type(config).__qualname__}",
        "seeds": [int(s) for s in seeds],
        "status": status,
        "command": command,
        "wall_s": wall_s,
        "compile_s": compile_s,
        "versions": package_versions(),
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "devices": [str(d) for d in jax.devices()],
        "platform": platform.platform(),
        "argv": sys.argv,
    }
    manifest.update(extra or {})
    path = Path(run_dir) / filename
    write_json(path, manifest)
    return path


def manifest_status(run_dir: Path) -> str | None:
    """The ``status`` recorded in ``run_dir/manifest.json``; None if absent or unreadable."""
    try:
        return json.loads((Path(run_dir) / MANIFEST_FILE).read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """HEAD of the repository holding this package, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def save_metrics(run_dir: Path, metrics: dict[str, Any]) -> Path:
    """Array-like entries to ``metrics.npz``; a summary (scalars, final values) to
    ``metrics.json``. Nested dicts are flattened with ``/`` in the key."""
    flat = _flatten(metrics)
    arrays = {}
    for key, value in flat.items():
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError):
            continue
        if arr.dtype.kind in "biufc":
            arrays[key] = arr
    path = Path(run_dir) / "metrics.npz"
    tmp = path.with_name("metrics.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    write_json(Path(run_dir) / "metrics.json", summarise(arrays))
    return path


def load_metrics(run_dir: Path) -> dict[str, np.ndarray]:
    with np.load(Path(run_dir) / "metrics.npz") as data:
        return {k: data[k] for k in data.files}


def summarise(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Scalars as they are; arrays as shape plus the mean of their last entry along axis 0."""
    out = {}
    for key, arr in arrays.items():
        if arr.ndim == 0:
            out[key] = _number(arr)
        elif arr.size:
            out[key] = {"shape": list(arr.shape), "final_mean": _number(np.mean(arr[-1]))}
    return out


# --------------------------------------------------------------------------- internals
def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _number(x) -> float | int | str:
    x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


def _json_default(x):
    if isinstance(x, np.generic):
        return _number(x)
    if isinstance(x, np.ndarray | jax.Array):
        return np.asarray(x).tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"cannot write {type(x).__name__} as JSON")
