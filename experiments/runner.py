"""The one place that turns an experiment module and a config into ``runs/<NAME>/<id>/``.

    run_dir = execute(experiments.get("quickstart"), config, "runs")

writes ``config.json`` and ``manifest.json`` (status ``running``) first, then calls
``module.run``, saves ``metrics.npz`` / ``metrics.json``, calls ``module.plot`` and
``module.claims``, writes ``claims.json``, prints the claims table and completes the manifest
(wall and compile time, claims held, the command that reproduces the run). The config is
checked before anything is written. A failed claim is reported, and raises
:class:`ClaimsFailed` only with ``strict=True``.
"""

from __future__ import annotations

import json
import math
import shlex
import time
import types
from pathlib import Path
from typing import Any

from experiments import claims as C
from tasks.core import check_seed
from toymodels import loop, runs
from toymodels.configs import from_dict, to_dict

ATTEMPT_FILE = "attempt.json"  # the manifest of a rerun of a completed run, until it ends


class ClaimsFailed(RuntimeError):
    """Raised by ``execute(..., strict=True)`` when a claim does not hold."""

    def __init__(self, run_dir: Path, failed: list[str]):
        super().__init__(f"{len(failed)} claim(s) failed in {run_dir}: {', '.join(failed)}")
        self.run_dir, self.failed = run_dir, failed


def validate(module: types.ModuleType, config: Any) -> Any:
    """The config re-built from its JSON form (so what runs is what ``config.json`` says);
    ``ValueError`` if it is not a valid ``module.Config``."""
    if not isinstance(config, module.Config):
        raise ValueError(f"config is a {type(config).__name__}, expected "
                         f"{module.__name__}.Config")
    check_seed(module.NAME, "seed", config.seed)  # every figure: no silent aliasing
    for key, value in _flatten(to_dict(config)).items():
        for v in value if isinstance(value, list) else [value]:
            # no figure has a meaningful infinite or NaN setting: a typo must not run
            # (lr=inf trains to NaN and reports every claim as failed, or crashes late)
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{module.NAME}: {key}={value} is not allowed: a finite "
                                 "number")
    rebuilt = from_dict(module.Config, json.loads(json.dumps(to_dict(config))))
    if rebuilt != config:
        raise ValueError("config does not survive a JSON round trip; use JSON-able fields")
    return rebuilt


def execute(module: types.ModuleType, config: Any, out_root: Path | str, *,
            strict: bool = False, command: str = "") -> Path:
    """Run one experiment into ``out_root/<NAME>/<config hash>/`` and return that path."""
    config = validate(module, config)
    run_dir = runs.run_dir_for(out_root, module.NAME, config)
    run_dir.mkdir(parents=True, exist_ok=True)
    runs.write_config(run_dir, config)
    seeds = list(range(config.seed, config.seed + config.n_seeds))
    command = command or reproduce_command(module, config)
    manifest = dict(seeds=seeds, command=command,
                    extra={"experiment": module.NAME, "paper": module.PAPER,
                           "reproduce": reproduce_command(module, config)})
    # A rerun of a completed run (same config hash: the same numbers) must not replace its
    # manifest with "running" or "failed": the attempt is recorded beside it until it ends.
    completed = (runs.manifest_status(run_dir) == "complete")
    attempt = ATTEMPT_FILE if completed else runs.MANIFEST_FILE
    runs.write_manifest(run_dir, config, status="running", filename=attempt, **manifest)

    t0, compile0 = time.perf_counter(), loop.compile_seconds()
    try:
        result = module.run(config, run_dir)
        runs.save_metrics(run_dir, result)
        module.plot(result, config, run_dir)
        found = module.claims(result, config)
    except BaseException as err:
        manifest["extra"]["error"] = f"{type(err).__name__}: {err}"
        runs.write_manifest(run_dir, config, status="failed", filename=attempt,
                            wall_s=time.perf_counter() - t0, **manifest)
        raise
    C.write_claims(found, run_dir / "claims.json")
    failed = [c.name for c in found if not c.holds]
    manifest["extra"]["claims_held"] = f"{len(found) - len(failed)}/{len(found)}"
    runs.write_manifest(run_dir, config, status="complete", wall_s=time.perf_counter() - t0,
                        compile_s=_compile_seconds_since(compile0), **manifest)
    (run_dir / ATTEMPT_FILE).unlink(missing_ok=True)
    print(f"{module.NAME}: {run_dir}")  # after the files: a closed stdout loses nothing
    print(C.table(found))
    if strict and failed:
        raise ClaimsFailed(run_dir, failed)
    return run_dir


def _compile_seconds_since(start: float) -> float | None:
    """Compile time measured by ``toymodels.loop`` since ``start``; None (not 0) for figures
    that compile outside it, whose compile time is not measured."""
    spent = loop.compile_seconds() - start
    return spent if spent > 0 else None


def reproduce_command(module: types.ModuleType, config: Any) -> str:
    """``toyreason run NAME --seed S --seeds N --set k=v ...`` for every field that differs
    from ``module.Config()``'s default (all fields when the defaults cannot be built)."""
    mine = _flatten(to_dict(config))
    try:
        default = _flatten(to_dict(module.Config()))
    except (TypeError, ValueError):
        default = {}
    parts = ["toyreason", "run", module.NAME, "--seed", str(config.seed),
             "--seeds", str(config.n_seeds)]
    for key, value in mine.items():
        if key in ("seed", "n_seeds") or (key in default and default[key] == value):
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        parts += ["--set", f"{key}={text}"]
    return shlex.join(parts)


def _flatten(d: dict, prefix: str = "") -> dict:
    """Nested dataclass dicts to dotted keys; a dict-typed field stays one JSON value."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:  # nested config or dict field: dotted keys
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out

