"""The ``toyreason`` command, run in-process through ``main([...])``: list, a quick run end
to end, and bad input (one error line, exit code 2, nothing written)."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
from helpers import FakeConfig, fake_module

import experiments
from experiments.claims import read_claims
from experiments.runner import ClaimsFailed, execute
from toymodels.cli import main
from toymodels.configs import config_hash


def test_list_shows_experiments_and_tasks(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "quickstart" in out and "seq/reverse" in out


def test_run_quickstart_quick_end_to_end(tmp_path, capsys):
    assert main(["run", "quickstart", "--quick", "--out", str(tmp_path)]) == 0
    (run_dir,) = (tmp_path / "quickstart").iterdir()
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.json", "manifest.json", "metrics.npz", "metrics.json", "claims.json",
            "figure.png", "figure.svg", "checkpoints", "samples.txt"} <= names
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["config_hash"] == run_dir.name
    assert manifest["seeds"] == [0] and manifest["wall_s"] > 0
    # measured by toymodels.loop; None (not 0) when an earlier test compiled it already
    assert manifest["compile_s"] is None or manifest["compile_s"] > 0
    assert manifest["command"] == f"toyreason run quickstart --quick --out {tmp_path}"
    assert manifest["reproduce"].startswith("toyreason run quickstart --seed 0 --seeds 1")
    assert manifest["versions"]["jax"]
    claims = read_claims(run_dir / "claims.json")
    assert [c["holds"] for c in claims] == [True, True]
    metrics = np.load(run_dir / "metrics.npz")
    assert metrics["loss"].shape == (250, 1) and metrics["accuracy"].shape == (1,)
    out = capsys.readouterr().out
    assert "held-out greedy accuracy" in out and "claim" in out


@pytest.mark.parametrize("argv, message", [
    (["--set", "lr=abc"], "--set lr=abc: expected a float"),
    (["--set", "nope=1"], "--set nope: unknown key; allowed: seed, n_seeds, task,"),
    (["--set", "lr"], "--set lr: expected key=value"),
    (["--set", "task_config.length=0"], "SequenceConfig.length=0 is not allowed"),
    (["--set", "task=seq/nope"], "unknown task 'seq/nope'"),
    (["--seeds", "0"], "--seeds 0: quickstart.Config.n_seeds=0 is not allowed"),
    (["--seed", "x"], "argument --seed: invalid int value: 'x'"),
    (["--seed", str(2**32 + 5)], "seed=4294967301 is not allowed: an integer in [0, "),
])
def test_bad_value_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, argv, message):
    out_dir = tmp_path / "runs"
    assert main(["run", "quickstart", "--quick", "--out", str(out_dir), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("toyreason: error: ") and message in err
    assert err.count("\n") == 1
    assert not out_dir.exists()


def test_out_below_a_file_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["run", "quickstart", "--quick", "--out", str(tmp_path / "file" / "sub")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "file exists and is not a directory" in err


def test_a_seed_given_twice_is_refused(tmp_path, capsys):
    argv = ["run", "quickstart", "--quick", "--out", str(tmp_path), "--seeds", "1",
            "--set", "n_seeds=2"]
    assert main(argv) == 2
    assert "--seeds and --set n_seeds" in capsys.readouterr().err


def test_a_broken_symlink_or_a_file_at_the_run_path_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "quickstart").write_text("a file where the figure's folder goes")
    for out in ("dangling", "root"):
        assert main(["run", "quickstart", "--quick", "--out", str(tmp_path / out)]) == 2
        assert capsys.readouterr().err.count("\n") == 1


def test_set_values_are_validated_together_in_any_order(tmp_path, capsys):
    """rl_steps=25 is invalid with the default log_every=10 but valid with log_every=5:
    accepted whichever --set comes first (a manifest's reproduce command lists fields in
    declaration order, rl_steps before log_every)."""
    from experiments import long_cot_emergence
    from toymodels.cli import _apply

    for items in (["rl_steps=25", "log_every=5"], ["log_every=5", "rl_steps=25"]):
        config = _apply(long_cot_emergence.Config(), items)
        assert (config.rl_steps, config.log_every) == (25, 5)


@pytest.mark.parametrize("seed", ["-1", str(2**31)])
def test_export_task_seed_out_of_range_is_one_line_exit_2(tmp_path, capsys, seed):
    out = tmp_path / "x.jsonl"
    assert main(["export-task", "seq/copy", "--n", "3", "--seed", seed, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"toyreason: error: --seed {seed}: expected an integer in [0, ")
    assert not out.exists()


@pytest.mark.parametrize("name, item, message", [
    ("clipping-entropy", "lr=inf", "lr=inf is not allowed: a finite number"),
    ("iteration-head", "lr=inf", "lr=inf is not allowed: a finite number"),
    ("long-cot-emergence", "ntp_lr=nan", "ntp_lr=nan is not allowed: a finite number"),
    ("passk-support", "d_model=31", "d_model must be a multiple of n_heads=2"),
    ("passk-support", "strategies.d_model=31", "strategies.d_model must be a multiple"),
    ("long-cot-emergence", "d_model=31", "d_model must be a multiple of n_heads=2"),
    ("reflection-emergence", "group_size=1", "group_size must be >= 2"),
    ("alpine-path-finding", "edge_prob=1", "edge_prob=1.0 is not allowed"),
    ("entropy-mechanism", "grpo.fit_fraction=0.99", "fewer than 2 of the 25 evaluations"),
])
def test_figure_values_that_cannot_run_are_refused_before_anything_is_written(
        tmp_path, capsys, name, item, message):
    assert main(["run", name, "--out", str(tmp_path / "runs"), "--set", item]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "runs").exists()


def _fields_of_type(config, kinds: tuple[str, ...], prefix=""):
    """(dotted name, value, replace-function) for every field annotated one of ``kinds``,
    nested configs included."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            for name, inner, set_inner in _fields_of_type(value, kinds, prefix + f.name + "."):
                yield name, inner, (lambda v, f=f, s=set_inner:
                                    dataclasses.replace(config, **{f.name: s(v)}))
        elif f.type in kinds:
            yield (prefix + f.name, value,
                   lambda v, f=f: dataclasses.replace(config, **{f.name: v}))


@pytest.mark.parametrize("name", experiments.names())
def test_every_figure_config_refuses_a_bool_a_float_count_or_a_non_finite_number(name):
    """From Python (the CLI refuses these before a config is built), True or 2.5 for a count
    and NaN, inf or True for a real number, alone or as the last entry of a tuple field, are
    refused by the config in an error naming the field: bool is an int subclass and NaN passes
    ``lr <= 0`` checks, so both would otherwise run."""
    config = experiments.get(name).Config()
    counts = list(_fields_of_type(config, ("int", "tuple[int, ...]")))
    reals = list(_fields_of_type(config, ("float", "tuple[float, ...]")))
    assert counts and reals
    for fields, bad_values in ((counts, (True, 2.5)), (reals, (float("nan"), float("inf"), True))):
        for field, value, replaced in fields:
            names_it = rf"(^|\W){re.escape(field.rsplit('.', 1)[-1])}(?!\w)"  # "lr" ≠ "ntp_lr"
            for bad in bad_values:
                with pytest.raises(ValueError, match=names_it):
                    replaced(value[:-1] + (bad,) if isinstance(value, tuple) else bad)


GRIDS = ("tuple[int, ...]", "tuple[float, ...]", "tuple[str, ...]")


@pytest.mark.parametrize("name", [n for n in experiments.names() if list(_fields_of_type(
    experiments.get(n).Config(), GRIDS))])
def test_a_grid_field_given_as_a_list_from_python_runs_and_a_bare_value_is_refused(name):
    """``Config(p_longs=[...])`` from Python is the same config as with a tuple (it was
    refused as "does not survive a JSON round trip"); a bare number or string is refused by
    the field's name (it failed as "not iterable", or a string split into characters)."""
    from experiments import runner

    module = experiments.get(name)
    for field, value, replaced in _fields_of_type(module.Config(), GRIDS):
        assert runner.validate(module, replaced(list(value))) == replaced(value)
        names_it = rf"(^|\W){re.escape(field)}(?!\w)"
        for bad in (value[0], str(value[0])):
            with pytest.raises(ValueError, match=names_it):
                replaced(bad)


def test_unknown_experiment_lists_the_known_ones(capsys):
    assert main(["run", "no-such-figure"]) == 2
    assert "known: " in capsys.readouterr().err


def test_export_task_bad_set_writes_nothing(tmp_path, capsys):
    out = tmp_path / "x.jsonl"
    code = main(["export-task", "seq/copy", "--n", "3", "--seed", "0", "--set", "length=x",
                 "--out", str(out)])
    assert code == 2 and not out.exists()
    assert capsys.readouterr().err == "toyreason: error: --set length=x: expected an integer\n"


def test_quickstart_claims_can_fail():
    from experiments import quickstart

    config = quickstart.quick_config()
    bad = {"accuracy": np.array([0.5]), "final_token_acc": 0.8}
    assert [c.holds for c in quickstart.claims(bad, config)] == [False, False]


# ----------------------------------------------------------------- the runner, on a fake module
def test_execute_writes_the_run_and_a_failed_claim_exits_0_unless_strict(tmp_path, capsys):
    module = fake_module()
    run_dir = execute(module, FakeConfig(value=0.5), tmp_path)
    assert run_dir == tmp_path / "fake" / config_hash(FakeConfig(value=0.5))
    assert json.loads((run_dir / "config.json").read_text()) == {"seed": 0, "n_seeds": 1,
                                                                 "value": 0.5}
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["claims_held"] == "0/1"
    assert manifest["command"] == "toyreason run fake --seed 0 --seeds 1 --set value=0.5"
    assert np.load(run_dir / "metrics.npz")["curve"].tolist() == [0.0, 0.5, 1.0]
    assert [c["holds"] for c in read_claims(run_dir / "claims.json")] == [False]
    assert "NO" in capsys.readouterr().out
    with pytest.raises(ClaimsFailed, match="value >= 1"):
        execute(module, FakeConfig(value=0.5), tmp_path / "strict", strict=True)


def test_execute_marks_a_crashed_run_failed(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        execute(fake_module(fail_in_run=True), FakeConfig(), tmp_path)
    (run_dir,) = (tmp_path / "fake").iterdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"] == "RuntimeError: boom"


def test_compile_time_measured_by_the_loop_is_recorded(tmp_path, monkeypatch):
    from toymodels import loop

    clock = iter([10.0, 12.5])  # compile seconds before and after the run
    monkeypatch.setattr(loop, "compile_seconds", lambda: next(clock))
    run_dir = execute(fake_module(), FakeConfig(), tmp_path)
    assert json.loads((run_dir / "manifest.json").read_text())["compile_s"] == 2.5


def test_a_failed_rerun_keeps_the_completed_manifest(tmp_path):
    """Same config, same directory: the completed run's manifest stays; the failed attempt is
    recorded beside it (attempt.json), and a later complete rerun removes that record."""
    run_dir = execute(fake_module(), FakeConfig(), tmp_path)
    complete = json.loads((run_dir / "manifest.json").read_text())
    with pytest.raises(RuntimeError, match="boom"):
        execute(fake_module(fail_in_run=True), FakeConfig(), tmp_path)
    assert json.loads((run_dir / "manifest.json").read_text()) == complete
    attempt = json.loads((run_dir / "attempt.json").read_text())
    assert attempt["status"] == "failed" and attempt["error"] == "RuntimeError: boom"
    execute(fake_module(), FakeConfig(), tmp_path)
    assert not (run_dir / "attempt.json").exists()


def test_execute_writes_nothing_for_an_invalid_config(tmp_path):
    config = FakeConfig()
    object.__setattr__(config, "value", -1.0)  # bypasses __post_init__, as a bad caller might
    with pytest.raises(ValueError, match="FakeConfig.value=-1.0"):
        execute(fake_module(), config, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("n_eval", [1, 2])
def test_quickstart_with_fewer_held_out_prompts_than_samples_shown(tmp_path, n_eval):
    # n_eval >= 1 is legal; printing three sample completions must not index past n_eval
    argv = ["run", "quickstart", "--quick", "--out", str(tmp_path), "--set", "steps=2",
            "--set", "warmup_steps=0", "--set", "batch_size=1", "--set", f"n_eval={n_eval}"]
    assert main(argv) == 0
    (run_dir,) = (tmp_path / "quickstart").iterdir()
    assert len((run_dir / "samples.txt").read_text().splitlines()) == n_eval


@pytest.mark.parametrize("argv, patch", [
    (["run", "fake", "--out", "OUT"], ("experiments.runner.execute", None)),
    (["export-task", "seq/copy", "--n", "2", "--seed", "0", "--out", "OUT/x.jsonl"],
     ("tasks.export.export_jsonl", None)),
    (["report", "OUT"], ("experiments.report.build", None)),
])
def test_an_output_that_cannot_be_written_is_one_line_exit_1(tmp_path, capsys, monkeypatch,
                                                               argv, patch):
    # An unwritable --out (a read-only file system, a directory without write permission:
    # simulated, since root may write anywhere) printed an OSError traceback.
    import importlib

    module_name, attr = patch[0].rsplit(".", 1)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "denied"))

    monkeypatch.setattr(importlib.import_module(module_name), attr, refuse)
    monkeypatch.setattr(experiments, "get", lambda name: fake_module())
    argv = [a.replace("OUT", str(tmp_path)) for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "Permission denied" in err and "denied" in err.rsplit(":", 1)[1]


def test_export_task_out_of_memory_is_one_line_naming_n(tmp_path, capsys, monkeypatch):
    import jax

    def oom(*args, **kwargs):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 4e11 "
                                         "bytes.")

    monkeypatch.setattr("tasks.export.export_jsonl", oom)
    out = tmp_path / "x.jsonl"
    assert main(["export-task", "seq/copy", "--n", "99999999999", "--seed", "0", "--out",
                 str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--n 99999999999" in err and "out of memory" in err
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_file_in_the_run_dir_is_one_line_exit_1_and_kept(tmp_path, capsys,
                                                                    monkeypatch):
    # A rerun into a run directory whose ntp_config.json was damaged printed a ValueError
    # traceback; the file must also stay as it was (it is evidence, not ours to replace).
    # The fake figure claims the file as make_train(config, run_dir) does (runs.claim_json).
    from toymodels import runs

    module = fake_module()
    module.run = lambda config, run_dir: runs.claim_json(run_dir / "ntp_config.json",
                                                         {"steps": 2}, "NTPConfig")
    monkeypatch.setattr(experiments, "get", lambda name: module)
    run_dir = runs.run_dir_for(tmp_path, "fake", FakeConfig())
    run_dir.mkdir(parents=True)
    (run_dir / "ntp_config.json").write_text("{broken")
    assert main(["run", "fake", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "ntp_config.json is unreadable" in err and "damaged" in err
    assert (run_dir / "ntp_config.json").read_text() == "{broken"
    (run_dir / "ntp_config.json").write_text('{"steps": 3}')  # another run's config
    assert main(["run", "fake", "--out", str(tmp_path)]) == 1
    assert "holds a run of another NTPConfig" in capsys.readouterr().err
