"""Checkpoints and the chunked loop: bitwise round trip, damaged checkpoints skipped with a
message, chunking invisible in the numbers, NaN stops the run and keeps the last good state.

The loop is exercised with a tiny pure step function (linear regression by SGD), so these
tests compile in well under a second; the transformer is covered in test_train/test_resume.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toymodels import checkpoint
from toymodels.loop import TrainingDiverged, chunk_ends, log_spaced_steps, run_chunks

TRUE_W = jnp.array([1.0, -2.0, 0.5, 3.0])


def sgd_step(carry, _, nan_at=-1):
    """One SGD step on fresh data drawn from fold_in(key, step); NaN from step ``nan_at``."""
    x = jax.random.normal(jax.random.fold_in(carry["key"], carry["step"]), (8, 4))
    loss_fn = lambda w: jnp.mean((x @ w - x @ TRUE_W) ** 2)
    loss, grad = jax.value_and_grad(loss_fn)(carry["w"])
    poison = jnp.where(carry["step"] >= nan_at, jnp.nan, 0.0) if nan_at >= 0 else 0.0
    new = {"w": carry["w"] - 0.05 * grad + poison, "key": carry["key"], "step": carry["step"] + 1}
    return new, {"loss": loss + poison, "w0": carry["w"][0]}


def start(seed=0):
    return {"w": jnp.zeros(4), "key": jax.random.key(seed), "step": jnp.int32(0)}


def assert_trees_equal(a, b):
    a, b = jax.tree.map(_raw, a), jax.tree.map(_raw, b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def _raw(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(x))
    return np.asarray(x)


@pytest.fixture(scope="module")
def uninterrupted():
    """12 steps in one go, no checkpoints: the reference the resumed runs must equal."""
    return run_chunks(sgd_step, start(), total_steps=12, chunk_size=4)


def test_round_trip_is_bitwise_for_mixed_dtypes_and_keys(tmp_path):
    tree = {"f32": jax.random.normal(jax.random.key(1), (3, 5)),
            "bf16": jnp.arange(6, dtype=jnp.bfloat16) / 7, "i32": jnp.int32(41),
            "key": jax.random.split(jax.random.key(2), 3), "empty": jnp.zeros((0, 2)),
            "nested": (jnp.uint8(3), [jnp.float32(-0.0)])}
    path = checkpoint.save(tmp_path, 7, tree)
    assert checkpoint.verify(path) is None
    assert_trees_equal(checkpoint.restore(path, tree), tree)


def test_restore_rejects_a_template_of_another_shape(tmp_path):
    path = checkpoint.save(tmp_path, 1, {"a": jnp.zeros(3)})
    with pytest.raises(ValueError):
        checkpoint.restore(path, {"a": jnp.zeros(4)})


def test_chunk_boundaries_do_not_change_the_numbers():
    a = run_chunks(sgd_step, start(), total_steps=20, chunk_size=20)
    b = run_chunks(sgd_step, start(), total_steps=20, chunk_size=3, checkpoint_steps=[1, 2])
    assert_trees_equal(a.carry, b.carry)
    assert_trees_equal(a.metrics, b.metrics)
    assert a.metrics["loss"].shape == (20,)
    assert a.metrics["loss"][-1] < 0.1 * a.metrics["loss"][0]  # it does learn


def test_resume_continues_to_the_same_numbers(tmp_path, uninterrupted):
    full = uninterrupted
    run_chunks(sgd_step, start(), total_steps=8, chunk_size=4, run_dir=tmp_path)
    # the same run dir with more steps: what a restarted process does after step 8
    resumed = run_chunks(sgd_step, start(), total_steps=12, chunk_size=4, run_dir=tmp_path)
    assert resumed.stats["resumed_from"] == 8
    assert_trees_equal(resumed.carry, full.carry)
    assert_trees_equal(resumed.metrics, full.metrics)


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_checksum"])
def test_damaged_latest_checkpoint_is_skipped_with_a_message(tmp_path, capsys, damage,
                                                            uninterrupted):
    full = uninterrupted
    run_chunks(sgd_step, start(), total_steps=12, chunk_size=4, run_dir=tmp_path)
    latest = checkpoint.checkpoint_dir(tmp_path) / "12"
    if damage == "no_checksum":  # killed between Orbax's rename and the checksum write
        (latest / checkpoint.CHECKSUM_FILE).unlink()
    else:
        victim = max((f for f in latest.rglob("*") if f.is_file()
                      and f.name != checkpoint.CHECKSUM_FILE), key=lambda f: f.stat().st_size)
        data = bytearray(victim.read_bytes())
        if damage == "truncate":
            victim.write_bytes(data[: len(data) // 2])
        else:
            data[len(data) // 2] ^= 0xFF
            victim.write_bytes(bytes(data))
    step, skipped = checkpoint.latest_good(tmp_path)
    assert step == 8 and [s.step for s in skipped] == [12]
    capsys.readouterr()
    resumed = run_chunks(sgd_step, start(), total_steps=12, chunk_size=4, run_dir=tmp_path)
    err = capsys.readouterr().err
    assert "checkpoints/12 skipped" in err and "resuming" in err and "from step 8" in err
    assert resumed.stats["resumed_from"] == 8
    assert_trees_equal(resumed.carry, full.carry)
    assert checkpoint.verify(latest) is None  # step 12 was saved again, and is good now


def test_nan_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"loss is not finite at step 6\b.*step 4"):
        run_chunks(_nan_from_step_6, start(), total_steps=12, chunk_size=4, run_dir=tmp_path)
    assert checkpoint.steps(tmp_path) == [4]
    assert checkpoint.latest_good(tmp_path) == (4, [])
    good = run_chunks(sgd_step, start(), total_steps=4, chunk_size=4)
    like = {"carry": start(), "metrics": {"loss": jnp.zeros(4), "w0": jnp.zeros(4)}}
    saved = checkpoint.restore(checkpoint.checkpoint_dir(tmp_path) / "4", like)
    assert_trees_equal(saved["carry"], good.carry)


def test_a_state_poisoned_by_the_last_update_of_a_chunk_is_not_saved(tmp_path):
    # NaN enters w at step 7 (the chunk's last step) but the loss of step 7 is still finite
    with pytest.raises(TrainingDiverged, match="state holds NaN/Inf after step 7"):
        run_chunks(_poison_w_only, start(), total_steps=12, chunk_size=4, run_dir=tmp_path)
    assert checkpoint.steps(tmp_path) == [4]


def _nan_from_step_6(carry, x):
    return sgd_step(carry, x, nan_at=6)


def _poison_w_only(carry, x):
    new, metrics = sgd_step(carry, x)
    new["w"] = jnp.where(carry["step"] == 7, jnp.inf, new["w"])
    return new, metrics


def test_vmapped_seed_axis_in_the_carry(tmp_path):
    seeds = jax.vmap(start)(jnp.arange(3))
    out = run_chunks(_vmapped_sgd_step, seeds, total_steps=6, chunk_size=3, run_dir=tmp_path)
    assert out.metrics["loss"].shape == (6, 3)
    one = run_chunks(sgd_step, start(1), total_steps=6, chunk_size=3)
    np.testing.assert_allclose(out.metrics["loss"][:, 1], one.metrics["loss"], rtol=1e-6)


def _vmapped_sgd_step(carry, _):
    return jax.vmap(sgd_step)(carry, None)


def test_log_schedule_snapshots_are_kept_and_rolling_ones_pruned(tmp_path):
    keep = log_spaced_steps(40, 5)
    assert keep == [1, 3, 6, 16, 40]  # round(40 ** (k / 4)), k = 0..4: 1, 2.5, 6.3, 15.9, 40
    assert chunk_ends(40, 10, keep) == [1, 3, 6, 10, 16, 20, 30, 40]
    run_chunks(sgd_step, start(), total_steps=40, chunk_size=10, run_dir=tmp_path,
               checkpoint_steps=keep)
    assert checkpoint.steps(tmp_path) == [1, 3, 6, 16, 30, 40]  # log steps + newest two


def test_resume_false_refuses_to_overwrite_existing_checkpoints(tmp_path):
    run_chunks(sgd_step, start(), total_steps=4, chunk_size=4, run_dir=tmp_path)
    with pytest.raises(FileExistsError):
        run_chunks(sgd_step, start(), total_steps=4, chunk_size=4, run_dir=tmp_path,
                   resume=False)
    assert checkpoint.steps(tmp_path) == [4]


def test_unfinished_orbax_save_is_removed_on_resume(tmp_path, capsys, uninterrupted):
    run_chunks(sgd_step, start(), total_steps=8, chunk_size=4, run_dir=tmp_path)
    partial = checkpoint.checkpoint_dir(tmp_path) / "12.orbax-checkpoint-tmp-1234"
    partial.mkdir()
    (partial / "half_written").write_bytes(b"\0" * 10)  # what a kill mid-save leaves
    resumed = run_chunks(sgd_step, start(), total_steps=12, chunk_size=4, run_dir=tmp_path)
    assert not partial.exists() and "removed the unfinished save" in capsys.readouterr().err
    assert resumed.stats["resumed_from"] == 8
    assert_trees_equal(resumed.carry, uninterrupted.carry)


def test_an_intact_checkpoint_of_another_state_stops_the_run_and_is_left_in_place(tmp_path):
    run_chunks(sgd_step, start(), total_steps=8, chunk_size=4, run_dir=tmp_path)
    before = sorted(p.name for p in checkpoint.checkpoint_dir(tmp_path).iterdir())
    other = {"w": jnp.zeros(5), "key": jax.random.key(0), "step": jnp.int32(0)}  # 5 weights
    with pytest.raises(checkpoint.CheckpointMismatch, match="fresh run_dir"):
        run_chunks(lambda c, _: (c, {"loss": c["w"].sum()}), other, total_steps=12,
                   chunk_size=4, run_dir=tmp_path)
    assert sorted(p.name for p in checkpoint.checkpoint_dir(tmp_path).iterdir()) == before
    assert all(checkpoint.verify(checkpoint.checkpoint_dir(tmp_path) / s) is None
               for s in before)


def test_setting_a_damaged_step_aside_twice_keeps_both_copies(tmp_path):
    for n in range(2):
        path = checkpoint.save(tmp_path, 4, {"a": jnp.full(3, n)})
        (path / checkpoint.CHECKSUM_FILE).unlink()
        checkpoint.set_aside(checkpoint.Skipped(4, path, "test"))
    names = sorted(p.name for p in checkpoint.checkpoint_dir(tmp_path).iterdir())
    assert names == ["4.bad", "4.bad.1"]


def test_junk_in_the_checkpoint_directory_is_not_a_step(tmp_path):
    checkpoint.save(tmp_path, 3, {"a": jnp.zeros(2)})
    root = checkpoint.checkpoint_dir(tmp_path)
    (root / "\u00b2").mkdir()  # "2" superscript: str.isdigit() but not int()
    (root / "7").write_text("a file, not a checkpoint")
    (root / "notes").mkdir()
    assert checkpoint.steps(tmp_path) == [3]
    with pytest.raises(FileExistsError, match="checkpoints/7: a file where a checkpoint"):
        run_chunks(sgd_step, start(), total_steps=8, chunk_size=4, run_dir=tmp_path)
