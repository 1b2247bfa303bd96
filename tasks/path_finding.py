"""graph/path_finding: ALPINE's path-finding task (Wang, Shen, Feng, Sun, Teng, Chen,
"ALPINE: Unveiling the Planning Capability of Autoregressive Learning in Language Models",
NeurIPS 2024, arXiv 2405.09220, §2.2 and §4).

One fixed random DAG per ``graph_seed``: edge ``i -> j`` for each ``i < j`` with probability
``edge_prob`` (nodes in topological order). Format, as in the paper (§2.2; their ``\\n`` is
our ``<eos>``)::

    prompt: s t          completion: s u1 ... t <eos>

Data recipe (§4), built once in numpy at construction:

* Every reachable pair (s, t), s != t, goes to train with probability ``train_frac`` and to
  test otherwise, except that a pair with an edge s -> t always goes to train.
* Each training pair gets ``paths_per_pair`` random paths: from the current node i the next
  node is uniform over {k : A(i, k) = 1 and R(t, k) = 1}. For an edge pair the first of
  them is replaced by the one-edge path ``s t``, so every edge occurs in the data.
* ``sample(key, n, "train")`` draws rows of that fixed set D uniformly, so the observed
  matrices below are exactly those of D. ``sample(key, n, "test")`` draws test pairs
  uniformly; their gold completion is a shortest path (smallest next node on ties).

Matrices (numpy bool[n, n]; the paper's index convention, target first):

* ``adjacency[i, k]`` = A(i, k): edge i -> k.
* ``reachability[t, k]`` = R(t, k): k can reach t (reflexive, R(t, t) = 1).
* ``observed_adjacency[i, k]`` = A_obs(i, k): some path in D steps from i to k.
* ``observed_reachability[t, k]`` = R_obs(t, k): k is a non-source node (t included) of a
  path in D whose target is t (§3.2).

Pair labels (numpy int[n, n], indexed ``[s, t]``): ``category`` 0 observed (R_obs(t, s) =
1), 1 transitive-only (R(t, s) = 1 but not observed), 2 unreachable; ``degree`` 0, 1, 2,
3 (= 3 or more) as in Fig. 6(b-d): degree 0 is R_obs(t, s) = 1; degree 1 is not 0 and
some out-neighbour u of s has R_obs(t, u) = 1; degree 2 is neither and some out-neighbour
u of s makes (u, t) a degree-1 pair. Test pairs are reachable, so their category is 0 or 1.

Reward: 1 iff the tokens before the first ``<eos>`` are a path of the TRUE graph that starts
at s, follows edges and ends at t (on a DAG nothing can follow t and return to it).
"""

from __future__ import annotations

import dataclasses
import functools

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
    check_seed,
    eos_index,
    reference_eos_index,
    register,
)

NAME = "graph/path_finding"


@dataclasses.dataclass(frozen=True)
class PathFindingConfig:
    n_nodes: int = 100  # |V| (the paper uses 100-500)
    edge_prob: float = 0.1  # p, each edge i -> j (i < j) independently
    paths_per_pair: int = 20  # m, random paths per training pair
    train_frac: float = 0.5  # probability that a reachable non-edge pair goes to train
    graph_seed: int = 0  # fixes the graph, the split and the training set D

    def __post_init__(self):
        check_int(NAME, "n_nodes", self.n_nodes, 3, 400)
        # At edge_prob = 1 every pair is an edge, and at train_frac = 1 every pair goes to
        # train: either way the test split is empty on every graph.
        check_prob(NAME, "edge_prob", self.edge_prob)
        check(0 < self.edge_prob < 1, NAME, "edge_prob", self.edge_prob,
              "a probability in (0, 1) (at 1 every pair is an edge, and edge pairs all go to "
              "train, so the test split would be empty)")
        check_int(NAME, "paths_per_pair", self.paths_per_pair, 1, 1000)
        check_prob(NAME, "train_frac", self.train_frac)
        check(self.train_frac < 1, NAME, "train_frac", self.train_frac,
              "a probability in [0, 1) (at 1 every pair goes to train, so the test split "
              "would be empty)")
        check_seed(NAME, "graph_seed", self.graph_seed)


@dataclasses.dataclass(frozen=True)
class AlpineData:
    """The fixed graph and data set of one config (numpy, read-only by convention)."""

    adjacency: np.ndarray
    reachability: np.ndarray
    train_pairs: np.ndarray  # int[n_train_pairs, 2] (s, t)
    test_pairs: np.ndarray  # int[n_test_pairs, 2]
    train_paths: list  # D: one list of nodes per training sequence
    test_paths: list  # a shortest path per test pair
    observed_adjacency: np.ndarray
    observed_reachability: np.ndarray
    category: np.ndarray  # [s, t]
    degree: np.ndarray  # [s, t]


def _build(cfg: PathFindingConfig) -> AlpineData:
    n = cfg.n_nodes
    rng = np.random.default_rng(cfg.graph_seed)
    adj = (rng.random((n, n)) < cfg.edge_prob) & np.triu(np.ones((n, n), bool), k=1)
    reach = np.eye(n, dtype=bool)  # reach[u, v]: v reachable from u
    for u in range(n - 1, -1, -1):  # reverse topological order
        reach[u] |= reach[adj[u]].any(axis=0)
    R = reach.T  # R[t, k]: k can reach t
    train, test = [], []
    for s in range(n):
        for t in range(s + 1, n):
            if reach[s, t]:
                into_train = adj[s, t] or rng.random() < cfg.train_frac
                (train if into_train else test).append((s, t))
    _check_splits(cfg, train, test)
    paths, options = [], {}  # options[(i, t)]: next nodes allowed at i towards t
    for s, t in train:
        for j in range(cfg.paths_per_pair):
            if j == 0 and adj[s, t]:
                paths.append([s, t])
                continue
            path = [s]
            while path[-1] != t:
                key = (path[-1], t)
                if key not in options:
                    options[key] = np.flatnonzero(adj[path[-1]] & R[t])
                path.append(int(options[key][rng.integers(len(options[key]))]))
            paths.append(path)
    test_paths = [_shortest_path(adj, s, t) for s, t in test]
    pairs = lambda p: np.asarray(p, np.int64).reshape(-1, 2)
    a_obs, r_obs = _observed(n, paths)
    category, degree = _pair_labels(adj, R, r_obs)
    return AlpineData(adj, R, pairs(train), pairs(test), paths, test_paths, a_obs, r_obs,
                      category, degree)


# Largest training set D (sequences) a config may ask for. Measured on one core: 1.74M
# sequences (n_nodes=100, paths_per_pair=1000) take 21 s to build and 1.2 GB peak memory;
# the largest fields validation allows (400 nodes, 1000 paths per pair: ~40M sequences)
# would take, extrapolating linearly, ~8 minutes and ~25 GB before sampling anything.
MAX_TRAIN_SEQUENCES = 2_000_000


def _check_splits(cfg: PathFindingConfig, train: list, test: list) -> None:
    """A clear ``ValueError`` for a graph whose split is empty or whose D is too big, before
    D is built."""
    graph = f"the graph of n_nodes={cfg.n_nodes}, graph_seed={cfg.graph_seed}"
    check(len(train) > 0, NAME, "edge_prob", cfg.edge_prob,
          f"a value for which {graph} has an edge (it has none, so no reachable pair); "
          "raise edge_prob or n_nodes")
    check(len(test) > 0, NAME, "edge_prob", cfg.edge_prob,
          f"a value for which {graph} has test pairs (none: its {len(train)} reachable pairs "
          f"all went to train, edge pairs always and the others with probability train_frac="
          f"{cfg.train_frac}); lower edge_prob or train_frac, or change n_nodes or graph_seed")
    check(len(train) * cfg.paths_per_pair <= MAX_TRAIN_SEQUENCES, NAME, "paths_per_pair",
          cfg.paths_per_pair, f"at most {MAX_TRAIN_SEQUENCES // len(train)} here: {graph} "
          f"has {len(train)} training pairs, and D would hold {len(train)} x paths_per_pair "
          f"sequences (at most {MAX_TRAIN_SEQUENCES:,})")


def _shortest_path(adj: np.ndarray, s: int, t: int) -> list:
    """Breadth-first search backwards from t, then the smallest next node that keeps the
    path shortest."""
    n = adj.shape[0]
    dist = np.full(n, n + 1)
    dist[t], frontier = 0, [t]
    while frontier:
        prev = np.flatnonzero(adj[:, frontier].any(axis=1) & (dist > n))
        dist[prev] = dist[frontier[0]] + 1
        frontier = list(prev)
    path = [s]
    while path[-1] != t:
        path.append(int(np.flatnonzero(adj[path[-1]] & (dist == dist[path[-1]] - 1))[0]))
    return path


@functools.lru_cache(maxsize=8)
def alpine_data(cfg: PathFindingConfig) -> AlpineData:
    """Cached: the graph and D of a config are built once per process."""
    return _build(cfg)


def _observed(n: int, paths: list) -> tuple[np.ndarray, np.ndarray]:
    """A_obs and R_obs of a set of paths (definitions in the module docstring)."""
    a_obs, r_obs = np.zeros((n, n), bool), np.zeros((n, n), bool)
    if not paths:
        return a_obs, r_obs
    steps = np.asarray([(a, b) for p in paths for a, b in zip(p, p[1:], strict=False)])
    seen = np.asarray([(p[-1], k) for p in paths for k in p[1:]])
    a_obs[steps[:, 0], steps[:, 1]] = True
    r_obs[seen[:, 0], seen[:, 1]] = True
    return a_obs, r_obs


def _pair_labels(adj, R, r_obs) -> tuple[np.ndarray, np.ndarray]:
    """category[s, t] and degree[s, t] (module docstring), vectorised over all pairs."""
    obs_st = r_obs.T  # [s, t] -> R_obs(t, s)
    category = np.where(~R.T, 2, np.where(obs_st, 0, 1))
    deg1 = ~obs_st & ((adj.astype(int) @ obs_st.astype(int)) > 0)
    deg2 = ~obs_st & ~deg1 & ((adj.astype(int) @ deg1.astype(int)) > 0)
    degree = np.where(obs_st, 0, np.where(deg1, 1, np.where(deg2, 2, 3)))
    return category, degree


def _rows(paths: list, width: int, vocab: Vocab) -> np.ndarray:
    out = np.full((len(paths), width), PAD, np.int32)
    lens = np.asarray([len(p) for p in paths])
    rows = np.repeat(np.arange(len(paths)), lens)
    cols = np.concatenate([np.arange(k) for k in lens])
    out[rows, cols] = vocab.num(np.concatenate(paths))
    out[np.arange(len(paths)), lens] = EOS
    return out


@functools.lru_cache(maxsize=8)
def _tables(cfg: PathFindingConfig, width: int) -> dict:
    """Per split: (s, t) int[N, 2] and gold completion rows int32[N, width]."""
    data, vocab = alpine_data(cfg), Vocab(("<pad>", "<eos>"), cfg.n_nodes)
    st_train = np.asarray([(p[0], p[-1]) for p in data.train_paths])
    return {"train": (st_train, _rows(data.train_paths, width, vocab)),
            "test": (data.test_pairs, _rows(data.test_paths, width, vocab))}


@register
class PathFinding(Task):
    """ALPINE path-finding on one fixed DAG with observed / transitive test pairs."""

    name = NAME
    Config = PathFindingConfig

    def __init__(self, config: PathFindingConfig):
        super().__init__(config)
        data = alpine_data(config)  # refuses a config with an empty split (_check_splits)
        n = config.n_nodes
        self.vocab = Vocab(("<pad>", "<eos>"), n)
        self.prompt_len = 2
        self.max_target_len = max(map(len, data.train_paths + data.test_paths)) + 1
        self.adjacency, self.reachability = data.adjacency, data.reachability
        self.observed_adjacency = data.observed_adjacency
        self.observed_reachability = data.observed_reachability
        self.category, self.degree = data.category, data.degree
        self.train_pairs, self.test_pairs = data.train_pairs, data.test_pairs
        self.train_paths = data.train_paths
        self._tables = _tables(config, self.max_target_len)
        self._adj_jnp = jnp.asarray(self.adjacency)
        self._cat_jnp, self._deg_jnp = jnp.asarray(self.category), jnp.asarray(self.degree)

    def sample(self, key, n, split="train"):
        self._check_sample(n, split)
        st, rows = self._tables[split]
        idx = jax.random.randint(key, (n,), 0, len(rows))
        s, t = jnp.asarray(st[:, 0], jnp.int32)[idx], jnp.asarray(st[:, 1], jnp.int32)[idx]
        targets = jnp.asarray(rows)[idx]
        prompts = self.vocab.num(jnp.stack([s, t], axis=1)).astype(jnp.int32)
        meta = dict(source=s, target=t, category=self._cat_jnp[s, t].astype(jnp.int32),
                    degree=self._deg_jnp[s, t].astype(jnp.int32))
        return Batch(prompts, jnp.full((n,), 2, jnp.int32), targets,
                     (targets != PAD).sum(axis=1).astype(jnp.int32), meta)

    def reward(self, batch, completions):
        c = jnp.asarray(completions, jnp.int32)
        stop = eos_index(c)
        nodes = jnp.clip(self.vocab.value(c), 0, self.config.n_nodes - 1)
        edge_ok = self._adj_jnp[nodes[:, :-1], nodes[:, 1:]]
        ok = graphs.path_check(nodes, self.vocab.is_num(c), stop, batch.meta["source"],
                               batch.meta["target"], edge_ok, simple=False)
        return (ok & (stop < c.shape[1])).astype(jnp.float32)

    def reference_reward(self, batch, completions):
        """Pure Python: read s, t from the prompt, walk the completion over the edge set."""
        edges = set(zip(*np.nonzero(self.adjacency), strict=True))
        n_spec, out = len(self.vocab.specials), np.zeros(batch.prompts.shape[0], np.float32)
        for i, (prompt, row) in enumerate(zip(np.asarray(batch.prompts).tolist(),
                                              np.asarray(completions).tolist(), strict=True)):
            end = reference_eos_index(row)
            if end is None or not all(n_spec <= x < self.vocab.size for x in row[:end]):
                continue
            path = [x - n_spec for x in row[:end]]
            s, t = prompt[-2] - n_spec, prompt[-1] - n_spec
            out[i] = (len(path) >= 2 and path[0] == s and path[-1] == t and t not in path[:-1]
                      and all((a, b) in edges for a, b in zip(path, path[1:], strict=False)))
        return out

    @classmethod
    def curriculum(cls, level: int, **overrides):
        """Level 0..3: 20, 50, 100, 200 nodes, edge_prob chosen so the mean out-degree of a
        node stays near 5 (p = min(0.5, 10/n))."""
        check_int(NAME, "level", level, 0, 3)
        n = (20, 50, 100, 200)[level]
        return cls.Config(**{"n_nodes": n, "edge_prob": min(0.5, 10 / n), **overrides})
