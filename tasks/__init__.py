"""Toy tasks: graph and arithmetic problems as pure-JAX generators with exact verifiers.

    import tasks
    task = tasks.make("graph/path_finding", n_nodes=100)
    batch = task.sample(key, 256)
    reward = task.reward(batch, completions)

Each task module registers itself on import (see ``tasks.core.register``).
"""

from tasks.core import EOS, PAD, Batch, Task, Vocab, make, names, register, resolve  # noqa: I001

# Task modules register themselves; one import line per module.
# (graph tasks)
from tasks import graph_in_context, graph_search, path_finding, path_star  # noqa: F401
# (arithmetic tasks)
from tasks import addition, countdown, modular_sum  # noqa: F401
from tasks import multiplication, parity, sequence  # noqa: F401

__all__ = ["EOS", "PAD", "Batch", "Task", "Vocab", "make", "names", "register", "resolve"]
