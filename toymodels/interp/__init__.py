"""Looking inside a model: every tool is a thin layer over ``toymodels.model.forward``
(capture and interventions), so it works unchanged on trained models and on the compiled
reference circuits of ``theory.circuits``. A walk-through is in ``docs/interp.md``.

* ``cache``: ``load_weights`` (compiled circuits -> params), ``run_with_cache``,
  ``attention_patterns``, ``pattern_score``.
* ``attribution``: ``residual_parts``, ``direct_logit_attribution``, ``logit_lens``,
  ``ov_circuit``, ``qk_circuit``.
* ``patching``: ``head_ablation``, ``mean_activation``, ``ablate_neurons``, ``PatchPairs``,
  ``logit_diff``, ``patch_sweep`` (vmapped over layers, heads and positions).
* ``probes``: ``fit_probe`` (ridge or logistic, held-out and shuffled-label control),
  ``gather_positions``, ``labelled_rows`` (activations paired with ``tasks.pairs.latents``).
* ``formation``: ``formation_step``, ``scores_over_checkpoints``, ``ntp_checkpoints``,
  ``plot_formation``.
"""

from toymodels.interp.attribution import (
    direct_logit_attribution,
    logit_lens,
    ov_circuit,
    qk_circuit,
    residual_parts,
)
from toymodels.interp.cache import (
    attention_patterns,
    config_of,
    layout,
    load_weights,
    pattern_score,
    run_with_cache,
    weight,
)
from toymodels.interp.formation import (
    formation_step,
    ntp_checkpoints,
    plot_formation,
    scores_over_checkpoints,
)
from toymodels.interp.patching import (
    PatchPairs,
    PatchResult,
    ablate_neurons,
    head_ablation,
    logit_diff,
    mean_activation,
    patch_sweep,
)
from toymodels.interp.probes import ProbeResult, fit_probe, gather_positions, labelled_rows

__all__ = [
    "PatchPairs", "PatchResult", "ProbeResult", "ablate_neurons", "attention_patterns",
    "config_of", "direct_logit_attribution", "fit_probe", "formation_step", "gather_positions",
    "head_ablation", "labelled_rows", "layout", "load_weights", "logit_diff", "logit_lens",
    "mean_activation", "ntp_checkpoints", "ov_circuit", "patch_sweep", "pattern_score",
    "plot_formation", "qk_circuit", "residual_parts", "run_with_cache", "scores_over_checkpoints",
    "weight",
]
