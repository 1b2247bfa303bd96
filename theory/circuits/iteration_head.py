"""The two-layer iteration-head circuit for parity with chain of thought, compiled.

Cabannes, Arnal, Bouaziz, Yang, Charton, Kempe, "Iteration Head: A Mechanistic Study of
Chain-of-Thought", NeurIPS 2024, arXiv 2406.02128, Fig. 5 (implementation of an iteration
head with a two-layer transformer): layer 1 attends from the CoT positions to the
end-of-input token, which tells each position the length L; the layer-1 MLP computes
t = (L + t) - (L + 1) + 1; layer 2 attends from the position that predicts s_t onto x_t; the
layer-2 MLP applies s_t = F(s_{t-1}, x_t), here XOR, with <eoi> standing for s_0. We differ
in one place: the subtraction is linear, so we fold it into the layer-2 query weights and
leave the layer-1 MLP at zero. Format (``tasks.parity``, format="iteration_head",
E16)::

    column   0         1 .. L        L+1      L+2 .. 2L+1    2L+2
    token    <parity>  x_1 .. x_L    <eoi>    s_1 .. s_L     <eos>

Column L + t (``<eoi>`` for t = 1, else the column holding s_{t-1}) predicts s_t; column
2L + 1 predicts ``<eos>``. Tokens: ``<pad>`` 0, ``<eos>`` 1, ``<parity>`` 2, ``<eoi>`` 3,
bit b = 4 + b.

Our derivation (the paper shows the circuit, not weights; the construction is ours). Residual
stream, d_model = 9: ONE (1 everywhere), POS = p, POS2 = p^2 (positional embedding of column
p), BIT (token is the bit 1), EOI (token is <eoi>), then EPOS, XT, XE (written by the heads)
and Y (written by the layer-2 MLP).

Layer 1 head: score g [key is <eoi>], value POS -> EPOS. From every column >= L+1 the
weight on <eoi> is 1 - O(p e^-g), so EPOS = L + 1.

Layer 2 head: q = lam (2 (POS - EPOS + ONE), -ONE), k = (POS, POS2), so at query column
p = L + t the score of key j is
    lam (2 j (p - L) - j^2) = lam (t^2 - (j - t)^2),        t = p - EPOS + 1 = p - L,
a parabola with its maximum at j = t and a gap >= lam to every other key: the head reads
x_t (value BIT -> XT) and whether the key is <eoi> (value EOI -> XE; true at p = 2L+1, t = L+1).

Layer 2 MLP: with a = BIT (= s_{t-1}; <eoi> has BIT = 0 = s_0) and b = XT (= x_t),
    Y = ReLU(a + b) - 2 ReLU(a + b - 1) = a XOR b = s_t,
each ReLU an exact GELU(S z)/S for z in {-1, 0, 1, 2} (tanh-GELU saturates for |S z| >= 10).
Unembedding: logit(bit 1) = c Y, logit(bit 0) = c (ONE - Y), logit(<eos>) = 3 c XE; other
tokens 0. So columns L+1 .. 2L write s_1 .. s_L (logit c against 0) and column 2L+1 writes
<eos> (3c against c), for every L <= max_bits: one set of weights for all lengths.
"""

from __future__ import annotations

import numpy as np

from theory.circuits.layout import empty_weights

PAD, EOS, TASK, EOI, BIT0, BIT1 = 0, 1, 2, 3, 4, 5
ONE, POS, POS2, BIT, IS_EOI, EPOS, XT, XE, Y = range(9)
OUT_LOGIT = 10.0  # c


def config(max_bits: int) -> dict:
    """ModelConfig fields: lengths 1 .. max_bits, max_len = 2 max_bits + 3."""
    return dict(vocab_size=6, max_len=2 * max_bits + 3, n_layers=2, n_heads=1, d_model=9,
                d_mlp=2, d_head=2, pos_enc="learned", norm="none", tied_embed=False,
                init_scale=0.02)


def build(max_bits: int, *, eoi_gap: float = 30.0, offset_gap: float = 20.0,
          sharpness: float = 20.0) -> tuple[dict, dict[str, np.ndarray]]:
    """``(config dict, weights)`` of the iteration-head construction (module docstring).

    eoi_gap: score g of <eoi> in layer 1; offset_gap: lam, the smallest score gap of the
    layer-2 parabola; sharpness: S of the MLP units. The parabola's scores reach about
    lam (4 max_bits)^2, so float32 keeps it exact only for moderate lengths: max_bits <= 64.
    """
    if not (isinstance(max_bits, int | np.integer) and 1 <= max_bits <= 64):
        raise ValueError(f"iteration_head.build: max_bits={max_bits!r} is not allowed: an "
                         "integer in [1, 64]")
    for name, value in (("eoi_gap", eoi_gap), ("offset_gap", offset_gap),
                        ("sharpness", sharpness)):
        if not 10.0 <= float(value) <= 100.0:
            raise ValueError(f"iteration_head.build: {name}={value} is not allowed: a number "
                             "in [10, 100]")
    cfg = config(int(max_bits))
    w = empty_weights(cfg)
    root_e = np.sqrt(cfg["d_head"])  # the model divides scores by sqrt(d_head)

    p = np.arange(cfg["max_len"], dtype=np.float32)
    w["pos_embed"][:, ONE] = 1.0
    w["pos_embed"][:, POS] = p
    w["pos_embed"][:, POS2] = p * p
    w["embed"][BIT1, BIT] = 1.0
    w["embed"][EOI, IS_EOI] = 1.0

    qkv = w["blocks.0.attn.W_QKV"]  # [D, 3, H, E]: layer 1 finds <eoi>, copies its position
    qkv[ONE, 0, 0, 0] = eoi_gap * root_e
    qkv[IS_EOI, 1, 0, 0] = 1.0
    qkv[POS, 2, 0, 0] = 1.0
    w["blocks.0.attn.W_O"][0, 0, EPOS] = 1.0

    lam = offset_gap * root_e  # layer 2: the parabola lam (2 j t - j^2), t = p - EPOS + 1
    qkv = w["blocks.1.attn.W_QKV"]
    qkv[POS, 0, 0, 0] = 2 * lam
    qkv[EPOS, 0, 0, 0] = -2 * lam
    qkv[ONE, 0, 0, 0] = 2 * lam
    qkv[ONE, 0, 0, 1] = -lam
    qkv[POS, 1, 0, 0] = 1.0
    qkv[POS2, 1, 0, 1] = 1.0
    qkv[BIT, 2, 0, 0] = 1.0
    qkv[IS_EOI, 2, 0, 1] = 1.0
    w["blocks.1.attn.W_O"][0, 0, XT] = 1.0
    w["blocks.1.attn.W_O"][0, 1, XE] = 1.0

    s = float(sharpness)  # XOR(a, b) = ReLU(a + b) - 2 ReLU(a + b - 1)
    w["blocks.1.mlp.W_in"][[BIT, XT], 0] = s
    w["blocks.1.mlp.W_in"][[BIT, XT], 1] = s
    w["blocks.1.mlp.b_in"][1] = -s
    w["blocks.1.mlp.W_out"][0, Y] = 1.0 / s
    w["blocks.1.mlp.W_out"][1, Y] = -2.0 / s

    w["W_U"][Y, BIT1] = OUT_LOGIT
    w["W_U"][Y, BIT0] = -OUT_LOGIT
    w["W_U"][ONE, BIT0] = OUT_LOGIT
    w["W_U"][XE, EOS] = 3 * OUT_LOGIT
    return cfg, w


def designated_keys(n_bits: int) -> dict[str, np.ndarray]:
    """The attention targets the circuit is defined by, for one length L:

    ``layer1``: int[L] key column (L + 1, the <eoi>) of queries L + 1 .. 2L, the columns
    that predict s_1 .. s_L. (The figure's score follows the official E16 AttentionEval,
    queries L + 2 .. 2L + 1, one column later: it drops the <eoi> query and adds the one
    that predicts <eos>.)
    ``layer2``: int[L] key column t of query L + t, t = 1 .. L (query columns ``queries``).
    """
    t = np.arange(1, n_bits + 1)
    return {"queries": n_bits + t, "layer1": np.full(n_bits, n_bits + 1), "layer2": t}
