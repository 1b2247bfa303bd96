"""graph/path_star: the path-star graph of Bachmann & Nagarajan, "The pitfalls of next-token
prediction" (ICML 2024, arXiv 2403.06963).

A star of ``degree`` arms leaves a centre node s; each arm is a chain of ``path_len - 1``
further nodes, so the arm read from the centre, ``s a1 ... t``, has ``path_len`` nodes (the
paper's code calls these ``degSource`` and ``pathLen``; its default run is degree 2, path
length 5, 50 node labels). Node labels are distinct and random in each example, edges are
directed away from the centre and listed in random order. The paper writes
``u,v|u,v|.../s,t=`` followed by the path; we keep its order with one token per node::

    prompt:      u1 v1 u2 v2 ... <q> s t
    completion:  s a1 ... t <eos>      (the whole arm from the centre, centre included)

t is the leaf of a random arm. Reward: 1 iff the completion before its first ``<eos>`` is
that arm exactly (in a star the s -> t path is unique, so this is "a valid path").

Meta: ``source`` (the centre), ``target``, ``leading`` (the first node after the centre on
the target's arm, l_t in Frydenlund, arXiv 2503.10542), ``target_arm`` (index of the arm in
``arms``), ``arms`` int32[degree, path_len - 1] (labels, centre excluded).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tasks import graphs
from tasks.core import (
    EOS,
    PAD,
    Batch,
    Task,
    Vocab,
    check,
    check_int,
    eos_index,
    jit_method,
    left_pad,
    reference_eos_index,
    register,
)

NAME = "graph/path_star"


@dataclasses.dataclass(frozen=True)
class PathStarConfig:
    degree: int = 2  # number of arms d (the paper's degSource)
    path_len: int = 5  # nodes on the answer path, centre included (the paper's pathLen)
    n_labels: int = 50  # node labels drawn from 0..n_labels-1 (the paper's numNodes)

    def __post_init__(self):
        check_int(NAME, "degree", self.degree, 2, 32)
        check_int(NAME, "path_len", self.path_len, 2, 32)
        check_int(NAME, "n_labels", self.n_labels, 2, 1000)
        needed = self.degree * (self.path_len - 1) + 1
        check(self.n_labels >= needed, NAME, "n_labels", self.n_labels,
              f"at least degree*(path_len-1)+1 = {needed} (every node needs its own label)")


@register
class PathStar(Task):
    """Name the arm of a star graph that leads from the centre to the target leaf."""

    name = NAME
    Config = PathStarConfig

    def __init__(self, config: PathStarConfig):
        super().__init__(config)
        self.vocab = Vocab(("<pad>", "<eos>", "<q>"), config.n_labels)
        self.n_edges = config.degree * (config.path_len - 1)
        self.prompt_len = 2 * self.n_edges + 3
        self.max_target_len = config.path_len + 1

    def _one(self, key):
        cfg, v = self.config, self.vocab
        d, m = cfg.degree, cfg.path_len - 1
        u = graphs.uniforms(key, labels=(cfg.n_labels,), arm=(), order=(d * m,))
        labels = graphs.order_from_uniforms(u["labels"])[: d * m + 1]
        centre, arms = labels[0], labels[1:].reshape(d, m)
        target_arm = jnp.minimum(jnp.floor(u["arm"] * d), d - 1).astype(jnp.int32)
        # Edge (a, j): from arm a's node j-1 (the centre for j = 0) to its node j.
        tails = jnp.concatenate([jnp.full((d, 1), centre), arms[:, :-1]], axis=1).reshape(-1)
        heads = arms.reshape(-1)
        order = graphs.order_from_uniforms(u["order"])
        edge_tokens = jnp.stack([tails[order], heads[order]], axis=1).reshape(-1)
        prompt = jnp.concatenate([v.num(edge_tokens), jnp.array([v.id("<q>")]),
                                  v.num(jnp.stack([centre, arms[target_arm, -1]]))])
        answer = jnp.concatenate([v.num(centre)[None], v.num(arms[target_arm]),
                                  jnp.array([EOS])]).astype(jnp.int32)
        meta = dict(source=centre, target=arms[target_arm, -1], leading=arms[target_arm, 0],
                    target_arm=target_arm.astype(jnp.int32), arms=arms)
        return prompt.astype(jnp.int32), answer, meta

    def sample(self, key, n, split="train"):
        """Both splits are i.i.d. draws from the same distribution; the split is folded
        into the key so that one key gives different train and test examples."""
        self._check_sample(n, split)
        key = jax.random.fold_in(key, self.splits.index(split))
        return graphs.jit_sample(type(self), self.config, key, n)

    def _sample(self, key, n):
        prompts, targets, meta = jax.vmap(self._one)(jax.random.split(key, n))
        # Every prompt has the same length, so left padding is a no-op here.
        plens = jnp.full((n,), self.prompt_len, jnp.int32)
        tlens = jnp.full((n,), self.max_target_len, jnp.int32)
        return Batch(left_pad(prompts, plens), plens, targets, tlens, meta)

    def reward(self, batch, completions):
        """1 iff the tokens before the first ``<eos>`` equal the gold arm (jnp)."""
        return jit_method(type(self), self.config, "_reward", batch, completions)

    def _reward(self, batch, completions):
        c = jnp.asarray(completions, jnp.int32)
        L, C = c.shape[1], self.max_target_len
        stop = eos_index(c)
        gold = batch.targets[:, : C - 1]  # the arm, without <eos>
        width = min(L, C - 1)
        same = jnp.all(c[:, :width] == gold[:, :width], axis=1)
        return ((stop == C - 1) & (stop < L) & same).astype(jnp.float32)

    def reference_reward(self, batch, completions):
        """Independent check: walk the prompt's edge list from the centre (pure Python)."""
        out = np.zeros(batch.prompts.shape[0], np.float32)
        n_spec = len(self.vocab.specials)
        for i, (prompt, row) in enumerate(zip(np.asarray(batch.prompts).tolist(),
                                              np.asarray(completions).tolist(), strict=True)):
            end = reference_eos_index(row)
            if end is None:
                continue
            toks = [x for x in prompt if x != PAD]
            q = toks.index(self.vocab.id("<q>"))
            edges = {(toks[j], toks[j + 1]) for j in range(0, q, 2)}
            s, t = toks[q + 1], toks[q + 2]
            path = row[:end]
            ok = (len(path) >= 2 and path[0] == s and path[-1] == t
                  and all(n_spec <= x < self.vocab.size for x in path)
                  and all((a, b) in edges for a, b in zip(path, path[1:], strict=False)))
            out[i] = ok
        return out

    @classmethod
    def curriculum(cls, level: int, **overrides):
        """Level 0..4: (degree, path_len) = (2, 3), (2, 5), (3, 5), (5, 5), (5, 8)."""
        check_int(NAME, "level", level, 0, 4)
        degree, path_len = ((2, 3), (2, 5), (3, 5), (5, 5), (5, 8))[level]
        return cls.Config(**{"degree": degree, "path_len": path_len, **overrides})
