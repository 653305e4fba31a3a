"""The Flower App's run configuration: generated from the field declarations, the
example App's ``pyproject.toml`` checked against them (no Ray needed)."""

from __future__ import annotations

import tomllib
import warnings

import pytest

with warnings.catch_warnings():  # click/typer deprecations raised while Flower imports
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    pytest.importorskip("flwr", reason="the `flower` extra (flwr[simulation]) is not installed")
    from flwr.common.config import flatten_dict, validate_config

from flower_support import EXAMPLE

from flexmoe import params
from flexmoe.fedloop import FedConfig
from flexmoe.flower import AppSettings, client_app, from_run_config, run_config, server_app
from flexmoe.flower.__main__ import main
from flexmoe.flower.runconfig import app_pyproject, config_table


def _example() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_example_apps_config_is_every_declared_field_with_its_default() -> None:
    table = flatten_dict(_example()["tool"]["flwr"]["app"]["config"])
    assert table == run_config(FedConfig(), AppSettings())
    options = params.options(FedConfig) + params.options(AppSettings)
    assert len(table) == len(options)


def test_the_example_app_is_a_valid_flower_app_of_flexmoes_components() -> None:
    config = _example()
    valid, errors, _ = validate_config(config, check_module=False)
    assert valid, errors
    assert "federations" not in config["tool"]["flwr"]  # `flwr run` would rewrite the file
    components = config["tool"]["flwr"]["app"]["components"]
    assert components == {"serverapp": "flexmoe_app.server_app:app",
                          "clientapp": "flexmoe_app.client_app:app"}  # fmt: skip
    import sys

    sys.path.insert(0, str(EXAMPLE))
    try:
        from flexmoe_app import client_app as client_module
        from flexmoe_app import server_app as server_module
    finally:
        sys.path.remove(str(EXAMPLE))
    assert server_module.app is server_app and client_module.app is client_app


def test_the_config_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config"]) == 0
    printed = capsys.readouterr().out
    assert printed == config_table(run_config(FedConfig(), AppSettings()))
    assert printed in (EXAMPLE / "pyproject.toml").read_text(encoding="utf-8")


def test_values_round_trip() -> None:
    config = FedConfig(clients=6, experts=4, capacity="tiers:1/2", top_k=1, rounds=3,
                       partition="shards:2", n_samples=300, train={"lr": 0.05},
                       fitness={"signal": "loss"}, data_dir="/data")  # fmt: skip
    app = AppSettings(out_dir="/tmp/x", min_available_nodes=6, fraction_evaluate=0.5)
    assert from_run_config(run_config(config, app)) == (config, app)
    pyproject = tomllib.loads(app_pyproject(run_config(config, app)))
    assert flatten_dict(pyproject["tool"]["flwr"]["app"]["config"]) == run_config(config, app)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"train.lr": -1}, "run config `train.lr` must be > 0; got -1.0"),
        ({"num-server-rounds": 0}, "run config `num-server-rounds` must be >= 1; got 0"),
        ({"clients": "four"}, "run config `clients` must be an integer; got 'four'"),
        ({"top-k": 3}, "run config `top-k` 3 exceeds the smallest `capacity` 2"),
        ({"rounds": 3}, "run config: unknown key `rounds`; the keys: dataset, partition, "),
    ],
)
def test_bad_values_name_the_run_config_key(values: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError) as info:
        from_run_config(values)
    assert str(info.value).startswith(message)


def test_the_example_readme_shows_the_table_its_results_command_wrote() -> None:
    readme = (EXAMPLE / "README.md").read_text(encoding="utf-8")
    table = (EXAMPLE / "_static" / "results.md").read_text(encoding="utf-8")
    assert table in readme
    for section in ("## About this baseline", "## Environment setup", "## Running the "
                    "experiments", "## Expected results"):  # fmt: skip
        assert section in readme
    for figure in ("accuracy_vs_round.png", "load_cv_vs_round.png", "expert_load.png"):
        assert f"(_static/{figure})" in readme and (EXAMPLE / "_static" / figure).is_file()
