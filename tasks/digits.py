"""Pure-jnp helpers shared by the arithmetic and sequence tasks.

Building sequences: every example is a concatenation of variable-length segments (a number's
digits, an operator, ...). :func:`pack` writes the segments of each row one after another in a
fixed-width array, so generators never loop over examples.

Reading completions: :func:`exact_match`, :func:`span_equals` and :func:`last_before_eos`
are the vectorised building blocks of the ``reward`` functions. They follow the convention of
``tasks.core``: a completion is read up to its first ``<eos>``; without an ``<eos>`` it earns 0.
"""

from __future__ import annotations

import jax.numpy as jnp

from tasks.core import PAD, eos_index

MAX_INT32_DIGITS = 9  # 10**9 < 2**31 - 1: numbers with at most 9 digits are exact in int32


# --------------------------------------------------------------------------- numbers
def num_digits(x, width: int):
    """Number of decimal digits of the non-negative int ``x`` (1 for 0), at most ``width``."""
    x = jnp.asarray(x, jnp.int32)
    powers = 10 ** jnp.arange(1, width, dtype=jnp.int32)
    return 1 + (x[..., None] >= powers).sum(-1).astype(jnp.int32)


def digits_lsb(x, width: int):
    """int32[..., width]: the decimal digits of ``x``, least significant first."""
    x = jnp.asarray(x, jnp.int32)
    return (x[..., None] // 10 ** jnp.arange(width, dtype=jnp.int32)) % 10


def reverse_prefix(rows, lens):
    """``out[i, j] = rows[i, lens[i] - 1 - j]`` for ``j < lens[i]``, else ``<pad>``."""
    width = rows.shape[1]
    col = jnp.arange(width)[None, :]
    src = jnp.clip(lens[:, None] - 1 - col, 0, width - 1)
    out = jnp.take_along_axis(rows, src, axis=1)
    return jnp.where(col < lens[:, None], out, PAD).astype(jnp.int32)


def number_tokens(vocab, x, width: int):
    """Digit tokens of ``x`` (int32[n], 0 <= x < 10**width), most significant first,
    left-aligned in ``int32[n, width]`` with ``<pad>`` after; returns ``(tokens, lens)``."""
    lens = num_digits(x, width)
    return reverse_prefix(vocab.num(digits_lsb(x, width)), lens), lens


def digits_to_tokens(vocab, digits_lsb_first, lens, *, reverse: bool = False):
    """Tokens of a number given as LSB-first digits: MSB first (default) or LSB first."""
    if reverse:
        col = jnp.arange(digits_lsb_first.shape[1])[None, :]
        return jnp.where(col < lens[:, None], vocab.num(digits_lsb_first), PAD).astype(jnp.int32)
    return reverse_prefix(vocab.num(digits_lsb_first), lens)


# --------------------------------------------------------------------------- building rows
def const(n: int, token: int):
    """A one-token segment for :func:`pack`: ``(int32[n, 1], lens=1)``."""
    return jnp.full((n, 1), token, jnp.int32), jnp.ones((n,), jnp.int32)


def pack(segments, width: int):
    """Concatenate per-row variable-length segments into ``int32[n, width]`` (right padding).

    ``segments`` is a list of ``(tokens int32[n, w], lens int32[n])``; row i of the result is
    ``tokens_1[i, :lens_1[i]] ++ tokens_2[i, :lens_2[i]] ++ ...`` followed by ``<pad>``.
    Returns ``(rows, total_lens)``. Tokens beyond ``width`` are dropped (callers size
    ``width`` so that this never happens).
    """
    n = segments[0][0].shape[0]
    out = jnp.full((n, width), PAD, jnp.int32)
    offset = jnp.zeros((n,), jnp.int32)
    row = jnp.arange(n)[:, None]
    for tokens, lens in segments:
        w = tokens.shape[1]
        k = jnp.arange(w)[None, :]
        col = jnp.where(k < lens[:, None], offset[:, None] + k, width)  # width = dropped
        out = out.at[row, col].set(tokens.astype(jnp.int32), mode="drop")
        offset = offset + lens
    return out, offset


# --------------------------------------------------------------------------- reading completions
def pad_or_cut(completions, width: int):
    """The first ``width`` columns of ``completions``, right-padded with ``<pad>`` if shorter."""
    completions = jnp.asarray(completions, jnp.int32)
    L = completions.shape[1]
    if L >= width:
        return completions[:, :width]
    return jnp.pad(completions, ((0, 0), (0, width - L)), constant_values=PAD)


def exact_match(targets, target_lens, completions):
    """float32[n]: 1 iff the completion up to and including its first ``<eos>`` equals the gold
    target. Since the gold has its only ``<eos>`` at ``target_lens - 1``, comparing the first
    ``target_lens`` tokens is enough: what follows the completion's ``<eos>`` is ignored."""
    comp = pad_or_cut(completions, targets.shape[1])
    col = jnp.arange(targets.shape[1])[None, :]
    ok = (comp == targets) | (col >= target_lens[:, None])
    return ok.all(axis=1).astype(jnp.float32)


def span_equals(completions, start, stop, expected, expected_lens):
    """bool[n]: ``completions[i, start[i]:stop[i]] == expected[i, :expected_lens[i]]``."""
    completions = jnp.asarray(completions, jnp.int32)
    L = completions.shape[1]
    W = expected.shape[1]
    k = jnp.arange(W)[None, :]
    vals = jnp.take_along_axis(completions, jnp.clip(start[:, None] + k, 0, L - 1), axis=1)
    ok = (vals == expected) | (k >= expected_lens[:, None])
    return ((stop - start) == expected_lens) & ok.all(axis=1)


def last_before_eos(completions):
    """``(token int32[n], present bool[n])``: the last token before the first ``<eos>``;
    ``present`` is False when there is no ``<eos>`` or nothing precedes it."""
    completions = jnp.asarray(completions, jnp.int32)
    L = completions.shape[1]
    e = eos_index(completions)
    tok = jnp.take_along_axis(completions, jnp.clip(e - 1, 0, L - 1)[:, None], axis=1)[:, 0]
    return tok, (e < L) & (e >= 1)
