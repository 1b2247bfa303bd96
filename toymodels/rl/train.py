"""RL training: ``make_train(config) -> train(key)``, every step one compiled function.

    task = tasks.make("arith/addition")
    model = ModelConfig(vocab_size=task.vocab.size,
                        max_len=task.prompt_len + task.max_target_len)
    ntp = toymodels.train.make_train(NTPConfig(model=model, task="arith/addition", steps=200),
                                     run_dir="runs/ntp")
    ntp()                              # trains and checkpoints the NTP run RL starts from
    train = make_train(RLConfig(task="arith/addition", init_from="runs/ntp", steps=50))
    params, metrics = train()          # seeds config.seed .. config.seed + n_seeds - 1

``init_from`` is a trained NTP run directory (``ntp_config.json``, ``ntp_layout.json``,
``checkpoints/``); ``init_seed_index`` picks its seed, or pass ``init=(graphdef, params)``.
The model's ``max_len`` must hold ``prompt_len + max_new_tokens``. An RL ``run_dir`` gets
``rl_config.json``, ``rl_layout.json`` and ``checkpoints/``; the metrics are returned, not
written (``toymodels.runs.save_metrics`` writes them).

A chunk of steps is one ``lax.scan`` run by :func:`toymodels.loop.run_chunks` (the same driver
as next-token training: checkpoint, resume, NaN stop). Seeds are a ``vmap`` of the per-seed
step (:mod:`toymodels.rl.step`); the step counter and the frozen reference params are shared
by all seeds. With ``mesh``, the same step runs data-parallel (docs/distributed.md).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from toymodels import loop, model, runs
from toymodels.configs import config_hash, to_dict
from toymodels.rl.config import RLConfig
from toymodels.rl.step import make_eval, make_optimizer, make_step
from toymodels.train import (
    RUN_CONFIG_FILES,
    check_keys,
    check_run_kind,
    claim_layout,
    load_params,
    make_task,
    run_layout,
    seed_keys,
    seed_layout,
)

CONFIG_FILE = RUN_CONFIG_FILES["RL"]
LAYOUT_FILE = "rl_layout.json"  # which keys (and how many) the checkpoints hold
# Step functions by (config hash, graphdef, mesh): make_train again with the same config (e.g.
# to resume) reuses the compiled chunk, which run_chunks caches per step function.
_STEP_FNS: dict = {}
EVAL_KEY_OFFSET = 1_000_003  # the held-out set's key: seed + offset, apart from train seeds


def load_init(config: RLConfig, init=None):
    """``(graphdef, params)`` to start from (and to use as the frozen reference)."""
    if init is not None:
        return init
    if config.init_from is None:
        raise ValueError("RLConfig.init_from=None is not allowed without init: give an NTP "
                         "run directory, or pass make_train(config, init=(graphdef, params))")
    n_seeds = run_layout(config.init_from)[2]
    if config.init_seed_index >= n_seeds:
        raise ValueError(f"RLConfig.init_seed_index={config.init_seed_index} is not allowed: "
                         f"the NTP run {config.init_from} holds {n_seeds} seed(s), an index "
                         f"in [0, {n_seeds})")
    graphdef, params, _ = load_params(config.init_from, seed_index=config.init_seed_index)
    return graphdef, params


def check_fits(task, rc, graphdef, params) -> None:
    """ValueError unless params have the model's shapes (one seed), the task's tokens fit
    the model's vocabulary, the prompt and the completion budget fit its positions, and the
    held-out split is one of the task's."""
    model_config = nnx.merge(graphdef, params).config
    want = jax.eval_shape(lambda k: model.init(model_config, k)[1], jax.random.key(0))
    for (path, got), need in zip(jax.tree_util.tree_leaves_with_path(params),
                                 jax.tree.leaves(want), strict=True):
        if tuple(got.shape) != tuple(need.shape):  # e.g. all seeds of a multi-seed NTP run
            raise ValueError(
                f"init=(graphdef, params) is not allowed: params{jax.tree_util.keystr(path)} "
                f"has shape {tuple(got.shape)}, the model's is {tuple(need.shape)}; params of "
                "a multi-seed NTP run carry a leading seed axis: pick one seed "
                "(load_params(run_dir, seed_index=i))")
    if task.vocab.size > model_config.vocab_size:
        raise ValueError(f"RLConfig.task={rc.task!r} is not allowed with this model: the task's "
                         f"vocabulary has {task.vocab.size} tokens, the model's "
                         f"vocab_size={model_config.vocab_size}")
    if rc.top_k > model_config.vocab_size:
        raise ValueError(f"RLConfig.top_k={rc.top_k} is not allowed: at most the model's "
                         f"vocab_size={model_config.vocab_size}")
    if rc.eval_split not in task.splits:  # else the sampler names only "split", late
        raise ValueError(f"RLConfig.eval_split={rc.eval_split!r} is not allowed: one of the "
                         f"splits of {rc.task}, {task.splits}")
    max_len = model_config.max_len
    if task.prompt_len + rc.max_new_tokens > max_len:
        raise ValueError(f"RLConfig.max_new_tokens={rc.max_new_tokens} is not allowed: prompt "
                         f"{task.prompt_len} + max_new_tokens > the model's max_len={max_len}")


def make_train(config: RLConfig, run_dir: Path | str | None = None, *, init=None,
               mesh: jax.sharding.Mesh | None = None):
    """``train(key=None) -> (params, metrics)``; ``train.graphdef`` rebuilds the model.

    key=None trains the config's seeds (params and metrics carry a seed axis: metrics
    ``[steps, n_seeds]``); a key array of shape [n] trains n seeds; a single key trains one
    (no seed axis). ``init=(graphdef, params)`` replaces ``config.init_from``.
    ``mesh``: a ``jax.sharding.Mesh`` with axes named "seed" and/or "batch": the seed axis
    of the state is sharded over "seed", the completions of each step over "batch".
    """
    task = make_task(config)
    rc = config.resolved(task)
    graphdef, start_params = load_init(config, init)
    check_fits(task, rc, graphdef, start_params)
    axes = () if mesh is None else tuple(mesh.axis_names)
    unknown = set(axes) - {"seed", "batch"}
    if unknown:
        raise ValueError(f"mesh axis names {sorted(unknown)} are not allowed: use 'seed' and/or "
                         "'batch'")
    cache_key = (config_hash(config), graphdef, mesh)
    if cache_key not in _STEP_FNS:
        _STEP_FNS[cache_key] = _make_step_fn(config, rc, graphdef, task, mesh, axes)
    step_fn = _STEP_FNS[cache_key]
    opt = make_optimizer(rc)

    def init_state(key):
        return {"params": start_params, "opt": opt.init(start_params), "key": key}

    def train(key: jax.Array | None = None):
        given = seed_keys(config.seed, config.n_seeds) if key is None else key
        check_keys(given)
        single = given.ndim == 0
        keys = given[None] if single else given
        carry = {"state": jax.jit(jax.vmap(init_state))(keys), "ref": start_params,
                 "step": jnp.zeros((), jnp.int32)}
        if mesh is not None:
            carry = _place(carry, mesh, "seed" in axes)
        if run_dir is not None:
            if config.init_from is not None and Path(run_dir).resolve() == Path(
                    config.init_from).resolve():
                raise runs.RunDirError(f"run_dir {run_dir} is the NTP run RLConfig.init_from: "
                                       "give the RL run a directory of its own")
            check_run_kind(run_dir, "RL")
            runs.claim_json(Path(run_dir) / CONFIG_FILE, to_dict(config), "RLConfig")
            claim_layout(Path(run_dir) / LAYOUT_FILE, seed_layout(given))
        result = loop.run_chunks(step_fn, carry, total_steps=config.steps,
                                 chunk_size=config.chunk_size, run_dir=run_dir,
                                 desc=f"rl {config.task}")
        train.stats = result.stats
        params, metrics = result.carry["state"]["params"], result.metrics
        if single:
            params = jax.tree.map(lambda x: x[0], params)
            metrics = {k: np.asarray(v)[:, 0] for k, v in metrics.items()}
        return params, metrics

    train.graphdef = graphdef
    train.config = rc
    train.step_fn = step_fn
    train.stats = None
    return train


def _place(carry, mesh, shard_seeds: bool):
    """Put the carry on the mesh: the seed axis of the state over "seed", the rest replicated."""
    replicated = NamedSharding(mesh, P())
    seed_spec = NamedSharding(mesh, P("seed")) if shard_seeds else replicated
    return {"state": jax.device_put(carry["state"], seed_spec),
            "ref": jax.device_put(carry["ref"], replicated),
            "step": jax.device_put(carry["step"], replicated)}


def _make_step_fn(config, rc, graphdef, task, mesh, axes):
    """The chunk step ``step_fn(carry, _)`` over all seeds (cached: one compile per config)."""
    constrain = lambda x: x
    if "batch" in axes:
        spec = NamedSharding(mesh, P("batch"))
        constrain = lambda x: jax.lax.with_sharding_constraint(x, spec)
    rl_step = make_step(graphdef, task, rc, constrain)
    evaluate = make_eval(graphdef, task, rc, jax.random.key(config.seed + EVAL_KEY_OFFSET))
    vmap_kw = {"spmd_axis_name": "seed"} if "seed" in axes else {}
    eval_names = ["eval_accuracy"] + [f"pass@{k}" for k in rc.passk_ks]

    def step_fn(carry, _):
        i = carry["step"]
        state, metrics = jax.vmap(rl_step, in_axes=(0, None, None), **vmap_kw)(
            carry["state"], carry["ref"], i)
        if rc.eval_every:
            n_seeds = jax.tree.leaves(carry["state"]["key"])[0].shape[0]
            skip = lambda: {k: jnp.full((n_seeds,), jnp.nan) for k in eval_names}
            run = lambda: jax.vmap(evaluate, **vmap_kw)(
                carry["state"]["params"],
                jax.vmap(lambda k: jax.random.fold_in(k, -1 - i))(carry["state"]["key"]))
            metrics.update(jax.lax.cond(i % rc.eval_every == 0, run, skip))
        metrics["step"] = jnp.broadcast_to(i, metrics["loss"].shape)
        return {"state": state, "ref": carry["ref"], "step": i + 1}, metrics

    return step_fn
