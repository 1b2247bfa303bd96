"""Claims are data: a number predicted, a number measured, a tolerance and a verdict.

A claim is judged by a rule fixed *before* the measurement (the tolerance comes from the
theory's error term or the seed-to-seed spread), and a failed claim is reported, not hidden.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Claim:
    """One checkable statement of a theory.

    ``predicted`` and ``measured`` are numbers (or short strings such as ``">= 0.95"`` for a
    one-sided bound); ``tolerance`` says how the verdict was reached (``"±0.05"``,
    ``"one-sided"``); ``holds`` is the verdict; ``note`` explains in a sentence.
    """

    name: str
    predicted: float | str
    measured: float | str
    tolerance: float | str
    holds: bool
    note: str = ""

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("predicted", "measured", "tolerance"):
            v = d[k]
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = str(v)  # JSON has no NaN/Inf
        d["holds"] = bool(d["holds"])
        return d


def within(name: str, predicted: float, measured: float, tol: float, note: str = "", *,
           support: tuple[float, float] | None = None) -> Claim:
    """|measured − predicted| <= tol (NaN never holds). ``support``: the values the measure
    can take (a probability: (0, 1)); a band [predicted ± tol] that covers all of it could
    not have failed (too few samples), so the claim is not judged and does not hold."""
    ok = bool(math.isfinite(measured) and abs(measured - predicted) <= tol)
    claim = Claim(name, float(predicted), float(measured), float(tol), ok, note)
    if support is not None and predicted - tol <= support[0] and predicted + tol >= support[1]:
        return not_judged(claim, "the tolerance covers every possible value "
                                 f"[{support[0]:g}, {support[1]:g}] (too few samples)")
    return claim


def not_judged(claim: Claim, why: str) -> Claim:
    """``claim`` as not holding because it could not have failed (an empty set, a band
    covering every value, a model with nothing to lose): the note says so and why."""
    return dataclasses.replace(claim, holds=False, note=f"{claim.note}; not judged: {why}")


def at_least(name: str, bound: float, measured: float, note: str = "") -> Claim:
    ok = bool(math.isfinite(measured) and measured >= bound)
    return Claim(name, f">= {bound:g}", float(measured), "one-sided", ok, note)


def at_most(name: str, bound: float, measured: float, note: str = "") -> Claim:
    ok = bool(math.isfinite(measured) and measured <= bound)
    return Claim(name, f"<= {bound:g}", float(measured), "one-sided", ok, note)


def in_range(name: str, lo: float, hi: float, measured: float, note: str = "") -> Claim:
    ok = bool(math.isfinite(measured) and lo <= measured <= hi)
    return Claim(name, f"in [{lo:g}, {hi:g}]", float(measured), "interval", ok, note)


def write_claims(claims: Sequence[Claim], path: Path) -> None:
    Path(path).write_text(json.dumps([c.to_dict() for c in claims], indent=2) + "\n")


def read_claims(path: Path) -> list[dict]:
    return json.loads(Path(path).read_text())


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def table(claims: Sequence[Claim | dict]) -> str:
    """The claims as a fixed-width text table (what ``toyreason run`` prints)."""
    rows = [c.to_dict() if isinstance(c, Claim) else c for c in claims]
    head = ("claim", "predicted", "measured", "tolerance", "holds")
    body = [(r["name"], _fmt(r["predicted"]), _fmt(r["measured"]), _fmt(r["tolerance"]),
             "yes" if r["holds"] else "NO") for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=False)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
    out = [line(head), line(["-" * w for w in widths])] + [line(b) for b in body]
    return "\n".join(out)
