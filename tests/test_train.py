"""Next-token training: the loss counts target tokens only, the schedule is warmup + cosine,
seeds by vmap equal separate runs, checkpoints reload, and a 1-layer model learns reversal."""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tasks
from tasks.core import Batch
from toymodels import checkpoint, model
from toymodels.config import ModelConfig
from toymodels.train import NTPConfig, evaluate, load_params, make_task, make_train, ntp_loss

TINY = NTPConfig(model=ModelConfig(vocab_size=7, max_len=8, n_layers=1, n_heads=1, d_model=16,
                                   d_mlp=0),
                 task="seq/copy", task_config={"length": 3, "n_symbols": 4}, steps=8,
                 batch_size=8, lr=1e-2, warmup_steps=2, chunk_size=4)


def test_loss_is_mean_cross_entropy_over_target_tokens_only():
    config = ModelConfig(vocab_size=9, max_len=10, n_layers=1, n_heads=2, d_model=16, d_mlp=16)
    graphdef, params = model.init(config, jax.random.key(0))
    # left-padded prompts of length 2 and 3; targets of 3 and 1 tokens (incl. <eos> = 1)
    batch = Batch(prompts=jnp.array([[0, 0, 5, 6, 2], [0, 7, 8, 4, 2]], jnp.int32),
                  prompt_lens=jnp.array([3, 4], jnp.int32),
                  targets=jnp.array([[6, 5, 1, 0], [1, 0, 0, 0]], jnp.int32),
                  target_lens=jnp.array([3, 1], jnp.int32), meta={})
    loss_fn = jax.jit(ntp_loss, static_argnums=0)
    loss, acc = loss_fn(graphdef, params, batch)

    # by hand: the logit at column P-1+t predicts target token t
    seq = np.concatenate([batch.prompts, batch.targets], axis=1)
    logits, _ = jax.jit(model.forward, static_argnums=0)(graphdef, params, seq[:, :-1],
                                                         valid=seq[:, :-1] != 0)
    logp = np.asarray(jax.nn.log_softmax(logits))
    terms, hits = [], []
    for i, n_target in enumerate([3, 1]):
        for t in range(n_target):
            col, label = 5 - 1 + t, int(batch.targets[i, t])
            terms.append(-logp[i, col, label])
            hits.append(np.argmax(logp[i, col]) == label)
    np.testing.assert_allclose(float(loss), np.mean(terms), rtol=1e-6)
    np.testing.assert_allclose(float(acc["token_acc"]), np.mean(hits), rtol=1e-6)

    # garbage after <eos> (where the padding was) changes nothing
    garbage = dataclasses.replace(batch, targets=batch.targets.at[1, 1:].set(3))
    assert float(loss_fn(graphdef, params, garbage)[0]) == float(loss)


def test_config_is_validated_against_the_task():
    with pytest.raises(ValueError, match=r"model\.max_len=8 is not allowed: >= 12"):
        dataclasses.replace(TINY, task_config={"length": 5, "n_symbols": 4})
    with pytest.raises(ValueError, match="NTPConfig.lr=-1.0"):
        dataclasses.replace(TINY, lr=-1.0)
    with pytest.raises(ValueError, match="NTPConfig.grad_clip=1e-300.*smallest normal float32"):
        dataclasses.replace(TINY, grad_clip=1e-300)  # rounds to 0: every update would be 0
    with pytest.raises(ValueError, match="unknown task 'seq/nope'"):
        dataclasses.replace(TINY, task="seq/nope")
    with pytest.raises(ValueError, match="checkpoint_schedule='sometimes'"):
        dataclasses.replace(TINY, checkpoint_schedule="sometimes")


@pytest.fixture(scope="module")
def four_seeds():
    """TINY trained for seeds 3..6 in one vmapped call, and the train function."""
    train = make_train(dataclasses.replace(TINY, seed=3, n_seeds=4))
    params, metrics = train()
    return train, params, metrics


def test_vmap_over_four_seeds_equals_four_separate_runs(four_seeds):
    """Equal to float32 rounding, not bitwise: the batched matmuls of the vmapped step sum in
    another order (the loss differs by ~1 ulp). One parameter is excluded from the 1e-6
    comparison: the attention key bias b_QKV[1], whose gradient is exactly zero (it adds the
    same q.b_K to every key of a query, which softmax ignores), so its "gradient" is rounding
    noise that Adam normalises into lr-sized steps. It cannot change the outputs: the logits
    are compared instead."""
    train, params, metrics = four_seeds
    forward = jax.jit(model.forward, static_argnums=0)
    assert metrics["loss"].shape == (TINY.steps, 4)
    tokens = jnp.array([[4, 5, 6, 2, 4, 5, 6, 1]])
    for s in range(4):
        alone, alone_metrics = train(jax.random.key(3 + s))  # seed 3+s is key(3+s)
        together = jax.tree.map(lambda x, s=s: x[s], params)
        for name in metrics:
            np.testing.assert_allclose(alone_metrics[name], metrics[name][:, s], rtol=1e-6,
                                       atol=1e-6, err_msg=name)
        for a, b in zip(jax.tree.leaves(_without_key_bias(alone)),
                        jax.tree.leaves(_without_key_bias(together)), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
        logits = [forward(train.graphdef, p, tokens)[0] for p in (alone, together)]
        np.testing.assert_allclose(*logits, rtol=0, atol=1e-5)
    assert not np.allclose(metrics["loss"][:, 0], metrics["loss"][:, 1])  # seeds do differ


def _without_key_bias(params):
    params = jax.tree.map(lambda x: x, params)  # a copy
    for block in params["blocks"].values():
        bias = block["attn"]["b_QKV"]
        bias.set_value(bias[...].at[1].set(0.0))
    return params


def test_learning_rate_is_linear_warmup_then_cosine_decay(four_seeds):
    lr = four_seeds[2]["lr"][:, 0]
    peak, warm, total, end = TINY.lr, TINY.warmup_steps, TINY.steps, TINY.lr * 0.1
    want = [peak * t / warm if t < warm else
            end + (peak - end) * 0.5 * (1 + math.cos(math.pi * (t - warm) / (total - warm)))
            for t in range(total)]
    np.testing.assert_allclose(lr, want, rtol=1e-5)


def test_load_params_returns_the_trained_params(tmp_path, four_seeds):
    config = dataclasses.replace(TINY, seed=3, n_seeds=4)  # four_seeds' config: compiled
    params, _ = make_train(config, tmp_path)()
    assert checkpoint.steps(tmp_path) == [4, 8]
    graphdef, loaded, loaded_config = load_params(tmp_path, seed_index=2)
    assert loaded_config == config
    for a, b, c in zip(jax.tree.leaves(loaded), jax.tree.leaves(params),
                       jax.tree.leaves(four_seeds[1]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b[2]))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c[2]))  # same run, no dir
    logits, _ = model.forward(graphdef, loaded, jnp.array([[2, 3, 4, 2]]))
    assert logits.shape == (1, 4, 7)
    _, at_4, _ = load_params(tmp_path, step=4)  # an earlier snapshot, all seeds
    assert jax.tree.leaves(at_4)[0].shape[0] == 4
    assert not np.array_equal(np.asarray(jax.tree.leaves(at_4)[0][2]),
                              np.asarray(jax.tree.leaves(loaded)[0]))
    with pytest.raises(ValueError, match="no such checkpoint"):
        load_params(tmp_path, step=5)


def test_load_params_restores_a_run_trained_from_one_key(tmp_path):
    """One key (no seed axis) and a key array of two seeds are both restorable, each in the
    layout it was saved in; a seed_index outside the saved seeds is refused."""
    one, _ = make_train(TINY, tmp_path / "one")(jax.random.key(7))
    _, loaded, _ = load_params(tmp_path / "one")
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(one), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    two, _ = make_train(TINY, tmp_path / "two")(jax.random.split(jax.random.key(7), 2))
    _, second, _ = load_params(tmp_path / "two", seed_index=1)
    for a, b in zip(jax.tree.leaves(second), jax.tree.leaves(two), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b[1]))
    with pytest.raises(ValueError, match="seed_index=2"):
        load_params(tmp_path / "two", seed_index=2)


def test_a_run_dir_refuses_another_seed_layout_and_keeps_its_checkpoints(tmp_path):
    """Re-running into a finished run's directory with other keys (or another config) is an
    error before anything is written: the saved checkpoints stay restorable, none is set
    aside as damaged."""
    config = dataclasses.replace(TINY, steps=4)
    one, _ = make_train(config, tmp_path)(jax.random.key(7))
    saved = sorted(p.name for p in checkpoint.checkpoint_dir(tmp_path).iterdir())
    with pytest.raises(ValueError, match="another seed layout"):
        make_train(config, tmp_path)(jax.random.split(jax.random.key(7), 2))
    with pytest.raises(ValueError, match="another seed layout"):  # same shape, other key
        make_train(config, tmp_path)(jax.random.key(8))
    with pytest.raises(ValueError, match="another NTPConfig"):
        make_train(dataclasses.replace(config, lr=0.5), tmp_path)(jax.random.key(7))
    assert sorted(p.name for p in checkpoint.checkpoint_dir(tmp_path).iterdir()) == saved
    _, loaded, _ = load_params(tmp_path)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(one), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # A layout file written before keys were recorded still lets the same run resume.
    layout_path = tmp_path / "ntp_layout.json"
    layout_path.write_text(json.dumps({"seed_axis": False, "n_seeds": 1}))
    again, _ = make_train(config, tmp_path)(jax.random.key(7))
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(one), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # A run saved before layouts were recorded: its checkpoints decide, no guess is written.
    (tmp_path / "ntp_layout.json").unlink()
    with pytest.raises(checkpoint.CheckpointMismatch, match="fresh run_dir"):
        make_train(config, tmp_path)(jax.random.split(jax.random.key(7), 2))
    assert not (tmp_path / "ntp_layout.json").exists()
    assert sorted(p.name for p in checkpoint.checkpoint_dir(tmp_path).iterdir()) == saved


def test_raw_uint32_keys_are_refused_before_anything_is_written(tmp_path):
    # PRNGKey(0) has shape [2]: read as two seeds it would train the wrong layout.
    with pytest.raises(TypeError, match="typed key"):
        make_train(TINY, tmp_path / "run")(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="1-D array of keys"):
        make_train(TINY, tmp_path / "run")(jax.random.split(jax.random.key(0), (2, 2)))
    assert not (tmp_path / "run").exists()


def test_a_damaged_config_file_is_named_in_the_error(tmp_path):
    make_train(dataclasses.replace(TINY, steps=4), tmp_path)(jax.random.key(7))
    (tmp_path / "ntp_layout.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="ntp_layout.json is damaged"):
        load_params(tmp_path)
    (tmp_path / "ntp_config.json").write_text('{"broken')
    with pytest.raises(ValueError, match="ntp_config.json is unreadable"):
        load_params(tmp_path)


def test_load_params_says_when_it_skips_a_damaged_newest_checkpoint(tmp_path, four_seeds):
    # It used to fall back to an older checkpoint silently: an RL run would then start
    # from a less trained model without a word.
    make_train(dataclasses.replace(TINY, seed=3, n_seeds=4), tmp_path)()  # compiled: four_seeds
    assert checkpoint.steps(tmp_path) == [4, 8]
    newest = max((f for f in (tmp_path / "checkpoints" / "8").rglob("*") if f.is_file()),
                 key=lambda f: f.stat().st_size)
    newest.write_bytes(newest.read_bytes()[:-1])  # truncated by one byte
    with pytest.warns(UserWarning, match="loaded the checkpoint of step 4, not the newest: "
                                         "step 8: checksum mismatch"):
        _, params, _ = load_params(tmp_path)
    _, at_4, _ = load_params(tmp_path, step=4)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(at_4), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    config = json.loads((tmp_path / "ntp_config.json").read_text())
    del config["task"]  # a config that lost a field names the file it came from
    (tmp_path / "ntp_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="ntp_config.json is damaged.*'task'"):
        load_params(tmp_path)


def test_steps_beyond_the_int32_step_counter_are_refused():
    # toyreason run quickstart --set steps=99999999999999999999 was accepted (and hung);
    # past 2**31 - 1 the int32 step counter would wrap, repeating batches and schedules.
    from toymodels.rl.config import RLConfig

    dataclasses.replace(TINY, steps=2**31 - 1)  # the largest run that counts its steps
    with pytest.raises(ValueError, match=r"NTPConfig.steps=2147483648 is not allowed"):
        dataclasses.replace(TINY, steps=2**31)
    RLConfig(task="seq/copy", steps=2**31 - 1)
    with pytest.raises(ValueError, match=r"RLConfig.steps=2147483648 is not allowed"):
        RLConfig(task="seq/copy", steps=2**31)


def test_one_layer_model_learns_reversal():
    """The quickstart's model (1 layer, attention only, d_model 32) on 6-symbol strings."""
    from experiments import quickstart

    config = quickstart.quick_config().ntp_config()
    assert (config.task, config.model.n_layers) == ("seq/reverse", 1)
    train = make_train(config)
    params, metrics = train()
    assert metrics["token_acc"][-10:].mean() >= 0.99
    one_seed = jax.tree.map(lambda x: x[0], params)
    result = evaluate(train.graphdef, one_seed, make_task(config), jax.random.key(123), 256)
    assert result["accuracy"] >= 0.95  # greedy, exact match on held-out strings
    assert result["rewards"].shape == (256,)


def test_tasks_registry_has_the_sequence_tasks():
    assert {"seq/copy", "seq/reverse"} <= set(tasks.names())
