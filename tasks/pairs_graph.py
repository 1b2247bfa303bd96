"""Clean/corrupt pairs of the graph tasks, for :func:`tasks.pairs.corrupt_pairs` (whose
module docstring says what each task changes). Each builder returns ``(clean Batch,
corrupt Batch, ok)``; ``tasks.pairs`` turns them into ``CorruptPairs`` and checks them
with the task's own verifier. Builders with a ``candidates`` name draw more examples than
pairs are asked for; ``tasks.pairs`` keeps the first that work.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from tasks import graphs
from tasks.core import EOS, PAD, Batch, left_pad
from tasks.graph_in_context import prompt_row, sample_context_graph
from tasks.path_finding import PathFinding, alpine_data


# --------------------------------------------------------------------------- graph_in_context
def _edit_graph(task, key, prompt, plen, adj, s, t, reachable):
    """One graph_in_context example's edge replacement (module docstring), in label space.
    Returns (corrupt prompt, corrupt adjacency, corrupt target row, whether one exists)."""
    v, E, R = task.vocab, task.config.max_edges, task.config.label_range
    k_cut, k_new, k_any = jax.random.split(key, 3)
    start = task.prompt_len - plen  # the left padding
    n_edges = (plen - 3) // 2
    cols = start + 2 * jnp.arange(E)
    eu = v.value(prompt[jnp.clip(cols, 0, task.prompt_len - 1)])
    ev = v.value(prompt[jnp.clip(cols + 1, 0, task.prompt_len - 1)])
    listed = jnp.arange(E) < n_edges
    eu, ev = jnp.where(listed, eu, 0), jnp.where(listed, ev, 0)
    without = lambda j: adj.at[eu[j], ev[j]].set(False)
    reach_without = jax.vmap(lambda j: graphs.transitive_closure(without(j))[s, t])(jnp.arange(E))
    cut, has_cut = graphs.choice_where(jax.random.uniform(k_cut, (E,)), listed & ~reach_without)
    any_edge, _ = graphs.choice_where(jax.random.uniform(k_any, (E,)), listed)
    j = jnp.where(reachable, cut, any_edge)
    base = without(j)
    # Reachable -> unreachable: a new edge a -> b whose tail s cannot reach adds no s -> t
    # path; nodes are those the prompt names, and the edge must be new and not a loop.
    label = jnp.arange(R)
    named = lambda x: ((label[None, :] == x[:, None]) & listed[:, None]).any(axis=0)
    present = named(eu) | named(ev) | (label == s) | (label == t)
    reach_s = graphs.transitive_closure(base)[s]
    new_ok = (~reach_s & present)[:, None] & present[None, :] & ~base & ~jnp.eye(R, dtype=bool)
    flat, has_new = graphs.choice_where(jax.random.uniform(k_new, (R * R,)), new_ok.reshape(-1))
    a = jnp.where(reachable, flat // R, s)
    b = jnp.where(reachable, flat % R, t)
    prompt = prompt.at[start + 2 * j].set(v.num(a)).at[start + 2 * j + 1].set(v.num(b))
    pos = jnp.arange(task.max_target_len)
    no_path = jnp.where(pos == 0, v.id("<no_path>"), jnp.where(pos == 1, EOS, PAD))
    direct = jnp.where(pos == 0, v.num(s), jnp.where(pos == 1, v.num(t),
                                                      jnp.where(pos == 2, EOS, PAD)))
    target = jnp.where(reachable, no_path, direct).astype(jnp.int32)
    ok = jnp.where(reachable, has_cut & has_new, n_edges >= 1)
    return prompt.astype(jnp.int32), base.at[a, b].set(True), target, ok


def graph_in_context_candidates(task, key, m, split):
    k_batch, k_edit = jax.random.split(key)
    cand = task.sample(k_batch, m, split)
    meta = cand.meta
    prompts, adj, targets, ok = jax.vmap(functools.partial(_edit_graph, task))(
        jax.random.split(k_edit, m), cand.prompts, cand.prompt_lens, meta["adjacency"],
        meta["source"], meta["target"], meta["reachable"])
    reach = ~meta["reachable"]
    corrupt = Batch(prompts, cand.prompt_lens, targets, jnp.where(reach, 3, 2).astype(jnp.int32),
                    {**meta, "adjacency": adj, "reachable": reach,
                     "distance": jnp.where(reach, 1, -1).astype(jnp.int32)})
    return cand, corrupt, ok


# --------------------------------------------------------------------------- graph_search
def _replace_first_edge(task, u_new, g, a):
    """``g`` with its edge s -> a replaced, in the same prompt slot, by a new edge x -> y
    between nodes the prompt names (uniform among those allowed): not a loop, not already
    listed, not s -> a again, keeping t reachable from s and, for a DAG task, acyclic.
    Returns (edited graph, whether such an edge exists)."""
    n, E = task.config.n_nodes, task.config.max_edges
    s, t, idx = g["source"], g["target"], jnp.arange(n)
    base = g["adj"].at[s, a].set(False)
    reach = graphs.transitive_closure(base)  # reach[x, y]: y reachable from x
    present = g["adj"].any(0) | g["adj"].any(1) | (idx == s) | (idx == t)
    new_ok = present[:, None] & present[None, :] & ~base & ~jnp.eye(n, dtype=bool)
    new_ok &= ~((idx[:, None] == s) & (idx[None, :] == a))
    new_ok &= reach[s, t] | (reach[s][:, None] & reach[:, t][None, :])  # s -> x -> y -> t
    if task.config.graph_kind == "dag":
        new_ok &= ~reach.T  # x -> y closes a cycle iff x is reachable from y
    flat, has_new = graphs.choice_where(u_new, new_ok.reshape(-1))
    x, y = flat // n, flat % n
    slot = jnp.argmax((g["edge_u"] == s) & (g["edge_v"] == a) & (jnp.arange(E) < g["n_edges"]))
    edited = {**g, "adj": base.at[x, y].set(True), "edge_u": g["edge_u"].at[slot].set(x),
              "edge_v": g["edge_v"].at[slot].set(y)}
    return edited, has_new


def _search_pair(task, key, key_new):
    """One graph_search candidate (``tasks.pairs`` module docstring): the clean example the
    task draws from ``key``, and its corrupt twin, whose gold reuses the clean noise."""
    u = task.example_noise(key)
    g = sample_context_graph(u, task.config, 0.0)  # as GraphSearch._one does: t reachable
    clean_tok, _, _, path, push_a = task.gold(u, g)
    u_new = jax.random.uniform(key_new, (task.config.n_nodes**2,))
    g2, has_new = _replace_first_edge(task, u_new, g, path[1])
    row, plen = prompt_row(g2, task.vocab, task.config.max_edges)
    tok, length, meta, _, _ = task.gold(u, g2)
    # The golds agree before column push_a, where the clean trace pushes a onto s: the
    # corrupt graph lacks s -> a, so the clean answer there is an illegal push.
    pos = jnp.arange(task.max_target_len)
    same_prefix = jnp.all((clean_tok == tok) | (pos >= push_a))
    return clean_tok, row, plen, (tok, length, meta), has_new & same_prefix


def graph_search_candidates(task, key, m, split):
    """``m`` graph_search candidates: the clean batch ``task.sample`` draws, and per example
    the first edge s -> a of its final path replaced by a new edge (``tasks.pairs`` module
    docstring).

    Why this design. Any trace that reaches t pushes a onto s, so once s -> a is gone the
    clean gold is illegal on the corrupt prompt, while the prompt keeps its length and edge
    slots. Why the clean noise: the corrupt gold is then exactly the completion the task's
    generator writes for the corrupt prompt (a model trained on the task is trained to write
    it), and the golds differ only where the graph change makes them differ: with
    ``p_mistake = 0`` both are shortest paths and the first change is column 1, ``a`` vs the
    corrupt first step. Both golds come from ``GraphSearch.gold``; ``ok`` also requires that
    the clean one equals ``task.sample``'s, so a change to how ``sample`` derives example keys
    fails loudly."""
    k_batch, k_edit = jax.random.split(key)
    clean = task.sample(k_batch, m, split)
    # The example keys of task.sample (split folded in, then split per example).
    keys = jax.random.split(jax.random.fold_in(k_batch, task.splits.index(split)), m)
    gold, rows, plens, (targets, tlens, meta), ok = jax.vmap(
        functools.partial(_search_pair, task))(keys, jax.random.split(k_edit, m))
    ok &= jnp.all(gold == clean.targets, axis=1)  # same example keys as task.sample
    corrupt = Batch(left_pad(rows, plens), plens.astype(jnp.int32), targets,
                    tlens.astype(jnp.int32), meta)
    return clean, corrupt, ok


# --------------------------------------------------------------------------- path_finding
@functools.lru_cache(maxsize=8)
def _path_table(config, split):
    """Gold rows of a path_finding split (as ``task.sample`` draws them) and, per row,
    whether some other row of the split is a partner (module docstring)."""
    task, data = PathFinding(config), alpine_data(config)
    paths = data.train_paths if split == "train" else data.test_paths
    rows = np.full((len(paths), task.max_target_len), PAD, np.int32)
    for i, p in enumerate(paths):
        rows[i, :len(p) + 1] = list(task.vocab.num(np.asarray(p))) + [EOS]
    s, t = np.array([p[0] for p in paths]), np.array([p[-1] for p in paths])
    k = np.array([p[1] for p in paths])
    has_partner = np.zeros(len(paths), bool)
    for src in np.unique(s):  # partner test within each source: [rows_s, rows_s]
        i = np.flatnonzero(s == src)
        ok = ~task.reachability[t[i][:, None], k[i][None, :]]  # k2 cannot reach t1
        ok &= ok.T  # and k1 cannot reach t2 (this excludes t1 == t2)
        has_partner[i] = ok.any(axis=1)
    if not has_partner.any():
        raise ValueError(f"corrupt_pairs: graph/path_finding {task.config} has no two {split} "
                         "rows with the same source whose first steps separate the targets")
    return rows, s, t, k, has_partner


def path_finding_pairs(task, key, n, split):
    rows, s, t, k, has_partner = (jnp.asarray(x) for x in _path_table(task.config, split))
    k_clean, k_partner = jax.random.split(key)
    pick = jnp.argmax(jnp.where(has_partner, jax.random.uniform(k_clean, (n, len(s))), -1.0), 1)
    reach = jnp.asarray(task.reachability)
    partner = ((s[None, :] == s[pick][:, None]) & ~reach[t[pick][:, None], k[None, :]]
               & ~reach[t[None, :], k[pick][:, None]])
    other = jnp.argmax(jnp.where(partner, jax.random.uniform(k_partner, partner.shape), -1.0), 1)

    def batch(idx):
        src, tgt = s[idx].astype(jnp.int32), t[idx].astype(jnp.int32)
        meta = dict(source=src, target=tgt,
                    category=jnp.asarray(task.category)[src, tgt].astype(jnp.int32),
                    degree=jnp.asarray(task.degree)[src, tgt].astype(jnp.int32))
        return Batch(task.vocab.num(jnp.stack([src, tgt], 1)).astype(jnp.int32),
                     jnp.full((n,), 2, jnp.int32), rows[idx],
                     (rows[idx] != PAD).sum(1).astype(jnp.int32), meta)

    return batch(pick), batch(other), partner.any(axis=1)
