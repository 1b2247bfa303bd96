"""Toy tasks: graph and arithmetic problems as pure-JAX generators with exact verifiers.

    import tasks
    task = tasks.make("graph/path_finding", n_nodes=100)
    batch = task.sample(key, 256)
    reward = task.reward(batch, completions)

Each task module registers itself on import (see ``tasks.core.register``).
"""

from tasks.core import EOS, PAD, Batch, Task, Vocab, make, names, register, resolve

# Task modules register themselves; one import line per module.
# (graph tasks)
# (arithmetic tasks)

__all__ = ["EOS", "PAD", "Batch", "Task", "Vocab", "make", "names", "register", "resolve"]
