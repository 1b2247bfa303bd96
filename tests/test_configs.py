"""Configs: JSON round trip, ``--set`` style overrides with type coercion, one clear error."""

from __future__ import annotations

import dataclasses
import json
from typing import Literal

import numpy as np
import pytest

from toymodels.configs import config_hash, from_dict, override, to_dict


@dataclasses.dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    steps: int = 10
    name: str = "adam"

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"Inner.steps={self.steps} is not allowed: an integer >= 1")


@dataclasses.dataclass(frozen=True)
class Outer:
    inner: Inner = Inner()
    flag: bool = False
    widths: tuple[int, ...] = (1, 2)
    pair: tuple[int, float] = (1, 0.5)
    maybe: int | None = None
    mode: Literal["a", "b"] = "a"
    task_config: dict = dataclasses.field(default_factory=lambda: {"n_nodes": 10})


def test_round_trip_through_json_gives_an_equal_config():
    config = Outer(Inner(lr=0.25, steps=3), True, (4, 5, 6), (2, 1.5), 7, "b", {"k": [1, 2]})
    text = json.dumps(to_dict(config))
    assert from_dict(Outer, json.loads(text)) == config


def test_numpy_scalars_are_written_as_plain_numbers():
    config = Outer(Inner(lr=np.float32(0.25), steps=np.int64(3)))
    inner = to_dict(config)["inner"]
    assert inner["lr"] == 0.25 and type(inner["lr"]) is float
    assert inner["steps"] == 3 and type(inner["steps"]) is int
    assert config_hash(config) == config_hash(Outer(Inner(lr=0.25, steps=3)))


def test_from_dict_fills_defaults_and_rejects_unknown_keys():
    assert from_dict(Outer, {}) == Outer()
    with pytest.raises(ValueError, match=r"^inner\.lrr: unknown key; allowed: lr, steps, name$"):
        from_dict(Outer, {"inner": {"lrr": 1.0}})


def test_from_dict_revalidates():
    with pytest.raises(ValueError, match="Inner.steps=0"):
        from_dict(Outer, {"inner": {"steps": 0}})


def test_override_coerces_by_annotation():
    config = override(Outer(), ["inner.lr=1e-2", "inner.steps=5", "flag=true", "widths=3,4",
                                "pair=[7, 2]", "maybe=12", "mode=b", "inner.name=sgd"])
    assert config == Outer(Inner(0.01, 5, "sgd"), True, (3, 4), (7, 2.0), 12, "b")
    assert isinstance(config.pair[1], float)
    assert override(config, ["maybe=none"]).maybe is None


def test_override_dict_field_by_entry_and_whole():
    config = override(Outer(), ["task_config.n_nodes=50", "task_config.mode=easy"])
    assert config.task_config == {"n_nodes": 50, "mode": "easy"}
    assert override(Outer(), ['task_config={"x": 1}']).task_config == {"x": 1}


@pytest.mark.parametrize("item, message", [
    ("inner.lr=abc", r"^inner\.lr=abc: expected a float$"),
    ("inner.steps=1.5", r"^inner\.steps=1\.5: expected an integer$"),
    ("flag=maybe", r"^flag=maybe: expected a boolean"),
    ("mode=c", r"^mode=c: expected one of 'a', 'b'$"),
    ("widths=1,x", r"^widths\[1\]=x: expected an integer$"),
    ("pair=[1]", r"^pair=\[1\]: expected a list of 2 values$"),
    ("nope=1", r"^nope: unknown key; allowed: inner, flag, widths"),
    ("inner.nope=1", r"^inner\.nope: unknown key; allowed: lr, steps, name$"),
    ("flag.x=1", r"^flag: is not a nested config"),
    ("inner.steps=0", r"^inner: Inner\.steps=0 is not allowed.*\(with inner\.steps=0\)$"),
    ("no_equals_sign", r"^no_equals_sign: expected key=value$"),
])
def test_bad_override_is_one_clear_error_naming_the_full_key(item, message):
    with pytest.raises(ValueError, match=message) as info:
        override(Outer(), [item])
    assert "\n" not in str(info.value)


@dataclasses.dataclass(frozen=True)
class Schedule:
    steps: int = 10
    log_every: int = 5

    def __post_init__(self):
        if self.steps % self.log_every:
            raise ValueError(f"steps={self.steps} must be a multiple of log_every")


def test_override_validates_once_after_every_assignment():
    """``steps=12`` alone is invalid with log_every=5; together with log_every=4 it is not,
    whichever comes first."""
    for items in (["steps=12", "log_every=4"], ["log_every=4", "steps=12"]):
        assert override(Schedule(), items) == Schedule(12, 4)
    with pytest.raises(ValueError, match=r"multiple of log_every \(with steps=12\)$"):
        override(Schedule(), ["steps=12"])


def test_hash_is_stable_and_changes_with_any_value():
    a = config_hash(Outer())
    assert a == config_hash(from_dict(Outer, to_dict(Outer())))
    assert len(a) == 12 and int(a, 16) >= 0
    assert config_hash(override(Outer(), ["inner.lr=2e-3"])) != a
    assert config_hash(override(Outer(), ["task_config.n_nodes=11"])) != a
