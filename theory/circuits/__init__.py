"""Compiled reference circuits: the weights a theory says solve a task (tracr's idea,
Lindner et al. 2023, arXiv 2301.05062, in our own model layout).

Each builder returns ``(config, weights)``:

* ``config``: a plain dict of ``toymodels.config.ModelConfig`` fields;
* ``weights``: ``{layout name: numpy float32 array}`` for every parameter of that model,
  named by the path of the parameter in the model's state joined with dots
  (``embed``, ``pos_embed``, ``blocks.0.attn.W_QKV``, ``blocks.0.mlp.W_in``, ``W_U``, ...).

``theory`` imports numpy only, so it cannot build the model itself; the loader
``toymodels.interp.load_weights(config, weights) -> (graphdef, params)`` puts the weights into
the model and checks every name and shape against the real layout.

* ``theory.circuits.alpine``: path finding, ALPINE Theorem 2 (Wang et al. 2024,
  arXiv 2405.09220).
* ``theory.circuits.iteration_head``: parity with chain of thought, the two-layer iteration
  head (Cabannes et al. 2024, arXiv 2406.02128).
"""

from __future__ import annotations

from theory.circuits import alpine, iteration_head
from theory.circuits.layout import empty_weights

__all__ = ["alpine", "empty_weights", "iteration_head"]
