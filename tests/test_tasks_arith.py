"""Specifications of the arithmetic and sequence tasks, with hand-derived examples.

Hand-built one-example batches (``hand_batch``) pin the verifiers to worked cases; sampled
batches are checked against plain-Python recomputations from the prompt text.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tasks
from tasks.core import PAD, Batch

N = 1000


@functools.cache
def cached_task(name, **config):
    """One task object per config, so its jitted functions compile once per test session."""
    task = tasks.make(name, **config)
    return task, jax.jit(task.sample, static_argnums=(1, 2))


@functools.cache
def sample(name, n=N, split="train", **config):
    task, sampler = cached_task(name, **config)
    return task, sampler(jax.random.key(0), n, split)


def hand_batch(task, prompt: str, target: str, /, **meta) -> Batch:
    """A one-example batch from text, left/right padded as the task's own batches are."""
    p, t = task.vocab.encode(prompt), task.vocab.encode(target)
    prompts = np.full((1, task.prompt_len), PAD, np.int32)
    prompts[0, task.prompt_len - len(p):] = p
    targets = np.full((1, task.max_target_len), PAD, np.int32)
    targets[0, : len(t)] = t
    return Batch(jnp.asarray(prompts), jnp.asarray([len(p)], jnp.int32), jnp.asarray(targets),
                 jnp.asarray([len(t)], jnp.int32),
                 {k: jnp.asarray([v]) for k, v in meta.items()})


@functools.cache
def _jitted_reward(task):
    return jax.jit(task.reward)


def encode_rows(task, texts: list[str], width: int = 16):
    """Text completions as int32[16, width], right-padded with <pad> (one compiled shape)."""
    comp = np.full((16, width), PAD, np.int32)
    for i, text in enumerate(texts):
        row = task.vocab.encode(text)
        comp[i, : len(row)] = row
    return comp


def rewards(task, batch: Batch, completions: list[str]):
    """(jnp reward, reference reward) of each text completion against the one example."""
    comp = encode_rows(task, completions)
    tiled = batch.take(np.zeros(len(comp), np.int32))
    fast = np.asarray(_jitted_reward(task)(tiled, comp))
    slow = task.reference_reward(tiled.to_numpy(), comp)
    return fast[: len(completions)].tolist(), slow[: len(completions)].tolist()


def words(task, row):
    return task.vocab.decode(row).split()


def operands(task, prompt_row, op: str):
    w = words(task, prompt_row)
    return int("".join(w[: w.index(op)])), int("".join(w[w.index(op) + 1: w.index("=")]))


# --------------------------------------------------------------------------- addition
def count_carries(a: int, b: int) -> int:
    carries, carry = 0, 0
    while a or b:
        carry = (a % 10 + b % 10 + carry) // 10
        carries += carry
        a, b = a // 10, b // 10
    return carries


def test_carry_counting_reference_on_hand_examples():
    assert count_carries(123, 456) == 0
    assert count_carries(95, 15) == 2  # 5+5 = 10, 9+1+1 = 11 -> 110
    assert count_carries(905, 105) == 2  # 5+5 = 10, 0+0+1 = 1, 9+1 = 10 -> 1010
    assert count_carries(999, 999) == 3


@pytest.mark.parametrize("n_carries", [0, 3])  # 2 is covered by the reversed-output test
def test_addition_has_exactly_the_requested_number_of_carries(n_carries):
    task, b = sample("arith/addition", digits=3, n_carries=n_carries)
    assert (np.asarray(b.meta["n_carries"]) == n_carries).all()
    for i in range(200):
        a, c = operands(task, b.prompts[i], "+")
        assert count_carries(a, c) == n_carries, (a, c)
        assert words(task, b.targets[i]) == list(str(a + c)) + ["<eos>"]


def test_addition_meta_counts_carries_when_unconstrained():
    task, b = sample("arith/addition", digits=3, test_digits=5)
    counted = [count_carries(*operands(task, b.prompts[i], "+")) for i in range(N)]
    np.testing.assert_array_equal(b.meta["n_carries"], counted)
    assert set(counted) == {0, 1, 2, 3}


def test_addition_reversed_output_writes_units_first():
    task = cached_task("arith/addition", digits=2, reversed_output=True)[0]
    batch = hand_batch(task, "9 5 + 1 5 =", "0 1 1 <eos>")  # 95 + 15 = 110
    assert rewards(task, batch, ["0 1 1 <eos>", "1 1 0 <eos>", "0 1 1"]) == \
        ([1.0, 0.0, 0.0], [1.0, 0.0, 0.0])
    task, b = sample("arith/addition", digits=3, n_carries=2, reversed_output=True)
    assert (np.asarray(b.meta["n_carries"]) == 2).all()
    for i in range(100):
        a, c = operands(task, b.prompts[i], "+")
        assert count_carries(a, c) == 2
        assert words(task, b.targets[i]) == list(str(a + c)[::-1]) + ["<eos>"]


def test_addition_canonical_answer_only():
    task = cached_task("arith/addition", digits=2)[0]
    batch = hand_batch(task, "9 5 + 1 5 =", "1 1 0 <eos>")
    got = rewards(task, batch, ["1 1 0 <eos>", "0 1 1 0 <eos>", "1 1 <eos>", "1 1 0 + <eos>",
                                "1 1 0 <eos> 7 7", "<eos>", "1 1 0"])
    assert got == ([1.0, 0, 0, 0, 1, 0, 0],) * 2


def test_addition_length_split_trains_short_and_tests_long():
    task, train = sample("arith/addition", digits=3, test_digits=5)
    _, test = sample("arith/addition", N, "test", digits=3, test_digits=5)
    assert set(np.asarray(train.meta["digits"]).tolist()) == {1, 2, 3}
    assert set(np.asarray(test.meta["digits"]).tolist()) == {4, 5}
    assert train.prompts.shape == test.prompts.shape == (N, 2 * 5 + 2)
    for b in (train, test):  # operands have d digits and no leading zero
        for i in range(100):
            w = words(task, b.prompts[i])
            d = int(b.meta["digits"][i])
            assert w[d] == "+" and len(w) == 2 * d + 2
            assert d == 1 or (w[0] != "0" and w[d + 1] != "0")


@pytest.mark.parametrize("config, field", [
    ({"n_carries": 4, "digits": 3}, "n_carries"), ({"test_digits": 3, "digits": 3}, "test_digits"),
    ({"min_digits": 4, "digits": 3}, "min_digits"), ({"reversed_output": 1}, "reversed_output"),
    ({"digits": 0}, "digits"), ({"test_digits": 67, "digits": 64}, "test_digits")])
def test_addition_rejects_bad_configs(config, field):
    with pytest.raises(ValueError, match=field):
        tasks.make("arith/addition", **config)


def test_addition_explicit_test_digits_reach_the_default_at_the_largest_size():
    default = tasks.make("arith/addition", digits=64)  # test split up to 64 + 2 digits
    explicit = tasks.make("arith/addition", digits=64, test_digits=66)
    assert default.config.max_test_digits == explicit.config.max_test_digits == 66


def test_addition_curriculum():
    assert tasks.resolve("addition").curriculum(2).digits == 3


# --------------------------------------------------------------------------- multiplication
def scratchpad_text(a: int, b: int) -> list[str]:
    """Partial products a * b_i * 10**i, units digit of b first: 12 * 34 -> 48 + 360 = 408."""
    parts = [str(a * int(ch) * 10**i) for i, ch in enumerate(reversed(str(b)))]
    return list(" + ".join(" ".join(p) for p in parts).split()) + ["="] + list(str(a * b))


def test_multiplication_scratchpad_format():
    assert scratchpad_text(12, 34) == "4 8 + 3 6 0 = 4 0 8".split()
    task, b = sample("arith/multiplication", digits_a=3, digits_b=2, scratchpad=True)
    for i in range(200):
        a, c = operands(task, b.prompts[i], "*")
        assert words(task, b.targets[i]) == scratchpad_text(a, c) + ["<eos>"]
    task, b = sample("arith/multiplication", digits_a=2, digits_b=2)
    for i in range(200):
        a, c = operands(task, b.prompts[i], "*")
        assert words(task, b.targets[i]) == list(str(a * c)) + ["<eos>"]


def test_multiplication_checks_the_final_answer_only():
    task = cached_task("arith/multiplication", scratchpad=True)[0]
    batch = hand_batch(task, "1 2 * 3 4 =", "4 8 + 3 6 0 = 4 0 8 <eos>", a=12, b=34, product=408)
    got = rewards(task, batch, [
        "4 8 + 3 6 0 = 4 0 8 <eos>",  # gold
        "9 9 + 9 = 4 0 8 <eos>",  # wrong scratchpad, right answer
        "4 0 8 <eos>",  # no scratchpad
        "1 = 2 = 4 0 8 <eos>",  # the last '=' starts the answer
        "4 8 + 3 6 0 = 4 0 9 <eos>",  # wrong answer
        "4 8 + 3 6 0 = 0 4 0 8 <eos>",  # leading zero is not canonical
        "4 0 8 = <eos>",  # empty answer after the last '='
        "4 8 + 3 6 0 = 4 0 8",  # no <eos>
    ])
    assert got == ([1.0, 1, 1, 1, 0, 0, 0, 0],) * 2


def test_multiplication_rejects_products_beyond_int32():
    with pytest.raises(ValueError, match="digits_b"):
        tasks.make("arith/multiplication", digits_a=5, digits_b=5)


# --------------------------------------------------------------------------- parity
def test_parity_long_rate_matches_p_long_within_binomial_error():
    p, n = 0.3, 10_000
    task, b = sample("arith/parity", n, n_bits=4, p_long=p)
    rate = float(np.mean(b.meta["is_long"]))
    sigma = np.sqrt(p * (1 - p) / n)  # 0.0046
    assert abs(rate - p) < 4 * sigma  # 4 sigma: fails by chance with probability 6e-5
    np.testing.assert_array_equal(b.target_lens, np.where(b.meta["is_long"], 5, 2))
    used_long = task.counters(b, b.targets)["used_long"]
    np.testing.assert_array_equal(used_long, np.asarray(b.meta["is_long"], np.float32))


def test_parity_targets_are_running_parities_or_the_answer():
    task, b = sample("arith/parity", 10_000, n_bits=4, p_long=0.3)
    for i in range(200):
        bits = [int(w) for w in words(task, b.prompts[i])[:4]]
        running = [str(sum(bits[: t + 1]) % 2) for t in range(4)]  # 1 0 1 1 -> 1 1 0 1
        want = running if b.meta["is_long"][i] else running[-1:]
        assert words(task, b.targets[i]) == want + ["<eos>"]
        assert words(task, b.targets[i])[0] in ("0", "1")  # first token: a bit in both modes


def test_parity_reward_reads_the_final_answer_and_counters_report_the_mode():
    task = cached_task("arith/parity", n_bits=4)[0]
    batch = hand_batch(task, "1 0 1 1 <sep>", "1 1 0 1 <eos>", answer=1)
    texts = ["1 1 0 1 <eos>", "1 <eos>", "0 0 0 1 <eos>", "1 1 0 0 <eos>", "<eos>", "1",
             "1 <eos> 0", "1 1 0 1 1 <eos>"]
    assert rewards(task, batch, texts) == ([1.0, 1, 1, 0, 0, 0, 1, 1],) * 2
    comp = encode_rows(task, texts, width=6)[: len(texts)]
    counters = task.counters(batch.take(np.zeros(len(texts), np.int32)), comp)
    assert np.asarray(counters["used_long"]).tolist() == [1, 0, 1, 1, 0, 0, 0, 0]
    assert np.asarray(counters["length"]).tolist() == [4, 1, 4, 4, 0, 6, 1, 5]  # 6 = L


def test_parity_iteration_head_format():
    task, b = sample("arith/parity", n_bits=5, p_long=1.0, format="iteration_head")
    w = words(task, b.prompts[0])
    assert w[0] == "<parity>" and w[-1] == "<eoi>" and len(w) == 7
    assert (np.asarray(b.target_lens) == 6).all()


@pytest.mark.parametrize("config, field", [({"p_long": 1.5}, "p_long"),
                                           ({"format": "cot"}, "format"),
                                           ({"n_bits": 0}, "n_bits")])
def test_parity_rejects_bad_configs(config, field):
    with pytest.raises(ValueError, match=field):
        tasks.make("arith/parity", **config)


# --------------------------------------------------------------------------- modular sum
def test_modular_sum_chain_of_thought_adds_t_over_n_numbers_per_step():
    task = cached_task("arith/modular_sum", n_terms=4, n_steps=2, modulus=10)[0]
    # 7 + 5 = 12 -> 2; 2 + 9 + 3 = 14 -> 4
    batch = hand_batch(task, "7 5 9 3 =", "2 4 <eos>", answer=4)
    assert rewards(task, batch, ["2 4 <eos>", "4 <eos>", "9 4 <eos>", "2 5 <eos>", "2 4",
                                 "<eos>", "4 <eos> 1"]) == ([1.0, 1, 1, 0, 0, 0, 1],) * 2
    task, b = sample("arith/modular_sum", n_terms=12, n_steps=3, modulus=7)
    for i in range(200):
        x = [int(w) for w in words(task, b.prompts[i])[:-1]]
        want = [str(sum(x[: 4 * k]) % 7) for k in (1, 2, 3)]
        assert words(task, b.targets[i]) == want + ["<eos>"]


def test_modular_sum_direct_answer_when_one_step():
    task, b = sample("arith/modular_sum", n_terms=5, n_steps=1, modulus=3)
    assert b.targets.shape[1] == 2 and (np.asarray(b.target_lens) == 2).all()
    counters = task.counters(b, b.targets)
    assert (np.asarray(counters["cot_len"]) == 1).all()


def test_modular_sum_steps_must_divide_terms():
    with pytest.raises(ValueError, match="n_steps"):
        tasks.make("arith/modular_sum", n_terms=6, n_steps=4)
    with pytest.raises(ValueError, match="modulus"):
        tasks.make("arith/modular_sum", modulus=1)


# --------------------------------------------------------------------------- countdown
def countdown_rewards(numbers, target, texts, **config):
    task = cached_task("arith/countdown", n_numbers=len(numbers), **config)[0]
    prompt = " ".join(map(str, numbers)) + f" <target> {target} <sep>"
    batch = hand_batch(task, prompt, "<eos>", numbers=np.asarray(numbers), target=target)
    return rewards(task, batch, texts)


def test_countdown_parser_cases():
    fast, ref = countdown_rewards([3, 4, 5, 6], 35, [
        "3 4 + 5 * <eos>",  # (3 + 4) * 5 = 35, 6 unused: allowed
        "5 3 4 + * <eos>",  # 5 * (3 + 4)
        "3 4 5 + * <eos>",  # 3 * 9 = 27
        "5 5 * 6 + 4 + <eos>",  # 35, but 5 is used twice
        "3 4 + 5 *",  # no <eos>
        "3 4 + 5 * 6 <eos>",  # two values left on the stack
        "+ 3 4 <eos>",  # operator on an empty stack
        "35 <eos>",  # the target is not one of the numbers
        "3 4 + <sep> 5 * <eos>",  # a special token inside the expression
        "3 4 + 5 * <eos> 6 +",  # garbage after <eos> is ignored
        "<eos>",
    ])
    assert fast == ref == [1.0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0]


def test_countdown_division_must_be_exact_and_values_non_negative():
    fast, ref = countdown_rewards([8, 2, 3, 1], 12, [
        "8 2 / 3 * <eos>",  # 8 / 2 * 3 = 12
        "3 2 / 8 * <eos>",  # 3 / 2 is not an integer
        "8 2 1 1 - / <eos>",  # division by zero (and 1 used twice)
        "3 1 - 8 * 2 - <eos>",  # (3 - 1) * 8 - 2 = 14
    ])
    assert fast == ref == [1.0, 0, 0, 0]
    fast, ref = countdown_rewards([2, 9, 4, 1], 3, ["9 4 - 2 - <eos>", "2 9 - 4 + 6 + <eos>",
                                                    "1 9 4 - - 1 + <eos>"])
    assert fast == ref == [1.0, 0, 0]  # 2 - 9 < 0 is not allowed; 1 - 5 < 0 neither


def test_countdown_value_limit():
    texts = ["1000 1000 * 1000 / <eos>", "1000 1000 * 1000 * 1000 / 1000 / <eos>"]
    fast, ref = countdown_rewards([1000] * 5, 1000, texts, max_number=1000, max_target=1000)
    assert fast == ref == [1.0, 0]  # 10**6 on the way is allowed, 10**9 is not


def test_countdown_gold_uses_every_number_once_and_hits_a_reachable_target():
    task, b = sample("arith/countdown", n_numbers=4, max_number=10, max_target=100)
    ops = {"+", "-", "*", "/"}
    seen_ops = set()
    for i in range(300):
        prompt = words(task, b.prompts[i])
        expression = words(task, b.targets[i])[:-1]
        assert sorted(w for w in expression if w not in ops) == sorted(prompt[:4])
        assert sum(w in ops for w in expression) == 3
        assert 0 <= int(prompt[5]) <= 100
        seen_ops |= set(expression) & ops
    assert seen_ops == ops


def test_countdown_rejects_bad_configs():
    with pytest.raises(ValueError, match="max_target"):
        tasks.make("arith/countdown", max_number=50, max_target=20)
    with pytest.raises(ValueError, match="n_numbers"):
        tasks.make("arith/countdown", n_numbers=1)


# --------------------------------------------------------------------------- sequences
def test_copy_and_reverse():
    for name, expect in (("seq/copy", "3 1 4 <eos>"), ("seq/reverse", "4 1 3 <eos>")):
        task = cached_task(name, length=3, n_symbols=5)[0]
        batch = hand_batch(task, "3 1 4 <sep>", expect)
        assert rewards(task, batch, [expect, "3 1 4", "3 1 <eos>", expect + " 2"]) == \
            ([1.0, 0, 0, 1],) * 2
    for name, order in (("seq/copy", 1), ("seq/reverse", -1)):
        task, b = sample(name, length=6, n_symbols=7)
        for i in range(50):
            assert words(task, b.targets[i])[:-1] == words(task, b.prompts[i])[:-1][::order]


def test_curricula_raise_difficulty():
    assert tasks.resolve("countdown").curriculum(1).n_numbers == 4
    assert tasks.resolve("parity").curriculum(1).n_bits == 8
    assert tasks.resolve("modular_sum").curriculum(2).n_terms == 12
    assert tasks.resolve("copy").curriculum(1).length == 8
    with pytest.raises(ValueError, match="level"):
        tasks.resolve("parity").curriculum(-1)
