"""Experiments: one module per figure (config, run, plot, claims), found by name.

    import experiments
    experiments.names()                         # ['entropy-mechanism', 'quickstart', ...]
    module = experiments.get("quickstart")
    experiments.runner.execute(module, module.quick_config(), "runs")

The protocol an experiment module follows is in docs/architecture.md; :func:`register`
checks it, so a module that misses a piece fails at import, not halfway through a run.
"""

from __future__ import annotations

import dataclasses
import types

REQUIRED = ("NAME", "PAPER", "DESCRIPTION", "Config", "quick_config", "run", "claims", "plot")

_REGISTRY: dict[str, types.ModuleType] = {}


def register(module: types.ModuleType) -> types.ModuleType:
    """Add an experiment module (checked against the protocol) under ``module.NAME``."""
    missing = [a for a in REQUIRED if not hasattr(module, a)]
    if missing:
        raise ValueError(f"experiment module {module.__name__} lacks {', '.join(missing)}")
    fields = {f.name for f in dataclasses.fields(module.Config)}
    if not {"seed", "n_seeds"} <= fields:
        raise ValueError(f"{module.__name__}.Config needs the fields seed and n_seeds")
    known = _REGISTRY.get(module.NAME)
    if known is not None and known is not module:
        raise ValueError(f"experiment {module.NAME!r} registered twice "
                         f"({known.__name__} and {module.__name__})")
    _REGISTRY[module.NAME] = module
    return module


def get(name: str) -> types.ModuleType:
    """The experiment module called ``name``; an unknown name lists the known ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(names())}")
    return _REGISTRY[name]


def names() -> list[str]:
    return sorted(_REGISTRY)


# Figure modules, one explicit import line each (add yours here).
from experiments import entropy_mechanism  # noqa: E402, I001
from experiments import quickstart  # noqa: E402
from experiments import clipping_entropy  # noqa: E402
from experiments import grpo_length_bias  # noqa: E402
from experiments import passk_support  # noqa: E402
from experiments import long_cot_emergence  # noqa: E402
from experiments import iteration_head  # noqa: E402
from experiments import alpine_path_finding  # noqa: E402
from experiments import reflection_emergence  # noqa: E402
from experiments import search_lookahead  # noqa: E402

register(entropy_mechanism)
register(quickstart)
register(clipping_entropy)
register(grpo_length_bias)
register(passk_support)
register(long_cot_emergence)
register(iteration_head)
register(alpine_path_finding)
register(reflection_emergence)
register(search_lookahead)
