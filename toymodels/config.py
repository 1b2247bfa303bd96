"""The model's shape: one frozen, validated dataclass.

Every field is checked in ``__post_init__``; a bad value raises one ``ValueError`` that
names the field, the value and what is allowed (the same wording as ``tasks.core.check``).
"""

from __future__ import annotations

import dataclasses

from tasks.core import check, check_int

POS_ENCODINGS = ("learned", "rope", "none")
NORMS = ("pre", "none")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A decoder-only transformer.

    vocab_size: number of token ids (``<pad>`` = 0 and ``<eos>`` = 1 included).
    max_len: longest sequence (prompt + completion) the model accepts; learned positional
        embeddings have this many rows.
    n_layers, n_heads, d_model: the usual. d_mlp: hidden width of the MLP, 0 means the
        model is attention-only (no MLP sublayer at all).
    d_head: per-head width; None means ``d_model // n_heads`` (then d_model must divide).
    pos_enc: 'learned' (added embedding), 'rope' (rotary on q and k), 'none'.
    norm: 'pre' (LayerNorm before each sublayer and before the unembedding) or 'none'.
    tied_embed: unembedding is the transpose of the token embedding.
    init_scale: standard deviation of the normal initialisation of every weight matrix.
    """

    vocab_size: int
    max_len: int
    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 128
    d_mlp: int = 512
    d_head: int | None = None
    pos_enc: str = "learned"
    norm: str = "pre"
    tied_embed: bool = False
    init_scale: float = 0.02

    def __post_init__(self):
        owner = "ModelConfig"
        check_int(owner, "vocab_size", self.vocab_size, 2)
        check_int(owner, "max_len", self.max_len, 1)
        check_int(owner, "n_layers", self.n_layers, 0)
        check_int(owner, "n_heads", self.n_heads, 1)
        check_int(owner, "d_model", self.d_model, 1)
        check_int(owner, "d_mlp", self.d_mlp, 0)
        if self.d_head is None:
            check(self.d_model % self.n_heads == 0, owner, "d_model", self.d_model,
                  f"a multiple of n_heads={self.n_heads} when d_head is None")
        else:
            check_int(owner, "d_head", self.d_head, 1)
        check(self.pos_enc in POS_ENCODINGS, owner, "pos_enc", self.pos_enc,
              f"one of {POS_ENCODINGS}")
        if self.pos_enc == "rope":
            check(self.head_dim % 2 == 0, owner, "d_head", self.head_dim,
                  "an even per-head width when pos_enc='rope'")
        check(self.norm in NORMS, owner, "norm", self.norm, f"one of {NORMS}")
        check(isinstance(self.tied_embed, bool), owner, "tied_embed", self.tied_embed,
              "True or False")
        scale_ok = isinstance(self.init_scale, int | float) and not isinstance(
            self.init_scale, bool)
        check(scale_ok and 0.0 < float(self.init_scale) < float("inf"), owner, "init_scale",
              self.init_scale, "a finite number > 0")

    @property
    def head_dim(self) -> int:
        """The per-head width actually used (``d_head`` or ``d_model // n_heads``)."""
        return self.d_head if self.d_head is not None else self.d_model // self.n_heads

    @property
    def has_mlp(self) -> bool:
        return self.d_mlp > 0
