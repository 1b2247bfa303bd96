"""Next-token training: ``make_train(config, run_dir) -> train(key)``, all steps compiled.

    task = tasks.make("seq/reverse", length=8)       # vocabulary 13, prompt 9 + target 9
    config = NTPConfig(model=ModelConfig(vocab_size=13, max_len=18, n_layers=1),
                       task="seq/reverse", task_config={"length": 8}, steps=300)
    train = make_train(config)
    params, metrics = train()          # seeds config.seed .. config.seed + n_seeds - 1
    evaluate(train.graphdef, jax.tree.map(lambda x: x[0], params), task,
             jax.random.key(1), 256)["accuracy"]             # 1.0 (about 15 s on 2 cores)

One step: sample a batch in the graph (``task.sample(fold_in(data_key, step), B)``), build
``concat(prompt, target)``, take cross-entropy on the target tokens only (up to and including
``<eos>``; never the prompt or padding), clip the gradient's global norm, AdamW with linear
warmup and cosine decay. Seeds are a ``vmap`` over the whole train state: one compiled call.
Seed ``s`` uses ``jax.random.key(s)``, so seed 2 of a 4-seed run is the run with ``seed=2``
(same keys and data; the numbers agree up to float rounding, ~1e-6, because the vmapped
computation may sum in another order).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import tasks
from tasks.core import PAD, check, check_int, check_number, check_seed
from toymodels import checkpoint, loop, model, runs
from toymodels.config import ModelConfig
from toymodels.configs import config_hash, from_dict, to_dict
from toymodels.sampler import generate

SCHEDULES = ("chunks", "log")
CONFIG_FILE = "ntp_config.json"
LAYOUT_FILE = "ntp_layout.json"  # which seeds the checkpoints hold (see load_params)


@dataclasses.dataclass(frozen=True)
class NTPConfig:
    """A next-token training run.

    model: the transformer; its vocab_size and max_len must fit the task (checked).
    task, task_config: ``tasks.make(task, **task_config)``.
    lr: peak AdamW learning rate, reached after ``warmup_steps`` linear steps, then cosine
        decay to ``lr * min_lr_ratio`` at ``steps``. grad_clip: max global gradient norm.
    weight_decay: AdamW decay, applied to weight matrices only (not biases, norms).
    chunk_size: steps per compiled chunk (checkpoint, progress and NaN check in between).
    checkpoint_schedule: 'chunks' (a rolling checkpoint per chunk) or 'log' (in addition,
        ``n_log_checkpoints`` log-spaced snapshots that are kept, for watching circuits form).
    seed, n_seeds: train seeds ``seed .. seed + n_seeds - 1`` in one vmapped call.
    """

    model: ModelConfig
    task: str
    task_config: dict = dataclasses.field(default_factory=dict)
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    chunk_size: int = 100
    checkpoint_schedule: str = "chunks"
    n_log_checkpoints: int = 20
    seed: int = 0
    n_seeds: int = 1

    def __post_init__(self):
        o = "NTPConfig"
        check(isinstance(self.model, ModelConfig), o, "model", self.model, "a ModelConfig")
        check_int(o, "steps", self.steps, 1, loop.MAX_STEPS)
        check_int(o, "batch_size", self.batch_size, 1)
        check_int(o, "warmup_steps", self.warmup_steps, 0, self.steps - 1)
        check_int(o, "chunk_size", self.chunk_size, 1)
        check_int(o, "n_log_checkpoints", self.n_log_checkpoints, 0)
        check_seed(o, "seed", self.seed)
        check_int(o, "n_seeds", self.n_seeds, 1)
        for name in ("lr", "weight_decay", "grad_clip", "min_lr_ratio"):
            check_number(o, name, getattr(self, name), positive=name == "grad_clip")
        check(self.min_lr_ratio <= 1, o, "min_lr_ratio", self.min_lr_ratio, "in [0, 1]")
        check(self.checkpoint_schedule in SCHEDULES, o, "checkpoint_schedule",
              self.checkpoint_schedule, f"one of {SCHEDULES}")
        check(isinstance(self.task_config, dict), o, "task_config", self.task_config, "a dict")
        task = make_task(self)
        need_len = task.prompt_len + task.max_target_len  # what the sampler needs
        check(self.model.vocab_size >= task.vocab.size, o, "model.vocab_size",
              self.model.vocab_size, f">= {task.vocab.size} (the vocabulary of {self.task})")
        check(self.model.max_len >= need_len, o, "model.max_len", self.model.max_len,
              f">= {need_len} (prompt {task.prompt_len} + target {task.max_target_len})")


def make_task(config):
    """The task of a config (anything with ``.task`` and ``.task_config``); a bad task name
    or field is a ``ValueError`` naming it."""
    try:
        return tasks.make(config.task, **config.task_config)
    except (ValueError, TypeError) as err:
        raise ValueError(f"task/task_config: {err}") from None


def seed_keys(seed: int, n_seeds: int) -> jax.Array:
    """Keys of seeds ``seed .. seed + n_seeds - 1`` (a key array of shape [n_seeds])."""
    return jax.vmap(jax.random.key)(jnp.arange(seed, seed + n_seeds, dtype=jnp.uint32))


def short_warmup(steps: int, wanted: int) -> int:
    """``wanted`` warmup steps, or ``steps - 1`` in a shorter run: a figure that fixes its
    warmup must not make a short legal run fail on a field the user cannot set."""
    return min(wanted, steps - 1)


def make_optimizer(config: NTPConfig) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.lr, warmup_steps=config.warmup_steps,
        decay_steps=config.steps, end_value=config.lr * config.min_lr_ratio)
    decay_mask = lambda params: jax.tree.map(lambda x: x.ndim >= 2, params)
    opt = optax.chain(optax.clip_by_global_norm(config.grad_clip),
                      optax.adamw(schedule, weight_decay=config.weight_decay, mask=decay_mask))
    return opt, schedule


def ntp_loss(graphdef, params, batch, interventions=None
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean cross-entropy over target tokens (incl. ``<eos>``) and the token/sequence
    accuracy of the argmax prediction there. ``interventions`` (hook name -> Intervention,
    ``model.forward``'s) edit the forward pass, e.g. to add dropout noise."""
    seq = jnp.concatenate([batch.prompts, batch.targets], axis=1)
    inputs, labels = seq[:, :-1], seq[:, 1:]
    p = batch.prompts.shape[1]
    target_index = jnp.arange(1, seq.shape[1])[None, :] - p  # label j is target token j+1-P
    on_target = (target_index >= 0) & (target_index < batch.target_lens[:, None])
    logits, _ = model.forward(graphdef, params, inputs, valid=inputs != PAD,
                              interventions=interventions)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    weight = on_target.astype(jnp.float32)
    n_tokens = jnp.maximum(weight.sum(), 1.0)
    loss = (ce * weight).sum() / n_tokens
    correct = (jnp.argmax(logits, axis=-1) == labels) & on_target
    seq_ok = (correct | ~on_target).all(axis=1)
    return loss, {"token_acc": correct.sum() / n_tokens, "seq_acc": seq_ok.mean()}


_PARTS_CACHE: dict[str, tuple] = {}


def _parts(config: NTPConfig):
    """graphdef, task, init(key) -> carry, step(carry, _) -> (carry, metrics) for ONE seed,
    and the step vmapped over a leading seed axis.

    Cached by config hash: the same step function object lets ``loop.run_chunks`` reuse its
    compiled chunks when the same config is trained again in this process.
    """
    key = config_hash(config)
    if key not in _PARTS_CACHE:
        if len(_PARTS_CACHE) >= 16:
            _PARTS_CACHE.pop(next(iter(_PARTS_CACHE)))
        _PARTS_CACHE[key] = _build_parts(config)
    return _PARTS_CACHE[key]


def _build_parts(config: NTPConfig):
    task = make_task(config)
    graphdef = model.init(config.model, jax.random.key(0))[0]
    opt, schedule = make_optimizer(config)

    def init(key):
        init_key, data_key = jax.random.split(key)
        params = model.init(config.model, init_key)[1]
        return {"params": params, "opt": opt.init(params), "key": data_key,
                "step": jnp.zeros((), jnp.int32)}

    def step(carry, _):
        params, i = carry["params"], carry["step"]
        batch = task.sample(jax.random.fold_in(carry["key"], i), config.batch_size, "train")
        grad_fn = jax.value_and_grad(lambda p: ntp_loss(graphdef, p, batch), has_aux=True)
        (loss, acc), grads = grad_fn(params)
        updates, opt_state = opt.update(grads, carry["opt"], params)
        new = {"params": optax.apply_updates(params, updates), "opt": opt_state,
               "key": carry["key"], "step": i + 1}
        return new, {"loss": loss, **acc, "grad_norm": optax.tree.norm(grads),
                     "lr": schedule(i)}

    def seeds_step(carry, _):  # the same step for a carry with a leading seed axis
        return jax.vmap(step)(carry, None)

    return _Parts(graphdef, task, init, step, seeds_step, jax.jit(init),
                  jax.jit(jax.vmap(init)))


class _Parts(NamedTuple):
    graphdef: Any
    task: Any
    init: Callable  # key -> carry of one seed
    step: Callable  # (carry, None) -> (carry, metrics), one seed
    seeds_step: Callable  # the same with a leading seed axis
    init_one: Callable  # jitted init
    init_seeds: Callable  # jitted vmap(init)


def make_train(config: NTPConfig, run_dir: Path | str | None = None):
    """``train(key=None) -> (params, metrics)``; ``train.graphdef`` rebuilds the model.

    ``key=None`` trains the config's seeds (params and metrics get a leading seed axis after
    the step axis: metrics ``[steps, n_seeds]``); a single key trains one model, a key array
    of shape ``[n]`` trains ``n`` (vmapped). With ``run_dir``, checkpoints go to
    ``run_dir/checkpoints`` and a rerun resumes from the newest good one.
    """
    parts = _parts(config)
    keep = (loop.log_spaced_steps(config.steps, config.n_log_checkpoints)
            if config.checkpoint_schedule == "log" else None)

    def train(key: jax.Array | None = None):
        keys = seed_keys(config.seed, config.n_seeds) if key is None else key
        check_keys(keys)
        batched = keys.ndim == 1
        carry = (parts.init_seeds if batched else parts.init_one)(keys)
        step_fn = parts.seeds_step if batched else parts.step
        if run_dir is not None:
            check_run_kind(run_dir, "NTP")
            runs.claim_json(Path(run_dir) / CONFIG_FILE, to_dict(config), "NTPConfig")
            claim_layout(Path(run_dir) / LAYOUT_FILE, seed_layout(keys))
        result = loop.run_chunks(step_fn, carry, total_steps=config.steps,
                                 chunk_size=config.chunk_size, run_dir=run_dir,
                                 checkpoint_steps=keep, desc=f"ntp {config.task}")
        train.stats = result.stats
        return result.carry["params"], result.metrics

    train.graphdef = parts.graphdef
    train.stats = None
    return train


def load_params(run_dir: Path | str, seed_index: int | None = None, step: int | None = None):
    """``(graphdef, params, config)`` from a checkpoint of an NTP run: the newest good one,
    or the one at ``step`` (e.g. a log-spaced snapshot; ``ValueError`` if it is damaged).

    Params carry the seed axis of the run unless ``seed_index`` picks one seed.
    """
    run_dir = Path(run_dir)
    config, seed_axis, n_seeds = run_layout(run_dir)
    if seed_index is not None and not 0 <= seed_index < n_seeds:
        raise ValueError(f"seed_index={seed_index} is not allowed: in [0, {n_seeds})")
    like = checkpoint_template(config, n_seeds=n_seeds, seed_axis=seed_axis)
    if step is None:
        found, tree, skipped = checkpoint.restore_latest(run_dir, like)
        if found is None:
            reasons = "; ".join(f"{s.step}: {s.reason}" for s in skipped) or "none saved"
            raise FileNotFoundError(f"no good checkpoint in {run_dir} ({reasons})")
        if skipped:  # never hand back an older model silently (RL would start from it)
            reasons = "; ".join(f"step {s.step}: {s.reason}" for s in skipped)
            warnings.warn(f"{run_dir}: loaded the checkpoint of step {found}, not the newest: "
                          f"{reasons}", stacklevel=2)
    else:
        path = checkpoint.checkpoint_dir(run_dir) / str(step)
        reason = (checkpoint.verify(path) if path.is_dir() else
                  f"no such checkpoint (saved steps: {checkpoint.steps(run_dir)})")
        if reason is not None:
            raise ValueError(f"checkpoint {path} is not usable: {reason}")
        tree = checkpoint.restore(path, like(step))
    params = tree["carry"]["params"]
    if seed_index is not None and seed_axis:
        params = jax.tree.map(lambda x: x[seed_index], params)
    return _parts(config).graphdef, params, config


RUN_CONFIG_FILES = {"NTP": CONFIG_FILE, "RL": "rl_config.json"}  # what each kind claims


def check_run_kind(run_dir: Path | str, kind: str) -> None:
    """``ValueError`` if ``run_dir`` holds a run of the other kind (NTP or RL). Both keep
    their checkpoints in ``run_dir/checkpoints``: an RL run into an NTP run's directory (or
    the reverse) would write its config beside checkpoints it cannot use, and the directory
    would then look like a run of both kinds."""
    for other, name in RUN_CONFIG_FILES.items():
        if other != kind and (Path(run_dir) / name).exists():
            raise runs.RunDirError(f"run_dir {run_dir} holds an {other} run ({name}): give "
                                   f"the {kind} run a directory of its own")


def check_keys(keys) -> None:
    """``train(key)`` takes a typed key (``jax.random.key``) or a 1-D array of them. A raw
    uint32 key (``jax.random.PRNGKey``) has a trailing axis of 2 that would be read as two
    seeds (or a key array of shape [n, 2] as one): refused with a clear error."""
    if not (isinstance(keys, jax.Array) and jax.dtypes.issubdtype(keys.dtype,
                                                                   jax.dtypes.prng_key)):
        raise TypeError("train(key) needs a typed key from jax.random.key(seed) (or an array "
                        f"of them), got {getattr(keys, 'dtype', type(keys).__name__)}; wrap a "
                        "raw PRNGKey with jax.random.wrap_key_data")
    if keys.ndim > 1:
        raise ValueError(f"train(key) takes one key or a 1-D array of keys, got shape "
                         f"{keys.shape}")


def seed_layout(keys: jax.Array) -> dict:
    """Which seeds a run trains: the config's seeds, other keys, or one key without a seed
    axis. Recorded so that ``load_params`` restores the layout that was saved, and so that a
    rerun with other keys of the same shape is refused rather than resumed from the
    checkpoints of the first keys (the shapes alone cannot tell them apart)."""
    batched = keys.ndim == 1
    return {"seed_axis": batched, "n_seeds": int(keys.shape[0]) if batched else 1,
            "key_data": np.asarray(jax.random.key_data(keys)).tolist()}


def claim_layout(path: Path, layout: dict) -> None:
    """Record which seeds a run's checkpoints hold, refusing another layout. A run saved
    before layouts were recorded has checkpoints and no file: it is left alone (its
    checkpoints decide: another layout fails to restore, ``CheckpointMismatch``, and nothing
    is written), so a wrong guess can never be written beside them. A layout file written
    before keys were recorded is compared without them."""
    if path.exists():
        stored = runs.read_json(path)
        if isinstance(stored, dict) and "key_data" not in stored:
            layout = {k: v for k, v in layout.items() if k != "key_data"}
    if path.exists() or not checkpoint.steps(path.parent):
        runs.claim_json(path, layout, "seed layout")


def run_layout(run_dir: Path | str) -> tuple[NTPConfig, bool, int]:
    """``(config, seed_axis, n_seeds)`` of the NTP run saved in ``run_dir``: which seeds its
    checkpoints hold (runs saved before the layout file existed hold the config's seeds)."""
    run_dir = Path(run_dir)
    try:
        config = from_dict(NTPConfig, runs.read_json(run_dir / CONFIG_FILE))
    except runs.RunDirError:
        raise  # read_json's message already names the file
    except (ValueError, TypeError) as err:  # a field missing, unknown or out of range
        raise runs.RunDirError(f"{run_dir / CONFIG_FILE} is damaged: {err}") from None
    layout_path = run_dir / LAYOUT_FILE
    layout = runs.read_json(layout_path) if layout_path.exists() else {}
    if not isinstance(layout, dict):
        raise runs.RunDirError(f"{layout_path} is damaged: expected a JSON object, got "
                               f"{layout!r}")
    return config, layout.get("seed_axis", True), layout.get("n_seeds", config.n_seeds)


def checkpoint_template(config: NTPConfig, n_seeds: int | None = None,
                        seed_axis: bool = True) -> Callable[[int], dict]:
    """``step -> template`` of the tree a ``make_train(config, run_dir)`` checkpoint holds
    (``{"carry": ..., "metrics": ...}``, shapes only), for ``checkpoint.restore``.

    ``n_seeds`` (default ``config.n_seeds``) seeds on a leading axis, or with
    ``seed_axis=False`` the layout of a run trained from one key."""
    parts = _parts(config)
    if seed_axis:
        n = config.n_seeds if n_seeds is None else n_seeds
        carry = jax.eval_shape(parts.init_seeds, seed_keys(config.seed, n))
        step_shapes = jax.eval_shape(lambda c: parts.seeds_step(c, None)[1], carry)
    else:
        carry = jax.eval_shape(parts.init_one, jax.random.key(config.seed))
        step_shapes = jax.eval_shape(lambda c: parts.step(c, None)[1], carry)
    return lambda n: {"carry": carry, "metrics": jax.tree.map(
        lambda s: jax.ShapeDtypeStruct((n, *s.shape), s.dtype), step_shapes)}


def evaluate(graphdef, params, task, key: jax.Array, n: int, greedy: bool = True,
             split: str = "test") -> dict[str, Any]:
    """Sample completions of ``n`` held-out prompts and score them with ``task.reward``.

    Returns ``accuracy`` (mean reward), ``rewards`` float32[n] and ``tokens`` int32[n, C].
    """
    data_key, sample_key = jax.random.split(key)
    batch = task.sample(data_key, n, split)
    samples = generate(graphdef, params, sample_key, batch.prompts, batch.prompts != PAD,
                       max_new_tokens=task.max_target_len, greedy=greedy)
    rewards = np.asarray(task.reward(batch, samples.tokens))
    return {"accuracy": float(rewards.mean()), "rewards": rewards,
            "tokens": np.asarray(samples.tokens)}
