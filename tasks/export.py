"""Export a task's examples to JSONL, so that other frameworks can train on them.

One JSON object per line and per example::

    {"task": "graph/path_star", "split": "train", "seed": 0, "index": 0,
     "config": {...}, "prompt": "3 7 ... <q> 3 9", "answer": "3 7 9 <eos>",
     "prompt_tokens": [...], "answer_tokens": [...], "meta": {...}}

``prompt``/``answer`` are ``task.vocab.decode`` of ``prompt_tokens``/``answer_tokens``
(padding removed; the answer keeps its ``<eos>``), and ``task.vocab.encode`` maps the text
back to the tokens. ``meta`` holds the example's row of every ``batch.meta`` array.

The file is written atomically: to a temporary file in the same folder, then renamed over
``path``, so an interrupted or failed export leaves any earlier file untouched.

Command line (the ``toyreason export-task`` command calls :func:`main`)::

    python -m tasks.export graph/path_star --n 100 --seed 0 --set degree=3 --out ps.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import types
import typing
from pathlib import Path

import jax
import numpy as np

from tasks.core import PAD, Task, check_seed, make, resolve

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


_NONE = ("none", "null")


def _coerce(owner: str, key: str, kind, text: str):
    """``text`` as a value of the field's annotated type: int, float, bool, str, or a union
    of these with None (``int | None`` accepts ``none``/``null``)."""
    options = typing.get_args(kind) if typing.get_origin(kind) in (typing.Union,
                                                                   types.UnionType) else (kind,)
    if type(None) in options and text.lower() in _NONE:
        return None
    for option in (o for o in options if o is not type(None)):
        try:
            if option is bool and text.lower() in _TRUE + _FALSE:
                return text.lower() in _TRUE
            if option is int:
                return int(text)
            if option is float:
                return float(text)
            if option is str:
                return text
        except ValueError:
            continue
    names = [getattr(o, "__name__", str(o)) for o in options]
    raise ValueError(f"--set {key}={text!r}: {owner}.{key} needs a value of type "
                     f"{' | '.join(names)} (bool: one of {_TRUE + _FALSE}; None: 'none')")


def parse_set(items: list[str], config_cls: type) -> dict:
    """``["n_nodes=10", "graph_kind=dag"]`` -> ``{"n_nodes": 10, "graph_kind": "dag"}``,
    each value coerced to the type of that field of ``config_cls`` (a task's ``Config``).

    Raises one clear ``ValueError`` for an item without ``=``, an unknown key (listing the
    allowed ones), a key given twice, or a value of the wrong type. The values themselves
    are checked when the config is built."""
    hints = typing.get_type_hints(config_cls)
    fields = [f.name for f in dataclasses.fields(config_cls)]
    owner = config_cls.__name__
    out: dict = {}
    for item in items:
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected key=value with key one of {fields}")
        if key not in fields:
            raise ValueError(f"--set {item!r}: unknown key {key!r} for {owner}; "
                             f"allowed keys: {fields}")
        if key in out:
            raise ValueError(f"--set {key}: given twice")
        out[key] = _coerce(owner, key, hints[key], text.strip())
    return out


def example_records(task: Task, n: int, seed: int, split: str = "train") -> list[dict]:
    """The ``n`` examples drawn by ``task.sample(jax.random.key(seed), n, split)`` as dicts
    (the JSONL lines, see the module docstring)."""
    batch = task.sample(jax.random.key(seed), n, split).to_numpy()
    config = dataclasses.asdict(task.config)
    records = []
    for i in range(n):
        prompt = batch.prompts[i][batch.prompts[i] != PAD].tolist()
        answer = batch.targets[i, : batch.target_lens[i]].tolist()
        records.append({
            "task": task.name, "split": split, "seed": seed, "index": i, "config": config,
            "prompt": task.vocab.decode(prompt), "answer": task.vocab.decode(answer),
            "prompt_tokens": prompt, "answer_tokens": answer,
            "meta": {k: np.asarray(v[i]).tolist() for k, v in batch.meta.items()},
        })
    return records


def export_jsonl(task: Task, n: int, seed: int, path, split: str = "train") -> Path:
    """Write ``n`` examples of ``task`` to ``path`` (JSONL), atomically. Returns the path."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"export n={n!r} is not allowed: an integer >= 1")
    check_seed("export", "seed", seed)
    path = Path(path)
    lines = [json.dumps(r, separators=(",", ":")) for r in example_records(task, n, seed, split)]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="export-task", description=__doc__.split("\n")[0])
    parser.add_argument("name", help="task name, e.g. graph/path_star")
    parser.add_argument("--n", type=int, required=True, help="number of examples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="train")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config field override (repeatable)")
    parser.add_argument("--out", required=True, help="output .jsonl file")
    args = parser.parse_args(argv)
    task = make(args.name, **parse_set(args.set, resolve(args.name).Config))
    out = export_jsonl(task, args.n, args.seed, args.out, split=args.split)
    print(f"wrote {args.n} examples of {task.name} to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
