"""The graph tasks beyond the generic contract (tests/test_tasks_contract.py).

Every expected value here comes from a second, pure-Python computation (Floyd-Warshall,
depth-first search, the paper's definitions written as loops) or is written by hand.
"""

from __future__ import annotations

import collections
import functools
import time

import jax
import numpy as np
import pytest

import tasks
from tasks import graphs
from tasks.core import EOS, PAD, Batch

SMALL_ALPINE = dict(n_nodes=30, edge_prob=0.15, paths_per_pair=5, graph_seed=3)


# --------------------------------------------------------------------------- helpers
def floyd_warshall(adj) -> np.ndarray:
    """reach[u][v]: v reachable from u (reflexive), by the textbook triple loop."""
    n = len(adj)
    reach = [[u == v or bool(adj[u][v]) for v in range(n)] for u in range(n)]
    for k in range(n):
        for u in range(n):
            if reach[u][k]:
                for v in range(n):
                    reach[u][v] = reach[u][v] or reach[k][v]
    return np.array(reach)


def bfs_distance(edges: set, s: int, t: int):
    frontier, dist, seen = [s], 0, {s}
    while frontier:
        if t in frontier:
            return dist
        nxt = [b for a, b in edges if a in frontier and b not in seen]
        seen.update(nxt)
        frontier, dist = list(set(nxt)), dist + 1
    return None


def read_prompt(task, prompt) -> tuple[set, int, int]:
    words = task.vocab.decode(prompt).split()
    q = words.index("<q>")
    edges = {(int(words[i]), int(words[i + 1])) for i in range(0, q, 2)}
    return edges, int(words[q + 1]), int(words[q + 2])


def rows(task, texts, width=None):
    """Completions written as text (``<eos>`` included where wanted), right-padded."""
    encoded = [task.vocab.encode(t) for t in texts]
    width = width or max(len(e) for e in encoded) + 2
    out = np.full((len(encoded), width), PAD, np.int32)
    for i, e in enumerate(encoded):
        out[i, : len(e)] = e
    return out


def hand_batch(task, prompt_text: str, n: int, **meta) -> Batch:
    """One hand-written in-context graph prompt repeated n times, with the meta the jnp
    verifier reads (adjacency in label space, source, target)."""
    prompt = np.array(task.vocab.encode(prompt_text), np.int32)
    padded = np.full((task.prompt_len,), PAD, np.int32)
    padded[-len(prompt):] = prompt
    edges, s, t = read_prompt(task, prompt)
    R = task.config.label_range
    adjacency = np.zeros((R, R), bool)
    for a, b in edges:
        adjacency[a, b] = True
    meta = dict(source=np.int32(s), target=np.int32(t), adjacency=adjacency, **meta)
    meta = {k: np.repeat(np.asarray(v)[None], n, axis=0) for k, v in meta.items()}
    C = task.max_target_len
    return Batch(np.tile(padded, (n, 1)), np.full(n, len(prompt), np.int32),
                 np.zeros((n, C), np.int32), np.ones(n, np.int32), meta)


def both(task, batch, completions):
    fast = np.asarray(jax.jit(task.reward)(batch, completions))
    slow = np.asarray(task.reference_reward(batch, completions))
    np.testing.assert_array_equal(fast, slow)
    return fast


def sample_and_time(task, split="train", n=10_000):
    """A batch of n = 10,000 (key 0); a second draw (key 1), after compilation, must take
    under a second (the issue's speed requirement). Measured as this process's CPU time:
    the test machine is shared, and other processes' load stretches wall time, not CPU
    time; on an idle machine the wall time is at most the CPU time (no I/O, and XLA's
    threads only make the wall time shorter)."""
    batch = task.sample(jax.random.key(0), n, split)
    start = time.process_time()
    jax.block_until_ready(task.sample(jax.random.key(1), n, split))
    elapsed = time.process_time() - start
    assert elapsed < 1.0, f"{task.name}: {n} examples took {elapsed:.2f} s"
    return batch.to_numpy()


@functools.cache
def alpine():
    return tasks.make("graph/path_finding", **SMALL_ALPINE)


# --------------------------------------------------------------------------- graphs.py
def test_random_dag_is_in_topological_order_and_closure_matches_floyd_warshall():
    keys = jax.random.split(jax.random.key(0), 4)
    dags = np.asarray(jax.vmap(lambda k: graphs.random_dag(k, 9, 0.4))(keys))
    digraphs = np.asarray(jax.vmap(lambda k: graphs.random_digraph(k, 9, 0.25))(keys))
    assert not np.tril(dags).any()  # every edge u -> v has u < v
    assert dags.any() and np.diagonal(digraphs, axis1=1, axis2=2).sum() == 0
    assert (np.tril(digraphs, -1).any(axis=(1, 2))).any()  # digraphs have backward edges
    both_kinds = np.concatenate([dags, digraphs])
    closures = np.asarray(jax.jit(jax.vmap(graphs.transitive_closure))(both_kinds))
    for adj, reach in zip(both_kinds, closures, strict=True):
        np.testing.assert_array_equal(reach, floyd_warshall(adj))


# --------------------------------------------------------------------------- path_finding
def test_path_finding_matrices_recomputed_from_the_training_sequences():
    task = alpine()
    A = task.adjacency
    n = len(A)
    reach = floyd_warshall(A)
    np.testing.assert_array_equal(task.reachability, reach.T)  # R[t, k]: k can reach t
    assert not np.tril(A).any()  # topological order
    # A_obs and R_obs straight from the definitions (arXiv 2405.09220 §3.2), as loops.
    a_obs = np.zeros((n, n), bool)
    r_obs = np.zeros((n, n), bool)
    for path in task.train_paths:
        for i in range(len(path) - 1):
            assert A[path[i], path[i + 1]]  # training paths follow true edges
            a_obs[path[i], path[i + 1]] = True
        for k in path[1:]:
            r_obs[path[-1], k] = True
    np.testing.assert_array_equal(task.observed_adjacency, a_obs)
    np.testing.assert_array_equal(task.observed_reachability, r_obs)
    # Every edge pair is in train with its one-edge path, so every edge is observed.
    np.testing.assert_array_equal(a_obs, A)
    # D is exactly paths_per_pair paths per training pair, the pairs being the train split.
    counts = collections.Counter((p[0], p[-1]) for p in task.train_paths)
    assert set(counts.values()) == {SMALL_ALPINE["paths_per_pair"]}
    assert set(counts) == {tuple(p) for p in task.train_pairs.tolist()}


def test_path_finding_random_walks_pick_the_next_node_uniformly_among_valid_ones():
    m = 100  # many paths per pair, so that some (current, target) states are visited often
    task = tasks.make("graph/path_finding", **{**SMALL_ALPINE, "paths_per_pair": m})
    A, R = task.adjacency, task.reachability
    visits = {}
    for start in range(0, len(task.train_paths), m):  # D holds m paths per pair, in order
        for j, path in enumerate(task.train_paths[start:start + m]):
            if j == 0 and len(path) == 2:
                continue  # the one-edge path forced into every edge pair
            for i, k in zip(path[:-1], path[1:], strict=False):
                visits.setdefault((i, path[-1]), []).append(k)
    checked = 0
    for (i, t), nexts in visits.items():
        allowed = [k for k in range(len(A)) if A[i, k] and R[t, k]]  # ALPINE §4
        assert set(nexts) <= set(allowed)
        if len(nexts) >= 100 and len(allowed) > 1:
            p, n = 1 / len(allowed), len(nexts)
            for k in allowed:  # each count within 5 binomial standard deviations of n p
                assert abs(nexts.count(k) - n * p) <= 5 * np.sqrt(n * p * (1 - p)), (i, t, k)
            checked += 1
    assert checked >= 10


def test_path_finding_split_categories_and_degrees_follow_the_definitions():
    task = alpine()
    A, reach, r_obs = task.adjacency, floyd_warshall(task.adjacency), task.observed_reachability
    n = len(A)
    train = {tuple(p) for p in task.train_pairs.tolist()}
    test = {tuple(p) for p in task.test_pairs.tolist()}
    reachable = {(s, t) for s in range(n) for t in range(n) if s != t and reach[s, t]}
    assert train | test == reachable and not train & test
    assert all((s, t) in train for s, t in zip(*np.nonzero(A), strict=True))

    def degree(s, t):
        if r_obs[t, s]:
            return 0
        if any(A[s, u] and r_obs[t, u] for u in range(n)):
            return 1
        if any(A[s, u] and degree(u, t) == 1 for u in range(n)):
            return 2
        return 3

    for s in range(n):
        for t in range(n):
            category = 2 if not reach[s, t] else (0 if r_obs[t, s] else 1)
            assert task.category[s, t] == category, (s, t)
            if reach[s, t] and s != t:
                assert task.degree[s, t] == degree(s, t), (s, t)
    assert {task.category[s, t] for s, t in test} == {0, 1}  # both kinds are tested
    batch = sample_and_time(task, "test")
    for i in range(200):
        s, t = int(batch.meta["source"][i]), int(batch.meta["target"][i])
        assert (s, t) in test
        assert batch.meta["category"][i] == task.category[s, t]
        assert batch.meta["degree"][i] == task.degree[s, t]
        gold = [int(w) for w in task.vocab.decode(batch.targets[i]).split()[:-1]]
        edges = set(zip(*np.nonzero(A), strict=True))
        assert len(gold) - 1 == bfs_distance(edges, s, t)  # test gold is a shortest path


def test_path_finding_train_batches_are_rows_of_the_fixed_data_set():
    task = alpine()
    batch = task.sample(jax.random.key(2), 300, "train").to_numpy()
    D = {tuple(p) for p in task.train_paths}
    for i in range(300):
        path = tuple(int(w) for w in task.vocab.decode(batch.targets[i]).split()[:-1])
        assert path in D
        assert task.vocab.decode(batch.prompts[i]) == f"{path[0]} {path[-1]}"


def test_path_finding_reward_takes_any_true_path_and_nothing_else():
    task = alpine()
    A = task.adjacency
    # a pair with two different paths: s -> t directly and s -> u -> t
    s, u, t = next((s, u, t) for s, u, t in zip(*np.nonzero(A[:, :, None] & A[None, :, :]),
                                                   strict=True) if A[s, t])
    prompt = np.array([task.vocab.encode(f"{s} {t}")] * 6, np.int32)
    meta = dict(source=np.full(6, s, np.int32), target=np.full(6, t, np.int32))
    batch = Batch(prompt, np.full(6, 2, np.int32), np.zeros((6, 4), np.int32),
                  np.ones(6, np.int32), meta)
    non_edge = next(k for k in range(s + 1, len(A)) if not A[s, k] and k != t)
    texts = [f"{s} {t} <eos>", f"{s} {u} {t} <eos>", f"{s} {u} {t}",
             f"{s} {u} {t} {t} <eos>", f"{s} {non_edge} {t} <eos>", f"{u} {t} <eos>"]
    np.testing.assert_array_equal(both(task, batch, rows(task, texts)), [1, 1, 0, 0, 0, 0])


def test_path_finding_config_is_deterministic_and_rejects_graphs_without_a_test_split():
    again = tasks.make("graph/path_finding", **SMALL_ALPINE)
    np.testing.assert_array_equal(again.adjacency, alpine().adjacency)
    other = tasks.make("graph/path_finding", **{**SMALL_ALPINE, "graph_seed": 4})
    assert not np.array_equal(other.adjacency, alpine().adjacency)
    with pytest.raises(ValueError, match="edge_prob"):  # complete DAG: every pair is an edge
        tasks.make("graph/path_finding", n_nodes=6, edge_prob=1.0)
    with pytest.raises(ValueError, match="n_nodes"):
        tasks.make("graph/path_finding", n_nodes=2)


# --------------------------------------------------------------------------- graph_in_context
def test_graph_in_context_questions_match_a_python_search_of_the_prompt():
    task = tasks.make("graph/graph_in_context", p_unreachable=0.3)
    assert task.prompt_len <= 64
    batch = sample_and_time(task)
    for i in range(300):
        edges, s, t = read_prompt(task, batch.prompts[i])
        assert 1 <= len(edges) <= task.config.max_edges == 16
        nodes = {x for e in edges for x in e} | {s, t}
        assert len(nodes) <= task.config.n_nodes and s != t
        distance = bfs_distance(edges, s, t)
        assert bool(batch.meta["reachable"][i]) == (distance is not None)
        assert batch.meta["distance"][i] == (-1 if distance is None else distance)
        answer = task.vocab.decode(batch.targets[i])
        if distance is None:
            assert answer == "<no_path> <eos>"
        else:
            assert len(answer.split()) == distance + 2  # shortest path, then <eos>
    # DAGs always have unreachable pairs and (>= 1 edge) reachable ones: the knob is exact
    # in expectation; 4 standard deviations of a binomial(10000, 0.3) fraction is 0.018.
    assert abs(1 - batch.meta["reachable"].mean() - 0.3) < 0.018


def test_graph_in_context_verifier_on_hand_written_completions():
    task = tasks.make("graph/graph_in_context", graph_kind="digraph")
    # 0 -> 1 -> 2 -> 0 is a cycle; 1 -> 3; question 0 -> 3; 3 reaches nothing.
    texts = ["0 1 3 <eos>", "0 1 3 <eos> 7 <no_path> 2", "0 1 2 0 1 3 <eos>", "0 1 2 <eos>",
             "0 3 <eos>", "<no_path> <eos>", "0 1 3", "<eos> 0 1 3", "0 1 3 <q> <eos>"]
    batch = hand_batch(task, "0 1 1 2 2 0 1 3 <q> 0 3", len(texts), reachable=True)
    np.testing.assert_array_equal(both(task, batch, rows(task, texts)),
                                  [1, 1, 0, 0, 0, 0, 0, 0, 0])
    texts = ["<no_path> <eos>", "<no_path> <no_path> <eos>", "3 <eos>", "<no_path>"]
    batch = hand_batch(task, "0 1 1 2 2 0 1 3 <q> 3 0", len(texts), reachable=False)
    np.testing.assert_array_equal(both(task, batch, rows(task, texts)), [1, 0, 0, 0])


# --------------------------------------------------------------------------- graph_search
SEARCH_PROMPT = "0 1 1 2 0 3 3 4 <q> 0 4"  # 0 -> 1 -> 2 is a dead end; 0 -> 3 -> 4


def test_graph_search_verifier_applies_back_with_stack_semantics():
    task = tasks.make("graph/graph_search")
    cases = {
        "0 3 4 <sep> 0 3 4 <eos>": 1,
        "0 1 2 <back> <back> 3 4 <sep> 0 3 4 <eos>": 1,  # dead end explored, then corrected
        "0 3 4 <back> 4 <sep> 0 3 4 <eos> 9 9": 1,  # pop and push again; garbage after <eos>
        "0 1 2 <back> <back> 3 4 <sep> 0 1 2 3 4 <eos>": 0,  # answer is not the final stack
        "0 1 <back> <back> <back> 3 4 <sep> 0 3 4 <eos>": 0,  # pops an empty stack
        "0 <back> 0 3 4 <sep> 0 3 4 <eos>": 0,  # restarting on an empty stack is illegal
        "0 2 <back> 3 4 <sep> 0 3 4 <eos>": 0,  # 0 -> 2 is not an edge
        "0 1 <back> 3 <sep> 0 3 <eos>": 0,  # the stack does not end at t
        "0 3 4 <eos>": 0,  # no <sep>
        "0 3 4 <sep> 0 3 4 <sep> <eos>": 0,  # two <sep>
        "0 3 4 <sep> 0 3 4": 0,  # no <eos>
        "3 4 <sep> 3 4 <eos>": 0,  # does not start at s
        "<back> 0 3 4 <sep> 0 3 4 <eos>": 0,
        "<sep> <eos>": 0,
    }
    batch = hand_batch(task, SEARCH_PROMPT, len(cases))
    np.testing.assert_array_equal(both(task, batch, rows(task, list(cases))),
                                  list(cases.values()))


def test_graph_search_counters_on_hand_built_completions():
    task = tasks.make("graph/graph_search")
    texts = ["0 1 2 <back> <back> 3 4 <sep> 0 3 4 <eos>",
             "0 3 <back> 3 4 <sep> 0 3 4 <eos> 1 1",
             "0 1 2"]  # stops right after a mistake: no next token, no opportunity
    batch = hand_batch(task, SEARCH_PROMPT, len(texts))
    got = jax.jit(task.counters)(batch, rows(task, texts, width=14))
    expected = {  # derived by hand from the graph: nodes 1 and 2 cannot reach 4
        "backtracks": [2, 1, 0], "steps": [4, 3, 2], "mistakes": [2, 0, 2],
        "back_after_mistake": [1, 0, 0], "back_after_correct": [0, 1, 0],
        "mistake_then_back_opportunities": [2, 0, 2],
        "correct_then_back_opportunities": [2, 3, 0],
        "recovered": [1, 1, 0], "length": [12, 10, 14],
    }
    assert set(got) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(np.asarray(got[key]), value, err_msg=key)


def test_graph_search_gold_traces_mark_each_mistake_and_back_exactly():
    task = tasks.make("graph/graph_search", p_mistake=1.0)
    batch = sample_and_time(task)
    back = task.vocab.id("<back>")
    for i in range(300):
        edges, s, t = read_prompt(task, batch.prompts[i])
        words = task.vocab.decode(batch.targets[i]).split()
        final = [int(w) for w in words[words.index("<sep>") + 1: -1]]
        trace = batch.targets[i, : words.index("<sep>")]
        labels = range(task.config.label_range)
        reaches_t = {v for v in labels if bfs_distance(edges, v, t) is not None}
        wrong = [task.vocab.is_num(x) and int(task.vocab.value(x)) not in reaches_t
                 for x in trace]
        np.testing.assert_array_equal(batch.meta["mistake"][i, : len(trace)], wrong)
        np.testing.assert_array_equal(batch.meta["is_back"][i, : len(trace)], trace == back)
        assert not batch.meta["mistake"][i, len(trace):].any()
        # with p_mistake = 1 a wrong turn is taken exactly when the path offers a dead end
        offers = any((v, w) in edges and w not in reaches_t for v in final[:-1] for w in labels)
        assert bool(batch.meta["has_mistake"][i]) == offers
    assert 0.2 < batch.meta["has_mistake"].mean() < 1  # both kinds occur
    counters = task.counters(batch, batch.targets)
    np.testing.assert_array_equal(counters["mistakes"], batch.meta["mistake"].sum(1))
    np.testing.assert_array_equal(counters["backtracks"], batch.meta["is_back"].sum(1))
    np.testing.assert_array_equal(counters["recovered"], batch.meta["has_mistake"])


def test_graph_search_without_mistakes_gives_clean_paths():
    task = tasks.make("graph/graph_search", p_mistake=0.0)
    batch = task.sample(jax.random.key(0), 200).to_numpy()
    assert not batch.meta["has_mistake"].any() and not batch.meta["is_back"].any()
    for i in range(200):
        trace, final = task.vocab.decode(batch.targets[i]).split(" <sep> ")
        assert final == f"{trace} <eos>"


# --------------------------------------------------------------------------- path_star
def test_path_star_prompt_is_a_star_and_the_answer_its_target_arm():
    task = tasks.make("graph/path_star", degree=3)  # path_len 5: 4 nodes per arm
    batch = sample_and_time(task)
    for i in range(200):
        edges, s, t = read_prompt(task, batch.prompts[i])
        assert len(edges) == 3 * 4
        out = {a: [b for x, b in edges if x == a] for a, _ in edges}
        assert len(out[s]) == 3 and all(len(v) == 1 for a, v in out.items() if a != s)
        labels = {x for e in edges for x in e}
        assert len(labels) == 3 * 4 + 1  # every node its own label
        answer = task.vocab.decode(batch.targets[i]).split()
        path = [int(w) for w in answer[:-1]]
        assert answer[-1] == "<eos>" and len(path) == 5 and path[0] == s and path[-1] == t
        assert all((a, b) in edges for a, b in zip(path, path[1:], strict=False))
        assert t not in out  # t is a leaf
        assert batch.meta["leading"][i] == path[1]
        np.testing.assert_array_equal(batch.meta["arms"][i, batch.meta["target_arm"][i]],
                                      path[1:])
    assert set(batch.meta["target_arm"].tolist()) == {0, 1, 2}
    # the other arms, read from the centre, earn nothing; neither does the reversed arm
    wrong = np.array([np.concatenate([[task.vocab.num(batch.meta["source"][i])],
                                      task.vocab.num(batch.meta["arms"][i, (batch.meta[
                                          "target_arm"][i] + 1) % 3]), [EOS]])
                      for i in range(200)], np.int32)
    head = batch.take(np.arange(200))
    assert both(task, head, wrong).sum() == 0
    reversed_arm = np.concatenate([head.targets[:, -2::-1], head.targets[:, -1:]], axis=1)
    assert both(task, head, reversed_arm).sum() == 0
    assert both(task, head, head.targets).sum() == 200
    with pytest.raises(ValueError, match="n_labels"):
        tasks.make("graph/path_star", degree=3, path_len=4, n_labels=9)  # needs 10
