"""Graph utilities shared by the graph tasks: generation, closure, distances, path checks.

Conventions used throughout (index space, before any relabelling):

* ``adj[u, v]`` is True iff the directed edge ``u -> v`` exists. No self-loops.
* ``reach[u, v]`` (from :func:`transitive_closure`) is True iff ``v`` can be reached from
  ``u`` by a path of length >= 0, so it is reflexive. ALPINE's ``R[t, k]`` ("k can reach
  t", arXiv 2405.09220 §3) is the transpose: ``R = reach.T``.
* A DAG from :func:`random_dag` is in topological order: an edge ``u -> v`` has ``u < v``.

Everything here is pure jnp on fixed shapes, so it jits and vmaps over examples.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

UNREACHABLE = jnp.iinfo(jnp.int32).max // 2  # "infinite" distance, safe to add 1 to


def uniforms(key: jax.Array, **shapes) -> dict[str, jax.Array]:
    """Named blocks of uniform [0, 1) noise, all cut from ONE ``jax.random.uniform`` call.

    Why: each separate random call compiles its own threefry kernel, which dominated the
    compile time of the samplers; one draw per example, sliced, compiles several times
    faster. ``uniforms(key, coin=(n, n), pick=(n,))["coin"]`` is float32[n, n]."""
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    flat = jax.random.uniform(key, (sum(sizes.values()),))
    out, start = {}, 0
    for name, shape in shapes.items():
        out[name] = flat[start:start + sizes[name]].reshape(shape)
        start += sizes[name]
    return out


def dag_from_uniforms(u: jax.Array, edge_prob: float) -> jax.Array:
    """bool[n, n] from uniforms u[n, n]: edge ``i -> j`` for each ``i < j`` iff
    ``u[i, j] < edge_prob`` (ALPINE's random DAG, arXiv 2405.09220 §4); nodes are in
    topological order."""
    n = u.shape[0]
    return (u < edge_prob) & jnp.triu(jnp.ones((n, n), bool), k=1)


def digraph_from_uniforms(u: jax.Array, edge_prob: float) -> jax.Array:
    """bool[n, n]: edge ``i -> j`` for each ordered pair ``i != j`` iff ``u[i, j] <
    edge_prob`` (cycles allowed)."""
    return (u < edge_prob) & ~jnp.eye(u.shape[0], dtype=bool)


def random_dag(key: jax.Array, n_nodes: int, edge_prob: float) -> jax.Array:
    """:func:`dag_from_uniforms` with fresh noise from ``key``."""
    return dag_from_uniforms(jax.random.uniform(key, (n_nodes, n_nodes)), edge_prob)


def random_digraph(key: jax.Array, n_nodes: int, edge_prob: float) -> jax.Array:
    """:func:`digraph_from_uniforms` with fresh noise from ``key``."""
    return digraph_from_uniforms(jax.random.uniform(key, (n_nodes, n_nodes)), edge_prob)


def cap_edges(u: jax.Array, adj: jax.Array, max_edges: int) -> jax.Array:
    """Keep a uniformly random subset of at most ``max_edges`` edges of ``adj``.

    Edge (i, j) scores ``u[i, j]``; the ``max_edges`` highest-scoring edges survive
    (ties have probability ~0)."""
    n = adj.shape[0]
    scores = jnp.where(adj, u, -1.0).reshape(-1)
    k = min(max_edges, n * n)
    threshold = jax.lax.top_k(scores, k)[0][-1]
    return adj & (scores.reshape(n, n) >= jnp.maximum(threshold, 0.0))


def transitive_closure(adj: jax.Array) -> jax.Array:
    """Reflexive-transitive closure by repeated boolean squaring.

    With ``R_0 = I | A`` and ``R_{j+1} = R_j | (R_j R_j)`` (boolean product), ``R_j`` holds
    every pair joined by a path of length <= 2^j, so ``ceil(log2 n)`` squarings suffice
    (a simple path has at most n - 1 edges)."""
    n = adj.shape[-1]
    reach = adj | jnp.eye(n, dtype=bool)
    for _ in range(max(1, math.ceil(math.log2(max(n, 2))))):
        hops = jnp.matmul(reach.astype(jnp.int32), reach.astype(jnp.int32)) > 0
        reach = reach | hops
    return reach


def distances_to(adj: jax.Array, target: jax.Array) -> jax.Array:
    """int32[n]: number of edges on a shortest path from each node to ``target``
    (``UNREACHABLE`` where there is none). Backward Bellman-Ford / BFS:
    ``d(v) = min(d(v), 1 + min_{w: adj[v, w]} d(w))``, iterated n times."""
    n = adj.shape[0]
    dist = jnp.where(jnp.arange(n) == target, 0, UNREACHABLE).astype(jnp.int32)

    def relax(_, d):
        via = jnp.where(adj, d[None, :] + 1, UNREACHABLE).min(axis=1)
        return jnp.minimum(d, via)

    return jax.lax.fori_loop(0, n, relax, dist)


def random_shortest_path(u: jax.Array, adj: jax.Array, source, target) -> tuple:
    """A shortest ``source -> target`` path; at step k the next node is the one with the
    largest ``u[k, v]`` among those that keep the path shortest (so uniform over them).
    ``u`` is float32[n - 1, n]. Returns ``(nodes int32[n], length int32)`` with
    ``nodes[:length]`` the path (``source`` first, ``target`` last) and ``nodes[length:]``
    repeating ``target``; ``length`` is 0 when ``target`` is unreachable."""
    dist = distances_to(adj, target)

    def step(cur, u_k):
        nxt, exists = choice_where(u_k, adj[cur] & (dist == dist[cur] - 1))
        nxt = jnp.where(exists, nxt, cur)
        return nxt, nxt

    source = jnp.asarray(source, jnp.int32)
    _, rest = jax.lax.scan(step, source, u)
    nodes = jnp.concatenate([source[None], rest])
    length = jnp.where(dist[source] < UNREACHABLE, dist[source] + 1, 0).astype(jnp.int32)
    return nodes, length


def order_from_uniforms(u: jax.Array) -> jax.Array:
    """A random permutation of ``0 .. n-1`` from uniforms u[n]: their argsort. Always a
    permutation, and uniform except for float32 ties (probability about n^2 / 2^25),
    which the stable sort breaks by index."""
    return jnp.argsort(u).astype(jnp.int32)


def choice_where(u: jax.Array, mask: jax.Array):
    """Index of the largest ``u`` among the True entries of a flat bool ``mask`` (a uniform
    choice when ``u`` is uniform noise), and whether there was one (index 0 if not)."""
    return jnp.argmax(jnp.where(mask, u, -1.0)).astype(jnp.int32), mask.any()


def path_check(nodes, is_node, stop, source, target, edge_ok, *, simple: bool) -> jax.Array:
    """bool[n]: ``nodes[b, :stop[b]]`` is a path ``source -> target`` that ends at its
    first visit of ``target``.

    ``nodes`` int32[n, L] node ids (any value where ``is_node`` is False), ``stop`` int32[n]
    the length of the candidate path (e.g. the first ``<eos>``), ``edge_ok`` bool[n, L-1]
    whether ``nodes[:, j] -> nodes[:, j+1]`` is an edge. ``simple`` also forbids repeated
    nodes (needed on graphs with cycles; on a DAG every path is simple)."""
    L = nodes.shape[1]
    source = jnp.broadcast_to(source, stop.shape)
    target = jnp.broadcast_to(target, stop.shape)
    pos = jnp.arange(L)[None, :]
    inside = pos < stop[:, None]
    all_nodes = jnp.all(is_node | ~inside, axis=1)
    edges_inside = (pos[:, 1:] < stop[:, None]) if L > 1 else jnp.zeros((nodes.shape[0], 0), bool)
    all_edges = jnp.all(edge_ok | ~edges_inside, axis=1)
    starts = nodes[:, 0] == source
    last = jnp.take_along_axis(nodes, jnp.clip(stop - 1, 0, L - 1)[:, None], axis=1)[:, 0]
    ends = last == target
    target_early = jnp.any((nodes == target[:, None]) & (pos < stop[:, None] - 1), axis=1)
    ok = (stop >= 1) & all_nodes & all_edges & starts & ends & ~target_early
    if simple:
        same = nodes[:, :, None] == nodes[:, None, :]
        both = inside[:, :, None] & inside[:, None, :]
        off_diag = ~jnp.eye(L, dtype=bool)[None]
        ok = ok & ~jnp.any(same & both & off_diag, axis=(1, 2))
    return ok


@functools.partial(jax.jit, static_argnums=(0, 1, 3))
def jit_sample(task_cls, config, key, n: int):
    """``task_cls(config)._sample(key, n)``, shared like :func:`tasks.core.jit_method`
    (n static)."""
    return task_cls(config)._sample(key, n)
