"""The ``toyreason`` command.

    toyreason list
    toyreason run NAME [--quick] [--seeds N] [--seed S] [--out DIR] [--set key=value ...]
                       [--strict]
    toyreason report [DIR]
    toyreason export-task NAME --n N --seed S [--split train] [--set key=value ...]
                       --out FILE.jsonl

Every bad argument or value is ONE line on stderr (``toyreason: error: --set lr=abc:
expected a float``) with exit code 2, and is caught before anything is written. A run whose
claims fail exits 0 unless ``--strict`` (then 1); a run that diverges exits 1, and so do an
output that cannot be written and a run directory holding a damaged file or another run's
files (one line naming the path, no traceback; that file is not replaced).
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """A bad argument: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage + message; we want one line
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="toyreason", description="Toy reasoning models in JAX.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="list experiments and tasks")

    run = sub.add_parser("run", help="run an experiment into OUT/NAME/<config hash>/")
    run.add_argument("name")
    run.add_argument("--quick", action="store_true", help="the small config (about 30 s)")
    run.add_argument("--seeds", type=int, help="number of seeds (config.n_seeds)")
    run.add_argument("--seed", type=int, help="first seed (config.seed)")
    run.add_argument("--out", default="runs", help="root directory of runs (default: runs)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field, dotted for nested fields")
    run.add_argument("--strict", action="store_true", help="exit 1 if a claim fails")

    report = sub.add_parser("report", help="gather runs into report.md and report.html")
    report.add_argument("root", nargs="?", default="runs")

    export = sub.add_parser("export-task", help="write task examples as JSONL")
    export.add_argument("name")
    export.add_argument("--n", type=int, required=True)
    export.add_argument("--seed", type=int, required=True)
    export.add_argument("--split", default="train")
    export.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    export.add_argument("--out", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
        handler = {"list": _list, "run": _run, "report": _report, "export-task": _export}
        return handler[args.command](args, argv)
    except UsageError as err:
        print(f"toyreason: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # the reader of stdout (``| head``) left: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as err:  # an unwritable --out, a read-only file system, a full disk
        where = f": {err.filename}" if err.filename else ""
        print(f"toyreason: error: {err.strerror or err}{where}", file=sys.stderr)
        return 1


# --------------------------------------------------------------------------- commands
def _list(args, argv) -> int:
    import experiments
    import tasks

    print("experiments:")
    for name in experiments.names():
        print(f"  {name:24s} {experiments.get(name).DESCRIPTION}")
    print("tasks:")
    for name in tasks.names():
        print(f"  {name}")
    return 0


def _run(args, argv) -> int:
    import experiments
    from experiments import runner
    from toymodels.loop import TrainingDiverged
    from toymodels.runs import RunDirError

    try:
        module = experiments.get(args.name)
    except ValueError as err:
        raise UsageError(str(err)) from None
    config = module.quick_config() if args.quick else module.Config()
    set_keys = {item.partition("=")[0].strip() for item in args.set}
    for flag, key, value in (("--seed", "seed", args.seed), ("--seeds", "n_seeds", args.seeds)):
        if value is not None and key in set_keys:
            raise UsageError(f"{flag} and --set {key} both given: use one")
        if value is not None:
            config = _apply(config, [f"{key}={value}"], flag=f"{flag} {value}")
    if args.set:
        config = _apply(config, args.set)
    try:
        config = runner.validate(module, config)
    except ValueError as err:
        raise UsageError(str(err)) from None
    _check_out_dir(Path(args.out) / module.NAME, "--out")
    try:
        runner.execute(module, config, args.out, strict=args.strict,
                       command=shlex.join(["toyreason", *argv]))
    except runner.ClaimsFailed as err:
        print(f"toyreason: {err}", file=sys.stderr)
        return 1
    except TrainingDiverged as err:
        print(f"toyreason: training diverged: {err}", file=sys.stderr)
        return 1
    except RunDirError as err:  # a damaged file or another run's files in the run directory
        print(f"toyreason: error: {err}", file=sys.stderr)
        return 1
    return 0


def _report(args, argv) -> int:
    root = Path(args.root)
    if not root.is_dir():
        raise UsageError(f"report: {root} is not a directory of runs")
    try:
        report = importlib.import_module("experiments.report")
    except ModuleNotFoundError as err:
        if err.name != "experiments.report":
            raise
        raise UsageError("report: not available yet (experiments/report.py is missing)") from None
    for path in report.build(root):
        print(path)
    return 0


def _export(args, argv) -> int:
    import tasks

    try:
        cls = tasks.resolve(args.name)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.n < 1:
        raise UsageError(f"--n {args.n}: expected an integer >= 1")
    from tasks.core import MAX_SEED

    if not 0 <= args.seed <= MAX_SEED:
        raise UsageError(f"--seed {args.seed}: expected an integer in [0, {MAX_SEED}]")
    if args.split not in cls.splits:
        raise UsageError(f"--split {args.split}: expected one of {', '.join(cls.splits)}")
    config = _apply(cls.Config(), args.set) if args.set else cls.Config()
    task = cls(config)
    out = Path(args.out)
    if out.is_dir() or not out.parent.is_dir():
        raise UsageError(f"--out {out}: expected a file in an existing directory")
    try:
        export = importlib.import_module("tasks.export")
    except ModuleNotFoundError as err:
        if err.name != "tasks.export":
            raise
        raise UsageError("export-task: not available yet (tasks/export.py is missing)") from None
    import jax

    tmp = out.with_name(f".{out.name}.tmp")
    try:
        export.export_jsonl(task, args.n, args.seed, tmp, args.split)
        os.replace(tmp, out)  # a failed export never leaves a partial file at --out
    except jax.errors.JaxRuntimeError as err:  # the n examples are sampled in one batch
        if "RESOURCE_EXHAUSTED" not in str(err):
            raise
        raise UsageError(f"--n {args.n}: too many examples to sample in one batch (out of "
                         "memory); export fewer") from None
    finally:
        tmp.unlink(missing_ok=True)
    print(f"wrote {args.n} examples of {cls.name} to {out}")
    return 0


# --------------------------------------------------------------------------- helpers
def _apply(config, items: list[str], flag: str | None = None):
    """``key=value`` overrides, validated together; a bad one is a one-line usage error."""
    from toymodels.configs import override

    try:
        return override(config, items)
    except ValueError as err:
        if flag is None:
            raise UsageError(f"--set {err}") from None
        raise UsageError(f"{flag}: {str(err).rsplit(' (with ', 1)[0]}") from None


def _check_out_dir(path: Path, flag: str) -> None:
    """The directory, or its nearest existing ancestor, must be a directory."""
    for existing in (path, *path.parents):
        if existing.is_symlink() and not existing.exists():
            raise UsageError(f"{flag} {path}: {existing} is a broken symbolic link")
        if existing.exists():
            if not existing.is_dir():
                raise UsageError(f"{flag} {path}: {existing} exists and is not a directory")
            return


if __name__ == "__main__":
    sys.exit(main())
