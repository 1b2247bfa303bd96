"""The parameter layout of our model, in numpy, for the compiled circuits."""

from __future__ import annotations

import numpy as np


def empty_weights(config: dict) -> dict[str, np.ndarray]:
    """All-zero weights of a ``norm='none'``, untied, learned-position model.

    Shapes mirror ``toymodels.layers`` (W_QKV is [D, 3, H, E], W_O is [H, E, D]); the loader
    rejects any drift, so a change of layout fails loudly here rather than silently.
    """
    if config.get("norm") != "none" or config.get("tied_embed", False):
        raise ValueError("empty_weights: only norm='none', tied_embed=False layouts are built")
    v, t, d = config["vocab_size"], config["max_len"], config["d_model"]
    h, e, m = config["n_heads"], config["d_head"], config["d_mlp"]
    w = {"embed": (v, d), "pos_embed": (t, d), "W_U": (d, v), "b_U": (v,)}
    for l in range(config["n_layers"]):
        b = f"blocks.{l}"
        w |= {f"{b}.attn.W_QKV": (d, 3, h, e), f"{b}.attn.b_QKV": (3, h, e),
              f"{b}.attn.W_O": (h, e, d), f"{b}.attn.b_O": (d,)}
        if m:
            w |= {f"{b}.mlp.W_in": (d, m), f"{b}.mlp.b_in": (m,),
                  f"{b}.mlp.W_out": (m, d), f"{b}.mlp.b_out": (d,)}
    return {k: np.zeros(s, np.float32) for k, s in w.items()}
