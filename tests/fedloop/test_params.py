"""The field declarations of the configuration: flags, files and flat mappings from one
definition, and messages that name what set a value."""

from __future__ import annotations

import argparse
import math
import tomllib
from pathlib import Path

import pytest

from flexmoe import params
from flexmoe.fedloop import CapacitySpec, ConfigError, FedConfig, FitnessConfig, TrainConfig

CONFIG = FedConfig(
    dataset="emnist:letters", partition="kclass:3", capacity="tiers:2/4", experts=6, top_k=2,
    carry_deficit=True, balance_penalty=0.25, balance_metric="range", n_samples=500,
    data_dir="/data/caf\u00e9 \"x\"", train=TrainConfig(lr=1e-05), fitness=FitnessConfig(beta=1.0),
)  # fmt: skip


def test_flat_and_nested_forms_round_trip() -> None:
    flat = params.to_flat(CONFIG)
    assert flat["partition"] == "shards:3" and flat["capacity"] == "tiers:2/4"
    assert flat["train.lr"] == 1e-05 and flat["fitness.beta"] == 1.0
    assert params.build(FedConfig, flat) == CONFIG
    assert FedConfig.from_dict(CONFIG.to_dict()) == CONFIG
    assert CONFIG.capacity == CapacitySpec((2, 4)) and CONFIG.k == 2


def test_toml_written_back_reads_the_same(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    params.write_toml(path, params.to_flat(CONFIG), header="two\nlines")
    text = path.read_text()
    assert text.startswith("# two\n# lines\n") and "\n[train]\n" in text and "[fitness]" in text
    read = params.read_file(path, params.options(FedConfig))
    assert params.build(FedConfig, read) == CONFIG
    flat = {"a": math.inf, "b": -math.inf, "c": 0.1, "d": True, "e": 'tab\tquote"', "f": None}
    params.write_toml(path, flat)
    assert tomllib.loads(path.read_text()) == {k: v for k, v in flat.items() if v is not None}


def parse(*argv: str) -> dict[str, object]:
    parser = argparse.ArgumentParser()
    known = params.options(FedConfig)
    params.add_arguments(parser, known)
    return params.given(parser.parse_args(list(argv)), known)


def test_flags_are_generated_for_every_field_and_only_given_ones_are_kept() -> None:
    assert parse() == {}
    assert parse("--rounds", "3", "--lr", "0.5", "--no-carry-deficit", "--top-k", "none") == {
        "rounds": 3, "train.lr": 0.5, "carry_deficit": False, "top_k": None,
    }  # fmt: skip
    assert parse("--carry-deficit", "--initial-fitness", "0")["fitness.initial"] == 0.0
    with pytest.raises(SystemExit):
        parse("--rounds", "three")


def test_rules_are_checked_where_they_are_declared() -> None:
    with pytest.raises(ConfigError, match=r"`momentum` must be >= 0 and <= 1; got 1\.5") as err:
        FedConfig(train={"momentum": 1.5})  # type: ignore[arg-type]
    assert err.value.field == "train.momentum"
    with pytest.raises(ConfigError, match="`carry_deficit` must be true or false; got 1"):
        FedConfig(carry_deficit=1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"`val_fraction` \+ `test_fraction` must be < 1"):
        FedConfig(val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ConfigError, match="unknown configuration field `colour`") as err:
        params.build(FedConfig, {"train.colour": 1})
    assert err.value.field == "train.colour"


def test_messages_name_the_flag_or_the_file_key() -> None:
    known = params.options(FedConfig)
    try:
        FedConfig(train={"epochs": 0})  # type: ignore[arg-type]
    except ConfigError as err:
        assert params.explain(err, known, {}) == ("--local-epochs", "must be >= 1; got 0")
        where, text = params.explain(err, known, {"train.epochs": "run.toml"})
        assert (where, text) == ("run.toml: `train.epochs`", "must be >= 1; got 0")
    plain = ValueError("`capacity` 9 exceeds `experts` = 4 and `nonsense` stays")
    assert params.explain(plain, known, {}) == (
        None, "--capacity 9 exceeds --experts = 4 and `nonsense` stays",
    )  # fmt: skip
