"""The contract every registered task keeps (tasks/core.py, docs/architecture.md).

Parametrised over ``tasks.names()``, so a task registered by any module imported from
``tasks/__init__.py`` is covered. Each task runs with its default config.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tasks
from tasks.core import EOS, PAD

NAMES = tasks.names()
N = 1000  # examples per batch in these tests
SEED = 0


# --------------------------------------------------------------------------- shared fixtures
@functools.cache
def task_of(name):
    return tasks.make(name)


@functools.cache
def sampler(name):
    return jax.jit(task_of(name).sample, static_argnums=(1, 2))


@functools.cache
def jitted_reward(name):
    return jax.jit(task_of(name).reward)


@functools.cache
def gold(name, split="train"):
    return sampler(name)(jax.random.key(SEED), N, split)


def widen(completions, task):
    """Right-pad completions with <pad> to the common test width ``max_target_len + 6``
    (one compiled reward per task serves most tests)."""
    completions = np.asarray(completions, np.int32)
    extra = task.max_target_len + 6 - completions.shape[1]
    return np.pad(completions, ((0, 0), (0, extra)), constant_values=PAD)


def both_rewards(name, batch, completions):
    completions = np.asarray(completions, np.int32)
    fast = np.asarray(jitted_reward(name)(batch, completions))
    slow = np.asarray(task_of(name).reference_reward(batch.to_numpy(), completions))
    return fast, slow


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize("name", NAMES)
def test_bad_config_value_raises_value_error_naming_the_field(name):
    cls = tasks.resolve(name)
    for field in dataclasses.fields(cls.Config):
        with pytest.raises(ValueError, match=rf"\b{re.escape(field.name)}\b"):
            tasks.make(name, **{field.name: object()})  # no field accepts an arbitrary object
    with pytest.raises(ValueError, match="no_such_field"):
        tasks.make(name, no_such_field=1)


@pytest.mark.parametrize("name", NAMES)
def test_curriculum_levels_give_valid_configs(name):
    cls = tasks.resolve(name)
    for level in (0, 1):
        config = cls.curriculum(level)
        assert isinstance(config, cls.Config)
        assert cls(config).vocab.size >= 2


@pytest.mark.parametrize("name", NAMES)
def test_bad_sample_arguments_raise_value_error(name):
    task = tasks.make(name)
    for n in (0, -1, 2.5):
        with pytest.raises(ValueError, match="sample n="):
            task.sample(jax.random.key(0), n)
    with pytest.raises(ValueError, match="split='nope'"):
        task.sample(jax.random.key(0), 2, "nope")


# --------------------------------------------------------------------------- batches
@pytest.mark.parametrize("name", NAMES)
def test_batch_shapes_dtypes_and_padding(name):
    task = task_of(name)
    for split in task.splits:
        b = gold(name, split).to_numpy()
        P, C = task.prompt_len, task.max_target_len
        for leaf in (b.prompts, b.prompt_lens, b.targets, b.target_lens):
            assert leaf.dtype == np.int32
        assert b.prompts.shape == (N, P) and b.targets.shape == (N, C)
        assert b.prompt_lens.shape == b.target_lens.shape == (N,)
        for key, leaf in b.meta.items():
            assert leaf.shape[0] == N, key
        for rows in (b.prompts, b.targets):
            assert ((rows >= 0) & (rows < task.vocab.size)).all()
        col = np.arange(P)[None, :]
        is_pad_region = col < (P - b.prompt_lens)[:, None]  # left padding
        assert ((b.prompts == PAD) == is_pad_region).all()
        assert ((b.target_lens >= 1) & (b.target_lens <= C)).all()
        col = np.arange(C)[None, :]
        eos_at = col == (b.target_lens - 1)[:, None]
        assert ((b.targets == EOS) == eos_at).all()  # one <eos>, at target_lens - 1
        assert ((b.targets == PAD) == (col >= b.target_lens[:, None])).all()


@pytest.mark.parametrize("name", NAMES)
def test_gold_completions_earn_reward_one(name):
    for split in task_of(name).splits:
        b = gold(name, split)
        fast, slow = both_rewards(name, b, widen(b.targets, task_of(name)))
        assert (fast == 1).all(), f"{split}: {np.flatnonzero(fast != 1)[:5]}"
        assert (slow == 1).all(), f"{split}: {np.flatnonzero(slow != 1)[:5]}"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.bool_])
def test_non_integer_completions_are_refused_by_every_verifier(name, dtype):
    # A float 1.3 cast to int32 is <eos> for reward but not for reference_reward: the two
    # would disagree silently, so both refuse (as do the counters).
    task, batch = task_of(name), gold(name)
    completions = np.asarray(batch.targets).astype(dtype)
    for verifier in (task.reward, task.reference_reward, task.counters):
        with pytest.raises(TypeError, match="integer dtype"):
            verifier(batch, completions)
    for dtype in (np.int64, np.int16):  # any integer dtype is a token array (not jitted:
        ints = np.asarray(batch.targets[:8]).astype(dtype)  # jit would cast it to int32 first)
        small = jax.tree.map(lambda x: x[:8], batch)
        assert np.asarray(task.reward(small, ints)).min() == 1.0, dtype


@pytest.mark.parametrize("name", NAMES)
def test_token_ids_beyond_int32_are_wrong_tokens_not_wrapped_ones(name):
    # JAX (no x64) converts int64/uint64 to 32 bits modulo 2**32: 2**32 + gold token was
    # scored as the gold token (reward 1) while reference_reward said 0. A token outside
    # int32 is out of every vocabulary: it must score as the int32 out-of-vocab token does.
    task, batch = task_of(name), gold(name)
    small = jax.tree.map(lambda x: x[:8], batch)
    targets, lens = np.asarray(small.targets), np.asarray(small.target_lens)
    rows, col = np.arange(8), np.maximum(lens - 2, 0)  # the last answer token (or <eos>)
    up = rows < 4  # half shifted up, half down
    shifted = targets.astype(np.int64)
    shifted[rows, col] += np.where(up, 2**32, -(2**32))
    unsigned = targets.astype(np.uint64)
    unsigned[rows, col] += np.uint64(2**32)
    int32_alike = targets.copy()
    int32_alike[rows, col] = np.where(up, 2**31 - 1, -(2**31))
    want = np.asarray(task.reference_reward(small.to_numpy(), int32_alike))
    assert (want == 0).all(), "a wrong answer token must lose the reward"
    for completions in (shifted, shifted.tolist(), unsigned):
        fast = np.asarray(task.reward(small, completions))
        slow = np.asarray(task.reference_reward(small.to_numpy(), completions))
        assert (fast == want).all() and (slow == want).all(), (type(completions), fast, slow)


@pytest.mark.parametrize("name", NAMES)
def test_same_key_same_batch_other_key_other_batch(name):
    first = sampler(name)(jax.random.key(7), N, "train")
    again = sampler(name)(jax.random.key(7), N, "train")
    other = sampler(name)(jax.random.key(8), N, "train")
    for x, y in zip(jax.tree.leaves(first), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(first.prompts, other.prompts)


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_keys_matches_one_key_at_a_time(name):
    task = task_of(name)
    keys = jax.random.split(jax.random.key(3), 3)
    stacked = jax.jit(jax.vmap(lambda k: task.sample(k, N)))(keys)
    for i in range(3):
        single = sampler(name)(keys[i], N, "train")
        for x, y in zip(jax.tree.leaves(single), jax.tree.leaves(stacked), strict=True):
            np.testing.assert_array_equal(x, y[i])


@pytest.mark.parametrize("name", NAMES)
def test_vocab_round_trip_and_render(name):
    task = task_of(name)
    b = gold(name).to_numpy()
    for i in range(50):
        for row in (b.prompts[i], b.targets[i]):
            assert task.vocab.encode(task.vocab.decode(row)) == row[row != PAD].tolist()
        text = task.render(b, i)
        assert isinstance(text, str) and text.strip()


@pytest.mark.parametrize("name", NAMES)
def test_counters_are_float_per_example(name):
    b = gold(name)
    for key, value in jax.jit(task_of(name).counters)(b, widen(b.targets, task_of(name))).items():
        assert value.shape == (N,) and value.dtype == np.float32, key


# --------------------------------------------------------------------------- verifiers agree
def _mutated_completions(targets, target_lens, V, rng):
    """Families of completions built from the gold rows: ``{family: int32[n, L]}``."""
    rows = [t[:n].tolist() for t, n in zip(targets, target_lens, strict=True)]
    C = targets.shape[1]
    width = C + 6  # longer than any gold
    token = lambda: int(rng.integers(0, V))
    wild = lambda: int(rng.choice([-1, V, V + 5, -(2**31), 2**31 - 1, int(rng.integers(-99, 0))]))
    at = lambda row: int(rng.integers(0, max(len(row), 1)))

    def substitute(row, new):
        i = at(row)
        return row[:i] + [new] + row[i + 1:]

    def after_eos_garbage(row):
        return row + [int(rng.integers(-5, V + 5)) for _ in range(width - len(row))]

    def eos_removed(row):
        tail = token()
        return row[:-1] + ([tail] if tail != EOS else [])

    def prefix_then_random(row):
        out = row[: at(row)] + [token() for _ in range(int(rng.integers(0, 5)))]
        return out + ([EOS] if rng.random() < 0.8 else [])

    families = {
        "gold_then_garbage": [after_eos_garbage(r) for r in rows],
        "substituted": [substitute(r, token()) for r in rows],
        "substituted_out_of_range": [substitute(r, wild()) for r in rows],
        "deleted": [(lambda i: r[:i] + r[i + 1:])(at(r)) for r in rows],
        "inserted": [(lambda i: r[:i] + [token()] + r[i:])(at(r)) for r in rows],
        "truncated": [r[: at(r)] for r in rows],
        "eos_removed": [eos_removed(r) for r in rows],
        "swapped": [(lambda i: r[:i] + r[i + 1:i + 2] + r[i:i + 1] + r[i + 2:])(at(r))
                    for r in rows],
        "prefix_then_random": [prefix_then_random(r) for r in rows],
        "random_long": [[token() for _ in range(width)] for _ in rows],
    }
    out = {}
    for key, rs in families.items():
        # after each row's content: <pad> on even rows, random tokens other than <pad> and
        # <eos> on odd rows (so a row without <eos> does not end in a run of <pad>)
        arr = np.full((len(rs), width), PAD, np.int64)
        arr[1::2] = rng.integers(EOS + 1, max(V, EOS + 2), (len(rs[1::2]), width))
        for i, r in enumerate(rs):
            arr[i, : len(r[:width])] = r[:width]
        out[key] = arr.astype(np.int32)
    out["random_L1"] = rng.integers(0, V, (len(rows), 1)).astype(np.int32)
    out["random_shorter"] = rng.integers(0, V, (len(rows), max(1, C // 2))).astype(np.int32)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_jnp_and_reference_verifiers_agree_on_mutations(name):
    task = task_of(name)
    b = gold(name)
    rng = np.random.default_rng(SEED)
    families = _mutated_completions(np.asarray(b.targets), np.asarray(b.target_lens),
                                    task.vocab.size, rng)
    assert sum(len(f) for f in families.values()) >= 10_000
    for family, completions in families.items():
        fast, slow = both_rewards(name, b, completions)
        mismatch = np.flatnonzero(fast != slow)
        assert mismatch.size == 0, (
            f"{family}: row {mismatch[0]} jnp={fast[mismatch[0]]} ref={slow[mismatch[0]]} "
            f"completion={completions[mismatch[0]].tolist()} gold={task.render(b, mismatch[0])}")
        if family == "gold_then_garbage":
            assert (fast == 1).all()  # what follows the first <eos> is ignored
        if family in ("eos_removed", "truncated"):
            assert (fast == 0).all()  # no <eos>, no reward


_MUTATION = st.tuples(
    st.sampled_from(["substitute", "delete", "insert", "truncate", "drop_eos", "garbage",
                     "swap"]),
    st.integers(0, 10**6),  # position, reduced modulo the row length
    st.integers(-(2**31), 2**31 - 1),  # token, reduced to [-3, V + 3) in most cases
)


def _apply(row, ops, V):
    for kind, pos, raw in ops:
        tok = raw % (V + 6) - 3 if abs(raw) < 2**30 else raw
        i = pos % (len(row) + 1)
        if kind == "substitute" and row:
            row = row[: i % len(row)] + [tok] + row[i % len(row) + 1:]
        elif kind == "delete" and row:
            row = row[: i % len(row)] + row[i % len(row) + 1:]
        elif kind == "insert":
            row = row[:i] + [tok] + row[i:]
        elif kind == "truncate":
            row = row[:i]
        elif kind == "drop_eos":
            row = [t for t in row if t != EOS]
        elif kind == "garbage":
            row = row + [tok, EOS, tok]
        elif kind == "swap" and len(row) >= 2:
            j = i % (len(row) - 1)
            row = row[:j] + [row[j + 1], row[j]] + row[j + 2:]
    return row


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=10, deadline=None, derandomize=True)
@given(ops=st.lists(_MUTATION, min_size=1, max_size=4))
def test_jnp_and_reference_verifiers_agree_on_structured_mutations(name, ops):
    task = task_of(name)
    b = gold(name)
    width = task.max_target_len + 6
    targets, lens = np.asarray(b.targets), np.asarray(b.target_lens)
    completions = np.full((N, width), PAD, np.int64)
    filler = EOS + 1 + np.arange(width) % max(task.vocab.size - EOS - 1, 1)  # no <pad>, <eos>
    completions[1::2] = filler  # odd rows: content, then non-<eos> tokens up to the width
    for i in range(N):
        row = _apply(targets[i, : lens[i]].tolist(), ops, task.vocab.size)[:width]
        completions[i, : len(row)] = row
    fast, slow = both_rewards(name, b, completions.astype(np.int32))
    np.testing.assert_array_equal(fast, slow)
