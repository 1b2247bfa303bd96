"""Clean/corrupt pairs for activation patching, and per-position latent labels for probes,
emitted from a task's own batches (numpy/jax only: ``toymodels.interp`` turns them into
``PatchPairs`` with ``PatchPairs.from_task_pairs``).

Activation patching (Meng et al. 2022, arXiv 2202.05262; Heimersheim & Nanda 2024, arXiv
2404.15255) needs two inputs that differ in one fact and the answer change that fact causes.
Every sequence here is teacher-forced, ``concat(prompt, gold completion)`` of width
T = P + C. With k the first target index where the clean and corrupt gold completions differ,
the logits at column ``answer_pos = P + k - 1`` predict it: ``clean_answer`` in the clean run,
``corrupt_answer`` in the corrupt one. What each task changes (:func:`corrupt_pairs`):

* ``arith/addition``: one digit of one operand (uniform operand, position and new digit; a
  leading digit stays non-zero), so both numbers keep their length and the sum changes.
* ``arith/parity``: one input bit x_j (uniform j); every running parity from c_j on flips.
* ``graph/graph_in_context``: one listed edge is replaced by another (same prompt length),
  so that the reachability answer flips. A reachable question loses an edge that every
  s -> t path uses and gains an edge out of a node s cannot reach; an unreachable question
  gains the edge s -> t. The first answer token flips between ``s`` and ``<no_path>``
  (``answer_pos = P - 1``); the corrupt gold is ``<no_path>`` or the unique shortest path
  ``s t``. The corrupt graph of a DAG task may contain a cycle.
* ``graph/path_finding`` (one fixed graph): the target token. Clean ``s t1`` and corrupt
  ``s t2`` are rows of the same split whose gold first steps k1, k2 separate the targets:
  k1 cannot reach t2 and k2 cannot reach t1 (ALPINE, arXiv 2405.09220, Algorithm 1: the next
  node must reach the target), so ``answer_pos = 2`` and no next node is right for both.

A pair counts only if the task's own verifier agrees (``changed``): ``task.reward`` gives the
corrupt gold 1 and the clean gold 0 on the corrupt batch. Tasks whose generator may fail to
find a pair (graph_in_context) draw several candidates per pair and keep the first that
works; outside ``jit`` a shortfall is a ``ValueError``, inside it ``changed`` says so.

Latent labels (:func:`latents`): int32[n, T], one per sequence column, -1 where undefined.
The label a column must compute to predict the next token is the next column's label.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from tasks import digits, graphs
from tasks.core import EOS, PAD, Batch, Task, left_pad
from tasks.path_finding import PathFinding, alpine_data

# Candidates drawn per graph_in_context pair: 70-90 % of candidates admit a pair (measured
# on the default DAG and digraph configs), so a shortfall among 4 n is vanishingly rare.
_OVERSAMPLE = 4


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CorruptPairs:
    """Teacher-forced clean and corrupt sequences (module docstring) and their batches."""

    clean: jax.Array  # int32[n, P + C]: prompt then gold completion
    corrupt: jax.Array  # int32[n, P + C]: the same with one fact changed
    valid: jax.Array  # bool[n, P + C]: False on the prompt's left padding (same for both)
    answer_pos: jax.Array  # int32[n]: the column whose logits give the first changed token
    clean_answer: jax.Array  # int32[n]: that token in the clean gold
    corrupt_answer: jax.Array  # int32[n]: and in the corrupt gold
    changed: jax.Array  # bool[n]: the task's verifier confirms the answer change
    clean_batch: Batch
    corrupt_batch: Batch


def corrupt_pairs(task: Task, key: jax.Array, n: int, split: str = "train") -> CorruptPairs:
    """``n`` clean/corrupt pairs of ``task`` (module docstring); same key, same pairs.
    Jit with ``static_argnums=(0, 2, 3)``."""
    if task.name not in _BUILDERS:
        raise ValueError(f"corrupt_pairs: task {task.name!r} is not supported; supported: "
                         f"{', '.join(sorted(_BUILDERS))}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"corrupt_pairs: n={n!r} is not allowed: an integer >= 1")
    task._check_split(split)
    pairs = _jit_pairs(type(task), task.config, key, n, split)
    if not isinstance(pairs.changed, jax.core.Tracer) and not bool(np.all(pairs.changed)):
        raise ValueError(f"corrupt_pairs: only {int(np.sum(pairs.changed))} of {n} pairs of "
                         f"{task.name} change the answer; this config rarely admits a pair "
                         "(e.g. too few edges), or call it under jit and filter on `changed`")
    return pairs


@functools.partial(jax.jit, static_argnums=(0, 1, 3, 4))
def _jit_pairs(task_cls, config, key, n, split):
    """Compiled once per (task, config, n, split) for the process, like ``graphs.jit_sample``
    (eager dispatch op by op costs tens of seconds on CPU); inlined under an outer jit."""
    task = task_cls(config)
    return _BUILDERS[task.name](task, key, n, split)


def _finish(task: Task, clean: Batch, corrupt: Batch, ok) -> CorruptPairs:
    """Sequences, answer column and tokens from two batches; ``changed`` from the verifier."""
    seq = lambda b: jnp.concatenate([b.prompts, b.targets], axis=1).astype(jnp.int32)
    differ = clean.targets != corrupt.targets
    k = jnp.argmax(differ, axis=1)
    at = lambda b: jnp.take_along_axis(b.targets, k[:, None], axis=1)[:, 0]
    changed = (ok & differ.any(axis=1) & (clean.prompt_lens == corrupt.prompt_lens)
               & (task.reward(corrupt, corrupt.targets) == 1)
               & (task.reward(corrupt, clean.targets) == 0))
    valid = jnp.concatenate([clean.prompts != PAD, jnp.ones(clean.targets.shape, bool)], 1)
    return CorruptPairs(seq(clean), seq(corrupt), valid,
                        (task.prompt_len + k - 1).astype(jnp.int32), at(clean), at(corrupt),
                        changed, clean, corrupt)


# --------------------------------------------------------------------------- arithmetic
def _addition_batch(task, a, b, nd) -> Batch:
    """The batch of operands ``a``, ``b`` (digits LSB first, [n, D]) with ``nd`` digits,
    written exactly as ``arith/addition`` writes them (schoolbook, units first)."""
    v, D, n = task.vocab, task.width, a.shape[0]
    carry, out, carries = jnp.zeros((n,), jnp.int32), [], []
    for i in range(D):
        total = a[:, i] + b[:, i] + carry
        out.append(total % 10)
        carry = total // 10
        carries.append(carry)
    sum_digits, carries = jnp.stack(out + [carry], axis=1), jnp.stack(carries, axis=1)
    sum_len = nd + jnp.take_along_axis(carries, (nd - 1)[:, None], axis=1)[:, 0]
    prompt, plen = digits.pack([
        (digits.digits_to_tokens(v, a, nd), nd), digits.const(n, v.id("+")),
        (digits.digits_to_tokens(v, b, nd), nd), digits.const(n, v.id("="))], task.prompt_len)
    answer = digits.digits_to_tokens(v, sum_digits, sum_len, reverse=task.config.reversed_output)
    targets, tlen = digits.pack([(answer, sum_len), digits.const(n, EOS)], task.max_target_len)
    n_carries = jnp.where(jnp.arange(D)[None, :] < nd[:, None], carries, 0).sum(1)
    return Batch(left_pad(prompt, plen), plen, targets, tlen,
                 {"n_carries": n_carries.astype(jnp.int32), "digits": nd, "a_digits": a,
                  "b_digits": b})


def _addition(task, key, n, split):
    k_batch, k_side, k_pos, k_new = jax.random.split(key, 4)
    clean = task.sample(k_batch, n, split)
    ops, nd = jnp.stack([clean.meta["a_digits"], clean.meta["b_digits"]]), clean.meta["digits"]
    side = jax.random.bernoulli(k_side, 0.5, (n,)).astype(jnp.int32)
    pos = jnp.floor(jax.random.uniform(k_pos, (n,)) * nd).astype(jnp.int32)
    rows = jnp.arange(n)
    old = ops[side, rows, pos]
    lowest = ((pos == nd - 1) & (nd > 1)).astype(jnp.int32)  # a leading digit stays >= 1
    new = lowest + jax.random.randint(k_new, (n,), 0, 9 - lowest)  # 9 - lowest alternatives
    new = new + (new >= old)  # skip the old digit: uniform over the others
    ops = ops.at[side, rows, pos].set(new)
    return _finish(task, clean, _addition_batch(task, ops[0], ops[1], nd), True)


def _parity(task, key, n, split):
    k_batch, k_bit = jax.random.split(key)
    clean = task.sample(k_batch, n, split)
    v, d, m = task.vocab, task.config.n_bits, clean.meta
    flip = jax.nn.one_hot(jax.random.randint(k_bit, (n,), 0, d), d, dtype=jnp.int32)
    bits = m["bits"] ^ flip
    running = jnp.cumsum(bits, axis=1) % 2
    offset = 0 if task.config.format == "tsilivis" else 1  # the <parity> token comes first
    prompts = clean.prompts.at[:, offset:offset + d].set(v.num(bits))
    # The corrupt gold keeps the clean mode (long or short): only the bit values change.
    is_num = v.is_num(clean.targets)
    long_values = jnp.pad(running, ((0, 0), (0, 1)))
    values = jnp.where(m["is_long"][:, None], long_values, running[:, -1:])
    targets = jnp.where(is_num, v.num(values), clean.targets).astype(jnp.int32)
    corrupt = Batch(prompts, clean.prompt_lens, targets, clean.target_lens,
                    {**m, "bits": bits, "running": running, "answer": running[:, -1]})
    return _finish(task, clean, corrupt, True)


# --------------------------------------------------------------------------- graphs
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


def _graph_in_context(task, key, n, split):
    k_batch, k_edit = jax.random.split(key)
    m = n * _OVERSAMPLE
    cand = task.sample(k_batch, m, split)
    meta = cand.meta
    prompts, adj, targets, ok = jax.vmap(functools.partial(_edit_graph, task))(
        jax.random.split(k_edit, m), cand.prompts, cand.prompt_lens, meta["adjacency"],
        meta["source"], meta["target"], meta["reachable"])
    reach = ~meta["reachable"]
    corrupt = Batch(prompts, cand.prompt_lens, targets, jnp.where(reach, 3, 2).astype(jnp.int32),
                    {**meta, "adjacency": adj, "reachable": reach,
                     "distance": jnp.where(reach, 1, -1).astype(jnp.int32)})
    pairs = _finish(task, cand, corrupt, ok)
    keep = jnp.argsort(~pairs.changed, stable=True)[:n]  # the first n that work, in order
    return jax.tree.map(lambda x: x[keep], pairs)


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


def _path_finding(task, key, n, split):
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

    return _finish(task, batch(pick), batch(other), partner.any(axis=1))


_BUILDERS = {"arith/addition": _addition, "arith/parity": _parity,
             "graph/graph_in_context": _graph_in_context, "graph/path_finding": _path_finding}


# --------------------------------------------------------------------------- latents
def latents(task: Task, batch: Batch) -> dict[str, jax.Array]:
    """Latent labels per column of ``concat(batch.prompts, batch.targets)``, each int32[n,
    P + C], -1 where undefined (prompt columns, specials, padding):

    * arith/parity, ``running_parity``: c_t = x_1 xor ... xor x_t at the column of the input
      bit x_t and at the column of the chain-of-thought token c_t (short chain: c_d).
    * arith/addition, ``carry``: at the column of the sum digit s_k, the carry into it,
      c_{k-1} (c_{-1} = 0), where a_k + b_k + c_{k-1} = s_k + 10 c_k.
    * graph/graph_in_context, graph/graph_search, graph/path_finding, ``current_node``: the
      node a completion column writes; in a graph_search trace, the top of the depth-first
      stack after the column's token (a ``<back>`` column holds the node returned to).
      ``distance_to_target``: edges on a shortest path from the current node to the target
      (-1 where there is none).
    """
    if task.name not in _LATENTS:
        raise ValueError(f"latents: task {task.name!r} is not supported; supported: "
                         f"{', '.join(sorted(_LATENTS))}")
    return _jit_latents(type(task), task.config, batch)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _jit_latents(task_cls, config, batch):
    task = task_cls(config)
    return {name: lab.astype(jnp.int32) for name, lab in _LATENTS[task.name](task, batch).items()}


def _after_prompt(batch, target_labels):
    """Full-width labels: -1 on the prompt columns, then the completion's labels."""
    return jnp.concatenate([jnp.full(batch.prompts.shape, -1, jnp.int32),
                            target_labels.astype(jnp.int32)], axis=1)


def _parity_latents(task, batch):
    v, d, n = task.vocab, task.config.n_bits, batch.n
    offset = 0 if task.config.format == "tsilivis" else 1
    prompt = jnp.full((n, task.prompt_len), -1, jnp.int32)
    prompt = prompt.at[:, offset:offset + d].set(batch.meta["running"])
    target = jnp.where(v.is_num(batch.targets), v.value(batch.targets), -1)  # the token is c_t
    return {"running_parity": jnp.concatenate([prompt, target], axis=1)}


def _addition_latents(task, batch):
    a, b = batch.meta["a_digits"], batch.meta["b_digits"]
    carry, carry_in = jnp.zeros(batch.n, jnp.int32), []
    for i in range(task.width + 1):  # carry_in[k] = c_{k-1}: the sum has up to D + 1 digits
        carry_in.append(carry)
        if i < task.width:
            carry = (a[:, i] + b[:, i] + carry) // 10
    carry_in = jnp.stack(carry_in, axis=1)
    sum_len = batch.target_lens[:, None] - 1
    col = jnp.arange(task.max_target_len)[None, :]
    k = col if task.config.reversed_output else sum_len - 1 - col  # the digit at this column
    got = jnp.take_along_axis(carry_in, jnp.clip(k, 0, task.width), axis=1)
    return {"carry": _after_prompt(batch, jnp.where(col < sum_len, got, -1))}


def _trace_nodes(task, targets):
    """graph_search: the node each completion column stands on (stack top in the trace,
    the written node in the final path), -1 elsewhere."""
    v = task.vocab
    back, sep = v.id("<back>"), v.id("<sep>")

    def step(state, tok):
        stack, depth, in_answer = state
        is_node = v.is_num(tok)
        push, pop = ~in_answer & is_node, ~in_answer & (tok == back) & (depth > 0)
        stack = jnp.where(push, stack.at[depth].set(v.value(tok)), stack)
        depth = depth + push - pop
        top = jnp.where(depth > 0, stack[jnp.maximum(depth - 1, 0)], -1)
        node = jnp.where(push | pop, top, jnp.where(in_answer & is_node, v.value(tok), -1))
        return (stack, depth, in_answer | (tok == sep)), node

    def one(row):
        init = (jnp.zeros(row.shape[0] + 1, jnp.int32), jnp.int32(0), jnp.array(False))
        return jax.lax.scan(step, init, row)[1]

    return jax.vmap(one)(targets)


def _graph_latents(task, batch):
    v = task.vocab
    if task.name == "graph/graph_search":
        node = _trace_nodes(task, batch.targets)
    else:
        node = jnp.where(v.is_num(batch.targets), v.value(batch.targets), -1)
    adj = (jnp.broadcast_to(jnp.asarray(task.adjacency), (batch.n, *task.adjacency.shape))
           if task.name == "graph/path_finding" else batch.meta["adjacency"])
    dist = jax.vmap(graphs.distances_to)(adj, batch.meta["target"])  # [n, nodes]
    d = jnp.take_along_axis(dist, jnp.maximum(node, 0), axis=1)
    d = jnp.where((node >= 0) & (d < graphs.UNREACHABLE), d, -1)
    return {"current_node": _after_prompt(batch, node),
            "distance_to_target": _after_prompt(batch, d)}


_LATENTS = {"arith/parity": _parity_latents, "arith/addition": _addition_latents,
            "graph/graph_in_context": _graph_latents, "graph/graph_search": _graph_latents,
            "graph/path_finding": _graph_latents}
