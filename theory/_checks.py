"""Input checks shared by the theory functions."""

from __future__ import annotations

import numpy as np


def probabilities(p, what: str = "probabilities"):
    """``p`` as float64, refusing values outside [0, 1]. NaN passes through (a diverged
    seed's measurement): the functions return NaN for it, so a figure reports a failed
    claim instead of crashing after training."""
    p = np.asarray(p, np.float64)
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"{what} must lie in [0, 1], got {p}")
    return p
