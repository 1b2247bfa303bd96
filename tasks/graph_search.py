"""graph/graph_search: depth-first search traces with an explicit ``<back>`` token.

The prompt is graph/graph_in_context's (``u v u v ... <q> s t``, see that module; here t is
always reachable from s). The completion is a search trace, ``<sep>``, the final path::

    s a x <back> b t <sep> s a b t <eos>

Verifier semantics (what ``reward`` and ``reference_reward`` both implement):

1. Read up to the first ``<eos>`` (none: reward 0). Exactly one ``<sep>`` must split the
   trace from the answer.
2. The trace runs a stack, starting empty. Its first token must be the node s (pushed). A
   later node token ``v`` is pushed only if the stack is non-empty and ``top -> v`` is an
   edge of the prompt's graph; ``<back>`` pops the top and needs a non-empty stack. Any
   other token, an illegal push or a pop of an empty stack gives reward 0.
3. After the trace the stack, read bottom to top, must be a simple path from s to t
   (s at the bottom, t on top, no node twice; the edges hold by rule 2).
4. The tokens between ``<sep>`` and ``<eos>`` must be exactly that stack, bottom to top.

Gold traces: a random shortest path. With probability ``p_mistake`` (when the path passes
a node with an out-neighbour that cannot reach t) the trace takes one wrong turn at a
random such node, walks up to ``dead_end_depth`` steps into the dead end (each step onto a
new node, all of which cannot reach t), pops them with as many ``<back>``, then resumes
the shortest path. ``p_mistake = 0`` gives clean traces.

Meta: ``source``, ``target``, ``distance``, ``n_edges``, ``adjacency`` (label space, as in
graph_in_context), ``has_mistake``, and per target position ``mistake`` (the token there
is a step onto a node from which t is unreachable) and ``is_back``.
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
    check_int,
    check_prob,
    jit_method,
    left_pad,
    reference_eos_index,
    register,
)
from tasks.graph_in_context import (
    check_graph_fields,
    graph_noise,
    label_adjacency,
    parse_prompt,
    prompt_row,
    sample_context_graph,
)

NAME = "graph/graph_search"


@dataclasses.dataclass(frozen=True)
class GraphSearchConfig:
    n_nodes: int = 8  # nodes per graph (2..16)
    label_range: int = 16  # node labels are drawn from 0..label_range-1
    edge_prob: float = 0.3  # probability of each candidate edge
    max_edges: int = 16  # edges listed in the prompt at most
    graph_kind: str = "dag"  # 'dag' or 'digraph'
    p_mistake: float = 0.5  # probability that a gold trace takes one wrong turn
    dead_end_depth: int = 2  # steps walked into the dead end before backing out (1..4)

    def __post_init__(self):
        check_graph_fields(NAME, self)
        check_prob(NAME, "p_mistake", self.p_mistake)
        check_int(NAME, "dead_end_depth", self.dead_end_depth, 1, 4)


@register
class GraphSearch(Task):
    """DFS trace with ``<back>``, then the final path, on a graph listed in the prompt."""

    name = NAME
    Config = GraphSearchConfig

    def __init__(self, config: GraphSearchConfig):
        super().__init__(config)
        self.vocab = Vocab(("<pad>", "<eos>", "<q>", "<back>", "<sep>"), config.label_range)
        self.prompt_len = 2 * config.max_edges + 3
        # trace (n nodes + depth pushes + depth pops) + <sep> + path (n) + <eos>
        self.max_target_len = 2 * config.n_nodes + 2 * config.dead_end_depth + 2

    def _dead_end_walk(self, u, adj, can_reach, start, active):
        """Walk from ``start`` onto nodes that cannot reach t, never revisiting one."""
        n = self.config.n_nodes

        def step(carry, u_k):
            cur, visited, going = carry
            opts = adj[cur] & ~can_reach & ~visited
            nxt, exists = graphs.choice_where(u_k, opts)
            going = going & exists
            visited = visited | ((jnp.arange(n) == nxt) & going)
            return (jnp.where(going, nxt, cur), visited, going), (nxt, going)

        init = (start, jnp.zeros(n, bool), active)
        _, (dead, went) = jax.lax.scan(step, init, u)
        return dead, went.sum().astype(jnp.int32)

    def example_noise(self, key):
        """The uniforms one example draws from its key (graph, path tie-breaks, wrong turn)."""
        cfg, n = self.config, self.config.n_nodes
        return graphs.uniforms(key, **graph_noise(cfg), path=(n - 1, n), where=(n,), coin=(),
                               walk=(cfg.dead_end_depth, n))

    def _one(self, key):
        u = self.example_noise(key)
        g = sample_context_graph(u, self.config, 0.0)
        row, plen = prompt_row(g, self.vocab, self.config.max_edges)
        tok, length, meta, _, _ = self.gold(u, g)
        return row, plen, tok, length, meta

    def gold(self, u, g):
        """The gold completion for graph ``g`` (index space) with noise ``u``: a random
        shortest path, with at most one wrong turn into a dead end. Also used by
        ``tasks.pairs`` to write the gold of an edited graph from the same noise. Returns
        (tokens, length, meta, path, column that pushes path[1] onto s)."""
        cfg, C = self.config, self.max_target_len
        n = cfg.n_nodes
        adj = g["adj"]
        path, length = graphs.random_shortest_path(u["path"], adj, g["source"], g["target"])
        edges = length - 1
        can_reach = graphs.distances_to(adj, g["target"]) < graphs.UNREACHABLE
        on_path = jnp.arange(n) < edges  # path[j] for j < edges has a next step
        has_dead_end = (adj[path] & ~can_reach[None, :]).any(axis=1) & on_path
        turn_at, possible = graphs.choice_where(u["where"], has_dead_end)
        wrong_turn = possible & (u["coin"] < cfg.p_mistake)
        dead, depth = self._dead_end_walk(u["walk"], adj, can_reach, path[turn_at], wrong_turn)

        # Segments: path[0..turn_at] | dead end (depth) | <back> x depth | rest of path |
        # <sep> | path | <eos>.  With depth 0 this is path, <sep>, path, <eos>.
        pos = jnp.arange(C)
        dead_start, back_start = turn_at + 1, turn_at + 1 + depth
        rest_start = back_start + depth
        sep = rest_start + edges - turn_at
        lab = g["labels"]
        path_at = lambda j: self.vocab.num(lab[path[jnp.clip(j, 0, n - 1)]])
        dead_tok = self.vocab.num(lab[dead[jnp.clip(pos - dead_start, 0, cfg.dead_end_depth - 1)]])
        tok = jnp.where(pos < dead_start, path_at(pos), PAD)
        tok = jnp.where((pos >= dead_start) & (pos < back_start), dead_tok, tok)
        tok = jnp.where((pos >= back_start) & (pos < rest_start), self.vocab.id("<back>"), tok)
        tok = jnp.where((pos >= rest_start) & (pos < sep), path_at(pos - 2 * depth), tok)
        tok = jnp.where(pos == sep, self.vocab.id("<sep>"), tok)
        tok = jnp.where((pos > sep) & (pos <= sep + length), path_at(pos - sep - 1), tok)
        tok = jnp.where(pos == sep + length + 1, EOS, tok).astype(jnp.int32)
        meta = dict(source=lab[g["source"]], target=lab[g["target"]], distance=edges,
                    n_edges=g["n_edges"], adjacency=label_adjacency(g, cfg.label_range),
                    has_mistake=depth > 0,
                    mistake=(pos >= dead_start) & (pos < back_start),
                    is_back=(pos >= back_start) & (pos < rest_start))
        push_a = 1 + jnp.where(turn_at == 0, 2 * depth, 0)  # after s and any dead end at s
        return tok, sep + length + 2, meta, path, push_a

    def _simulate(self, tokens, adj, s, t):
        """One completion through the stack machine: the reward (module docstring) and the
        counters (:meth:`counters`) in one ``lax.scan``."""
        L, v = tokens.shape[0], self.vocab
        back, sep = v.id("<back>"), v.id("<sep>")
        reaches_t = graphs.transitive_closure(adj)[:, t]

        def step(st, x):
            pos, tok = x
            is_node, node = v.is_num(tok), jnp.clip(v.value(tok), 0, adj.shape[0] - 1)
            depth, top = st["depth"], st["stack"][jnp.maximum(st["depth"] - 1, 0)]
            live = ~st["ended"]
            trace = live & (st["phase"] == 0)
            push = trace & is_node
            pop = trace & (tok == back)
            # reward: legality of each token
            legal_push = jnp.where(pos == 0, node == s, (depth > 0) & adj[top, node])
            legal_trace = jnp.where(is_node, legal_push, jnp.where(tok == back, depth > 0,
                                                                    tok == sep))
            in_answer = live & (st["phase"] == 1)
            written = st["stack"][jnp.clip(st["answered"], 0, L)]
            legal_answer = jnp.where(tok == EOS, st["answered"] == depth,
                                     is_node & (st["answered"] < depth) & (written == node))
            ok = st["ok"] & jnp.where(trace, legal_trace, jnp.where(in_answer, legal_answer, True))
            # counters: a step is a push onto a non-empty stack
            is_step = push & (depth > 0)
            wrong = is_step & ~reaches_t[node]
            has_next = pos + 1 < L
            prev = st["prev"]  # 0 nothing, 1 correct step, 2 mistake step
            c = dict(st["c"])
            c["backtracks"] += pop
            c["steps"] += is_step
            c["mistakes"] += wrong
            c["back_after_mistake"] += pop & (prev == 2)
            c["back_after_correct"] += pop & (prev == 1)
            c["mistake_then_back_opportunities"] += wrong & has_next
            c["correct_then_back_opportunities"] += is_step & ~wrong & has_next
            c["recovered"] |= is_step & st["backed"] & (node == t)
            new = dict(
                stack=jnp.where(push, st["stack"].at[depth].set(node), st["stack"]),
                depth=jnp.where(push, depth + 1, jnp.where(pop, jnp.maximum(depth - 1, 0), depth)),
                ok=ok, answered=st["answered"] + in_answer,
                phase=jnp.where(trace & (tok == sep), 1, st["phase"]),
                ended=st["ended"] | (tok == EOS),
                prev=jnp.where(is_step, jnp.where(wrong, 2, 1), 0),
                backed=st["backed"] | pop, c=c)
            return new, None

        zero = jnp.zeros((), jnp.int32)
        names = ["backtracks", "steps", "mistakes", "back_after_mistake", "back_after_correct",
                 "mistake_then_back_opportunities", "correct_then_back_opportunities"]
        init = dict(stack=jnp.zeros(L + 1, jnp.int32), depth=zero, ok=jnp.array(True),
                    answered=zero, phase=zero, ended=jnp.array(False), prev=zero,
                    backed=jnp.array(False),
                    c={**{k: zero for k in names}, "recovered": jnp.array(False)})
        st, _ = jax.lax.scan(step, init, (jnp.arange(L), tokens))
        stack, depth = st["stack"], st["depth"]
        in_stack = jnp.arange(L + 1) < depth
        repeats = (stack[:, None] == stack[None, :]) & in_stack[:, None] & in_stack[None, :]
        simple = ~jnp.any(repeats & ~jnp.eye(L + 1, dtype=bool))
        final_ok = (depth >= 2) & (stack[jnp.maximum(depth - 1, 0)] == t) & simple
        reward = st["ok"] & st["ended"] & (st["phase"] == 1) & final_ok
        eos_at = jnp.where(st["ended"], jnp.argmax(tokens == EOS), L - 1)
        out = {k: st["c"][k].astype(jnp.float32) for k in names}
        out["recovered"] = st["c"]["recovered"].astype(jnp.float32)
        out["length"] = (eos_at + 1).astype(jnp.float32)
        out["reward"] = reward.astype(jnp.float32)
        return out

    def sample(self, key, n, split="train"):
        """Both splits are i.i.d. draws from the same distribution; the split is folded
        into the key so that one key gives different train and test examples."""
        self._check_sample(n, split)
        key = jax.random.fold_in(key, self.splits.index(split))
        return graphs.jit_sample(type(self), self.config, key, n)

    def _sample(self, key, n):
        rows, plens, targets, tlens, meta = jax.vmap(self._one)(jax.random.split(key, n))
        return Batch(left_pad(rows, plens), plens.astype(jnp.int32), targets,
                     tlens.astype(jnp.int32), meta)

    def reward(self, batch, completions):
        """1 iff the completion is a legal trace and final path (module docstring)."""
        return jit_method(type(self), self.config, "_reward", batch, completions)

    def _reward(self, batch, completions):
        return self._run(batch, completions)["reward"]

    def _run(self, batch, completions):
        c = jnp.asarray(completions, jnp.int32)
        return jax.vmap(self._simulate)(c, batch.meta["adjacency"], batch.meta["source"],
                                        batch.meta["target"])

    def counters(self, batch, completions):
        """Reflection counters, float32[n] each, exact from the prompt's graph.

        The completion is read up to its first ``<eos>`` (the whole row if none); only the
        trace (before the first ``<sep>``) counts. A *step* is a node token pushed onto a
        non-empty stack (whether or not it is an edge); it is a *mistake* when t cannot be
        reached from the node stepped onto. Keys: ``backtracks`` (``<back>`` tokens),
        ``steps``, ``mistakes``, ``back_after_mistake`` / ``back_after_correct``
        (``<back>`` right after a mistake / a correct step), ``mistake_then_back_opportunities``
        / ``correct_then_back_opportunities`` (mistake / correct steps followed by another
        token, the denominators of P(<back> | last step wrong / right)), ``recovered`` (t
        pushed after some ``<back>``), ``length`` (tokens up to and including ``<eos>``; L
        if there is none).
        """
        return jit_method(type(self), self.config, "_counters", batch, completions)

    def _counters(self, batch, completions):
        return {k: v for k, v in self._run(batch, completions).items() if k != "reward"}

    def reference_reward(self, batch, completions):
        prompts = np.asarray(batch.prompts)
        back, sep = self.vocab.id("<back>"), self.vocab.id("<sep>")
        n_spec = len(self.vocab.specials)
        out = np.zeros(len(prompts), np.float32)
        for i, row in enumerate(np.asarray(completions).tolist()):
            end = reference_eos_index(row)
            if end is None or row[:end].count(sep) != 1:
                continue
            edges, s, t = parse_prompt(self.vocab, prompts[i])
            cut = row.index(sep)
            trace, answer = row[:cut], row[cut + 1:end]
            stack, legal = [], bool(trace) and trace[0] == n_spec + s
            for j, tok in enumerate(trace if legal else []):
                if tok == back and stack:
                    stack.pop()
                elif n_spec <= tok < self.vocab.size and (
                        (j == 0 and not stack) or (stack and (stack[-1], tok - n_spec) in edges)):
                    stack.append(tok - n_spec)
                else:
                    legal = False
                    break
            simple = len(set(stack)) == len(stack)
            ok = legal and len(stack) >= 2 and stack[0] == s and stack[-1] == t and simple
            out[i] = ok and answer == [n_spec + v for v in stack]
        return out

    @classmethod
    def curriculum(cls, level: int, **overrides):
        """Level 0..4: 4, 6, 8, 12, 16 nodes; edges capped at 2n."""
        check_int(NAME, "level", level, 0, 4)
        n = (4, 6, 8, 12, 16)[level]
        base = dict(n_nodes=n, max_edges=2 * n, edge_prob=min(1.0, 2.5 / n))
        return cls.Config(**{**base, **overrides})
