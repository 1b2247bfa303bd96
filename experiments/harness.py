"""Shared helpers of the figure modules: seed aggregates, linear fits, plots, wrong
predictions.

* ``seed_aggregate(values)``: mean and 95 % Student-t interval over the seed axis,
  mean ± t_{0.975, n−1} · s/√n.
* ``linear_fit(x, y)``: ordinary least squares y = slope·x + intercept with R² and the
  textbook standard errors, se(slope) = sqrt(SSR/(n−2) / Σ(x − x̄)²),
  se(intercept) = se(slope)·sqrt(Σx²/n).
* ``loglog_fit(x, y)``: the same on (log x, log y): the exponent of a power law.
* ``wrong_prediction`` / ``corrupt``: a deliberately wrong prediction (sign flipped or
  constant doubled), for the tests that show a figure's claims can fail.
* ``logit_crossing_step``: first step a probability reaches a level, interpolated in logit.
* ``pick_rows`` / ``ntp_per_rate``: per-example mixing of two data sources, and next-token
  training of one base per mixture rate (vmappable over the rate).
* ``new_figure`` / ``save_figure`` / ``plot_mean_ci`` / ``identity_scatter``: matplotlib
  (Agg backend) helpers; ``save_figure`` writes ``figure.png`` and ``figure.svg``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from experiments.claims import Claim


# --------------------------------------------------------------------------- statistics
def t_quantile(df: int, q: float = 0.975) -> float:
    """Student-t quantile t_{q, df} (``scipy.special`` imports in a fraction of the time of
    ``scipy.stats``)."""
    from scipy.special import stdtrit

    return float(stdtrit(df, q))


@dataclasses.dataclass(frozen=True)
class Aggregate:
    """Mean over seeds with a two-sided 95 % t-interval [lo, hi] (NaN for one seed)."""

    mean: np.ndarray | float
    lo: np.ndarray | float
    hi: np.ndarray | float
    sem: np.ndarray | float
    n: int


def seed_aggregate(values, axis: int = 0) -> Aggregate:
    """Aggregate ``values`` over the seed ``axis``: mean ± t_{0.975, n−1}·s/√n.

    Hand value: values (1, 2, 3): mean 2, s = 1, sem = 1/√3, t_{0.975, 2} = 4.303, so the
    interval is 2 ± 2.484.
    """
    v = np.asarray(values, dtype=np.float64)
    n = v.shape[axis]
    mean = v.mean(axis=axis)
    if n < 2:
        nan = np.full_like(mean, np.nan)
        return Aggregate(_scalar(mean), _scalar(nan), _scalar(nan), _scalar(nan), n)
    sem = v.std(axis=axis, ddof=1) / np.sqrt(n)
    half = t_quantile(n - 1) * sem
    return Aggregate(_scalar(mean), _scalar(mean - half), _scalar(mean + half), _scalar(sem), n)


def _scalar(x):
    x = np.asarray(x)
    return float(x) if x.ndim == 0 else x


@dataclasses.dataclass(frozen=True)
class LinearFit:
    """y ≈ slope·x + intercept, with R² and the OLS standard errors."""

    slope: float
    intercept: float
    r2: float
    slope_se: float
    intercept_se: float
    n: int


def linear_fit(x, y) -> LinearFit:
    """Ordinary least squares of ``y`` on ``x`` (flattened). NaN fields when x is constant.

    Hand value: x = (0, 1, 2), y = (1, 3, 5): slope 2, intercept 1, R² = 1, standard errors 0.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in size: {x.size} vs {y.size}")
    n = x.size
    xc = x - x.mean()
    sxx = float(np.sum(xc * xc))
    if n < 2 or sxx == 0.0:
        nan = float("nan")
        return LinearFit(nan, nan, nan, nan, nan, n)
    slope = float(np.sum(xc * (y - y.mean())) / sxx)
    intercept = float(y.mean() - slope * x.mean())
    resid = y - (slope * x + intercept)
    ssr = float(np.sum(resid**2))
    sst = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - ssr / sst if sst > 0 else float("nan")
    if n > 2:
        slope_se = float(np.sqrt(ssr / (n - 2) / sxx))
        intercept_se = float(slope_se * np.sqrt(np.sum(x * x) / n))
    else:
        slope_se = intercept_se = float("nan")
    return LinearFit(slope, intercept, r2, slope_se, intercept_se, n)


def loglog_fit(x, y) -> LinearFit:
    """Power-law fit y ≈ C·x^slope by least squares on (log x, log y); needs x, y > 0."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("loglog_fit needs positive x and y")
    return linear_fit(np.log(x), np.log(y))


# ---------------------------------------------------------------- wrong predictions
WRONG_KINDS = ("flip", "double")


def check_heads(owner: str, d_model: int, n_heads: int) -> None:
    """A figure's width must split into its heads (``ModelConfig``'s rule), checked when the
    figure's Config is built, before anything trains."""
    if d_model % n_heads:
        raise ValueError(f"{owner}d_model must be a multiple of n_heads={n_heads} (the figure's "
                         f"model), got {d_model}")


def tuple_fields(owner: str, config, fields) -> None:
    """Set each grid field (``depths``, ``p_longs`` ...) of a frozen config to a tuple: a
    config built in Python with a list must equal its JSON round trip (which gives tuples),
    and a bare number or string is refused by name instead of failing as "not iterable" or
    splitting into characters."""
    for name in fields:
        value = getattr(config, name)
        if not isinstance(value, list | tuple):
            raise ValueError(f"{owner}.{name} must be a list or tuple, got {value!r}")
        object.__setattr__(config, name, tuple(value))


def sign_claim(name: str, sign: float, values, note: str):
    """A predicted sign over seeds: holds iff the 95 % t-interval of ``sign * values`` lies
    above 0. ``measured`` is the seed mean of ``values`` (sign as measured); the interval's
    lower end, which decides, is in ``tolerance``."""
    agg = seed_aggregate(float(sign) * np.asarray(values))
    raw = seed_aggregate(values)
    return Claim(name, f"sign {float(sign):+g}", float(raw.mean),
                 f"95% CI of sign*x > 0: lower end {agg.lo:.4g}",
                 bool(np.isfinite(agg.lo) and agg.lo > 0),
                 f"{note}; 95% CI [{raw.lo:.4f}, {raw.hi:.4f}] over {raw.n} seeds")


def pick_rows(take, first, second):
    """Row i of every leaf from ``first`` where ``take[i]``, else from ``second`` (two batches
    of one pytree structure, rows on axis 0): the per-example mixture of two data sources."""
    import jax
    import jax.numpy as jnp

    return jax.tree.map(lambda a, b: jnp.where(
        take.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), first, second)


def ntp_per_rate(model_config, graphdef, optimizer, mixture, n_steps: int, seed: int):
    """``train(rate) -> params``: next-token training of one model for ``n_steps`` steps (one
    ``lax.scan``) from the initialisation of ``seed``, step i on the batch
    ``mixture(fold_in(data_key, i), rate)``. ``rate`` may be traced, so ``jax.vmap(train)``
    over a vector of mixture rates trains one base per rate in one compiled call (the
    long-cot and reflection figures' bases). ``optimizer``: an optax transformation."""
    import jax
    import jax.numpy as jnp
    import optax

    from toymodels import model
    from toymodels.train import ntp_loss

    def train(rate):
        init_key, data_key = jax.random.split(jax.random.key(seed))
        params = model.init(model_config, init_key)[1]

        def step(carry, i):
            params, state = carry
            batch = mixture(jax.random.fold_in(data_key, i), rate)
            grads = jax.grad(lambda q: ntp_loss(graphdef, q, batch)[0])(params)
            updates, state = optimizer.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        carry = (params, optimizer.init(params))
        return jax.lax.scan(step, carry, jnp.arange(n_steps))[0][0]

    return train


def logit_crossing_step(steps, q, q_star: float, *, clip: float = 1e-6) -> np.ndarray:
    """First logged step at which the probability ``q`` reaches ``q_star``, linearly
    interpolated in logit between the two logs around the crossing (the logit of a sigmoid
    learning curve is close to linear in the step); ``steps[0]`` if already there at the first
    log, NaN if never reached or if a log up to the crossing is NaN (a diverged run has no
    crossing step). q: [..., logs], clipped to [clip, 1 - clip] before the logit.
    Returns float64[...]."""
    q = np.asarray(q, np.float64)
    lq = np.log(np.clip(q, clip, 1 - clip)) - np.log1p(-np.clip(q, clip, 1 - clip))
    target = float(np.log(q_star) - np.log1p(-q_star))
    out = np.full(lq.shape[:-1], np.nan)
    for idx in np.ndindex(out.shape):
        row = lq[idx]
        hit = np.nonzero(row >= target)[0]
        if hit.size == 0:
            continue
        j = hit[0]
        if np.isnan(row[:j]).any():
            continue
        if j == 0:
            out[idx] = steps[0]
        else:
            frac = (target - row[j - 1]) / max(row[j] - row[j - 1], 1e-12)
            out[idx] = steps[j - 1] + frac * (steps[j] - steps[j - 1])
    return out


def wrong_prediction(predicted, kind: str):
    """A deliberately wrong prediction: ``"flip"`` → −predicted, ``"double"`` → 2·predicted."""
    if kind == "flip":
        return -np.asarray(predicted)
    if kind == "double":
        return 2.0 * np.asarray(predicted)
    raise ValueError(f"kind must be one of {WRONG_KINDS}, got {kind!r}")


def corrupt(result: dict, keys: Iterable[str], kind: str) -> dict:
    """A copy of ``result`` with the prediction arrays at ``keys`` made wrong by ``kind``."""
    out = dict(result)
    for k in keys:
        if k not in result:
            raise KeyError(f"no prediction {k!r} in the result")
        out[k] = wrong_prediction(result[k], kind)
    return out


# ------------------------------------------------------------------------------ plotting
def new_figure(n_panels: int, *, ncols: int | None = None, size: float = 3.6):
    """A figure with ``n_panels`` axes in a grid (Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = ncols or n_panels
    nrows = -(-n_panels // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    axes = axes.ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes[:n_panels])


def save_figure(fig, run_dir: Path) -> tuple[Path, Path]:
    """Write ``figure.png`` (150 dpi) and ``figure.svg`` into ``run_dir``; close the figure.

    The same numbers give the same files in any process: the SVG carries no date, and its
    element ids are salted with a fixed string (matplotlib salts them at random per process
    by default).
    """
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    png, svg = run_dir / "figure.png", run_dir / "figure.svg"
    fig.tight_layout()
    fig.savefig(png, dpi=150)
    with plt.rc_context({"svg.hashsalt": "toyreason"}):
        fig.savefig(svg, metadata={"Date": None})
    plt.close(fig)
    return png, svg


def plot_mean_ci(ax, x, values, *, label: str = "", color=None, marker: str = "o"):
    """Plot the seed mean of ``values`` [seeds, len(x)] with its 95 % t-interval band."""
    agg = seed_aggregate(values, axis=0)
    line = ax.plot(x, agg.mean, marker=marker, label=label, color=color)[0]
    if agg.n >= 2:
        ax.fill_between(x, agg.lo, agg.hi, alpha=0.25, color=line.get_color(), lw=0)
    return line


def identity_scatter(ax, predicted, measured, *, label: str = "", color=None, s: float = 6):
    """Scatter measured against predicted with the y = x line (the prediction's claim)."""
    p = np.asarray(predicted).ravel()
    m = np.asarray(measured).ravel()
    # Rasterised points keep figure.svg small; axes and text stay vector.
    ax.scatter(p, m, s=s, alpha=0.5, label=label, color=color, lw=0, rasterized=True)
    finite = np.concatenate([p, m])
    finite = finite[np.isfinite(finite)]
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.axhline(0, color="0.8", lw=0.5)
    ax.axvline(0, color="0.8", lw=0.5)
