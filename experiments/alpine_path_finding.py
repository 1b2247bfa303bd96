"""Figure: what next-token prediction learns on path finding, and what policy-gradient RL
then does to accuracy and diversity (Wang, Shen, Feng, Sun, Teng, Chen, "ALPINE", NeurIPS
2024, arXiv 2405.09220, Theorems 2-3, Fig. 5-6; Wang et al. 2025, "Benefits and pitfalls of
RL for LM planning", arXiv 2509.22613, PG and diversity collapse; research notes E4, E5;
definitions, thresholds and measured results in docs/figure_alpine.md).

Task ``graph/path_finding`` on one random DAG (``graph_seed = seed``: another seed is another
graph; the ``n_seeds`` model seeds of a run share it, so they can be one vmapped call).
A 1-layer, 1-head, norm-free transformer (``norm='none'``: the extraction of W^M′ and W^V′
is then the paper's App. D formula exactly, see ``alpine_measures``) is next-token trained
on D; then REINFORCE with a batch-mean baseline, the task's 0/1 outcome reward and no KL
runs from each seed's model on prompts drawn uniformly from all reachable pairs (train and
test, as in E5), and every ``log_every`` steps a fixed set of test and train pairs is
evaluated: accuracy of T = 1 samples, the entropy of the distinct valid paths
among ``n_samples`` samples, and KL(U_C ‖ π) on the states of their gold paths.

Claims (thresholds fixed here before measuring; every one judged on the seed mean):

* W^M′ separates edges from non-edges (i < k): AUC >= 0.95 (Theorem 3: observed entries
  rise, unobserved fall; every edge is observed).
* W^V′ separates observed-reachable from unreachable (t > k): AUC >= 0.95; real\\obs
  against non: AUC <= 0.65 (only observed reachability is stored).
* Theorem model (``alpine_theorem``: Theorem 3's simplified model, logits exactly
  W^M[u, :] + W^V[t, :], trained by gradient descent on the next-node predictions of D),
  the same three AUC rules on its W^M and W^V: edges vs non-edges >= 0.95, obs vs non
  >= 0.95, real\\obs vs non <= 0.65 (thresholds those of the transformer, fixed before
  measuring).
* Greedy accuracy on test pairs by degree: degree 0 and degree 1 >= 0.9; degree >= 2
  (2 and 3+ pooled) below min(degree 0, degree 1) by >= 0.2 (two binomial standard
  deviations of a 25-pair bucket at accuracy ½; an empty bucket gives NaN: not holding).
* RL raises the T = 1 accuracy on test pairs: lower end of the 95 % seed interval of
  (final − start) >= 0.01.
* Diversity keeps falling after accuracy saturates: saturation is the first logged step
  from which the seed-mean test accuracy (T = 1) stays within 0.02 of its final value;
  between it and the end the mean KL(U_C ‖ π) rises (lower 95 % bound of the per-seed
  change > 0, strictly) and the path entropy falls (upper bound < 0, strictly). At a
  saturation on the last log there is no window and the claims do not hold.

Measured, not claimed (``alpine_theorem``): the within-row obs vs non AUC of both arms'
value matrices (immune to the softmax's per-row offset), and a decomposition of the trained
transformer's logits at real path states into W^M′(u, ·) + W^V′(t, ·) + rest, with the
within-state AUC of each part for valid against invalid out-neighbours and the share R²_V
of the target-dependent logit that W^V′ explains (panel 11).

Each ordering is multiplied by ``pred_direction`` (+1, the theory's direction): a wrong
prediction (the reverse ordering) is the same result with −1, and it is judged not holding.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import alpine_measures as M
from experiments import alpine_plot, harness
from experiments import alpine_theorem as TH
from experiments import claims as C
from tasks.core import check_ints, check_numbers, check_seed

NAME = "alpine-path-finding"
PAPER = "Wang et al., NeurIPS 2024, arXiv 2405.09220; Wang et al. 2025, arXiv 2509.22613"
DESCRIPTION = ("ALPINE: NTP stores adjacency in W^M' and observed reachability in W^V'; "
               "accuracy by degree; PG raises accuracy while path diversity collapses")
MIN_AUC, MAX_AUC_REALOBS = 0.95, 0.65
MIN_ACC_LOW_DEGREE, MIN_DEGREE_GAP = 0.9, 0.2
MIN_RL_GAIN, SAT_TOL = 0.01, 0.02
EVAL_KEY = 1_000_003  # eval sampling keys apart from the training keys


@dataclasses.dataclass(frozen=True)
class Config:
    seed: int = 0  # model seeds seed .. seed + n_seeds - 1; the graph is graph_seed = seed
    n_seeds: int = 5
    n_nodes: int = 100  # the paper's setting: 100 nodes, p = 0.1, d = 120
    edge_prob: float = 0.1
    d_model: int = 120
    d_mlp: int = 120  # 4·d cost twice the time for no gain in accuracy we could measure
    # NTP steps by the train loss alone (docs/figure_alpine.md, "NTP length"): on the ladder
    # 600/1200/2400/4000 (seed 0), the first whose end loss the next rung lowers by < 1 %
    ntp_steps: int = 2400
    ntp_batch: int = 128
    ntp_lr: float = 1e-2  # 1e-3 needed > 2000 steps to reach the regime
    rl_steps: int = 200
    rl_lr: float = 1e-3
    prompts_per_step: int = 32
    group_size: int = 4
    log_every: int = 25
    eval_pairs: int = 64  # test pairs and as many train pairs, fixed for the RL curves
    n_samples: int = 8  # samples per eval pair (accuracy at T = 1 and path entropy)
    theorem_steps: int = 500  # GD steps of the theorem model (loss ~converged at 400-500)
    theorem_lr: float = 50.0  # fixed from the loss curve only (10/30/100 tried), not the AUCs
    dec_pairs: int = 256  # train and as many test pairs whose gold-path states are decomposed

    def __post_init__(self):
        check_seed(NAME, "seed", self.seed)  # also the graph's seed
        check_ints(NAME, self, ("n_seeds", "n_nodes", "d_model", "d_mlp", "ntp_steps", "ntp_batch",
                                "rl_steps", "prompts_per_step", "group_size", "log_every",
                                "eval_pairs", "n_samples", "theorem_steps", "dec_pairs"))
        if self.n_seeds < 2:
            raise ValueError("n_seeds must be >= 2 (claims are judged on a seed aggregate)")
        if self.n_nodes < 10:
            raise ValueError(f"n_nodes must be >= 10, got {self.n_nodes}")
        if not 0 < self.edge_prob <= 1:
            raise ValueError(f"edge_prob must be in (0, 1], got {self.edge_prob!r}")
        if self.rl_steps % self.log_every or self.rl_steps // self.log_every < 3:
            raise ValueError("rl_steps must be a multiple of log_every with >= 3 logs")
        if self.n_samples < 2:
            raise ValueError("n_samples must be >= 2 (the path entropy needs samples)")
        check_numbers(NAME, self, ("ntp_lr", "rl_lr", "theorem_lr"), positive=True)
        _task(self)  # the graph of this seed must have train and test pairs (the task checks)


def quick_config() -> Config:
    """The ``--quick`` run: a 40-node graph (p = 0.15, so that it has degree-2 pairs), a
    small model and few steps: the mechanics of every claim; most need the full run."""
    return Config(n_nodes=40, edge_prob=0.15, d_model=48, d_mlp=48, ntp_steps=150,
                  ntp_batch=64, rl_steps=30, log_every=10, prompts_per_step=16,
                  eval_pairs=16, n_samples=4, theorem_steps=200, dec_pairs=32)


# ----------------------------------------------------------------------------------- run
def _task(config: Config):
    from tasks import make

    return make("graph/path_finding", n_nodes=config.n_nodes, edge_prob=config.edge_prob,
                graph_seed=config.seed)


class _AllPairs:
    """The task with RL prompts drawn uniformly from every reachable pair (train and test),
    E5's setting; reward, counters and vocabulary are the task's own."""

    def __init__(self, task):
        from tasks.core import Batch

        self._task, self._batch = task, Batch
        self.vocab, self.prompt_len = task.vocab, task.prompt_len
        self.max_target_len = task.max_target_len
        self._pairs = jnp.asarray(np.concatenate([task.train_pairs, task.test_pairs]),
                                  jnp.int32)

    def batch(self, pairs):
        """A Batch of prompts (s, t); the targets are unused <pad> rows."""
        pairs = jnp.asarray(pairs, jnp.int32)
        n = pairs.shape[0]
        return self._batch(self.vocab.num(pairs).astype(jnp.int32),
                           jnp.full((n,), 2, jnp.int32),
                           jnp.zeros((n, self.max_target_len), jnp.int32),
                           jnp.ones((n,), jnp.int32),
                           {"source": pairs[:, 0], "target": pairs[:, 1]})

    def sample(self, key, n, split="train"):
        return self.batch(self._pairs[jax.random.randint(key, (n,), 0, len(self._pairs))])

    def reward(self, batch, completions):
        return self._task.reward(batch, completions)

    def counters(self, batch, completions):
        return {}


def _ntp(config: Config, task):
    from toymodels.config import ModelConfig
    from toymodels.train import NTPConfig, make_train

    mc = ModelConfig(vocab_size=task.vocab.size, max_len=task.prompt_len + task.max_target_len,
                     n_layers=1, n_heads=1, d_model=config.d_model, d_mlp=config.d_mlp,
                     norm="none")
    nc = NTPConfig(model=mc, task="graph/path_finding", task_config=dict(
        n_nodes=config.n_nodes, edge_prob=config.edge_prob, graph_seed=config.seed),
        steps=config.ntp_steps, batch_size=config.ntp_batch, lr=config.ntp_lr,
        warmup_steps=min(100, config.ntp_steps // 10), chunk_size=config.ntp_steps,
        seed=config.seed, n_seeds=config.n_seeds)
    train = make_train(nc)
    params, metrics = train()
    return train.graphdef, params, np.asarray(metrics["loss"])


def _eval_sets(config: Config, task):
    """Fixed eval pairs (``eval_pairs`` test, as many train) and their gold paths: the test
    split's shortest paths, the first training path of a train pair."""
    from tasks.path_finding import alpine_data

    data = alpine_data(task.config)
    rng = np.random.default_rng(config.seed + EVAL_KEY)
    out = {}
    m = task.config.paths_per_pair
    for name, pairs, paths in (("test", task.test_pairs, data.test_paths),
                               ("train", task.train_pairs, data.train_paths[::m])):
        idx = rng.choice(len(pairs), min(config.eval_pairs, len(pairs)), replace=False)
        out[name] = (pairs[idx], [paths[i] for i in idx])
    return out


def _evaluator(graphdef, task, allp, config: Config):
    """``evaluate(params, key) -> float32[2, 4]``: rows test, train; columns accuracy at
    T = 1, path entropy, valid samples per pair, KL(U_C ‖ π). The two sets run as one batch
    (one compiled program), split afterwards. (Greedy accuracy is measured once, after RL:
    a greedy decode in every evaluation cost ~15 % more compile time in the quick run.)"""
    from toymodels.model import forward
    from toymodels.rl.rollout import sample_rollout

    width = task.prompt_len + task.max_target_len
    sets = list(_eval_sets(config, task).values())
    sizes = [len(pairs) for pairs, _ in sets]
    pairs = np.concatenate([pairs for pairs, _ in sets])
    tokens, states, allowed = map(jnp.asarray, M.gold_states(
        task, pairs, [p for _, paths in sets for p in paths], width))
    batch, n, rows = allp.batch(pairs), config.n_samples, len(pairs)
    parts = np.repeat(np.arange(len(sets)), sizes)
    member = jnp.asarray(parts[None, :] == np.arange(len(sets))[:, None], jnp.float32)

    def evaluate(params, key):
        ro = sample_rollout(graphdef, params, key, allp, batch, group_size=n,
                            max_new_tokens=task.max_target_len, temperature=1.0, top_k=0)
        ok = (ro.rewards >= 1).reshape(rows, n)
        h, m = M.path_entropy(ro.tokens.reshape(rows, n, -1), ok)
        logits = forward(graphdef, params, tokens[:, :-1], valid=tokens[:, :-1] > 0)[0]
        kl_sum = jnp.einsum("pw,sp->s", jnp.where(states[:, :-1], M.kl_state(
            logits, allowed[:, :-1]), 0.0), member)
        n_states = jnp.einsum("pw,sp->s", states[:, :-1].astype(jnp.float32), member)
        per_pair = jnp.stack([ok.mean(1), h, m], 1)  # [P, 3]
        means = member @ per_pair / member.sum(1, keepdims=True)
        return jnp.concatenate([means, (kl_sum / n_states)[:, None]], 1)

    return evaluate


def _greedy_rewards(graphdef, params, task, pairs):
    """Greedy rewards float[..., P] of every pair in ``pairs`` for each model of ``params``
    (two leading axes: [phase, seed])."""
    from toymodels.sampler import generate

    batch = _AllPairs(task).batch(pairs)

    def one(prm):
        g = generate(graphdef, prm, jax.random.key(0), batch.prompts, batch.prompts > 0,
                     max_new_tokens=task.max_target_len, greedy=True)
        return task.reward(batch, g.tokens)

    return np.asarray(jax.jit(jax.vmap(jax.vmap(one)))(params), np.float64)


def _rl(config: Config, task, graphdef, bases):
    """REINFORCE from each seed's NTP model (seed i from model i, one vmapped call)."""
    from toymodels.rl.config import RLConfig
    from toymodels.rl.step import make_optimizer, make_step
    from toymodels.train import seed_keys

    allp = _AllPairs(task)
    rc = RLConfig(task="graph/path_finding", advantage="reinforce", batch_baseline=True,
                  group_size=config.group_size, prompts_per_step=config.prompts_per_step,
                  lr=config.rl_lr, steps=config.rl_steps, kl_coef=0.0).resolved(task)
    rl_step = make_step(graphdef, allp, rc)
    opt, evaluate = make_optimizer(rc), _evaluator(graphdef, task, allp, config)
    keys = seed_keys(config.seed, config.n_seeds)
    n_logs = config.rl_steps // config.log_every

    def ev(st, j):
        return jax.vmap(lambda prm, k: evaluate(prm, jax.random.fold_in(
            jax.random.fold_in(k, EVAL_KEY), j)))(st["params"], st["key"])

    def train_block(st, j):
        def inner(st, i):  # kl_coef = 0: the reference (the state's own params) is unused
            return jax.vmap(rl_step, in_axes=(0, 0, None))(st, st["params"],
                                                           j * config.log_every + i)[0], None
        return jax.lax.scan(inner, st, jnp.arange(config.log_every))[0]

    def block(st, j):  # evaluate, then train (not after the last evaluation): one copy each
        e = ev(st, j)
        return jax.lax.cond(j < n_logs, train_block, lambda s, _: s, st, j), e

    def go(bases):
        state = jax.vmap(lambda p, k: {"params": p, "opt": opt.init(p), "key": k})(bases, keys)
        final, evs = jax.lax.scan(block, state, jnp.arange(n_logs + 1))
        return evs, final["params"]

    evs, final = jax.jit(go)(bases)  # evs [logs + 1, S, 2, 4]
    return np.moveaxis(np.asarray(evs, np.float64), 1, 0), final  # [S, logs + 1, 2, 4]


def run(config: Config, run_dir: Path) -> dict:
    """NTP (all seeds vmapped), the matrices and accuracy by degree, then RL."""
    task = _task(config)
    graphdef, params, loss = _ntp(config, task)
    sets = M.matrix_sets(task.adjacency, task.reachability, task.observed_reachability)
    scores, mats = [], []
    for i in range(config.n_seeds):
        w_m, w_v = M.logit_matrices(jax.tree.map(lambda x, i=i: x[i], params), config.n_nodes)
        scores.append(M.matrix_scores(w_m, w_v, sets))
        mats.append((w_m, w_v))
    tp = task.test_pairs
    degree = task.degree[tp[:, 0], tp[:, 1]]
    evals, rl_params = _rl(config, task, graphdef, params)
    both = jax.tree.map(lambda a, b: jnp.stack([a, b]), params, rl_params)  # one compile
    acc, counts = M.accuracy_by_degree(_greedy_rewards(graphdef, both, task, tp), degree)
    acc_ntp, acc_rl = acc
    out = {k: np.asarray([s[k] for s in scores]) for k in scores[0]}
    out["wrow_obs_non"] = np.asarray([TH.within_row_auc(b, sets["obs"], sets["non"])
                                      for _, b in mats])
    out.update(TH.theorem_arm(config, task, sets))
    out.update(TH.decomposition(config, task, graphdef, params, mats,
                                np.random.default_rng(config.seed + EVAL_KEY + 1)))
    names = ("acc", "entropy", "n_valid", "kl")
    for j, split in enumerate(("test", "train")):
        out.update({f"rl_{k}_{split}": evals[:, :, j, c] for c, k in enumerate(names)})
    rule = M.rule_loss(task.adjacency, task.reachability, task.train_paths)
    return {**out, "ntp_loss": loss, "ntp_rule_loss": np.float64(rule),
            "wm_seed0": mats[0][0], "wv_seed0": mats[0][1],
            "adjacency": task.adjacency.astype(np.int8),
            "reach_category": np.where(sets["obs"], 2, np.where(task.reachability, 1, 0)),
            "acc_degree_ntp": acc_ntp, "acc_degree_rl": acc_rl, "degree_counts": counts,
            "rl_step": np.arange(0, config.rl_steps + 1, config.log_every, dtype=np.float64),
            "pred_direction": np.float64(1.0)}


# -------------------------------------------------------------------------------- claims
def _ci(agg) -> str:
    return f"seed mean {agg.mean:.3g}, 95% interval [{agg.lo:.3g}, {agg.hi:.3g}]"


def _strict(name: str, measured: float, side: float, note: str) -> C.Claim:
    """measured > 0 (side +1) or < 0 (side −1), strictly: no change is no rise or fall."""
    ok = bool(np.isfinite(measured) and side * measured > 0)
    return C.Claim(name, "> 0" if side > 0 else "< 0", float(measured), "one-sided", ok, note)


def claims(result: dict, config: Config) -> list[C.Claim]:
    sign = float(result["pred_direction"])
    directed = lambda a: 0.5 + sign * (np.asarray(a) - 0.5)  # AUC of the predicted order
    out = []
    for key, name, why in (
            ("auc_edge", "W^M' edges > non-edges: AUC", "Theorem 3 (adjacency in the FFN)"),
            ("auc_obs_non", "W^V' obs > non: AUC", "Theorem 3 (observed reachability)")):
        agg = harness.seed_aggregate(directed(result[key]))
        out.append(C.at_least(name, MIN_AUC, agg.mean, f"{why}; {_ci(agg)}"))
    agg = harness.seed_aggregate(result["auc_realobs_non"])
    out.append(C.at_most("W^V' real\\obs vs non: AUC (real\\obs sits with non)", MAX_AUC_REALOBS,
                         agg.mean, f"only observed reachability is stored; {_ci(agg)}"))
    for key, name, why in (
            ("th_auc_edge", "theorem model: W^M edges > non-edges: AUC", "adjacency"),
            ("th_auc_obs_non", "theorem model: W^V obs > non: AUC", "observed reachability")):
        agg = harness.seed_aggregate(directed(result[key]))
        out.append(C.at_least(name, MIN_AUC, agg.mean, f"Theorem 3's own simplified model "
                              f"(logits W^M[u] + W^V[t], GD); {why}; {_ci(agg)}"))
    agg = harness.seed_aggregate(result["th_auc_realobs_non"])
    out.append(C.at_most("theorem model: W^V real\\obs vs non: AUC", MAX_AUC_REALOBS,
                         agg.mean, f"only observed reachability is stored; {_ci(agg)}"))
    acc, counts = result["acc_degree_ntp"], result["degree_counts"]
    for b in (0, 1):
        agg = harness.seed_aggregate(acc[:, b])
        out.append(C.at_least(f"NTP greedy accuracy, degree {b}", MIN_ACC_LOW_DEGREE, agg.mean,
                              f"{counts[b]} test pairs; {_ci(agg)}"))
    gap = harness.seed_aggregate(sign * (np.minimum(acc[:, 0], acc[:, 1]) - acc[:, 2]))
    out.append(C.at_least("NTP accuracy: min(degree 0, 1) - degree >=2", MIN_DEGREE_GAP,
                          gap.mean, f"{counts[2]} test pairs of degree >= 2 (NaN if none); "
                          f"{_ci(gap)}"))
    acc_t = result["rl_acc_test"]
    gain = harness.seed_aggregate(sign * (acc_t[:, -1] - acc_t[:, 0]))
    out.append(C.at_least("RL raises test accuracy (T=1): lower 95% bound of the gain",
                          MIN_RL_GAIN, gain.lo, _ci(gain)))
    sat = M.saturation_index(acc_t.mean(0), SAT_TOL)
    at = f"saturation at RL step {result['rl_step'][sat]:g} of {result['rl_step'][-1]:g}"
    kl = harness.seed_aggregate(sign * (result["rl_kl_test"][:, -1] - result["rl_kl_test"][:, sat]))
    out.append(_strict("KL(U_C||pi) rises after saturation: lower 95% bound", kl.lo, 1.0,
                       f"{at}; change {_ci(kl)}"))
    h = harness.seed_aggregate(sign * (result["rl_entropy_test"][:, -1]
                                       - result["rl_entropy_test"][:, sat]))
    out.append(_strict("path entropy falls after saturation: upper 95% bound", h.hi, -1.0,
                       f"{at}; change {_ci(h)}"))
    if sat == len(result["rl_step"]) - 1:  # no window after saturation: nothing to judge
        out[-2:] = [dataclasses.replace(c, holds=False) for c in out[-2:]]
    return out


def plot(result: dict, config: Config, run_dir: Path) -> None:
    """Twelve panels (experiments/alpine_plot.py): heatmaps, set means, degree accuracy, RL
    accuracy and diversity against step, where the next-node choice is made, NTP loss."""
    alpine_plot.plot(result, config, run_dir, sat_tol=SAT_TOL)
