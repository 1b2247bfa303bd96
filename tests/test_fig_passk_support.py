"""Figure 3, passk-support: the pass@k and support statistics on hand-made counts, wrong
predictions judged as not holding, and (slow: NTP + GRPO + 2·10⁴ samples) the quick run."""

import dataclasses

import numpy as np
import pytest

import experiments
from experiments import harness
from experiments import passk_support as M
from theory import passk


def _synthetic(seed=0, n=64, problems=64, seeds=5):
    """Counts shaped like the prediction: RL sharpens (p → p² mass moved to solved problems),
    never-solved problems stay unsolved, likelihoods of winners rise and of losers fall."""
    rng = np.random.default_rng(seed)
    p = np.concatenate([np.zeros(problems // 4), rng.uniform(0.02, 0.9, problems - problems // 4)])
    c_base = rng.binomial(n, p)
    p_rl = np.where(p > 0.3, np.minimum(1.0, 1.6 * p), 0.3 * p)
    c_rl = rng.binomial(n, np.broadcast_to(p_rl, (seeds, problems)))
    ll_base = np.log(np.maximum(p, 1e-6))
    ll_rl = ll_base + np.where(p > 0.3, 0.3, -0.5) + rng.normal(0, 0.05, (seeds, problems))
    ks = M.ks_of(n)
    return {"ks": ks, "c_base": c_base, "c_rl": c_rl, "ll_base": ll_base, "ll_rl": ll_rl,
            "passk_base": passk.pass_at_k_curve(n, c_base, ks),
            "passk_rl": np.stack([passk.pass_at_k_curve(n, c, ks) for c in c_rl]),
            "rl_reward": np.zeros((seeds, 3)), **{k: np.array(1.0) for k in M.PREDICTIONS},
            "sign_bottom": np.array(-1.0)}


def test_registered_and_protocol():
    assert experiments.get("passk-support") is M
    assert M.quick_config().n_seeds >= 5 and M.Config().n_seeds >= 5
    assert list(M.ks_of(256)) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert list(M.ks_of(6)) == [1, 2, 4, 6]


def test_claims_on_counts_shaped_like_the_prediction():
    cfg = M.quick_config()
    found = M.claims(_synthetic(), cfg)
    assert [c.name for c in found if not c.holds] == []


@pytest.mark.parametrize("kind", ["flip"])
def test_flipped_predictions_are_rejected(kind):
    cfg = M.quick_config()
    judged = {c.name: c for c in M.claims(harness.corrupt(_synthetic(), M.PREDICTIONS, kind),
                                          cfg)}
    for name, c in judged.items():
        if str(c.predicted).startswith("sign"):
            assert not c.holds, name


def test_support_claim_fails_when_rl_solves_new_problems():
    cfg, result = M.quick_config(), _synthetic()
    never = result["c_base"] == 0
    result["c_rl"] = result["c_rl"].copy()
    result["c_rl"][:, never] = 5  # RL "solves" every base-unsolved problem
    judged = {c.name: c for c in M.claims(result, cfg)}
    assert not judged["base-unsolved problems solved by RL (fraction)"].holds
    assert not judged["solved fraction: base-sometimes minus base-never"].holds


def test_config_is_validated():
    for bad in (dict(n_seeds=1), dict(n_eval=4), dict(rl_lr=0.0)):
        with pytest.raises(ValueError):
            M.Config(**bad)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    from experiments import runner
    from toymodels import runs

    cfg = dataclasses.replace(M.quick_config(), seed=5_550_000)
    run_dir = runner.execute(M, cfg, tmp_path_factory.mktemp("runs"))
    return cfg, run_dir, runs.load_metrics(run_dir)


@pytest.mark.slow
def test_quick_run_writes_files(quick):
    cfg, run_dir, result = quick
    for f in ("figure.png", "figure.svg", "claims.json", "config.json", "manifest.json"):
        assert (run_dir / f).is_file(), f
    assert result["c_rl"].shape == (cfg.n_seeds, cfg.n_eval)
    assert result["passk_rl"].shape == (cfg.n_seeds, len(M.ks_of(cfg.n_samples)))
    # The base has a spread of per-problem success rates (the figure needs both kinds).
    assert (result["c_base"] == 0).any() and (result["c_base"] > 0).any()


@pytest.mark.slow
def test_same_seed_same_numbers(quick, tmp_path):
    cfg, _, result = quick
    again = M.run(cfg, tmp_path)
    np.testing.assert_array_equal(again["c_rl"], result["c_rl"])
    np.testing.assert_array_equal(again["ll_base"], result["ll_base"])


@pytest.mark.slow
def test_full_run(tmp_path):
    # Measured in full mode (docs/theory_rl_dynamics.md §4): the support claims do not hold
    # (the "never solved" problems have exact base success n·p ≈ 0.6-1.6: in the support,
    # unlucky in 256 draws); bottom quartile: mean -1.06 but CI [-2.48, 0.36] at seeds 0-4;
    # top quartile: +0.12 at seeds 0-4 but -0.04, CI [-0.09, 0.01] at seeds 6660000-4.
    # The pass@k claims held at both seed sets and must hold.
    cfg = dataclasses.replace(M.Config(), seed=6_660_000)
    found = {c.name: c for c in M.claims(M.run(cfg, tmp_path), cfg)}
    for name in ("pass@1: RL - base", "pass@256: base - RL (seed mean)"):
        assert found[name].holds, name
