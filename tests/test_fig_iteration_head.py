"""The iteration-head figure (Cabannes et al. 2024, arXiv 2406.02128): data format, the
compiled construction on that format, claims that can fail, and the quick run end to end."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from experiments import harness, runner
from experiments import iteration_head as ih
from experiments import iteration_head_data as data
from theory.circuits import iteration_head
from toymodels.interp import load_weights


@pytest.mark.parametrize("kind", ih.KINDS)
def test_sample_matches_python(kind):
    n_max = 5
    b = ih.sample(jax.random.key(3), 16, kind, n_max)
    for row_p, row_t, length in zip(np.asarray(b.prompts), np.asarray(b.targets),
                                    np.asarray(b.meta["L"]), strict=True):
        body = row_p[n_max - length:]
        assert (row_p[: n_max - length] == 0).all() and body[0] == 2 and body[-1] == 3
        x = body[1:-1] - 4
        s, out = 0, []
        for t, xt in enumerate(x):
            s = (s + xt) % 2 if kind == "parity" else (xt if t == 0 else (s * xt + 1) % 11)
            out.append(s)
        assert list(row_t[:length] - 4) == out and row_t[length] == 1
        assert (row_t[length + 1:] == 0).all()


def test_eos_padding_targets():
    """The official loss targets: s_1 .. s_L, then <eos> up to n_max + 1, all counted."""
    b = ih.sample(jax.random.key(4), 16, "parity", 5)
    padded = data.pad_with_eos(b)
    for t, tp, length in zip(np.asarray(b.targets), np.asarray(padded.targets),
                             np.asarray(b.meta["L"]), strict=True):
        assert (tp[: length + 1] == t[: length + 1]).all() and (tp[length:] == 1).all()
    assert (np.asarray(padded.target_lens) == 6).all()


def test_construction_scores_and_ablations():
    """The prediction's source: the compiled circuit solves the format with both scores 1,
    and zero-ablating what it needs breaks it while its (zero) layer-1 MLP does not."""
    n_max = 6
    g, p = load_weights(*iteration_head.build(n_max))
    batch = ih.sample(jax.random.key(0), 128, "parity", n_max)
    m = {k: float(v) for k, v in data.measure(g, p, batch, n_max).items()}
    assert m["acc"] == 1.0 and m["l1_abs"] > 0.99 and m["l2_abs"] > 0.99
    acc = dict(zip(data.ABLATIONS, np.asarray(data.ablations(g, p, batch, n_max)), strict=True))
    for name in ih.NEEDED:
        assert acc[name] <= ih.CHANCE_ACC["parity"] + ih.ABLATE_CHANCE_TOL, name
    assert acc["L1 MLP"] == 1.0


@pytest.mark.slow  # ~10-16 s of compiling: kept out of the 10-minute default suite
def test_official_init_and_dropout():
    """torch_init: embeddings N(0, 1), weight matrices U(+-1/sqrt(fan_in)), biases 0; the
    dropout loss is toymodels' NTP loss at rate 0 and differs (per key) at rate 0.5."""
    from toymodels import model, train
    from toymodels.config import ModelConfig

    cfg = ModelConfig(vocab_size=6, max_len=13, n_layers=2, n_heads=1, d_model=64, d_mlp=256)
    g, p = model.init(cfg, jax.random.key(0))
    q = data.torch_init(p, jax.random.key(1))
    assert abs(float(q["pos_embed"][...].std()) - 1.0) < 0.05
    w_out = np.asarray(q["blocks"][1]["mlp"]["W_out"][...])  # fan_in 256
    assert abs(w_out.std() - 256 ** -0.5 / np.sqrt(3)) < 0.002 and abs(w_out).max() <= 1 / 16
    w_qkv = np.asarray(q["blocks"][0]["attn"]["W_QKV"][...])  # fan_in 64
    assert abs(w_qkv).max() <= 1 / 8 and abs(w_qkv).max() > 0.12
    assert (np.asarray(q["blocks"][0]["attn"]["b_QKV"][...]) == 0).all()
    batch = ih.sample(jax.random.key(2), 32, "parity", 5)
    ref = float(jax.jit(lambda q: train.ntp_loss(g, q, batch)[0])(q))
    # jitted: op-by-op dispatch of the forward pass takes seconds per call
    dropout = jax.jit(lambda q, key, rate: data.ntp_loss_dropout(g, q, batch, key, rate),
                      static_argnums=2)
    assert abs(float(dropout(q, jax.random.key(3), 0.0)) - ref) < 1e-5
    dropped = [float(dropout(q, jax.random.key(k), 0.5)) for k in (3, 4)]
    assert dropped[0] != dropped[1] and all(abs(d - ref) > 1e-4 for d in dropped)


@pytest.mark.parametrize("bad", [dict(init="xavier"), dict(emb_dropout=1.0),
                                 dict(optimizer="sgd"),
                                 dict(eos_padding_loss=1), dict(n_seeds=1), dict(steps=1001)])
def test_config_rejects(bad):
    with pytest.raises(ValueError):
        ih.Config(**bad)


def _synthetic(n_seeds=5, drop_at=10, form_at=10, l1_mlp_acc=0.99):
    """A result as run() returns it: the loss drops at eval ``drop_at`` and the scores jump
    from chance to 1 at eval ``form_at``; ablations as the construction predicts."""
    n_eval, every = 21, 10
    result = {"eval_step": np.arange(n_eval) * float(every)}
    loss = np.where(np.arange((n_eval - 1) * every) < drop_at * every - every, 0.7, 0.01)
    result["parity_loss"] = np.tile(loss, (n_seeds, 1))
    for score in ih.SCORES:
        chance = 0.15 if score.endswith("abs") else 0.0
        curve = np.where(np.arange(n_eval) < form_at, chance, 1.0)
        result[f"parity_{score}"] = np.tile(curve, (n_seeds, 1))
        result[f"parity_{score}_chance"] = np.float32(chance)
    result["parity_acc_clean"] = np.full(n_seeds, 1.0)
    result["parity_acc_ablated"] = np.tile([0.3, l1_mlp_acc, 0.45, 0.5], (n_seeds, 1))
    result["parity_tv_l1"] = result["parity_tv_l2"] = np.full(n_seeds, 0.02)
    return result


def _verdicts(result):
    config = dataclasses.replace(ih.Config(), tasks=("parity",))
    return {c.name: c.holds for c in ih.claims(result, config)}


def test_claims_hold_on_the_predicted_behaviour():
    assert all(_verdicts(_synthetic()).values())


def test_wrong_predictions_are_rejected():
    late = _verdicts(_synthetic(drop_at=5, form_at=20))  # forms 4x later than the drop
    assert not late["parity: |log(t_form(l2_abs) / t_drop)|"]
    needed = _verdicts(_synthetic(l1_mlp_acc=0.5))  # the "not needed" MLP was needed
    assert not needed["parity: accuracy drop without L1 MLP (not needed)"]
    r = _synthetic()
    r["parity_tv_l2"] = np.full(5, 0.5)
    assert not _verdicts(r)["parity: TV(learned, construction) layer 2"]
    r = _synthetic()
    r["parity_l1_abs"] = r["parity_l1_abs"] * 0 + 0.6  # never leaves 0.6
    v = _verdicts(r)
    assert not v["parity: final l1_abs"] and not v["parity: l1_abs at init = chance"]


def test_ablations_are_not_judged_when_the_model_is_at_chance():
    r = _synthetic()
    r["parity_acc_clean"] = np.full(5, 0.55)  # parity chance 0.5: nothing learnt to remove
    r["parity_acc_ablated"][:, 1] = 0.55  # the "not needed" MLP's drop is 0
    v = _verdicts(r)
    for name in ("L1 head", "L2 head", "L2 MLP"):
        assert not v[f"parity: accuracy without {name} (needed)"], name
    assert not v["parity: accuracy drop without L1 MLP (not needed)"]


@pytest.mark.parametrize("kind", harness.WRONG_KINDS)
def test_a_wrong_chance_level_is_rejected(kind):
    # The `abs` scores' chance (0.15 here) flipped or doubled is off by more than CHANCE_TOL.
    # The `thr` scores' chance is 0 (no query sees fewer than 3 keys): a flipped or doubled 0
    # is still 0, so no wrong prediction of that form exists for them.
    result = _synthetic()
    present = [k for k in ih.PREDICTIONS if k in result]
    assert present == [f"parity_{score}_chance" for score in ih.SCORES]
    verdicts = _verdicts(harness.corrupt(result, present, kind))
    for score in ("l1_abs", "l2_abs"):
        assert not verdicts[f"parity: {score} at init = chance"], score


def test_quick_run_end_to_end(tmp_path):
    config = ih.quick_config()
    run_dir = runner.execute(ih, config, tmp_path)
    assert (run_dir / "figure.png").exists() and (run_dir / "claims.json").exists()
    found = ih.claims(dict(np.load(run_dir / "metrics.npz")), config)
    assert len(found) == 18 and all(np.isfinite(float(c.measured)) for c in found)


@pytest.mark.slow
def test_full_run_judges_every_claim(tmp_path):
    """Completion and a verdict for every claim only: in the budget the head does not form
    and the formation claims do not hold (docs/theory_circuits.md)."""
    config = ih.Config(seed=11)  # other seeds than the figure's
    run_dir = runner.execute(ih, config, tmp_path)
    found = ih.claims(dict(np.load(run_dir / "metrics.npz")), config)
    per_task = 3 * len(ih.SCORES) + len(ih.ABLATIONS)  # + 2 TV claims for parity
    assert len(found) == per_task * len(config.tasks) + 2
    assert all(isinstance(c.holds, bool) for c in found)
