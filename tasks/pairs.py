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
* ``graph/graph_search``: the first edge s -> a of the clean final path is replaced, in its
  prompt slot, by a new edge x -> y (uniform among the allowed ones: both nodes named in
  the prompt, not a loop, not already listed, not s -> a, t still reachable from s, and for
  a DAG task no cycle). The corrupt gold is the trace the task's own generator writes for
  the corrupt graph with the clean example's noise (same shortest-path tie-breaks, same
  wrong-turn coin and walk), so with ``p_mistake = 0`` both golds are clean shortest-path
  traces. A pair is kept only if the two golds agree before the column where the clean
  trace pushes a onto s (column 1, or after its dead end at s): there the corrupt graph
  lacks s -> a, so the clean answer ``a`` is an illegal push and the corrupt answer is
  another node out of s. Always true with ``p_mistake = 0``; with a wrong turn at s it
  needs the corrupt trace to take the same one (1 candidate in 3 on the default config
  with ``p_mistake = 1``, seed 0), so such pairs are under-represented.
* ``graph/path_finding`` (one fixed graph): the target token. Clean ``s t1`` and corrupt
  ``s t2`` are rows of the same split whose gold first steps k1, k2 separate the targets:
  k1 cannot reach t2 and k2 cannot reach t1 (ALPINE, arXiv 2405.09220, Algorithm 1: the next
  node must reach the target), so ``answer_pos = 2`` and no next node is right for both.

A pair counts only if the task's own verifier agrees (``changed``): ``task.reward`` gives the
corrupt gold 1 and the clean gold 0 on the corrupt batch. Tasks whose generator may fail to
find a pair (graph_in_context, graph_search) draw several candidates per pair and keep the
first that works; outside ``jit`` a shortfall is a ``ValueError``, inside it ``changed`` says so.

Latent labels (:func:`latents`): int32[n, T], one per sequence column, -1 where undefined.
The label a column must compute to predict the next token is the next column's label.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from tasks import digits, graphs, pairs_graph
from tasks.addition import schoolbook
from tasks.core import EOS, PAD, Batch, Task, left_pad

# Candidates drawn per pair. 70-90 % of graph_in_context candidates admit a pair (default
# DAG and digraph configs); 50-97 % of graph_search ones (default DAG and digraph configs,
# p_mistake 0, 0.5 and 1, the tests' 6-node configs; keys 0, 1000, 2000, 6660000, both
# splits, 512 candidates each) and 46-95 % on its curriculum levels 0-4 (keys 0 and 1000;
# the 4-node DAG of level 0 is lowest). A shortfall, (1 - p)^m for n = 1, is under 1 % and
# falls fast with n.
_OVERSAMPLE = {"graph/graph_in_context": 4, "graph/graph_search": 8}


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
    sum_digits, carries = schoolbook(a, b)
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
def _oversampled(candidates):
    """A builder from a candidate generator (``tasks.pairs_graph``): ``_OVERSAMPLE`` n
    candidates, the first n whose pair works, in order."""

    def build(task, key, n, split):
        pairs = _finish(task, *candidates(task, key, n * _OVERSAMPLE[task.name], split))
        keep = jnp.argsort(~pairs.changed, stable=True)[:n]
        return jax.tree.map(lambda x: x[keep], pairs)
    return build


def _path_finding(task, key, n, split):
    return _finish(task, *pairs_graph.path_finding_pairs(task, key, n, split))


_BUILDERS = {"arith/addition": _addition, "arith/parity": _parity,
             "graph/graph_in_context": _oversampled(pairs_graph.graph_in_context_candidates),
             "graph/graph_search": _oversampled(pairs_graph.graph_search_candidates),
             "graph/path_finding": _path_finding}


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
    # carry_in[k] = c_{k-1} (c_{-1} = 0) for k = 0 .. D: the sum has up to D + 1 digits
    carry_in = jnp.pad(schoolbook(a, b)[1], ((0, 0), (1, 0)))
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
