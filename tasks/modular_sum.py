"""``arith/modular_sum``: the sum of T numbers mod m with an N-step chain of thought.

The controlled arithmetic task of Wu, Wang, Ye, Du, Jegelka & Wang 2025, "When More is Less:
Understanding Chain-of-Thought Length in LLMs", arXiv 2502.07266 (Sec. 3): a problem of T
operations solved by a CoT of N steps, each step doing T/N of them, so that N trades
per-step difficulty against the number of steps. Our instance is the library's format
(research notes E9; the paper's exact token format was not checked, so nothing here
depends on it)::

    prompt   x_1 x_2 ... x_T =          x_i uniform in 0 .. m-1 (number tokens)
    target   s_1 s_2 ... s_N <eos>      s_k = (x_1 + ... + x_{kT/N}) mod m

so step k adds the T/N numbers ``x_{(k-1)T/N+1} .. x_{kT/N}`` to the running sum, and the
last step ``s_N`` is the answer (N = 1 is the direct answer). N must divide T.

Reward: the final answer only: 1 iff the completion has an ``<eos>`` and the token just before
the first ``<eos>`` is ``s_N``; intermediate steps are not checked. Counter ``cot_len``:
tokens before the first ``<eos>`` (L if there is none).
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
    reference_eos_index,
    register,
)

_OWNER = "ModularSumConfig"


@dataclasses.dataclass(frozen=True)
class ModularSumConfig:
    n_terms: int = 8  # T
    n_steps: int = 2  # N, the CoT length; must divide T
    modulus: int = 10  # m

    def __post_init__(self):
        check_int(_OWNER, "n_terms", self.n_terms, 1, 4096)
        check_int(_OWNER, "n_steps", self.n_steps, 1, self.n_terms)
        check(self.n_terms % self.n_steps == 0, _OWNER, "n_steps", self.n_steps,
              f"a divisor of n_terms={self.n_terms}")
        check_int(_OWNER, "modulus", self.modulus, 2, 100_000)


@register
class ModularSumTask(Task):
    name = "arith/modular_sum"
    Config = ModularSumConfig

    def __init__(self, config: ModularSumConfig):
        super().__init__(config)
        self.vocab = Vocab(("<pad>", "<eos>", "="), config.modulus)
        self.prompt_len = config.n_terms + 1
        self.max_target_len = config.n_steps + 1

    def sample(self, key, n: int, split: str = "train") -> Batch:
        self._check_sample(n, split)
        c, v = self.config, self.vocab
        terms = jax.random.randint(key, (n, c.n_terms), 0, c.modulus, jnp.int32)
        step = c.n_terms // c.n_steps
        # int32 is exact: partial sums of at most 4096 terms below 100_000 stay below 2**31
        partial = jnp.cumsum(terms, axis=1)[:, step - 1::step] % c.modulus  # [n, N]
        eq = jnp.full((n, 1), v.id("="), jnp.int32)
        eos = jnp.full((n, 1), EOS, jnp.int32)
        return Batch(
            prompts=jnp.concatenate([v.num(terms), eq], axis=1).astype(jnp.int32),
            prompt_lens=jnp.full((n,), self.prompt_len, jnp.int32),
            targets=jnp.concatenate([v.num(partial), eos], axis=1).astype(jnp.int32),
            target_lens=jnp.full((n,), self.max_target_len, jnp.int32),
            meta={"terms": terms, "partial_sums": partial, "answer": partial[:, -1]},
        )

    def reward(self, batch: Batch, completions) -> jax.Array:
        token, present = digits.last_before_eos(completions)
        return (present & (token == self.vocab.num(batch.meta["answer"]))).astype(jnp.float32)

    def counters(self, batch: Batch, completions) -> dict[str, jax.Array]:
        return {"cot_len": eos_index(jnp.asarray(completions, jnp.int32)).astype(jnp.float32)}

    def reference_reward(self, batch: Batch, completions) -> np.ndarray:
        """Pure Python: sum the prompt's numbers (read as text) mod m; compare the last word."""
        out = np.zeros(batch.prompts.shape[0], np.float32)
        for i, (prompt, row) in enumerate(zip(np.asarray(batch.prompts),
                                              np.asarray(completions), strict=True)):
            words = self.vocab.decode(prompt).split()
            answer = sum(int(w) for w in words[:words.index("=")]) % self.config.modulus
            end = reference_eos_index(row)
            if end is None or end == 0:
                continue
            out[i] = float(self.vocab.decode([row[end - 1]], strip_pad=False) == str(answer))
        return out

    @classmethod
    def curriculum(cls, level: int, **overrides):
        """Level l: T = 4 (l + 1) numbers, N = l + 1 steps of 4 numbers each."""
        check_int(cls.name, "level", level, 0, 1023)
        return cls.Config(**{"n_terms": 4 * (level + 1), "n_steps": level + 1, **overrides})
