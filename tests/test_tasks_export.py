"""JSONL export (tasks/export.py) and the gallery (tasks/gallery.py)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import jax
import pytest

import tasks
from tasks import export, gallery
from tasks.core import EOS, PAD

STAR = "graph/path_star"
N = 200  # one batch size throughout, so the sampler compiles once for this file


def test_export_round_trips_text_tokens_and_the_sampled_batch(tmp_path):
    out = export.export_jsonl(tasks.make(STAR, degree=3), N, 5, tmp_path / "star.jsonl")
    lines = out.read_text().splitlines()
    assert len(lines) == N
    task = tasks.make(STAR, degree=3)
    batch = task.sample(jax.random.key(5), N).to_numpy()
    for i, line in enumerate(lines):
        record = json.loads(line)
        assert record["task"] == STAR and record["index"] == i and record["seed"] == 5
        assert record["config"]["degree"] == 3
        for text, tokens in ((record["prompt"], record["prompt_tokens"]),
                             (record["answer"], record["answer_tokens"])):
            assert task.vocab.decode(tokens) == text
            assert task.vocab.encode(text) == tokens
        assert record["answer_tokens"][-1] == EOS and PAD not in record["prompt_tokens"]
        # the same example as task.sample(jax.random.key(seed), n)
        assert record["prompt_tokens"] == batch.prompts[i][batch.prompts[i] != PAD].tolist()
        assert record["answer_tokens"] == batch.targets[i, : batch.target_lens[i]].tolist()
        assert record["meta"]["arms"] == batch.meta["arms"][i].tolist()


def test_export_of_path_finding_keeps_its_split_and_categories(tmp_path):
    task = tasks.make("graph/path_finding", n_nodes=30, edge_prob=0.15, paths_per_pair=5,
                      graph_seed=3)
    out = export.export_jsonl(task, 10, 0, tmp_path / "sub" / "pf.jsonl", split="test")
    for line in out.read_text().splitlines():
        record = json.loads(line)
        s, t = record["meta"]["source"], record["meta"]["target"]
        assert record["split"] == "test" and record["prompt"] == f"{s} {t}"
        assert record["meta"]["category"] == task.category[s, t]


def test_parse_set_coerces_to_the_config_field_types():
    star = tasks.resolve(STAR).Config
    assert export.parse_set(["degree=3", "path_len = 4"], star) == {"degree": 3, "path_len": 4}
    search = tasks.resolve("graph/graph_search").Config
    got = export.parse_set(["p_mistake=1", "graph_kind=digraph"], search)
    assert got == {"p_mistake": 1.0, "graph_kind": "digraph"}
    assert isinstance(got["p_mistake"], float)
    assert export.parse_set([], star) == {}


def test_parse_set_handles_bool_and_optional_fields():
    @dataclasses.dataclass(frozen=True)
    class Knobs:  # the field kinds of the arithmetic configs (e.g. n_carries: int | None)
        flag: bool = False
        limit: int | None = None

    assert export.parse_set(["flag=true", "limit=none"], Knobs) == {"flag": True, "limit": None}
    assert export.parse_set(["flag=0", "limit=7"], Knobs) == {"flag": False, "limit": 7}
    with pytest.raises(ValueError, match="flag"):
        export.parse_set(["flag=maybe"], Knobs)


@pytest.mark.parametrize("items, message", [
    (["no_such_knob=1"], "unknown key 'no_such_knob'.*allowed keys: \\['degree'"),
    (["degree"], "expected key=value"),
    (["=3"], "expected key=value"),
    (["degree=three"], "degree.*int"),
    (["degree=2", "degree=3"], "given twice"),
])
def test_parse_set_rejects_bad_items_with_a_clear_message(items, message):
    with pytest.raises(ValueError, match=message):
        export.parse_set(items, tasks.resolve(STAR).Config)


def test_cli_writes_the_file_and_a_bad_set_writes_nothing(tmp_path, capsys):
    out = tmp_path / "cli.jsonl"
    assert export.main([STAR, "--n", str(N), "--seed", "1", "--set", "degree=3",
                        "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == N and f"wrote {N}" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    with pytest.raises(ValueError, match="unknown key 'degre'"):
        export.main([STAR, "--n", "4", "--set", "degre=3", "--out", str(bad)])
    with pytest.raises(ValueError, match="n_labels"):  # the config itself is validated
        export.main([STAR, "--n", "4", "--set", "n_labels=3", "--out", str(bad)])
    assert not bad.exists()


def test_a_failed_export_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "keep.jsonl"
    path.write_text("old contents\n")
    task = tasks.make(STAR, degree=3)

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        export.export_jsonl(task, N, 0, path)
    assert path.read_text() == "old contents\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.jsonl"]
    with pytest.raises(ValueError, match="n=0"):
        export.export_jsonl(task, 0, 0, path)
    with pytest.raises(ValueError, match="split"):
        export.export_jsonl(task, N, 0, path, split="validation")
    assert path.read_text() == "old contents\n"


def test_gallery_shows_each_task_with_its_knobs_and_three_examples(tmp_path, monkeypatch):
    shown = [STAR, "graph/path_finding"]  # every registered task in real use; two here
    monkeypatch.setattr(tasks, "names", lambda: shown)
    out = tmp_path / "tasks.md"
    assert gallery.main(["--out", str(out)]) == 0
    text = out.read_text()
    for name in shown:
        section = text.split(f"## `{name}`")[1].split("\n## ")[0]
        task = tasks.make(name)
        for field in task.config.__dataclass_fields__:
            assert f"| `{field}` |" in section
        examples = section.split("```")[1].strip().splitlines()
        assert len(examples) == 3
        batch = task.sample(jax.random.key(0), 3)
        assert examples == [task.render(batch, i) for i in range(3)]
    repo_root = str(Path(gallery.__file__).resolve().parents[1])
    assert repo_root not in text  # no machine paths in the committed page
    assert all(line == line.rstrip() for line in text.splitlines())
