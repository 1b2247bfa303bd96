"""Figure 4, clipping-entropy: the quick run's claims, determinism, and wrong (flipped-sign)
predictions judged as not holding."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import experiments
from experiments import clipping_entropy as M
from experiments import harness, runner
from toymodels import runs

# The mode claim under (0.2, 0.2) failed with G = 64 for 100 steps: the neutral drift cancelled
# the clip bias (docs/theory_rl_dynamics.md §3). The figure now uses G = 256 for 25 steps,
# chosen from a seed-0 analysis. In full mode the claim held at seeds 0, 1000, 2000 and
# 6660000. Quick mode (64 contexts, 10 steps) lacks the power at the test seed below. There the
# mean was +0.009 and the 95% CI [-0.0003, 0.019], with all 5 seeds > 0 (reported, not asserted
# either way). It held in quick mode at seed 0.
NOT_HOLDING_QUICK = {"sym clip: base mode probability change"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    # Not used while choosing the config (seeds 0-4 were); the quick result here was seen
    # afterwards and the config was not changed for it.
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
    assert failed <= NOT_HOLDING_QUICK, failed
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
        if c.predicted.startswith("sign"):
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


def test_clip_high_bias_raises_the_mode_and_clip_low_bias_lowers_it():
    # The first-order part of the expected one-step change (docs §3): removing positive pushes
    # on other answers (tight eps_high) raises pi(mode) and lowers H; tight eps_low does the
    # opposite. Per-token geometry of the figure (minibatches of 8), a smaller group for speed.
    cfg = M.Config(n_states=32, group_size=64, minibatches=8)
    z = cfg.logit_scale * jax.random.normal(jax.random.key(3), (cfg.n_states, cfg.n_actions))
    mode = jnp.argmax(z, axis=-1)
    part = jax.jit(lambda eps: M.step_decomposition(z, mode, eps, cfg, jax.random.key(4), 32))
    high, low = part(jnp.array([0.2, 0.05])), part(jnp.array([0.05, 0.2]))
    assert high["p_mode_first"] > 0 > high["entropy_first"]
    assert low["p_mode_first"] < 0 < low["entropy_first"]


@pytest.mark.slow
def test_full_run_claims_hold(tmp_path):
    # Full mode (128 contexts, G = 256, 25 steps). The on-policy drift (second order, O(lr²/G)
    # per step, docs §3) is about -0.0007 nats; its 95% CI excluded 0 at seeds 6660000-6660004
    # ([-0.0013, -0.0001], reported) and contained it at seeds 0, 1000 and 2000.
    cfg = dataclasses.replace(M.Config(), seed=6_660_000)
    found = M.claims(M.run(cfg, tmp_path), cfg)
    allowed = {"on-policy (1 epoch): entropy change"}
    assert {c.name for c in found if not c.holds} <= allowed
