"""Clean/corrupt pairs and latent labels emitted by the task generators (tasks/pairs.py),
checked against independent pure-Python readings of the decoded tokens, then used end to
end: patching the compiled ALPINE circuit (arXiv 2405.09220) with emitted target-change
pairs, and probing the compiled iteration head (arXiv 2406.02128) for running parity.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tasks
from tasks.core import EOS, PAD
from tasks.pairs import corrupt_pairs, latents
from theory.circuits import alpine, iteration_head
from toymodels.interp import PatchPairs, fit_probe, load_weights, patch_sweep, run_with_cache
from toymodels.interp.probes import labelled_rows

KEY = jax.random.key(0)
N = 16
# One small config per task, shared by its pair and latent tests (one compile each).
CONFIGS = {
    "arith/addition": dict(digits=2),
    "arith/parity": dict(n_bits=6, p_long=0.5),
    "graph/graph_in_context": dict(n_nodes=6, label_range=8, max_edges=8, edge_prob=0.4),
    "graph/path_finding": dict(n_nodes=12, edge_prob=0.3, paths_per_pair=2, graph_seed=1),
}
_CACHE = {}


def emitted(name):
    """(task, corrupt_pairs(task, KEY, N)) for the task's test config, built once."""
    if name not in _CACHE:
        task = tasks.make(name, **CONFIGS[name])
        _CACHE[name] = task, corrupt_pairs(task, KEY, N)
    return _CACHE[name]


# ------------------------------------------------------------------ pure-Python helpers
def words(task, row):
    return task.vocab.decode(row).split()


def gold(task, seq) -> list:
    """The completion tokens of a teacher-forced row, up to and including <eos>."""
    tail = [int(x) for x in np.asarray(seq)[task.prompt_len:]]
    return tail[:tail.index(EOS) + 1]


def reach(edges, a, b) -> bool:
    """b reachable from a along the directed ``edges`` (breadth-first, a reaches itself)."""
    seen, frontier = {a}, [a]
    while frontier:
        frontier = [y for x in frontier for (u, y) in edges if u == x and y not in seen]
        seen.update(frontier)
    return b in seen


def dist(edges, a, b):
    """Edges on a shortest a -> b path, or None."""
    level, seen, d = {a}, {a}, 0
    while level:
        if b in level:
            return d
        level = {y for (u, y) in edges if u in level} - seen
        seen |= level
        d += 1
    return None


def check_answer_fields(task, pairs, i, clean_gold, corrupt_gold):
    """The rows hold the given golds, and answer_pos / answers point at their first
    difference k: the logits at column P + k - 1 predict completion token k."""
    assert gold(task, pairs.clean[i]) == clean_gold
    assert gold(task, pairs.corrupt[i]) == corrupt_gold
    width = task.max_target_len
    a, b = (g + [PAD] * (width - len(g)) for g in (clean_gold, corrupt_gold))
    k = next(j for j in range(width) if a[j] != b[j])
    assert int(pairs.answer_pos[i]) == task.prompt_len + k - 1
    assert (int(pairs.clean_answer[i]), int(pairs.corrupt_answer[i])) == (a[k], b[k])


def operands(task, prompt) -> list[str]:
    """The two operands of ``a + b =`` as decimal strings."""
    return "".join(words(task, prompt)).rstrip("=").split("+")


def num_tokens(task, values):
    return [int(task.vocab.num(v)) for v in values]


# ------------------------------------------------------------------ pairs, one task each
def test_addition_pairs_change_one_digit_of_one_operand_and_the_sum():
    task, pairs = emitted("arith/addition")
    assert bool(pairs.changed.all())
    for i in range(N):
        (a, b), (a2, b2) = (operands(task, row[:task.prompt_len])
                            for row in (pairs.clean[i], pairs.corrupt[i]))
        assert (len(a), len(b)) == (len(a2), len(b2))  # same numbers of digits
        assert sum(x != y for x, y in zip(a + b, a2 + b2, strict=True)) == 1  # one digit
        assert all(len(x) == 1 or x[0] != "0" for x in (a2, b2))  # no leading zero
        assert int(a) + int(b) != int(a2) + int(b2)
        sum_tokens = lambda x, y: num_tokens(task, map(int, str(int(x) + int(y)))) + [EOS]
        check_answer_fields(task, pairs, i, sum_tokens(a, b), sum_tokens(a2, b2))
    np.testing.assert_array_equal(pairs.valid, np.concatenate(
        [pairs.clean_batch.prompts != PAD, np.ones(pairs.clean_batch.targets.shape, bool)], 1))
    ones = np.ones(N, np.float32)
    np.testing.assert_array_equal(task.reference_reward(pairs.corrupt_batch,
                                                        pairs.corrupt_batch.targets), ones)


def test_parity_pairs_flip_one_bit_and_every_running_parity_after_it():
    task, pairs = emitted("arith/parity")
    modes = set()
    for i in range(N):
        bits, bits2 = ([int(w) for w in words(task, row[:task.prompt_len]) if w in "01"]
                       for row in (pairs.clean[i], pairs.corrupt[i]))
        assert sum(x != y for x, y in zip(bits, bits2, strict=True)) == 1
        long = len(gold(task, pairs.clean[i])) == len(bits) + 1  # c_1 .. c_d <eos>
        modes.add(long)
        chains = [[sum(xs[:t + 1]) % 2 for t in range(len(xs))] if long else [sum(xs) % 2]
                  for xs in (bits, bits2)]
        check_answer_fields(task, pairs, i, *(num_tokens(task, c) + [EOS] for c in chains))
    assert modes == {True, False}  # both demonstration lengths are exercised


def test_graph_in_context_pairs_replace_one_edge_and_flip_reachability():
    task, pairs = emitted("graph/graph_in_context")
    no_path, kinds = task.vocab.id("<no_path>"), set()
    for i in range(N):
        (edges, s, t), (edges2, s2, t2) = (
            parse(task, row[:task.prompt_len]) for row in (pairs.clean[i], pairs.corrupt[i]))
        assert (s, t) == (s2, t2) and len(edges) == len(edges2)
        assert sum(e != f for e, f in zip(edges, edges2, strict=True)) == 1  # one edge
        was = reach(set(edges), s, t)
        assert reach(set(edges2), s, t) != was
        kinds.add(was)
        clean_gold = gold(task, pairs.clean[i])
        if was:  # the clean gold is a shortest path of the clean graph
            path = [task.vocab.value(x) for x in clean_gold[:-1]]
            assert path[0] == s and path[-1] == t and len(path) - 1 == dist(set(edges), s, t)
            assert all((x, y) in set(edges) for x, y in zip(path, path[1:], strict=False))
            corrupt_gold = [no_path, EOS]
        else:  # the corrupt graph has the edge s -> t: the unique shortest path is "s t"
            assert clean_gold == [no_path, EOS]
            corrupt_gold = num_tokens(task, [s, t]) + [EOS]
        check_answer_fields(task, pairs, i, clean_gold, corrupt_gold)
    assert kinds == {True, False}  # both directions of the flip are emitted


def parse(task, prompt):
    """Edges in prompt order, source, target (pure Python, ``u v ... <q> s t``)."""
    w = words(task, prompt)
    q = w.index("<q>")
    vals = [int(x) for x in w[:q]]
    return list(zip(vals[::2], vals[1::2], strict=True)), int(w[q + 1]), int(w[q + 2])


def test_path_finding_pairs_change_the_target_so_no_first_step_serves_both():
    task, pairs = emitted("graph/path_finding")
    edges = set(zip(*np.nonzero(task.adjacency), strict=True))
    for i in range(N):
        (s, t1), (s2, t2) = (task.vocab.value(np.asarray(r[:2])).tolist()
                             for r in (pairs.clean[i], pairs.corrupt[i]))
        assert s == s2 and t1 != t2
        path1, path2 = ([task.vocab.value(x) for x in gold(task, r)[:-1]]
                        for r in (pairs.clean[i], pairs.corrupt[i]))
        for path, t in ((path1, t1), (path2, t2)):
            assert path[0] == s and path[-1] == t
            assert all((x, y) in edges for x, y in zip(path, path[1:], strict=False))
        k1, k2 = path1[1], path2[1]
        assert not reach(edges, k1, t2) and not reach(edges, k2, t1)
        assert int(pairs.answer_pos[i]) == 2  # column 2 holds s and predicts the first step


# graph_search: two configs, 64 pairs for each of two keys and both splits (one compile
# per config and split). The DAG one always walks into a dead end where one exists.
SEARCH_CONFIGS = {
    "dag, p_mistake=1": dict(CONFIGS["graph/graph_in_context"], p_mistake=1.0),
    "digraph, p_mistake=0": dict(CONFIGS["graph/graph_in_context"], graph_kind="digraph",
                                 p_mistake=0.0),
}
SEARCH_N = 64


def search_pairs(label, seed, split):
    """(task, corrupt_pairs(task, key(seed), 64, split)) for a graph_search config, once."""
    if (label, seed, split) not in _CACHE:
        task = tasks.make("graph/graph_search", **SEARCH_CONFIGS[label])
        pairs = corrupt_pairs(task, jax.random.key(seed), SEARCH_N, split)
        _CACHE[label, seed, split] = task, pairs
    return _CACHE[label, seed, split]


def run_stack(edges, s, words_):
    """The trace's stack machine (graph_search module docstring, rule 2); None if illegal."""
    stack = []
    for j, w in enumerate(words_):
        if w == "<back>" and stack:
            stack.pop()
        elif w.isdigit() and (int(w) == s if j == 0 else stack and (stack[-1], int(w)) in edges):
            stack.append(int(w))
        else:
            return None
    return stack


def follows_search_rules(edges, s, t, completion, p_mistake, max_depth) -> bool:
    """The completion is a gold graph_search trace for this graph (module docstring): a
    legal trace whose final stack, written after <sep>, is a shortest s -> t path; at most
    one excursion into nodes that cannot reach t, walked onto new nodes until max_depth
    steps or no further such node, and backed out with as many <back>; with p_mistake 0
    never one, with p_mistake 1 one whenever a path node before t has such a neighbour."""
    w = completion
    if w.count("<sep>") != 1 or w[-1] != "<eos>" or w.count("<eos>") != 1:
        return False
    cut = w.index("<sep>")
    trace, answer = w[:cut], w[cut + 1:-1]
    stack = run_stack(edges, s, trace)
    if stack is None or [str(x) for x in stack] != answer:
        return False
    if stack[-1] != t or len(set(stack)) != len(stack) or len(stack) - 1 != dist(edges, s, t):
        return False
    dead = lambda x: not reach(edges, x, t)
    backs = trace.count("<back>")
    if backs == 0:
        tempted = any(dead(y) for x in stack[:-1] for (u, y) in edges if u == x)
        return trace == [str(x) for x in stack] and not (p_mistake == 1 and tempted)
    if p_mistake == 0:
        return False
    first = trace.index("<back>")
    walk = [int(x) for x in trace[first - backs:first]]
    turn = trace[:first - backs]
    last_dead_options = {y for (u, y) in edges if u == walk[-1] and dead(y)} - set(walk)
    return (backs <= max_depth and trace[first:first + backs] == ["<back>"] * backs
            and trace[:first - backs] + trace[first + backs:] == [str(x) for x in stack]
            and all(dead(x) for x in walk) and len(set(walk)) == len(walk)
            and (int(turn[-1]), walk[0]) in edges
            and (backs == max_depth or not last_dead_options))


def acyclic(edges) -> bool:
    return not any(reach(edges, b, a) for (a, b) in edges)


@pytest.mark.parametrize("label", SEARCH_CONFIGS)
def test_graph_search_pairs_replace_the_first_path_edge_and_redo_the_gold_trace(label):
    """Clean and corrupt prompts differ in one edge slot: the clean final path's first edge
    s -> a becomes a new edge. Both golds follow the generator's rules on their own graph;
    the clean final path is no path of the corrupt graph. The golds first differ where the
    clean trace pushes a onto s: the clean answer is a, an illegal push there."""
    for seed in (0, 1):
        for split in ("train", "test"):
            task, pairs = search_pairs(label, seed, split)
            assert bool(pairs.changed.all())
            for i in range(SEARCH_N):
                check_search_pair(task, SEARCH_CONFIGS[label], pairs, i)


def check_search_pair(task, cfg, pairs, i):
    (edges, s, t), (edges2, s2, t2) = (parse(task, row[:task.prompt_len])
                                       for row in (pairs.clean[i], pairs.corrupt[i]))
    assert (s, t) == (s2, t2) and len(edges) == len(edges2)
    assert pairs.clean_batch.prompt_lens[i] == pairs.corrupt_batch.prompt_lens[i]
    slots = [j for j, (e, f) in enumerate(zip(edges, edges2, strict=True)) if e != f]
    assert len(slots) == 1  # one edge, in the same slot
    old, new = edges[slots[0]], edges2[slots[0]]
    named = {x for e in edges for x in e} | {s, t}
    assert new not in edges and new[0] != new[1] and set(new) <= named
    if cfg.get("graph_kind", "dag") == "dag":
        assert acyclic(set(edges2))
    clean_w, corrupt_w = (words(task, gold(task, r)) for r in (pairs.clean[i], pairs.corrupt[i]))
    for e, w in ((set(edges), clean_w), (set(edges2), corrupt_w)):
        assert follows_search_rules(e, s, t, w, cfg["p_mistake"], task.config.dead_end_depth)
    clean_path = [int(x) for x in clean_w[clean_w.index("<sep>") + 1:-1]]
    assert old == (s, clean_path[1])
    assert not all(e in set(edges2) for e in zip(clean_path, clean_path[1:], strict=False))
    check_answer_fields(task, pairs, i, gold(task, pairs.clean[i]), gold(task, pairs.corrupt[i]))
    k = int(pairs.answer_pos[i]) - task.prompt_len + 1
    assert run_stack(set(edges2), s, clean_w[:k]) == [s]  # shared prefix, top of stack s
    assert clean_w[k] == str(clean_path[1])
    if cfg["p_mistake"] == 0:
        assert k == 1


def test_graph_search_pairs_are_jittable_and_rare_configs_raise():
    task, eager = search_pairs("dag, p_mistake=1", 0, "train")
    jitted = jax.jit(corrupt_pairs, static_argnums=(0, 2, 3))(task, KEY, SEARCH_N, "train")
    for x, y in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_array_equal(x, y)
    # Two nodes, one edge s -> t: no other edge can keep t reachable, so no pair exists.
    tiny = tasks.make("graph/graph_search", n_nodes=2, label_range=2, max_edges=1)
    with pytest.raises(ValueError, match="only 0 of 4 pairs of graph/graph_search"):
        corrupt_pairs(tiny, KEY, 4)


def test_pairs_are_deterministic_jittable_and_reject_bad_input():
    task, eager = emitted("arith/parity")
    again = corrupt_pairs(task, KEY, N)
    jitted = jax.jit(corrupt_pairs, static_argnums=(0, 2, 3))(task, KEY, N, "train")
    for x, y, z in zip(jax.tree.leaves(eager), jax.tree.leaves(again), jax.tree.leaves(jitted),
                       strict=True):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
    other = corrupt_pairs(task, jax.random.key(1), N)
    assert not np.array_equal(eager.corrupt, other.corrupt)
    with pytest.raises(ValueError, match="supported: arith/addition, arith/parity, graph/"
                                         "graph_in_context, graph/graph_search, graph/path"):
        corrupt_pairs(tasks.make("seq/copy"), KEY, 4)
    with pytest.raises(ValueError, match="n=0"):
        corrupt_pairs(task, KEY, 0)
    with pytest.raises(ValueError, match="split"):
        corrupt_pairs(task, KEY, 4, "valid")
    # This graph's test split (shortest-path golds) has no two rows whose first steps
    # separate their targets: a clear error, not silent unchanged pairs.
    path_task, _ = emitted("graph/path_finding")
    with pytest.raises(ValueError, match="no two test rows"):
        corrupt_pairs(path_task, KEY, 4, "test")
    with pytest.raises(ValueError, match="latents: task 'seq/copy'"):
        latents(tasks.make("seq/copy"), eager.clean_batch)


# ------------------------------------------------------------------ latent labels
def emitted_batches(name):
    """The clean and the corrupt batch of the task's emitted pairs."""
    task, pairs = emitted(name)
    return task, (pairs.clean_batch, pairs.corrupt_batch)


def test_running_parity_labels_match_prefix_parities():
    task, batches = emitted_batches("arith/parity")
    for batch in batches:
        got = np.asarray(latents(task, batch)["running_parity"])
        for i in range(N):
            bits = [int(w) for w in words(task, batch.prompts[i])[:6]]  # "x1 .. x6 <sep>"
            prefix = [sum(bits[:t + 1]) % 2 for t in range(6)]
            chain = prefix if int(batch.target_lens[i]) == 7 else prefix[-1:]  # long, short
            want = prefix + [-1] + chain + [-1] * (task.max_target_len - len(chain))
            assert got[i].tolist() == want


@pytest.mark.parametrize("reversed_output", [False, True])
def test_carry_labels_are_the_carry_into_each_sum_digit(reversed_output):
    """Carry into digit k (units = 0) is 1 iff the low k digits of a and b overflow:
    (a mod 10^k) + (b mod 10^k) >= 10^k."""
    task, batches = emitted_batches("arith/addition")
    if reversed_output:  # the same examples with the sum written units first
        task = tasks.make("arith/addition", **CONFIGS["arith/addition"], reversed_output=True)
        batches = [dataclasses.replace(b, targets=jnp.asarray(
            [reversed_sum(row) for row in np.asarray(b.targets)])) for b in batches]
    for batch in batches:
        got = np.asarray(latents(task, batch)["carry"])
        for i in range(N):
            a, b = operands(task, batch.prompts[i])
            a, b, total = int(a), int(b), str(int(a) + int(b))
            carry_in = [int(a % 10**k + b % 10**k >= 10**k) for k in range(len(total))]
            want = carry_in if reversed_output else carry_in[::-1]  # column order of digits
            want = [-1] * task.prompt_len + want + [-1] * (task.max_target_len - len(want))
            assert got[i].tolist() == want
            assert sum(carry_in) == int(batch.meta["n_carries"][i])  # the generator agrees


def reversed_sum(row) -> list:
    """A completion ``s_m .. s_0 <eos> <pad>..`` written as ``s_0 .. s_m <eos> <pad>..``."""
    row = list(row)
    end = row.index(EOS)
    return row[:end][::-1] + row[end:]


def stack_nodes(task, completion):
    """The node each completion column stands on, None elsewhere (pure Python): the written
    node; in a graph_search trace the top of the stack after the token."""
    out, stack, after_sep = [], [], False
    for w in task.vocab.decode(completion, strip_pad=False).split():
        if w == "<sep>":
            after_sep = True
            out.append(None)
        elif after_sep:
            out.append(int(w) if w.isdigit() else None)
        elif w == "<back>":
            stack.pop()
            out.append(stack[-1])
        elif w.isdigit():
            stack.append(int(w))
            out.append(int(w))
        else:
            out.append(None)
    return out


@pytest.mark.parametrize("name", ["graph/graph_search", "graph/graph_in_context",
                                  "graph/path_finding"])
def test_current_node_and_distance_labels_follow_the_completion(name):
    if name == "graph/graph_search":  # every gold trace walks into a dead end and back
        task = tasks.make(name, **CONFIGS["graph/graph_in_context"], p_mistake=1.0)
        corrupt = search_pairs("dag, p_mistake=1", 0, "train")[1].corrupt_batch
        batches = [task.sample(KEY, N), corrupt]  # the corrupt meta matches its prompt
    else:
        task, batches = emitted_batches(name)
    for batch in batches:
        lab = {k: np.asarray(v) for k, v in latents(task, batch).items()}
        for i in range(N):
            if name == "graph/path_finding":  # one fixed graph; the prompt is "s t"
                edges = set(zip(*np.nonzero(task.adjacency), strict=True))
                t = int(task.vocab.value(batch.prompts[i, 1]))
            else:
                edges, _, t = parse(task, batch.prompts[i])
            nodes = [None] * task.prompt_len + stack_nodes(task, batch.targets[i])
            assert lab["current_node"][i].tolist() == [-1 if u is None else u for u in nodes]
            dists = [None if u is None else dist(set(edges), u, t) for u in nodes]
            assert lab["distance_to_target"][i].tolist() == [
                -1 if d is None else d for d in dists]
    if name == "graph/graph_search":  # dead ends exist: some column's node cannot reach t
        assert ((lab["current_node"] >= 0) & (lab["distance_to_target"] < 0)).any()


# ------------------------------------------------------------------ end to end
def test_patching_alpine_with_emitted_target_pairs_restores_at_the_target_token():
    """ALPINE's Theorem 2 circuit: next-node logits = A[u] + R[t], with t read by the head
    from column 1. Clean s t1 s.. vs corrupt s t2 s..: the answer at column 2 depends on the
    target only, so restoring column 1 (any layer's residual input) restores all of it,
    every other column none; per head, only the head's output at the answer column."""
    task = tasks.make("graph/path_finding", **CONFIGS["graph/path_finding"])
    g, p = load_weights(*alpine.build(task.adjacency, task.reachability))
    pairs = PatchPairs.from_task_pairs(corrupt_pairs(task, KEY, 32))
    resid = patch_sweep(g, p, pairs, site="resid_pre")
    expected = np.zeros((1, pairs.clean.shape[1]))
    expected[0, 1] = 1.0
    np.testing.assert_allclose(resid.scores, expected, atol=1e-4)
    # logit diff: clean k1 scores A + R = 2 against k2's A = 1; corrupt the reverse.
    assert resid.clean == pytest.approx(1.0, abs=1e-4)
    assert resid.corrupt == pytest.approx(-1.0, abs=1e-4)
    heads = patch_sweep(g, p, pairs, site="attn.z")
    expected = np.zeros((1, 1, pairs.clean.shape[1]))
    expected[0, 0, 2] = 1.0
    np.testing.assert_allclose(heads.scores, expected, atol=1e-4)


def test_probe_reads_emitted_running_parity_from_the_iteration_head():
    """The layer-2 MLP writes c_t at the column that predicts it (accuracy 1; shuffled labels
    about 0.5); before that MLP the residual holds c_{t-1} and x_t, whose XOR is not linear
    in them (at most 0.75)."""
    task = tasks.make("arith/parity", n_bits=8, p_long=1.0, format="iteration_head")
    g, p = load_weights(*iteration_head.build(8))
    batch = task.sample(KEY, 128)
    labels = np.asarray(latents(task, batch)["running_parity"]).copy()
    labels[:, :task.prompt_len] = -1  # the chain of thought only: columns that predict c_t
    seqs = jnp.concatenate([batch.prompts, batch.targets], axis=1)
    _, cache = run_with_cache(g, p, seqs, names=("blocks.1.resid_mid", "blocks.1.resid_post"))
    x, y = labelled_rows(cache["blocks.1.resid_post"], labels, shift=1)
    assert len(y) == 128 * 8
    probe = fit_probe(x, y, key=KEY)
    assert probe.test_acc > 0.99 and probe.control_acc < 0.6
    before, y_before = labelled_rows(cache["blocks.1.resid_mid"], labels, shift=1)
    assert fit_probe(before, y_before, key=KEY).test_acc < 0.8  # the probe can fail
    with pytest.raises(ValueError, match="shift"):
        labelled_rows(cache["blocks.1.resid_post"], labels, shift=-1)


def test_patch_pairs_from_task_pairs_keep_only_pairs_that_change_the_answer():
    _, pairs = emitted("arith/parity")
    flags = np.arange(N) % 2 == 0  # as if half had failed under jit
    kept = PatchPairs.from_task_pairs(dataclasses.replace(pairs, changed=jnp.asarray(flags)))
    np.testing.assert_array_equal(kept.corrupt, np.asarray(pairs.corrupt)[flags])
    np.testing.assert_array_equal(kept.answer_pos, np.asarray(pairs.answer_pos)[flags])
    np.testing.assert_array_equal(kept.valid, np.asarray(pairs.valid)[flags])
    with pytest.raises(ValueError, match="no pair changes the answer"):
        PatchPairs.from_task_pairs(dataclasses.replace(pairs, changed=jnp.zeros(N, bool)))
