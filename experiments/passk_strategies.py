"""The competing-strategies toy of the ``passk-support`` figure (its second winner-take-all
panel): Nguyen et al. 2025 (arXiv 2510.02230, abstract) trace winner-take-all to on-policy
RL with shared parameters converging "toward narrow solution strategies". The modular_sum
toy has one algorithm and no strategy to lose; this toy has two.

Problems x = 0 .. n−1, prompt ``x =``. Two demonstrators write ``<A> f_A(x) <eos>`` with
f_A(x) = x, or ``<B> f_B(x) <eos>`` with f_B(x) = x + 1 mod n. The true answer is f_A(x) on
the class S_A (⌊frac_a · n⌉ problems) and f_B(x) on S_B (the rest): no overlap. Membership
is a random permutation keyed by the config seed, so it has no structure a model could
learn cheaply. The base is next-token trained on demonstrations on *every* prompt, A with
probability w_a, so it has one shared strategy preference: p ≈ w_a on S_A, 1 − w_a on S_B
(times how reliably it executes the strategy). A completion is correct iff it is the gold
solution (s*, f(x), <eos>), s* the strategy that solves x, so p_j = π(s*_j, f(x_j), <eos>)
is exact from one teacher-forced pass.

Two choices. A strategy token rather than two bare answers: the strategy is then one
decision, the logit z_j = log π(<A>|x_j) − log π(<B>|x_j) at one position, which the base
sets to logit(w_a) for every x. Nguyen et al.'s example (code vs natural-language reasoning,
chosen at the start of a solution) has this form. And the verifier grades the solution, not
only the answer: with an answer-only verifier (seed-0 pilot) RL learned, problem by problem,
to write B's answer after <A> (reinforcing the base's ~1 % execution errors), so the
strategy token stopped binding the answer (docs §4).

Prediction (ours, docs/theory_rl_dynamics.md §4; ``theory.support.shared_strategy_first_step``):
if the answer after the strategy token were certain, a GRPO group on problem j would push z_j
by s_j g(p_j) in expectation (s_j = ±1 on S_A / S_B), g(p) = G E √(q(1−q)) symmetric in
p ↔ 1 − p, so S_A and S_B problems push equally hard, in opposite directions; through the
parameters the problems share, the net push on every z is ∝ |S_A| − |S_B|: towards the
strategy of the *larger class*, whatever w_a. With |S_A| > |S_B| and w_a > 1/2 the likely
problems (S_A) gain and S_B problems lose as soon as |S_A| − |S_B| exceeds the own-to-shared
kernel ratio r: winner-take-all, ρ > 0. The base's execution is far from certain (its least
reliable problem 0.11-0.66 at the seeds measured), which scales each push by a factor <= 1
and breaks the exact p ↔ 1 − p cancellation: only the signs are predicted (docs §4).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import harness
from experiments import passk_data as D
from tasks.core import EOS, Batch, Task, Vocab, check_ints, check_numbers, check_prob
from tasks.digits import exact_match
from theory import support

LABEL = "toy/competing_strategies"  # a label for RLConfig; the task is not registered
BASE_KEY_SALT = 1  # the base's key: fold_in(key(seed), 1), apart from the modular_sum base


@dataclasses.dataclass(frozen=True)
class StrategiesConfig:
    n_problems: int = 64
    frac_a: float = 0.75  # |S_A| / n: the class sizes break the p <-> 1 - p symmetry
    w_a: float = 0.7  # demonstrator A's share of the base's data
    d_model: int = 32
    ntp_steps: int = 400  # fixed: the base must learn both answer tables (checked: p_answer)
    ntp_lr: float = 3e-3
    rl_steps: int = 60
    rl_lr: float = 1.5e-3
    prompts_per_step: int = 16
    kernel_diagnostic: bool = True  # the base's kernel ratio r (a note; ~2 CPU-s to compile)

    def __post_init__(self):
        check_ints("passk-support.strategies", self, ("n_problems", "d_model", "ntp_steps",
                                                      "rl_steps", "prompts_per_step"))
        if not 4 <= self.n_problems <= 1024:
            raise ValueError(f"strategies.n_problems must lie in [4, 1024], got "
                             f"{self.n_problems}")
        check_prob("passk-support.strategies", "frac_a", self.frac_a)
        n_a = round(self.frac_a * self.n_problems)
        if not 1 <= n_a <= self.n_problems - 1:
            raise ValueError(f"strategies.frac_a must leave both classes non-empty, got "
                             f"{self.frac_a}")
        if not 0 < self.w_a < 1:
            raise ValueError(f"strategies.w_a must lie in (0, 1), got {self.w_a}")
        check_numbers("passk-support.strategies", self, ("ntp_lr", "rl_lr"), positive=True)
        harness.check_heads("strategies.", self.d_model, D.N_HEADS)
        if not isinstance(self.kernel_diagnostic, bool):
            raise ValueError("strategies.kernel_diagnostic must be True or False")

    @property
    def n_a(self) -> int:
        return round(self.frac_a * self.n_problems)


class StrategiesTask(Task):
    """RL's view of the toy: prompts ``x =``, reward 1 iff (strategy token, f(x), <eos>)."""

    name = LABEL
    Config = StrategiesConfig

    def __init__(self, config: StrategiesConfig, seed: int):
        super().__init__(config)
        n = config.n_problems
        self.vocab = Vocab(("<pad>", "<eos>", "=", "<A>", "<B>"), n)
        self.prompt_len, self.max_target_len = 2, 3
        order = np.random.default_rng(seed).permutation(n)
        in_a = np.zeros(n, bool)
        in_a[order[:config.n_a]] = True
        self.in_a = jnp.asarray(in_a)  # class membership: a random hash of x

    def answers(self, x, use_a):
        n = self.config.n_problems
        return jnp.where(use_a, x, (x + 1) % n)

    def _batch(self, x, use_a, answer):
        v, n = self.vocab, x.shape[0]
        prompts = jnp.stack([v.num(x), jnp.full(n, v.id("="))], 1).astype(jnp.int32)
        strat = jnp.where(use_a, v.id("<A>"), v.id("<B>"))
        targets = jnp.stack([strat, v.num(answer), jnp.full(n, EOS)], 1).astype(jnp.int32)
        return Batch(prompts=prompts, prompt_lens=jnp.full(n, 2, jnp.int32), targets=targets,
                     target_lens=jnp.full(n, 3, jnp.int32),
                     meta={"x": x, "answer": answer, "in_a": self.in_a[x]})

    def sample(self, key, n: int, split: str = "train") -> Batch:
        """Uniform problems with their gold completion (RL uses only prompts and meta)."""
        x = jax.random.randint(key, (n,), 0, self.config.n_problems, jnp.int32)
        return self._batch(x, self.in_a[x], self.answers(x, self.in_a[x]))

    def demonstrations(self, key, n: int) -> Batch:
        """The base's data: every prompt, demonstrator A with probability w_a, else B."""
        kx, ks = jax.random.split(key)
        x = jax.random.randint(kx, (n,), 0, self.config.n_problems, jnp.int32)
        use_a = jax.random.bernoulli(ks, self.config.w_a, (n,))
        return self._batch(x, use_a, self.answers(x, use_a))

    def reward(self, batch: Batch, completions) -> jax.Array:
        """1 iff the completion is the gold solution (s*, f_{s*}(x), <eos>): a strategy that
        solves x, executed. A right answer after the wrong strategy token is no solution;
        what follows the first <eos> is ignored, and a completion shorter than 3 tokens (or
        without <eos> at its third) earns 0."""
        # tasks.digits.exact_match reads the completion at the gold's width (cut, or padded
        # with <pad>, which never equals the gold's <eos>): defined for any completion width
        return exact_match(batch.targets, batch.target_lens, completions)

    def all_problems(self, strategy: str | None = None) -> Batch:
        """Every problem once, with the solution of ``strategy`` ('A' or 'B': that
        demonstrator's route (s, f_s(x), <eos>), right or not) or, for None, the gold one."""
        x = jnp.arange(self.config.n_problems, dtype=jnp.int32)
        use = self.in_a if strategy is None else jnp.full(x.shape, strategy == "A")
        return self._batch(x, use, self.answers(x, use))


def quick_config() -> StrategiesConfig:
    """A smoke test within the figure's 30 s: a shorter base, a quarter of the RL, no kernel."""
    return StrategiesConfig(ntp_steps=250, rl_steps=15, kernel_diagnostic=False)


def make_task(config) -> StrategiesTask:
    return StrategiesTask(config.strategies, config.seed)


# Tiny models: XLA's compile time, not the run, dominates; its cheap backend passes halve it
# (CPU, measured: the RL scan 13.4 -> 6.8 s under load).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _compiled(fn, *args):
    return jax.jit(fn).lower(*args).compile(FAST_COMPILE)(*args)


def train_base(config, task: StrategiesTask):
    """Adam (toymodels.train.ntp_loss) on demonstrations for a fixed ``ntp_steps``."""
    from toymodels import model
    from toymodels.train import ntp_loss

    s = config.strategies
    init_key, data_key = jax.random.split(jax.random.fold_in(jax.random.key(config.seed),
                                                             BASE_KEY_SALT))
    # eager init, a timing choice only: its per-shape samplers are often compiled already by
    # the modular_sum base (not guaranteed: the two panels run concurrently), while a jitted
    # init compiles the whole threefry graph again (4.6 s)
    graphdef, params = model.init(D.model_config(s, task), init_key)
    warmup = min(10, s.ntp_steps // 2)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(
        optax.warmup_cosine_decay_schedule(0.0, s.ntp_lr, warmup, s.ntp_steps, 0.1 * s.ntp_lr)))

    def step(carry, i):
        params, state = carry
        batch = task.demonstrations(jax.random.fold_in(data_key, i), 64)
        grads = jax.grad(lambda p: ntp_loss(graphdef, p, batch)[0])(params)
        updates, state = opt.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    steps = jnp.arange(s.ntp_steps)
    return graphdef, _compiled(lambda p: jax.lax.scan(step, (p, opt.init(p)), steps)[0][0],
                               params)


def train_rl(config, graphdef, base, task: StrategiesTask):
    """GRPO (on-policy, no KL) from the base for the RL seeds ``seed .. seed + n_seeds − 1``
    (``passk_data.grpo_seeds``); returns params [seeds] and the reward [seeds, steps]."""
    from toymodels.rl.config import RLConfig

    s = config.strategies
    rc = RLConfig(task=LABEL, advantage="grpo", group_size=config.group_size,
                  prompts_per_step=s.prompts_per_step, lr=s.rl_lr, steps=s.rl_steps,
                  seed=config.seed, n_seeds=config.n_seeds)
    return D.grpo_seeds(graphdef, base, task, rc, FAST_COMPILE)


def measurer(graphdef, params, task: StrategiesTask, targets):
    """``measure(targets) -> (ll, log_a, log_b)`` for params with a leading axis: log π(targets
    | x_j) (teacher forcing) and log π(<A>|x_j), log π(<B>|x_j) (the first completion
    position's log-softmax, so other tokens' mass counts), float64 [params, problems]."""
    from toymodels.rl.objectives import token_logprobs

    def one(p, t):
        logits = _completion_logits(graphdef, p, task, t)
        return (token_logprobs(logits, t).sum(1), *_strategy_logprobs(logits, task))

    fn = jax.jit(jax.vmap(one, in_axes=(0, None))).lower(params, targets).compile(FAST_COMPILE)
    # one compile for every target set (same shapes): the gold and both demonstrators' routes
    return lambda t: tuple(np.asarray(a, np.float64) for a in fn(params, t))


def strategy_kernel_ratio(graphdef, params, task: StrategiesTask) -> float:
    """r = k_o / k_s of the base's strategy-logit kernel K(i, j) = ∂z_i · ∂z_j: k_s the
    mean off-diagonal entry, k_o the mean diagonal minus k_s (the kernel of
    ``theory.support.shared_strategy_first_step``, for plain gradient steps; Adam rescales
    each coordinate, so this is a guide, not the optimiser's kernel). NaN when k_s <= 0:
    the problems' strategy logits then share no push, and the ratio is undefined."""
    targets = task.all_problems().targets
    z_of = lambda p: _strategy_logit(graphdef, p, task, targets)
    jac = _compiled(jax.jacrev(z_of), params)
    flat = jnp.concatenate([j.reshape(j.shape[0], -1) for j in jax.tree.leaves(jac)], 1)
    k = np.asarray(flat @ flat.T, np.float64)
    n = len(k)
    k_s = (k.sum() - np.trace(k)) / (n * (n - 1))
    if not k_s > 0:
        return float("nan")
    return float((np.trace(k) / n - k_s) / k_s)


def _completion_logits(graphdef, p, task, targets):
    """Teacher-forced logits [problems, width, vocab] of ``targets`` after every prompt."""
    from toymodels.rl.rollout import completion_logits

    prompts = task.all_problems().prompts
    return completion_logits(graphdef, p, prompts, jnp.ones(prompts.shape, bool), targets)


def _strategy_logprobs(logits, task):
    """log π(<A>|x_j), log π(<B>|x_j): the first completion position's log-softmax."""
    logp = jax.nn.log_softmax(logits[:, 0], axis=-1)
    return logp[:, task.vocab.id("<A>")], logp[:, task.vocab.id("<B>")]


def _strategy_logit(graphdef, p, task, targets):
    """z_j = log π(<A>|x_j) − log π(<B>|x_j) (``targets`` only fill the input width)."""
    log_a, log_b = _strategy_logprobs(_completion_logits(graphdef, p, task, targets), task)
    return log_a - log_b


class Cancelled(Exception):
    """``run`` stopped between phases because its caller set ``stop``."""


def run(config, stop=None) -> dict:
    """Base, RL and the exact per-problem measurements, as arrays for ``runs.save``.

    One measuring pass over [base, RL seeds] and three target sets: the gold solution
    (p_j, exact) and each demonstrator's own route (s, f_s(x), <eos>), whose log-probability
    minus log π(s|x) is the execution reliability of s. ``stop``: a ``threading.Event``
    checked between phases (base, RL, measurement, kernel); once set, ``Cancelled``."""
    def check():
        if stop is not None and stop.is_set():
            raise Cancelled("passk_strategies.run cancelled")

    task = make_task(config)
    graphdef, base = train_base(config, task)
    check()
    rl_params, reward = train_rl(config, graphdef, base, task)
    check()
    both = jax.tree.map(lambda b, r: jnp.concatenate([b[None], r]), base, rl_params)
    measure = measurer(graphdef, both, task, task.all_problems().targets)
    ll, log_a, log_b = measure(task.all_problems().targets)
    log_pick = {"A": log_a[0], "B": log_b[0]}
    # π(f_s(x), <eos> | x, s): the base's execution of s, its least reliable problem
    execution = min(float(np.exp(measure(task.all_problems(s).targets)[0][0] - log_pick[s])
                          .min()) for s in ("A", "B"))
    check()
    return {"strat_ll_base": ll[0], "strat_ll_rl": ll[1:], "strat_in_a": np.asarray(task.in_a),
            # π(<A>|x) per problem: the strategy preference, before and after RL
            "strat_pick_a_base": np.exp(log_a[0]), "strat_pick_a_rl": np.exp(log_a[1:]),
            "strat_rl_reward": reward,
            "strat_kernel_ratio": np.array(strategy_kernel_ratio(graphdef, base, task)
                                           if config.strategies.kernel_diagnostic else np.nan),
            "strat_execution": np.array(execution)}


def stats(result: dict, config) -> dict:
    """Per-RL-seed statistics behind the two strategies claims."""
    in_a = result["strat_in_a"].astype(bool)
    d = result["strat_ll_rl"] - result["strat_ll_base"][None]
    s = config.strategies
    predicted = support.shared_strategy_first_step(
        s.w_a, s.n_a, s.n_problems - s.n_a, config.group_size,
        float(result["strat_kernel_ratio"]))
    return {"rho": D.rank_correlation(result["strat_ll_base"], d),
            "d_a": d[:, in_a].mean(1), "d_b": d[:, ~in_a].mean(1),
            "p_base_a": float(np.exp(result["strat_ll_base"][in_a]).mean()),
            "p_base_b": float(np.exp(result["strat_ll_base"][~in_a]).mean()),
            "p_rl_a": float(np.exp(result["strat_ll_rl"][:, in_a]).mean()),
            "p_rl_b": float(np.exp(result["strat_ll_rl"][:, ~in_a]).mean()),
            "pick_a_base": float(result["strat_pick_a_base"].mean()),
            "pick_a_rl": float(result["strat_pick_a_rl"].mean()),
            "first_step": predicted}
