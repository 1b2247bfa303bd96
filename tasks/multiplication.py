"""``arith/multiplication``: products of small numbers, with an optional scratchpad.

Format (digits are number tokens 0..9, most significant first, no leading zeros)::

    prompt   a * b =                                   (left-padded)
    target   p <eos>                                   (scratchpad=False)
    target   q_0 + q_1 + ... + q_{m-1} = p <eos>       (scratchpad=True)

with ``a`` uniform in ``[0, 10**digits_a)``, ``b`` uniform in ``[0, 10**digits_b)``,
``p = a * b`` and, for the m digits ``b_0 (units) .. b_{m-1}`` of b as written in the
prompt, the partial products ``q_i = a * b_i * 10**i`` (so ``sum_i q_i = p``).

Reward: the final answer only. The answer is the span after the **last** ``=`` before the
first ``<eos>`` (the whole span before ``<eos>`` when there is no ``=``); reward 1 iff it is
exactly the canonical decimal of ``a * b``. The scratchpad is not checked, so a bare
``p <eos>`` earns 1 in either mode. Counter ``scratch_len``: tokens before that answer span.
The ``test`` split is the same distribution as ``train``.
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
    eos_index,
    left_pad,
    reference_eos_index,
    register,
)

_OWNER = "MultiplicationConfig"


@dataclasses.dataclass(frozen=True)
class MultiplicationConfig:
    digits_a: int = 2  # a < 10**digits_a
    digits_b: int = 2  # b < 10**digits_b
    scratchpad: bool = False  # write the partial products before the answer

    def __post_init__(self):
        check_int(_OWNER, "digits_a", self.digits_a, 1, digits.MAX_INT32_DIGITS - 1)
        check_int(_OWNER, "digits_b", self.digits_b, 1, digits.MAX_INT32_DIGITS - self.digits_a)
        check(isinstance(self.scratchpad, bool), _OWNER, "scratchpad", self.scratchpad,
              "True or False")


@register
class MultiplicationTask(Task):
    name = "arith/multiplication"
    Config = MultiplicationConfig

    def __init__(self, config: MultiplicationConfig):
        super().__init__(config)
        self.vocab = Vocab(("<pad>", "<eos>", "*", "+", "="), 10)
        da, db = config.digits_a, config.digits_b
        self.answer_width = da + db  # a * b < 10**(da + db)
        self.prompt_len = da + db + 2
        scratch = db * self.answer_width + db if config.scratchpad else 0  # q_i and + / =
        self.max_target_len = scratch + self.answer_width + 1

    def sample(self, key, n: int, split: str = "train") -> Batch:
        self._check_sample(n, split)
        c, v, W = self.config, self.vocab, self.answer_width
        k_a, k_b = jax.random.split(key)
        a = jax.random.randint(k_a, (n,), 0, 10**c.digits_a, jnp.int32)
        b = jax.random.randint(k_b, (n,), 0, 10**c.digits_b, jnp.int32)
        product = a * b
        prompt, prompt_lens = digits.pack([
            digits.number_tokens(v, a, c.digits_a), digits.const(n, v.id("*")),
            digits.number_tokens(v, b, c.digits_b), digits.const(n, v.id("=")),
        ], self.prompt_len)
        segments = []
        if c.scratchpad:
            b_len = digits.num_digits(b, c.digits_b)
            b_digits = digits.digits_lsb(b, c.digits_b)
            for i in range(c.digits_b):
                written = i < b_len  # one partial product per digit of b as written
                q_tokens, q_len = digits.number_tokens(v, a * b_digits[:, i] * 10**i, W)
                sep = jnp.where(i + 1 < b_len, v.id("+"), v.id("=")).astype(jnp.int32)
                segments += [(q_tokens, jnp.where(written, q_len, 0)),
                             (sep[:, None], written.astype(jnp.int32))]
        segments += [digits.number_tokens(v, product, W), digits.const(n, EOS)]
        targets, target_lens = digits.pack(segments, self.max_target_len)
        return Batch(
            prompts=left_pad(prompt, prompt_lens),
            prompt_lens=prompt_lens,
            targets=targets,
            target_lens=target_lens,
            meta={"a": a, "b": b, "product": product},
        )

    def _answer_start(self, completions):
        """Index after the last ``=`` before the first ``<eos>`` (0 if there is none)."""
        completions = jnp.asarray(completions, jnp.int32)
        col = jnp.arange(completions.shape[1])[None, :]
        is_eq = (completions == self.vocab.id("=")) & (col < eos_index(completions)[:, None])
        return jnp.max(jnp.where(is_eq, col + 1, 0), axis=1)

    def reward(self, batch: Batch, completions) -> jax.Array:
        completions = jnp.asarray(completions, jnp.int32)
        expected, expected_len = digits.number_tokens(self.vocab, batch.meta["product"],
                                                      self.answer_width)
        end = eos_index(completions)
        ok = digits.span_equals(completions, self._answer_start(completions), end,
                                expected, expected_len)
        return (ok & (end < completions.shape[1])).astype(jnp.float32)

    def counters(self, batch: Batch, completions) -> dict[str, jax.Array]:
        return {"scratch_len": self._answer_start(completions).astype(jnp.float32)}

    def reference_reward(self, batch: Batch, completions) -> np.ndarray:
        """Pure Python: parse a and b from the prompt text; compare the words after the last
        ``=`` with ``str(a * b)``."""
        out = np.zeros(batch.prompts.shape[0], np.float32)
        for i, (prompt, row) in enumerate(zip(np.asarray(batch.prompts),
                                              np.asarray(completions), strict=True)):
            words = self.vocab.decode(prompt).split()
            star, equals = words.index("*"), words.index("=")
            want = str(int("".join(words[:star])) * int("".join(words[star + 1:equals])))
            end = reference_eos_index(row)
            if end is None:
                continue
            written = self.vocab.decode(row[:end], strip_pad=False).split()
            answer = written[len(written) - written[::-1].index("="):] if "=" in written \
                else written
            out[i] = float(answer == list(want))
        return out

    @classmethod
    def curriculum(cls, level: int, **overrides):
        """Level l: (1, 1), (2, 1), (2, 2), (3, 2), (3, 3), ... digits for (a, b)."""
        check_int(cls.name, "level", level, 0, 7)  # keeps digits_a + digits_b <= 9
        return cls.Config(**{"digits_a": 1 + (level + 1) // 2, "digits_b": 1 + level // 2,
                             **overrides})
