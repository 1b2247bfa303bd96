"""Analytic predictions: pure numpy / jax functions, each naming its paper and equation.

* ``theory.entropy``: first-order entropy change of a softmax policy and the R–H law
  (Cui et al. 2025, arXiv 2505.22617).
* ``theory.passk``: unbiased and exact pass@k (Chen et al. 2021, arXiv 2107.03374).
* ``theory.grpo_weights``: per-token and per-prompt weights under GRPO and Dr.GRPO
  (Liu et al. 2025, arXiv 2503.20783).
* ``theory.support``: support preservation of on-policy policy gradient
  (Wu et al. 2025, arXiv 2507.14843).
* ``theory.reflection``: derived rates for long chains of thought and reflection
  (after Tsilivis et al. 2025, arXiv 2510.11495).
* ``theory.circuits``: compiled reference circuits (ALPINE, arXiv 2405.09220; iteration
  heads, arXiv 2406.02128).

Derivations of our own are in ``docs/theory.md``.
"""

from theory import circuits, entropy, grpo_weights, passk, reflection, support

__all__ = ["circuits", "entropy", "grpo_weights", "passk", "reflection", "support"]
