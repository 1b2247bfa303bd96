"""The alpine-path-finding figure's panels (experiments/alpine_path_finding.py has the
definitions): W^M′ and W^V′ heatmaps beside A and R, the W^V set means of the transformer and
of Theorem 3's simplified model, accuracy by degree before and after RL, RL accuracy and
diversity against step with the saturation step dotted, the logit decomposition, and the
NTP train loss against step beside the loss of the data's generating rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments import alpine_measures as M
from experiments import harness


def plot(result: dict, config, run_dir: Path, *, sat_tol: float) -> None:
    """Write figure.png and figure.svg of an alpine-path-finding result."""
    fig, axes = harness.new_figure(12, ncols=5, size=3.3)
    panels = ((result["wm_seed0"], "W^M' (current -> next), seed 0"),
              (result["adjacency"], "adjacency A"),
              (result["wv_seed0"], "W^V' (target -> next), seed 0"),
              (result["reach_category"], "R: 2 obs, 1 real\\obs, 0 non (t > k)"))
    for ax, (mat, title) in zip(axes[:4], panels, strict=True):
        ax.imshow(mat, cmap="viridis", interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.set(xlabel="next node k", ylabel="row node")
    ax = axes[4]
    sets = ("obs", "real_obs", "non")
    for off, pre, label in ((-0.2, "", "transformer W^V'"), (0.2, "th_", "theorem model W^V")):
        agg = harness.seed_aggregate(np.stack([result[f"{pre}mean_{k}"] for k in sets], 1))
        ax.bar(np.arange(3) + off, agg.mean, 0.4, yerr=[agg.mean - agg.lo, agg.hi - agg.mean],
               capsize=3, label=label)
    ax.set_xticks(range(3), ["obs", "real\\obs", "non"])
    ax.set_title("mean value matrix per set (t > k)", fontsize=8)
    ax.legend(fontsize=6)
    ax = axes[10]
    parts = ("full", "add", "wv", "wm", "rest")
    for off, split in ((-0.2, "train"), (0.2, "test")):
        agg = harness.seed_aggregate(np.stack([result[f"dec_auc_{k}_{split}"] for k in parts],
                                              1))
        ax.bar(np.arange(5) + off, agg.mean, 0.4, yerr=[agg.mean - agg.lo, agg.hi - agg.mean],
               capsize=3, label=f"{split} states")
    ax.axhline(0.5, color="k", ls=":", lw=0.8)
    ax.set_xticks(range(5), ["full", "M'+V'", "W^V'", "W^M'", "rest"], fontsize=7)
    ax.set(ylim=(0, 1.05), ylabel="AUC valid vs invalid out-neighbour")
    r2 = harness.seed_aggregate(result["dec_r2_wv_train"]).mean
    ax.set_title(f"where the choice is made (R^2 of W^V', train: {r2:.2f})", fontsize=8)
    ax.legend(fontsize=6)
    ax = axes[5]
    counts = result["degree_counts"]
    for off, key, label in ((-0.2, "acc_degree_ntp", "NTP"), (0.2, "acc_degree_rl", "after RL")):
        a = harness.seed_aggregate(result[key])
        ax.bar(np.arange(3) + off, a.mean, 0.4, yerr=[a.mean - a.lo, a.hi - a.mean],
               capsize=3, label=label)
    ax.set_xticks(range(3), [f"deg {b}\n(n={c})" for b, c in zip(M.DEGREE_BUCKETS, counts,
                                                                   strict=True)])
    ax.set(ylim=(0, 1.05), ylabel="greedy test accuracy")
    ax.legend(fontsize=6)
    steps = result["rl_step"]
    for ax, key, label in ((axes[6], "acc", "accuracy, T=1"), (axes[7], "n_valid",
                           f"valid paths of {config.n_samples} samples"),
                           (axes[8], "kl", "KL(U_C || pi) on gold states"),
                           (axes[9], "entropy", "entropy of distinct valid paths")):
        for split in ("test", "train"):
            harness.plot_mean_ci(ax, steps, result[f"rl_{key}_{split}"], label=split,
                                 marker=".")
        ax.set(xlabel="RL step", ylabel=label)
        ax.legend(fontsize=6)
    sat = M.saturation_index(result["rl_acc_test"].mean(0), sat_tol)
    for ax in axes[6:10]:
        ax.axvline(steps[sat], color="k", ls=":", lw=0.8)
    axes[6].set_title("dotted: accuracy saturation (test)", fontsize=8)
    ax = axes[11]
    loss = np.asarray(result["ntp_loss"], np.float64)  # [steps, seeds]
    width = max(1, len(loss) // 50)  # a running mean: one batch's loss is noisy
    smooth = np.convolve(loss.mean(1), np.ones(width) / width, mode="valid")
    ax.plot(np.arange(width, len(loss) + 1), smooth, label="train loss, seed mean")
    ax.axhline(float(result["ntp_rule_loss"]), color="k", ls=":", lw=0.8,
               label="generating rule (uniform valid next)")
    ax.set(xlabel="NTP step", ylabel="loss per target token", yscale="log")
    ax.set_title("NTP training", fontsize=8)
    ax.legend(fontsize=6)
    harness.save_figure(fig, run_dir)
