"""``toyreason report [DIR]``: every run under DIR on one page, as Markdown and as HTML.

    md, html = build("runs")     # runs/report.md, runs/report.html

A run is a directory holding ``claims.json`` (written by ``experiments.runner.execute``);
its ``manifest.json`` and ``config.json`` supply the figure's name, the paper it
reproduces, the command that reruns it, the wall time and the config. Any of these may be
missing or partial (an older run, a crashed one): the report says "unknown" and goes on.
``report.html`` is self-contained: figures are embedded as base64 PNG, styles are inline.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import os
from pathlib import Path

UNKNOWN = "unknown"


@dataclasses.dataclass(frozen=True)
class RunRecord:
    path: Path
    name: str
    paper: str
    description: str
    command: str
    wall_s: float | None
    status: str
    config: dict
    claims: list[dict]
    figure: Path | None
    error: str = ""  # why a failed run failed (the runner's manifest "error"), if known

    @property
    def held(self) -> int:
        # only a JSON true holds: a damaged "holds": "false" must not count as held
        return sum(c.get("holds") is True for c in self.claims)


def _read_json(path: Path):
    """The parsed file, or None when it is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _description(name: str) -> str:
    """The experiment's one-line DESCRIPTION when the module is registered (else "")."""
    try:
        import experiments

        return str(experiments.get(name).DESCRIPTION)
    except Exception:  # a report must not fail on a missing or broken module
        return ""


def load_run(run_dir: Path) -> RunRecord:
    """Read one run directory, tolerating missing files and keys."""
    run_dir = Path(run_dir)
    manifest = _read_json(run_dir / "manifest.json")
    manifest = manifest if isinstance(manifest, dict) else {}
    config = _read_json(run_dir / "config.json")
    claims = _read_json(run_dir / "claims.json")
    status = str(manifest.get("status") or UNKNOWN)
    if (run_dir / "claims.json").exists() and not (
            isinstance(claims, list) and all(isinstance(c, dict) for c in claims)):
        status = "damaged: claims.json is unreadable"  # not "no claims": say so
    attempt = _read_json(run_dir / "attempt.json")  # a rerun of a completed run
    error = str(manifest.get("error") or "")
    if isinstance(attempt, dict) and attempt.get("status"):
        status += f" (last rerun: {attempt['status']})"
        if attempt.get("error"):
            error = f"last rerun: {attempt['error']}"
    claims = [c for c in claims if isinstance(c, dict)] if isinstance(claims, list) else []
    name = str(manifest.get("experiment") or manifest.get("name") or run_dir.parent.name)
    wall = manifest.get("wall_s", manifest.get("wall_time_s"))
    command = manifest.get("command") or manifest.get("reproduce") or UNKNOWN
    figure = run_dir / "figure.png"
    return RunRecord(
        path=run_dir, name=name, paper=str(manifest.get("paper") or UNKNOWN),
        description=_description(name), command=str(command),
        wall_s=float(wall) if isinstance(wall, int | float) else None,
        status=status,
        config=config if isinstance(config, dict) else {}, claims=claims,
        figure=figure if figure.is_file() else None, error=error)


def find_runs(root: Path) -> list[RunRecord]:
    """Every run under ``root``, by name then path: a directory holding a ``claims.json``,
    or a figure's ``manifest.json`` (a run that failed or is running has no claims yet)."""
    dirs = {p.parent for p in Path(root).rglob("claims.json")}
    for path in Path(root).rglob("manifest.json"):
        manifest = _read_json(path)
        if isinstance(manifest, dict) and "experiment" in manifest:  # written by the runner
            dirs.add(path.parent)
    return sorted((load_run(d) for d in dirs), key=lambda r: (r.name, str(r.path)))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    return UNKNOWN if v is None else str(v)


def _wall(r: RunRecord) -> str:
    return UNKNOWN if r.wall_s is None else f"{r.wall_s:.1f} s"


def _rel(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


CLAIM_COLS = ("name", "predicted", "measured", "tolerance", "holds", "note")


def _summary(runs: list[RunRecord]) -> str:
    """"N run(s); held/total claims hold", and how many runs are not complete."""
    total = sum(len(r.claims) for r in runs)
    text = f"{len(runs)} run(s); {sum(r.held for r in runs)}/{total} claims hold."
    if not runs:
        text += (" No runs found here: a run is a directory with a claims.json or a "
                 "manifest.json written by `toyreason run NAME --out DIR`.")
    unfinished = [r for r in runs if not r.status.startswith("complete")]
    if unfinished:
        text += (f" {len(unfinished)} run(s) not complete (failed, running, damaged or "
                 "unknown): see their Status.")
    return text


# ------------------------------------------------------------------------------ markdown
def _md_cell(v) -> str:
    return _fmt(v).replace("|", "\\|").replace("\n", " ")


def to_markdown(runs: list[RunRecord], root: Path) -> str:
    out = ["# toyreason report", "", _summary(runs), ""]
    if runs:
        out += ["| figure | paper | claims held | status | wall time | run |",
                "|---|---|---|---|---|---|"]
        out += [f"| {r.name} | {_md_cell(r.paper)} | {r.held}/{len(r.claims)} | "
                f"{_md_cell(r.status)} | {_wall(r)} | `{_rel(r.path, root)}` |" for r in runs]
        out.append("")
    for r in runs:
        out += [f"## {r.name} — `{_rel(r.path, root)}`", ""]
        if r.description:
            out += [r.description, ""]
        out += [f"- Paper: {r.paper}", f"- Rerun: `{r.command}`", f"- Wall time: {_wall(r)}",
                f"- Status: {r.status}", f"- Claims held: {r.held}/{len(r.claims)}"]
        out += [f"- Error: {_md_cell(r.error)}"] if r.error else []
        out.append("")
        if r.figure is not None:
            out += [f"![{r.name}]({_rel(r.figure, root)})", ""]
        if r.claims:
            out += ["| " + " | ".join(CLAIM_COLS) + " |", "|" + "---|" * len(CLAIM_COLS)]
            out += ["| " + " | ".join(_md_cell(c.get(k)) for k in CLAIM_COLS) + " |"
                    for c in r.claims]
        else:
            out.append("No claims recorded.")
        out += ["", "<details><summary>config</summary>", "", "```json",
                json.dumps(r.config, indent=2, sort_keys=True), "```", "", "</details>", ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------- html
STYLE = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 6px;
font-size:13px;text-align:left}tr.no td{background:#fdd}img{max-width:100%}
code,pre{background:#f4f4f4}pre{padding:.5em;overflow-x:auto}"""


def _h(v) -> str:
    return html.escape(_fmt(v))


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def to_html(runs: list[RunRecord], root: Path) -> str:
    out = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8">',
           "<title>toyreason report</title>", f"<style>{STYLE}</style></head><body>",
           "<h1>toyreason report</h1>", f"<p>{_h(_summary(runs))}</p>"]
    if runs:
        out.append("<table><tr><th>figure</th><th>paper</th><th>claims held</th>"
                   "<th>status</th><th>wall time</th><th>run</th></tr>")
        out += [f'<tr><td><a href="#run{i}">{_h(r.name)}</a></td><td>{_h(r.paper)}</td>'
                f"<td>{r.held}/{len(r.claims)}</td><td>{_h(r.status)}</td>"
                f"<td>{_h(_wall(r))}</td>"
                f"<td><code>{_h(_rel(r.path, root))}</code></td></tr>"
                for i, r in enumerate(runs)]
        out.append("</table>")
    for i, r in enumerate(runs):
        out.append(f'<h2 id="run{i}">{_h(r.name)} — <code>{_h(_rel(r.path, root))}</code></h2>')
        if r.description:
            out.append(f"<p>{_h(r.description)}</p>")
        out.append(f"<ul><li>Paper: {_h(r.paper)}</li><li>Rerun: <code>{_h(r.command)}</code>"
                   f"</li><li>Wall time: {_h(_wall(r))}</li><li>Status: {_h(r.status)}</li>"
                   f"<li>Claims held: {r.held}/{len(r.claims)}</li>"
                   + (f"<li>Error: {_h(r.error)}</li>" if r.error else "") + "</ul>")
        if r.figure is not None:
            out.append(_img(r.figure, r.name))
        if r.claims:
            out.append("<table><tr>" + "".join(f"<th>{k}</th>" for k in CLAIM_COLS) + "</tr>")
            for c in r.claims:
                cls = "" if c.get("holds") else ' class="no"'
                out.append(f"<tr{cls}>" + "".join(f"<td>{_h(c.get(k))}</td>"
                                                  for k in CLAIM_COLS) + "</tr>")
            out.append("</table>")
        else:
            out.append("<p>No claims recorded.</p>")
        cfg = html.escape(json.dumps(r.config, indent=2, sort_keys=True))
        out.append(f"<details><summary>config</summary><pre>{cfg}</pre></details>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def build(root: Path | str) -> tuple[Path, Path]:
    """Write ``root/report.md`` and ``root/report.html`` for every run under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such directory: {root}")
    runs = find_runs(root)
    md, page = root / "report.md", root / "report.html"
    md.write_text(to_markdown(runs, root) + "\n")
    page.write_text(to_html(runs, root))
    return md, page
