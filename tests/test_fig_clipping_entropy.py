"""Figure 4, clipping-entropy: the quick run's claims, determinism, and wrong (flipped-sign)
predictions judged as not holding."""

import dataclasses
import json

import numpy as np
import pytest

import experiments
from experiments import clipping_entropy as M
from experiments import harness, runner
from toymodels import runs

# Not holding at the pilot seeds (0-4) nor at 977000: under (0.2, 0.2) the entropy falls but
# π(base mode) falls too (docs/theory_rl_dynamics.md §3). Reported, not asserted either way.
NOT_HOLDING = {"sym clip: base mode probability change"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    # Seeds never used while choosing the config (those were 0-4 and 977000-977004).
    cfg = dataclasses.replace(M.quick_config(), seed=5_550_000)
    run_dir = runner.execute(M, cfg, tmp_path_factory.mktemp("runs"))
    return cfg, run_dir, runs.load_metrics(run_dir)


def test_registered_and_protocol():
    assert experiments.get("clipping-entropy") is M
    assert M.quick_config().n_seeds >= 5 and M.Config().n_seeds >= 5


def test_quick_run_writes_files_and_claims_hold(quick):
    cfg, run_dir, result = quick
    for f in ("figure.png", "figure.svg", "claims.json", "config.json", "manifest.json"):
        assert (run_dir / f).is_file(), f
    found = json.loads((run_dir / "claims.json").read_text())
    assert len(found) == 7
    failed = {c["name"] for c in found if not c["holds"]}
    assert failed <= NOT_HOLDING, failed
    assert result["sym_entropy"].shape == (cfg.n_seeds, cfg.steps + 1)
    # Clipping is active in every multi-epoch setting (else the figure tests nothing).
    for name in ("sym", "low", "high"):
        assert result[f"{name}_clip_frac"].mean() > 0.02, name


def test_same_seed_same_numbers(quick, tmp_path):
    cfg, _, result = quick
    again = M.run(cfg, tmp_path)
    for key in ("sym_entropy", "low_p_mode", "onpolicy_dh"):
        np.testing.assert_array_equal(again[key], result[key])


def test_flipped_predictions_are_rejected(quick):
    # A sign test cannot reject a doubled constant: only the flip is a wrong prediction here.
    cfg, _, result = quick
    judged = {c.name: c for c in M.claims(harness.corrupt(result, M.PREDICTIONS, "flip"), cfg)}
    for name, c in judged.items():
        if c.predicted.startswith("sign") and name not in NOT_HOLDING:
            assert not c.holds, name
    # The on-policy drift claim is rejected when the drift is shifted by the sym effect.
    shifted = dict(result, onpolicy_dh=result["onpolicy_dh"] + result["sym_dh"].mean())
    onp = {c.name: c for c in M.claims(shifted, cfg)}["on-policy (1 epoch): entropy change"]
    assert not onp.holds


def test_config_is_validated():
    for bad in (dict(n_seeds=1), dict(group_size=10, minibatches=4), dict(eps_small=0.3),
                dict(epochs=1, minibatches=1)):
        with pytest.raises(ValueError):
            M.Config(**bad)


@pytest.mark.slow
def test_full_run_claims_hold(tmp_path):
    # Full mode (128 contexts, 100 steps) resolves the on-policy neutral drift (second order,
    # docs/theory_rl_dynamics.md §3): at seeds 0-4 ΔH = -0.008, 95% CI [-0.011, -0.005], about
    # 1 % of the symmetric-clip effect, so the "within noise" claim fails there (reported).
    cfg = dataclasses.replace(M.Config(), seed=6_660_000)
    found = M.claims(M.run(cfg, tmp_path), cfg)
    allowed = NOT_HOLDING | {"on-policy (1 epoch): entropy change"}
    assert {c.name for c in found if not c.holds} <= allowed
