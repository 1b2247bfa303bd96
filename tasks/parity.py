"""``arith/parity``: parity of d bits with a short/long chain-of-thought mixture.

Task of Tsilivis, Malach, Ullrich & Kempe 2025, "How Reinforcement Learning After Next-Token
Prediction Facilitates Learning", arXiv 2510.11495: the data is a mixture of short and long
demonstrations of the parity of d bits, the long ones (probability ``p_long``) writing the
running parities (abstract, checked). Secondary summaries say the paper uses +-1 bits and
prefix products (not checked against the paper body; nothing here depends on it); we use
{0, 1} bits and the running XOR ``c_t = (x_1 + ... + x_t) mod 2``, the same sequence up to
relabelling (+1 -> 0, -1 -> 1). Token format (the library's, research notes E6)::

    format="tsilivis"        prompt  x_1 ... x_d <sep>
                             long    c_1 c_2 ... c_d <eos>       (probability p_long)
                             short   c_d <eos>                   (probability 1 - p_long)
    format="iteration_head"  prompt  <parity> x_1 ... x_d <eoi>   (Cabannes et al. 2024,
                             targets as above                     arXiv 2406.02128, E16)

The first output token is a bit in both modes, so it does not reveal the mode (the property
behind the greedy threshold p_long = 1/3 of E6). ``iteration_head`` users want ``p_long=1``.

Reward: the final answer only: 1 iff the completion has an ``<eos>`` and the token just
before the first ``<eos>`` is the bit ``c_d``; an empty answer (``<eos>`` first) earns 0.
Counters: ``length`` = tokens before the first ``<eos>`` (L if there is none);
``used_long`` = 1 iff there is an ``<eos>`` with exactly d tokens before it.
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
    PAD,
    Batch,
    Task,
    Vocab,
    check,
    check_int,
    check_prob,
    eos_index,
    reference_eos_index,
    register,
)

_OWNER = "ParityConfig"
FORMATS = ("tsilivis", "iteration_head")


@dataclasses.dataclass(frozen=True)
class ParityConfig:
    n_bits: int = 8  # d
    p_long: float = 0.25  # probability that the gold completion is the long chain
    format: str = "tsilivis"  # or "iteration_head"

    def __post_init__(self):
        check_int(_OWNER, "n_bits", self.n_bits, 1, 4096)
        check_prob(_OWNER, "p_long", self.p_long)
        check(self.format in FORMATS, _OWNER, "format", self.format, f"one of {FORMATS}")


@register
class ParityTask(Task):
    name = "arith/parity"
    Config = ParityConfig

    def __init__(self, config: ParityConfig):
        super().__init__(config)
        if config.format == "tsilivis":
            self.vocab = Vocab(("<pad>", "<eos>", "<sep>"), 2)
            self.prompt_len = config.n_bits + 1
        else:
            self.vocab = Vocab(("<pad>", "<eos>", "<parity>", "<eoi>"), 2)
            self.prompt_len = config.n_bits + 2
        self.max_target_len = config.n_bits + 1

    def sample(self, key, n: int, split: str = "train") -> Batch:
        self._check_sample(n, split)
        c, v, d = self.config, self.vocab, self.config.n_bits
        k_bits, k_mode = jax.random.split(key)
        bits = jax.random.randint(k_bits, (n, d), 0, 2, jnp.int32)
        running = jnp.cumsum(bits, axis=1) % 2
        answer = running[:, -1]
        is_long = jax.random.bernoulli(k_mode, c.p_long, (n,))
        eos = jnp.full((n, 1), EOS, jnp.int32)
        long_target = jnp.concatenate([v.num(running), eos], axis=1)
        short_target = jnp.concatenate(
            [v.num(answer)[:, None], eos, jnp.full((n, d - 1), PAD, jnp.int32)], axis=1)
        if c.format == "tsilivis":
            prompts = jnp.concatenate([v.num(bits), jnp.full((n, 1), v.id("<sep>"))], axis=1)
        else:
            prompts = jnp.concatenate([jnp.full((n, 1), v.id("<parity>")), v.num(bits),
                                       jnp.full((n, 1), v.id("<eoi>"))], axis=1)
        return Batch(
            prompts=prompts.astype(jnp.int32),
            prompt_lens=jnp.full((n,), self.prompt_len, jnp.int32),
            targets=jnp.where(is_long[:, None], long_target, short_target).astype(jnp.int32),
            target_lens=jnp.where(is_long, d + 1, 2).astype(jnp.int32),
            meta={"is_long": is_long, "bits": bits, "answer": answer, "running": running},
        )

    def reward(self, batch: Batch, completions) -> jax.Array:
        token, present = digits.last_before_eos(completions)
        return (present & (token == self.vocab.num(batch.meta["answer"]))).astype(jnp.float32)

    def counters(self, batch: Batch, completions) -> dict[str, jax.Array]:
        completions = jnp.asarray(completions, jnp.int32)
        length = eos_index(completions)
        has_eos = length < completions.shape[1]
        return {"length": length.astype(jnp.float32),
                "used_long": (has_eos & (length == self.config.n_bits)).astype(jnp.float32)}

    def reference_reward(self, batch: Batch, completions) -> np.ndarray:
        """Pure Python: parity of the prompt's bits (read as text) vs the last answer word."""
        out = np.zeros(batch.prompts.shape[0], np.float32)
        for i, (prompt, row) in enumerate(zip(np.asarray(batch.prompts),
                                              np.asarray(completions), strict=True)):
            bits = [w for w in self.vocab.decode(prompt).split() if w in ("0", "1")]
            parity = str(bits.count("1") % 2)
            end = reference_eos_index(row)
            if end is None or end == 0:
                continue
            out[i] = float(self.vocab.decode([row[end - 1]], strip_pad=False) == parity)
        return out

    @classmethod
    def curriculum(cls, level: int, **overrides):
        """Level l: ``4 * (l + 1)`` bits."""
        check_int(cls.name, "level", level, 0, 1023)
        return cls.Config(**{"n_bits": 4 * (level + 1), **overrides})
