"""``arith/addition``: multi-digit addition with an exact-carry knob and a length split.

Format (digits are number tokens 0..9, written most significant first)::

    prompt   a_{d-1} ... a_0 + b_{d-1} ... b_0 =        (left-padded to 2*D + 2)
    target   s_m ... s_0 <eos>                         (reversed_output: s_0 ... s_m <eos>)

Both operands of an example have the same number of digits d, with a non-zero leading digit
when d > 1. ``split="train"`` draws d uniformly from ``[min_digits, digits]``;
``split="test"`` from ``[digits + 1, test_digits]`` (the length-generalisation split).
D = max digits over both splits fixes the prompt width.

Carries. With c_{-1} = 0, position i (0 = units) produces ``a_i + b_i + c_{i-1} = s_i + 10 c_i``;
the number of carries is ``sum_{i<d} c_i`` (a carry out of the leading digit counts, and makes
the sum one digit longer). With ``n_carries = k`` the generator first draws the carry pattern
(k of the d positions, uniformly), then draws each digit pair (a_i, b_i) uniformly among the
pairs consistent with (c_{i-1}, c_i); so every example has exactly k carries. (Each carry
pattern is equally likely, which is not the same as uniform over all operand pairs with k
carries.) With ``n_carries = k`` the train split draws d from ``[max(min_digits, k), digits]``.

Reward: 1 iff the completion up to its first ``<eos>`` is exactly the canonical decimal
(no leading zeros) of a + b, in the configured order.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tasks import digits
from tasks.core import (
    EOS,
    Batch,
    Task,
    Vocab,
    check,
    check_int,
    left_pad,
    reference_eos_index,
    register,
)

_OWNER = "AdditionConfig"


@dataclasses.dataclass(frozen=True)
class AdditionConfig:
    digits: int = 3  # most digits per operand in the train split (k)
    min_digits: int = 1  # fewest digits per operand in the train split
    test_digits: int | None = None  # most digits in the test split; None = digits + 2
    n_carries: int | None = None  # exact number of carries; None = unconstrained
    reversed_output: bool = False  # write the sum least significant digit first

    def __post_init__(self):
        check_int(_OWNER, "digits", self.digits, 1, 64)
        check_int(_OWNER, "min_digits", self.min_digits, 1, self.digits)
        if self.test_digits is not None:
            # up to 66: the default (digits + 2) at the largest digits, 64
            check_int(_OWNER, "test_digits", self.test_digits, self.digits + 1, 66)
        if self.n_carries is not None:
            check_int(_OWNER, "n_carries", self.n_carries, 0, self.digits)
        check(isinstance(self.reversed_output, bool), _OWNER, "reversed_output",
              self.reversed_output, "True or False")

    @property
    def max_test_digits(self) -> int:
        return self.digits + 2 if self.test_digits is None else self.test_digits


def _add_column(carry, digit_pair):
    """One schoolbook column: ``a_i + b_i + c_{i-1} = s_i + 10 c_i``."""
    total = digit_pair[0] + digit_pair[1] + carry
    return total // 10, (total % 10, total // 10)


def schoolbook(a, b):
    """Schoolbook addition of LSB-first digit rows ``a``, ``b`` (int32[n, D]), units first:
    ``a_i + b_i + c_{i-1} = s_i + 10 c_i``. Returns the sum's digits int32[n, D + 1] (LSB
    first; the last is the final carry) and the carries ``c_i`` int32[n, D].

    A ``lax.scan`` over the D positions, not a Python loop: unrolled, the loop made the
    compile time of a jitted ``sample`` grow superlinearly with D (measured, n = 48, one
    core: 7.9 s at D = 42 and 19.4 s at the largest D = 66; with the scan 0.8 s at both).
    The column step is a module-level function so that an eager (un-jitted) call reuses the
    traced scan; a fresh closure per call was retraced and recompiled every time (0.13 s per
    eager ``sample``)."""
    carry, (digits_out, carries) = jax.lax.scan(
        _add_column, jnp.zeros(a.shape[0], jnp.int32),
        (a.T.astype(jnp.int32), b.T.astype(jnp.int32)))
    return jnp.concatenate([digits_out.T, carry[:, None]], axis=1), carries.T


@register
class AdditionTask(Task):
    name = "arith/addition"
    Config = AdditionConfig

    def __init__(self, config: AdditionConfig):
        super().__init__(config)
        self.vocab = Vocab(("<pad>", "<eos>", "+", "="), 10)
        self.width = config.max_test_digits  # D
        self.prompt_len = 2 * self.width + 2
        self.max_target_len = self.width + 2

    # ------------------------------------------------------------------ sampling
    def _digit_counts(self, key, n: int, split: str):
        c = self.config
        if split == "train":
            lo = max(c.min_digits, c.n_carries or 0)
            return jax.random.randint(key, (n,), lo, c.digits + 1, jnp.int32)
        return jax.random.randint(key, (n,), c.digits + 1, c.max_test_digits + 1, jnp.int32)

    def _free_digits(self, key, nd):
        """Uniform digits, leading digit in 1..9 when d > 1, zeros above the leading digit."""
        n, D = nd.shape[0], self.width
        pos = jnp.arange(D)[None, :]
        is_lead = (pos == nd[:, None] - 1) & (nd[:, None] > 1)
        lowest = jnp.broadcast_to(is_lead.astype(jnp.int32), (2, n, D))  # 1 for a leading digit
        out = jax.random.randint(key, (2, n, D), lowest, 10, jnp.int32)
        return jnp.where(pos < nd[:, None], out, 0)

    def _digits_with_carries(self, key, nd, n_carries: int):
        """Digits with exactly ``n_carries`` carries: pattern first, then consistent pairs."""
        n, D = nd.shape[0], self.width
        pos = jnp.arange(D)[None, :]
        active = pos < nd[:, None]
        k_pattern, k_pair = jax.random.split(key)
        score = jnp.where(active, jax.random.uniform(k_pattern, (n, D)), jnp.inf)
        rank = jnp.argsort(jnp.argsort(score, axis=1), axis=1)
        carry_out = rank < n_carries  # only active positions have finite scores
        carry_in = jnp.pad(carry_out[:, :-1], ((0, 0), (1, 0)))
        pair_a, pair_b = jnp.arange(100) // 10, jnp.arange(100) % 10
        total = pair_a + pair_b + carry_in[..., None]  # [n, D, 100]
        ok = (total >= 10) == carry_out[..., None]
        is_lead = ((pos == nd[:, None] - 1) & (nd[:, None] > 1))[..., None]
        ok = ok & (~is_lead | ((pair_a >= 1) & (pair_b >= 1)))
        noise = jax.random.gumbel(k_pair, ok.shape)
        choice = jnp.argmax(jnp.where(ok, noise, -jnp.inf), axis=-1)
        a = jnp.where(active, pair_a[choice], 0)
        b = jnp.where(active, pair_b[choice], 0)
        return jnp.stack([a, b]).astype(jnp.int32)

    def sample(self, key, n: int, split: str = "train") -> Batch:
        self._check_sample(n, split)
        c, D, v = self.config, self.width, self.vocab
        k_len, k_dig = jax.random.split(key)
        nd = self._digit_counts(k_len, n, split)
        if c.n_carries is None:
            a, b = self._free_digits(k_dig, nd)
        else:
            a, b = self._digits_with_carries(k_dig, nd, c.n_carries)
        # positions above d hold zeros on both operands
        sum_digits, carries = schoolbook(a, b)
        n_carries = jnp.where(jnp.arange(D)[None, :] < nd[:, None], carries, 0).sum(1)
        sum_len = nd + jnp.take_along_axis(carries, (nd - 1)[:, None], axis=1)[:, 0]

        prompt, prompt_lens = digits.pack([
            (digits.digits_to_tokens(v, a, nd), nd), digits.const(n, v.id("+")),
            (digits.digits_to_tokens(v, b, nd), nd), digits.const(n, v.id("=")),
        ], self.prompt_len)
        answer = digits.digits_to_tokens(v, sum_digits, sum_len, reverse=c.reversed_output)
        targets, target_lens = digits.pack([(answer, sum_len), digits.const(n, EOS)],
                                           self.max_target_len)
        return Batch(
            prompts=left_pad(prompt, prompt_lens),
            prompt_lens=prompt_lens,
            targets=targets,
            target_lens=target_lens,
            meta={"n_carries": n_carries.astype(jnp.int32), "digits": nd,
                  "a_digits": a, "b_digits": b},
        )

    # ------------------------------------------------------------------ verifying
    def reward(self, batch: Batch, completions) -> jax.Array:
        return digits.exact_match(batch.targets, batch.target_lens, completions)

    def reference_reward(self, batch: Batch, completions) -> np.ndarray:
        """Pure Python: read a and b back from the prompt text, add with Python ints."""
        out = np.zeros(batch.prompts.shape[0], np.float32)
        for i, (prompt, row) in enumerate(zip(np.asarray(batch.prompts),
                                              np.asarray(completions), strict=True)):
            words = self.vocab.decode(prompt).split()
            plus, equals = words.index("+"), words.index("=")
            total = int("".join(words[:plus])) + int("".join(words[plus + 1:equals]))
            want = str(total)[::-1] if self.config.reversed_output else str(total)
            end = reference_eos_index(row)
            if end is None:
                continue
            written = self.vocab.decode(row[:end], strip_pad=False).split()
            out[i] = float(written == list(want))
        return out

    @classmethod
    def curriculum(cls, level: int, **overrides):
        """Level l: operands of up to ``l + 1`` digits (test split: up to ``l + 3``)."""
        check_int(cls.name, "level", level, 0, 63)
        return cls.Config(**{"digits": level + 1, **overrides})

