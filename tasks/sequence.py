"""``seq/copy`` and ``seq/reverse``: the smoke-test tasks.

Prompt ``s_1 ... s_n <sep>`` with ``s_i`` drawn uniformly from ``n_symbols`` symbols
(number tokens ``0 .. n_symbols-1``); gold completion ``s_1 ... s_n <eos>`` (copy) or
``s_n ... s_1 <eos>`` (reverse). Every prompt has the same length, so there is no padding,
and output position t reads input position t (copy) or n+1-t (reverse): a one-layer
transformer with learned positions solves both with a single attention head.

Reward: 1 iff the completion up to its first ``<eos>`` is exactly the gold string.
The ``test`` split is the same distribution as ``train`` (the key makes the difference).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tasks import digits
from tasks.core import EOS, PAD, Batch, Task, Vocab, check_int, reference_eos_index, register


@dataclasses.dataclass(frozen=True)
class SequenceConfig:
    length: int = 8  # symbols in the string
    n_symbols: int = 10  # alphabet size

    def __post_init__(self):
        check_int("SequenceConfig", "length", self.length, 1, 4096)
        check_int("SequenceConfig", "n_symbols", self.n_symbols, 1, 100_000)


class _SequenceTask(Task):
    Config = SequenceConfig
    reverse: bool = False

    def __init__(self, config: SequenceConfig):
        super().__init__(config)
        self.vocab = Vocab(("<pad>", "<eos>", "<sep>"), config.n_symbols)
        self.prompt_len = config.length + 1
        self.max_target_len = config.length + 1

    def sample(self, key, n: int, split: str = "train") -> Batch:
        self._check_sample(n, split)
        c = self.config
        symbols = jax.random.randint(key, (n, c.length), 0, c.n_symbols, jnp.int32)
        tokens = self.vocab.num(symbols).astype(jnp.int32)
        sep = jnp.full((n, 1), self.vocab.id("<sep>"), jnp.int32)
        eos = jnp.full((n, 1), EOS, jnp.int32)
        answer = tokens[:, ::-1] if self.reverse else tokens
        full = jnp.full((n,), c.length + 1, jnp.int32)
        return Batch(
            prompts=jnp.concatenate([tokens, sep], axis=1),
            prompt_lens=full,
            targets=jnp.concatenate([answer, eos], axis=1),
            target_lens=full,
            meta={"symbols": symbols},
        )

    def reward(self, batch: Batch, completions) -> jax.Array:
        return digits.exact_match(batch.targets, batch.target_lens, completions)

    def reference_reward(self, batch: Batch, completions) -> np.ndarray:
        prompts = np.asarray(batch.prompts)
        sep = self.vocab.id("<sep>")
        out = np.zeros(len(prompts), np.float32)
        for i, (prompt, row) in enumerate(zip(prompts, np.asarray(completions), strict=True)):
            text = [int(t) for t in prompt if t != PAD]
            string = text[: text.index(sep)]
            want = string[::-1] if self.reverse else string
            end = reference_eos_index(row)
            out[i] = float(end is not None and [int(t) for t in row[:end]] == want)
        return out

    @classmethod
    def curriculum(cls, level: int, **overrides):
        """Level l: strings of ``4 * (l + 1)`` symbols (up to the config's 4096: l <= 1023)."""
        check_int(cls.name, "level", level, 0, 1023)
        return cls.Config(**{"length": 4 * (level + 1), **overrides})


@register
class CopyTask(_SequenceTask):
    name = "seq/copy"
    reverse = False


@register
class ReverseTask(_SequenceTask):
    name = "seq/reverse"
    reverse = True
