"""Balanced graph-search data of the search-lookahead figure (``experiments.search_lookahead``;
Saparov et al., ICLR 2025, arXiv 2412.04703, §3 and the official generator
``asaparov/learning_to_search``, ``generator.cpp``: ``generate_graph_with_lookahead``,
``lookahead_depth``, ``generate_training_set``).

One example: a DAG listed edge by edge, a start vertex s and a goal g; the answer is the child
of s from which g can be reached (unique by construction). Tokens::

    e(u1, v1) e(u2, v2) ... e(uE, vE) q(s, g)   ->   c     (one token per edge, one query)

The graph, as in ``generate_graph_with_lookahead`` (vertex slots, relabelled at random):

* slot 0 is s; ``k`` branches leave it, branch 0 is the chain s -> 1 -> ... -> L whose end is
  g; each other branch is a chain of L or L + 1 vertices (the official code's
  ``lookahead + randrange(2)``) that ends in a leaf;
* the remaining slots are "outside" vertices, each with one or two edges to random lower
  slots (s, branch vertices, or other outside vertices): parents of s (the official code's
  path prefix into the start), extra in-edges of branch vertices and of g. No edge enters an
  outside vertex from s's side, so they change neither reachability from s nor the lookahead.
  ``outside_edges=False`` leaves them isolated (in no edge): the graph is s and its chains.

Lookahead (the official ``lookahead_depth``): breadth-first search from the children of s,
one level per step, until g is met or every live frontier entry descends from the answer.
In these graphs it is exactly L: the goal sits at depth L and every distractor branch is alive
at depth L (its length is >= L). The tests check this against a plain-Python transcription of
``lookahead_depth``.

Balanced distribution (``generate_training_set`` with ``max_lookahead``): L uniform in
1 .. L_max (the official code fills the buckets of a lookahead histogram evenly; drawing L
uniformly gives the same distribution), k uniform in 2 .. k_max(L), k_max(L) the most
branches that fit in the n vertex slots even when every distractor has L + 1 vertices.
The official examples also include path prefixes (the next step from vertex j of the path);
here every step after the first has one child (lookahead 0), so only the first step is asked.

Vocabulary: <pad> 0, <eos> 1, vertex v -> 2 + v (the answer), edge (u, v) -> 2 + n + n u + v,
query (s, g) -> 2 + n + n^2 + n s + g; labels are a random permutation of 0 .. n - 1. One
token per edge and one for the query put every fact the search needs into the embedding, so
no layer is spent assembling an edge or the query from several tokens (the official format,
``E u v`` triples and ``Q s g P``, spends at least one); the depth bound of
``experiments.search_lookahead`` counts layers from this format.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tasks import graphs
from tasks.core import PAD

MAX_BRANCHES = 4  # branches leaving s at most (official: (max_edges - 1) / lookahead)


def vocab_size(n: int) -> int:
    return 2 + n + 2 * n * n


def prompt_width(n: int) -> int:
    """3(n - 1) candidate edges (a parent edge and two outside edges per slot) + the query."""
    return 3 * (n - 1) + 1


def max_branches(n: int, lookahead) -> jax.Array:
    """k_max(L): branch 0 (L vertices) and k - 1 distractors of L + 1 fit in n - 1 slots."""
    return jnp.minimum(MAX_BRANCHES, 1 + (n - 1 - lookahead) // (lookahead + 1))


def check_sizes(n: int, max_lookahead: int) -> None:
    if not 2 <= n <= 16:
        raise ValueError(f"n_vertices must lie in [2, 16], got {n}")
    if not 1 <= max_lookahead or 2 * max_lookahead + 1 > n - 1:
        raise ValueError(f"max_lookahead {max_lookahead} needs n_vertices >= "
                         f"{2 * max_lookahead + 2} (two branches and one outside vertex)")


def _one(key, n: int, lookahead, outside_edges: bool = True):
    """One example in slot space, relabelled; ``lookahead`` may be traced."""
    u = graphs.uniforms(key, k=(), extra=(MAX_BRANCHES,), labels=(n,), order=(3 * (n - 1),),
                        out1=(n, n), out2=(n, n), two=(n,))
    k = 2 + jnp.floor(u["k"] * (max_branches(n, lookahead) - 1)).astype(jnp.int32)
    branch = jnp.arange(MAX_BRANCHES)
    length = jnp.where(branch == 0, lookahead, lookahead + (u["extra"] < 0.5))
    length = jnp.where(branch < k, length, 0)
    first = 1 + jnp.cumsum(length) - length  # first slot of each branch
    used = 1 + length.sum()  # slots 0 .. used - 1 are s and the branches
    slot = jnp.arange(n)
    # Branch edges: the parent of slot j (1 <= j < used) is s if j starts a branch, else j - 1.
    starts = (slot[:, None] == first[None, :]) & (length[None, :] > 0)
    parent = jnp.where(starts.any(1), 0, slot - 1)
    # Outside slots x >= used: edges x -> y1 and (with probability 1/2) x -> y2 != y1, y < x.
    below = slot[None, :] < slot[:, None]
    y1, _ = jax.vmap(graphs.choice_where)(u["out1"], below)
    y2, _ = jax.vmap(graphs.choice_where)(u["out2"], below & (slot[None, :] != y1[:, None]))
    outside = (slot >= used) & outside_edges  # False: the outside vertices stay isolated
    # Candidate edges of slots 1 .. n - 1 (slot 0, s, has neither kind): 3(n - 1) of them.
    src = jnp.concatenate([parent[1:], slot[1:], slot[1:]])
    dst = jnp.concatenate([slot[1:], y1[1:], y2[1:]])
    ok = jnp.concatenate([slot[1:] < used, outside[1:], (outside & (u["two"] < 0.5))[1:]])
    labels = graphs.order_from_uniforms(u["labels"])  # slot -> label
    order = jnp.argsort(jnp.where(ok, u["order"], 2.0))  # real edges first, shuffled
    src, dst, ok = labels[src[order]], labels[dst[order]], ok[order]
    edge_tok = 2 + n + n * src + dst
    s, g, answer = labels[0], labels[lookahead], labels[1]
    return dict(edges=jnp.where(ok, edge_tok, PAD), n_edges=ok.sum(), start=s, goal=g,
                answer=answer, lookahead=lookahead, n_branches=k,
                edge_src=jnp.where(ok, src, -1), edge_dst=jnp.where(ok, dst, -1))


def sample(key, n_examples: int, n: int, max_lookahead: int, lookahead=None,
           outside_edges: bool = True) -> dict:
    """A batch: ``prompts`` int32[B, 3(n - 1) + 1] left-padded (edges, query), ``answers``
    (the answer token), and the ground truth (``lookahead``, ``n_branches``, labels of
    ``start``/``goal``/``answer``, ``edge_src``/``edge_dst`` with -1 for padding).
    ``lookahead`` None draws L uniformly from 1 .. max_lookahead (the balanced distribution),
    an int fixes it."""
    k_l, k_ex = jax.random.split(key)
    if lookahead is None:
        ls = jax.random.randint(k_l, (n_examples,), 1, max_lookahead + 1)
    else:
        ls = jnp.full((n_examples,), lookahead, jnp.int32)
    ex = jax.vmap(lambda k, L: _one(k, n, L, outside_edges))(jax.random.split(k_ex, n_examples), ls)
    # Left-pad: the real edges (first n_edges entries) end just before s and g.
    width = 3 * (n - 1)
    shift = width - ex["n_edges"]
    col = jnp.arange(width)[None, :] - shift[:, None]
    edges = jnp.where(col >= 0, jnp.take_along_axis(ex["edges"], jnp.clip(col, 0), 1), PAD)
    query = 2 + n + n * n + n * ex["start"] + ex["goal"]
    prompts = jnp.concatenate([edges, query[:, None]], axis=1).astype(jnp.int32)
    return dict(prompts=prompts, answers=(2 + ex["answer"]).astype(jnp.int32), **ex)
