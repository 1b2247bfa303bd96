"""graph/graph_in_context: find a path in a small graph given in the prompt.

Format (whitespace-separated tokens, prompt left-padded)::

    prompt:      u1 v1 u2 v2 ... uE vE <q> s t
    completion:  s w1 ... t <eos>          (t reachable from s: a shortest path)
                 <no_path> <eos>            (t not reachable from s)

Each example draws its own graph: ``n_nodes`` nodes, a random DAG (edge ``i -> j`` for
``i < j`` with ``edge_prob`` before relabelling) or a random digraph (every ordered pair with
``edge_prob``), at most ``max_edges`` edges kept (a uniform random subset), and a graph
left with no edge gets one random edge so that a reachable question always exists. Nodes
get distinct random labels from ``0 .. label_range-1`` (so the topological order of a DAG
is hidden), and the edges are listed in random order. With probability ``p_unreachable``
the question is an unreachable pair; if the graph has no pair of the wanted kind (e.g. a
strongly connected digraph has no unreachable pair) the other kind is asked, and
``meta['reachable']`` says which was asked.

Reward: 1 iff the completion up to its first ``<eos>`` is ``<no_path>`` alone when t is
unreachable, or, when t is reachable, a path of the prompt's graph that starts at s, ends
at t, visits no node twice and stops at t (any valid path, not only a shortest one).

Meta: ``source``, ``target`` (labels), ``reachable``, ``distance`` (edges on a shortest
path, -1 if unreachable), ``n_edges``, ``adjacency`` (bool[label_range, label_range] in
label space: ``adjacency[u, v]`` iff ``u v`` is listed in the prompt).
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
    check_prob,
    eos_index,
    jit_method,
    left_pad,
    reference_eos_index,
    register,
)

NAME = "graph/graph_in_context"
GRAPH_KINDS = ("dag", "digraph")


def check_graph_fields(owner: str, cfg) -> None:
    """Validation shared with graph/graph_search (same graph fields)."""
    check_int(owner, "n_nodes", cfg.n_nodes, 2, 16)
    check_int(owner, "label_range", cfg.label_range, cfg.n_nodes, 64)
    check_prob(owner, "edge_prob", cfg.edge_prob)
    check(cfg.edge_prob > 0, owner, "edge_prob", cfg.edge_prob, "a probability in (0, 1]")
    check_int(owner, "max_edges", cfg.max_edges, 1, 64)
    check(cfg.graph_kind in GRAPH_KINDS, owner, "graph_kind", cfg.graph_kind,
          f"one of {GRAPH_KINDS}")


@dataclasses.dataclass(frozen=True)
class GraphInContextConfig:
    n_nodes: int = 8  # nodes per graph (2..16)
    label_range: int = 16  # node labels are drawn from 0..label_range-1 (vocabulary size)
    edge_prob: float = 0.3  # probability of each candidate edge
    max_edges: int = 16  # edges listed in the prompt at most (prompt = 2*max_edges + 3)
    graph_kind: str = "dag"  # 'dag' or 'digraph'
    p_unreachable: float = 0.2  # fraction of questions whose target is unreachable

    def __post_init__(self):
        check_graph_fields(NAME, self)
        check_prob(NAME, "p_unreachable", self.p_unreachable)


# --------------------------------------------------------------------------- shared sampling
def graph_noise(cfg) -> dict:
    """Shapes of the uniform noise :func:`sample_context_graph` reads (for ``graphs.uniforms``)."""
    n = cfg.n_nodes
    return dict(edges=(n, n), cap=(n, n), fix=(n * n,), labels=(cfg.label_range,),
                order=(n * n,), want=(), pair=(n * n,))


def sample_context_graph(u: dict, cfg, p_unreachable):
    """One example's graph and question in index space (shared with graph/graph_search),
    from the noise blocks named in :func:`graph_noise`.

    Returns a dict: ``adj`` bool[n, n], ``labels`` int32[n] (label of each node),
    ``source``/``target`` node indices, ``reachable``, ``edge_u``/``edge_v`` int32[max_edges]
    (node indices, in prompt order), ``n_edges``."""
    n = cfg.n_nodes
    if cfg.graph_kind == "dag":
        adj = graphs.dag_from_uniforms(u["edges"], cfg.edge_prob)
        allowed = jnp.triu(jnp.ones((n, n), bool), k=1)
    else:
        adj = graphs.digraph_from_uniforms(u["edges"], cfg.edge_prob)
        allowed = ~jnp.eye(n, dtype=bool)
    adj = graphs.cap_edges(u["cap"], adj, cfg.max_edges)
    fix, _ = graphs.choice_where(u["fix"], allowed.reshape(-1))
    adj = adj | ((jnp.arange(n * n) == fix).reshape(n, n) & ~adj.any())
    labels = graphs.order_from_uniforms(u["labels"])[:n]

    order = jnp.argsort(jnp.where(adj.reshape(-1), u["order"], 2.0))[: cfg.max_edges]
    # A graph of n nodes has fewer than n*n edges; when max_edges is larger, pad the slots
    # (never listed: slot j is an edge only for j < n_edges) so they are int32[max_edges].
    order = jnp.pad(order, (0, max(0, cfg.max_edges - n * n)))
    edge_u, edge_v = (order // n).astype(jnp.int32), (order % n).astype(jnp.int32)

    reach = graphs.transitive_closure(adj)
    off_diag = ~jnp.eye(n, dtype=bool)
    reach_pairs, unreach_pairs = reach & off_diag, ~reach & off_diag
    ask_unreach = ((u["want"] < p_unreachable) & unreach_pairs.any()) | ~reach_pairs.any()
    pairs = jnp.where(ask_unreach, unreach_pairs, reach_pairs).reshape(-1)
    pair, _ = graphs.choice_where(u["pair"], pairs)
    return dict(adj=adj, labels=labels, source=pair // n, target=pair % n,
                reachable=~ask_unreach, edge_u=edge_u, edge_v=edge_v,
                n_edges=adj.sum().astype(jnp.int32))


def prompt_row(g, vocab: Vocab, max_edges: int):
    """Right-padded prompt ``u v ... <q> s t`` of width ``2*max_edges + 3`` and its length."""
    width = 2 * max_edges + 3
    pos = jnp.arange(width)
    lab = g["labels"]
    edge_j = jnp.clip(pos // 2, 0, max_edges - 1)
    edge_tok = jnp.where(pos % 2 == 0, lab[g["edge_u"][edge_j]], lab[g["edge_v"][edge_j]])
    ne2 = 2 * g["n_edges"]
    row = jnp.where(pos < ne2, vocab.num(edge_tok), PAD)
    row = jnp.where(pos == ne2, vocab.id("<q>"), row)
    row = jnp.where(pos == ne2 + 1, vocab.num(lab[g["source"]]), row)
    row = jnp.where(pos == ne2 + 2, vocab.num(lab[g["target"]]), row)
    return row.astype(jnp.int32), ne2 + 3


def label_adjacency(g, label_range: int):
    """bool[label_range, label_range]: the graph in label space (what the prompt lists)."""
    lab = g["labels"]
    return jnp.zeros((label_range, label_range), bool).at[lab[:, None], lab[None, :]].set(g["adj"])


def parse_prompt(vocab: Vocab, prompt) -> tuple[set, int, int]:
    """Pure-Python reading of ``u v ... <q> s t``: (edge set of label pairs, s, t)."""
    toks = [int(x) for x in np.asarray(prompt).tolist() if int(x) != PAD]
    q = toks.index(vocab.id("<q>"))
    vals = [tok - len(vocab.specials) for tok in toks]
    edges = {(vals[i], vals[i + 1]) for i in range(0, q, 2)}
    return edges, vals[q + 1], vals[q + 2]


def python_reachable(edges: set, s: int, t: int) -> bool:
    """Depth-first search with an explicit stack (independent of the jnp closure)."""
    seen, todo = {s}, [s]
    while todo:
        u = todo.pop()
        for a, b in edges:
            if a == u and b not in seen:
                seen.add(b)
                todo.append(b)
    return t in seen


def python_is_path(edges: set, path: list, s: int, t: int) -> bool:
    """A simple path s -> t along ``edges`` that stops at t (pure Python)."""
    if len(path) < 2 or path[0] != s or path[-1] != t or len(set(path)) != len(path):
        return False
    return all((a, b) in edges for a, b in zip(path, path[1:], strict=False))


# --------------------------------------------------------------------------- the task
@register
class GraphInContext(Task):
    """Path (or ``<no_path>``) in a small random graph listed in the prompt."""

    name = NAME
    Config = GraphInContextConfig

    def __init__(self, config: GraphInContextConfig):
        super().__init__(config)
        self.vocab = Vocab(("<pad>", "<eos>", "<q>", "<no_path>"), config.label_range)
        self.prompt_len = 2 * config.max_edges + 3
        self.max_target_len = config.n_nodes + 1

    def _one(self, key):
        cfg = self.config
        u = graphs.uniforms(key, **graph_noise(cfg), path=(cfg.n_nodes - 1, cfg.n_nodes))
        g = sample_context_graph(u, cfg, cfg.p_unreachable)
        row, plen = prompt_row(g, self.vocab, cfg.max_edges)
        nodes, length = graphs.random_shortest_path(u["path"], g["adj"], g["source"], g["target"])
        pos = jnp.arange(self.max_target_len)
        path_tok = self.vocab.num(g["labels"][nodes[jnp.clip(pos, 0, cfg.n_nodes - 1)]])
        path_row = jnp.where(pos < length, path_tok, jnp.where(pos == length, EOS, PAD))
        no_path_row = jnp.where(pos == 0, self.vocab.id("<no_path>"), jnp.where(pos == 1, EOS, PAD))
        target = jnp.where(g["reachable"], path_row, no_path_row).astype(jnp.int32)
        meta = dict(source=g["labels"][g["source"]], target=g["labels"][g["target"]],
                    reachable=g["reachable"], distance=jnp.where(g["reachable"], length - 1, -1),
                    n_edges=g["n_edges"], adjacency=label_adjacency(g, cfg.label_range))
        return row, plen, target, jnp.where(g["reachable"], length + 1, 2), meta

    def sample(self, key, n, split="train"):
        """Both splits are i.i.d. draws from the same distribution; the split is folded
        into the key so that one key gives different train and test examples."""
        self._check_sample(n, split)
        key = jax.random.fold_in(key, self.splits.index(split))
        return graphs.jit_sample(type(self), self.config, key, n)

    def _sample(self, key, n):
        rows, plens, targets, tlens, meta = jax.vmap(self._one)(jax.random.split(key, n))
        meta = {k: jnp.asarray(v) for k, v in meta.items()}
        return Batch(left_pad(rows, plens), plens.astype(jnp.int32), targets,
                     tlens.astype(jnp.int32), meta)

    def reward(self, batch, completions):
        """1 iff the path (or ``<no_path>``) before the first ``<eos>`` is right (module
        docstring); pure jnp."""
        return jit_method(type(self), self.config, "_reward", batch, completions)

    def _reward(self, batch, completions):
        c = jnp.asarray(completions, jnp.int32)
        stop = eos_index(c)
        has_eos = stop < c.shape[1]
        nodes = jnp.clip(self.vocab.value(c), 0, self.config.label_range - 1)
        adj = batch.meta["adjacency"]
        edge_ok = adj[jnp.arange(c.shape[0])[:, None], nodes[:, :-1], nodes[:, 1:]]
        path_ok = graphs.path_check(nodes, self.vocab.is_num(c), stop, batch.meta["source"],
                                    batch.meta["target"], edge_ok, simple=True)
        no_path_ok = (stop == 1) & (c[:, 0] == self.vocab.id("<no_path>"))
        ok = has_eos & jnp.where(batch.meta["reachable"], path_ok, no_path_ok)
        return ok.astype(jnp.float32)

    def reference_reward(self, batch, completions):
        prompts = np.asarray(batch.prompts)
        out = np.zeros(len(prompts), np.float32)
        for i, row in enumerate(np.asarray(completions).tolist()):
            end = reference_eos_index(row)
            if end is None:
                continue
            edges, s, t = parse_prompt(self.vocab, prompts[i])
            answer = row[:end]
            if python_reachable(edges, s, t):
                if all(len(self.vocab.specials) <= x < self.vocab.size for x in answer):
                    path = [x - len(self.vocab.specials) for x in answer]
                    out[i] = python_is_path(edges, path, s, t)
            else:
                out[i] = answer == [self.vocab.id("<no_path>")]
        return out

    @classmethod
    def curriculum(cls, level: int, **overrides):
        """Level 0..4: 4, 6, 8, 12, 16 nodes (edges capped at 2n so prompts stay short)."""
        check_int(NAME, "level", level, 0, 4)
        n = (4, 6, 8, 12, 16)[level]
        base = dict(n_nodes=n, max_edges=2 * n, edge_prob=min(1.0, 2.5 / n))
        return cls.Config(**{**base, **overrides})
