"""What every task shares: a vocabulary, a batch, a config check, a registry.

Conventions (one for all tasks, so the model, the sampler and the RL engine never ask
which task they are running):

* Token 0 is ``<pad>`` and token 1 is ``<eos>`` in every vocabulary.
* ``Batch.prompts`` is **left**-padded with ``<pad>`` to the task's ``prompt_len``, so every
  prompt ends at the same column and generation starts there for the whole batch.
  ``Batch.prompt_lens`` counts the real (non-pad) prompt tokens.
* ``Batch.targets`` is the gold completion, **right**-padded with ``<pad>`` after its
  ``<eos>`` to the task's ``max_target_len``; ``Batch.target_lens`` includes the ``<eos>``.
* A completion handed to ``task.reward`` is any ``int32[n, L]`` array (any L >= 1): the
  verifier reads it up to its first ``<eos>``. No ``<eos>`` means reward 0; what follows
  the first ``<eos>`` is ignored. No token value can make a verifier raise. Any integer
  dtype is accepted; a float or bool array is refused with a ``TypeError`` (``reward``
  would truncate 1.3 to ``<eos>`` where ``reference_reward`` would not, so the two
  verifiers would disagree silently).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

PAD = 0
EOS = 1


# --------------------------------------------------------------------------- vocabulary
@dataclasses.dataclass(frozen=True)
class Vocab:
    """Special tokens first (``<pad>``, ``<eos>``, then the task's own), then the integers
    ``0 .. n_numbers-1``. Text is whitespace-separated: integers are written as integers,
    special tokens as their names (``<sep>``, ``+``, ``<back>``)."""

    specials: tuple[str, ...]
    n_numbers: int

    def __post_init__(self):
        if self.specials[:2] != ("<pad>", "<eos>"):
            raise ValueError("Vocab.specials must start with ('<pad>', '<eos>')")
        if len(set(self.specials)) != len(self.specials):
            raise ValueError(f"Vocab.specials has duplicates: {self.specials}")
        for s in self.specials:
            if not s or any(c.isspace() for c in s) or _is_int(s):
                raise ValueError(f"Vocab special {s!r} must be non-empty, no spaces, not a number")
        if self.n_numbers < 0:
            raise ValueError("Vocab.n_numbers must be >= 0")

    @property
    def size(self) -> int:
        return len(self.specials) + self.n_numbers

    def id(self, special: str) -> int:
        """Token id of a special token, e.g. ``vocab.id('<sep>')``."""
        return self.specials.index(special)

    def num(self, k):
        """Token id of the integer ``k`` (works on ints and on jnp/np arrays)."""
        return k + len(self.specials)

    def value(self, token):
        """Inverse of :meth:`num` (no range check; use :meth:`is_num` first)."""
        return token - len(self.specials)

    def is_num(self, token):
        return (token >= len(self.specials)) & (token < self.size)

    def encode(self, text: str) -> list[int]:
        out = []
        for word in text.split():
            if word in self.specials:
                out.append(self.specials.index(word))
            elif _is_int(word) and 0 <= int(word) < self.n_numbers:
                out.append(self.num(int(word)))
            else:
                raise ValueError(f"cannot encode {word!r}: not a special token of this vocabulary "
                                 f"nor an integer in [0, {self.n_numbers})")
        return out

    def decode(self, tokens: Iterable[int], *, strip_pad: bool = True) -> str:
        words = []
        for t in np.asarray(tokens).reshape(-1).tolist():
            if strip_pad and t == PAD:
                continue
            if 0 <= t < len(self.specials):
                words.append(self.specials[t])
            elif len(self.specials) <= t < self.size:
                words.append(str(t - len(self.specials)))
            else:
                words.append(f"<unk:{t}>")
        return " ".join(words)


def _is_int(word: str) -> bool:
    return word.lstrip("-").isdigit()


# --------------------------------------------------------------------------- batch
@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Batch:
    """A batch of examples (a pytree; every leaf has leading axis n)."""

    prompts: jax.Array  # int32[n, P], left-padded with <pad>
    prompt_lens: jax.Array  # int32[n]
    targets: jax.Array  # int32[n, C], gold completion, <eos>, then <pad>
    target_lens: jax.Array  # int32[n], including the <eos>
    meta: dict[str, jax.Array]  # per-example ground truth the theories need

    @property
    def n(self) -> int:
        return self.prompts.shape[0]

    def take(self, idx) -> Batch:
        return jax.tree.map(lambda x: x[idx], self)

    def to_numpy(self) -> Batch:
        return jax.tree.map(np.asarray, self)


def left_pad(rows: jax.Array, lens: jax.Array) -> jax.Array:
    """Move right-padded rows ``rows[i, :lens[i]]`` to the right edge (left padding)."""
    width = rows.shape[1]
    col = jnp.arange(width)[None, :]
    src = col - (width - lens[:, None])
    out = jnp.take_along_axis(rows, jnp.clip(src, 0, width - 1), axis=1)
    return jnp.where(src >= 0, out, PAD).astype(jnp.int32)


def prompt_valid(prompts: jax.Array, prompt_lens: jax.Array) -> jax.Array:
    """bool[n, W]: True at the real tokens of left-padded prompts (the last ``prompt_lens``
    columns of each row)."""
    width = prompts.shape[1]
    return jnp.arange(width)[None, :] >= width - prompt_lens[:, None]


def eos_index(completions: jax.Array) -> jax.Array:
    """Index of the first ``<eos>`` in each row, or L where there is none."""
    is_eos = completions == EOS
    L = completions.shape[1]
    return jnp.where(is_eos.any(axis=1), jnp.argmax(is_eos, axis=1), L)


def completion_mask(completions: jax.Array) -> jax.Array:
    """bool[n, L]: True for the tokens up to and including the first ``<eos>``."""
    L = completions.shape[1]
    return jnp.arange(L)[None, :] <= eos_index(completions)[:, None]


def reference_eos_index(row) -> int | None:
    """Pure-Python first-<eos> index (for reference verifiers); None if absent."""
    row = list(np.asarray(row).tolist())
    return row.index(EOS) if EOS in row else None


# --------------------------------------------------------------------------- configs
def check(ok: bool, owner: str, field: str, value: Any, allowed: str) -> None:
    """Raise one clear ``ValueError`` naming the field, its value and what is allowed."""
    if not ok:
        raise ValueError(f"{owner}.{field}={value!r} is not allowed: {allowed}")


# jax.random.key keeps only the low 32 bits of a seed (key(2**32 + 5) is key(5)), so larger
# seeds would alias silently; 2**31 leaves room for the fixed offsets some runs add to a seed
# (e.g. the RL held-out key, seed + 1_000_003) and for seed + n_seeds.
MAX_SEED = 2**31 - 1


def check_seed(owner: str, field: str, value: Any) -> None:
    """A seed: an integer in [0, MAX_SEED]."""
    check_int(owner, field, value, 0, MAX_SEED)


def check_int(owner: str, field: str, value: Any, lo: int, hi: int | None = None) -> None:
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= lo
    ok = ok and (hi is None or value <= hi)
    rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
    check(ok, owner, field, value, f"an integer {rng}")


def check_ints(owner: str, config: Any, fields: tuple[str, ...], lo: int = 1) -> None:
    """``check_int`` for each named field of ``config`` (a bool is not an integer here)."""
    for field in fields:
        check_int(owner, field, getattr(config, field), lo)


# The smallest normal float32: a step size or clip norm below it is 0 in the float32
# computation (smaller values are subnormal, and XLA flushes subnormals to 0), which would
# silently train nothing.
FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def check_number(owner: str, field: str, value: Any, *, positive: bool = False) -> None:
    """A finite real number >= 0 (> 0 with ``positive``) that float32 does not round to 0."""
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    ok = ok and 0 <= value < float("inf") and (value == 0 or value >= FLOAT32_TINY)
    ok = ok and (value > 0 or not positive)
    check(ok, owner, field, value, "a finite number " + ("> 0" if positive else ">= 0")
          + f" (a non-zero value >= {FLOAT32_TINY:.3g}, the smallest normal float32)")


def check_numbers(owner: str, config: Any, fields: tuple[str, ...], *,
                  positive: bool = False) -> None:
    """``check_number`` for each named field of ``config``."""
    for field in fields:
        check_number(owner, field, getattr(config, field), positive=positive)


def check_finite(owner: str, field: str, value: Any) -> None:
    """A finite real number of either sign (not a bool)."""
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    check(ok and abs(value) < float("inf"), owner, field, value, "a finite number")


def check_prob(owner: str, field: str, value: Any, *, open_hi: bool = False) -> None:
    ok = isinstance(value, float | int | np.floating) and not isinstance(value, bool)
    ok = ok and 0.0 <= float(value) <= 1.0 and not (open_hi and float(value) >= 1.0)
    check(ok, owner, field, value, "a probability in [0, 1" + (")" if open_hi else "]"))


# --------------------------------------------------------------------------- tasks
def _integer_completions(method):
    """Wrap ``method(self, batch, completions)`` to refuse a non-integer dtype (checked on
    the dtype only, so it costs nothing under ``jit``) and to clamp host ids wider than
    int32 (``_clamp_to_int32``: a host-side pass over numpy arrays and lists only)."""
    @functools.wraps(method)
    def checked(self, batch, completions, *args, **kwargs):
        try:
            completions = _clamp_to_int32(completions)
        except (ValueError, OverflowError) as err:  # a ragged list, an id beyond 64 bits
            raise TypeError(f"{self.name}.{method.__name__}: completions must be a rectangular "
                            f"array of integer token ids ({err})") from None
        dtype = getattr(completions, "dtype", None)
        if dtype is None:  # a list of traced rows under jit
            dtype = jnp.asarray(completions).dtype
        if not (np.issubdtype(dtype, np.integer) and dtype != np.bool_):
            raise TypeError(f"{self.name}.{method.__name__}: completions must be token ids "
                            f"of an integer dtype (int32), got {dtype}")
        return method(self, batch, completions, *args, **kwargs)
    return checked


_INT32 = np.iinfo(np.int32)


def _clamp_to_int32(completions):
    """Host token ids (numpy arrays, lists) wider than int32, clamped to int32's range.

    JAX without x64 converts int64/uint64 (numpy's default integer) to 32 bits modulo 2**32,
    so token ``2**32 + 5`` would reach ``reward`` as token 5 and could be scored correct,
    while ``reference_reward`` sees a wrong token. Every value outside int32 lies outside
    every vocabulary, and so does the clamped value (``<pad>``/``<eos>`` are 0 and 1): the
    meaning "a wrong token" is kept for both verifiers. Traced and device arrays pass through
    unchanged (32 bits wide unless ``jax_enable_x64``, where nothing is wrapped).
    """
    if isinstance(completions, list | tuple):
        if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(completions)):
            return completions
        completions = np.asarray(completions)
    if not isinstance(completions, np.ndarray) or not np.issubdtype(completions.dtype,
                                                                    np.integer):
        return completions
    if np.can_cast(completions.dtype, np.int32) or completions.size == 0:
        return completions
    return np.clip(completions, _INT32.min, _INT32.max).astype(np.int32)


class Task:
    """Base class. Subclasses set ``name``, ``Config`` and implement the four methods.

    ``sample(key, n, split)`` must be pure JAX (jit with ``static_argnums=(1, 2)``, vmap over
    keys); ``reward`` must be pure jnp and total (see the module docstring);
    ``reference_reward`` is plain Python/numpy written independently of ``reward``.
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    splits: ClassVar[tuple[str, ...]] = ("train", "test")

    def __init__(self, config):
        self.config = config
        self.vocab: Vocab
        self.prompt_len: int  # P
        self.max_target_len: int  # C

    def sample(self, key: jax.Array, n: int, split: str = "train") -> Batch:
        raise NotImplementedError

    def reward(self, batch: Batch, completions: jax.Array) -> jax.Array:
        raise NotImplementedError

    def reference_reward(self, batch: Batch, completions) -> np.ndarray:
        raise NotImplementedError

    @_integer_completions
    def counters(self, batch: Batch, completions: jax.Array) -> dict[str, jax.Array]:
        """Per-example task counters (float32[n] each) for RL metrics, e.g. backtracks."""
        return {}

    def render(self, batch: Batch, i: int) -> str:
        b = batch.to_numpy()
        prompt = self.vocab.decode(b.prompts[i])
        answer = self.vocab.decode(b.targets[i])
        return f"{prompt}  =>  {answer}"

    @classmethod
    def curriculum(cls, level: int, **overrides):
        """Config for difficulty ``level`` (0 = easiest). Subclasses override."""
        return cls.Config(**overrides)

    def __init_subclass__(cls, **kwargs):
        # Every task's verifiers and counters refuse non-integer completions: written once
        # here, so a new task cannot forget it.
        super().__init_subclass__(**kwargs)
        for method in ("reward", "reference_reward", "counters"):
            if method in cls.__dict__:
                setattr(cls, method, _integer_completions(cls.__dict__[method]))

    def _check_split(self, split: str) -> None:
        check(split in self.splits, self.name, "split", split, f"one of {self.splits}")

    def _check_sample(self, n: int, split: str) -> None:
        """``sample``'s arguments: a clear error, not a JAX shape error, for a bad ``n``."""
        if not isinstance(n, bool) and hasattr(n, "__index__"):
            n = operator.index(n)  # a numpy or concrete jax integer is fine
        check_int(self.name, "sample n", n, 1)
        self._check_split(split)


_REGISTRY: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    if cls.name in _REGISTRY:
        raise ValueError(f"task {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    return sorted(_REGISTRY)


def resolve(name: str) -> type[Task]:
    """Full name (``graph/path_finding``) or a unique short name (``path_finding``)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    hits = [k for k in _REGISTRY if k.split("/")[-1] == name]
    if len(hits) == 1:
        return _REGISTRY[hits[0]]
    raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(names())}")


def make(name: str, **config) -> Task:
    """``tasks.make('graph/path_finding', n_nodes=100)``: config fields as keywords."""
    cls = resolve(name)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(config) - fields)
    if unknown:
        raise ValueError(f"{cls.name}: unknown config field(s) {unknown}; "
                         f"allowed: {sorted(fields)}")
    return cls(cls.Config(**config))


TaskFactory = Callable[..., Task]


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def jit_method(task_cls, config, method: str, *args):
    """``getattr(task_cls(config), method)(*args)``, compiled once per (class, config,
    method, argument shapes) for the whole process. Every instance with an equal config
    shares it, so eager calls (tests, export, the gallery) compile once instead of
    dispatching op by op; inside an outer ``jit`` it is simply inlined."""
    return getattr(task_cls(config), method)(*args)
