"""The Flower App's run configuration: every :class:`~flexmoe.fedloop.FedConfig` field and
the App's own settings, as the keys of ``[tool.flwr.app.config]``.

The keys are generated from the field declarations (:mod:`flexmoe.params`), so they
cannot drift from ``flexmoe train``'s flags: a field's dotted path with dashes for
underscores (``clients``, ``train.batch-size``, ``fitness.signal``), and Flower's own
``num-server-rounds`` for ``rounds``. A setting that is None by default (``top-k``,
``samples``, ``data-dir``) is the empty string, as TOML has no null. :class:`AppSettings`
adds what only the App needs: where it writes, how it waits for and samples nodes.

Examples
--------
>>> values = run_config(FedConfig(clients=4, rounds=2))
>>> values["clients"], values["num-server-rounds"], values["train.batch-size"], values["top-k"]
(4, 2, 16, '')
>>> config, app = from_run_config({**values, "train.lr": 0.05})
>>> config.train.lr, config.top_k, app.out_dir
(0.05, None, 'runs/flower-app')
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flexmoe import params
from flexmoe.fedloop.config import FedConfig
from flexmoe.params import ConfigError, Option, number, param

__all__ = [
    "AppSettings",
    "app_pyproject",
    "config_table",
    "from_run_config",
    "key_of",
    "run_config",
]

#: Run-config keys that are Flower's names for a field.
FLOWER_NAMES = {"rounds": "num-server-rounds"}

Scalar = bool | int | float | str


@dataclass(frozen=True)
class AppSettings:
    """What the Flower App needs beyond the experiment's :class:`FedConfig`.

    Attributes
    ----------
    out_dir : str
        Folder of ``config.toml`` and ``history.json`` (as ``flexmoe train --out``); a
        relative one is taken from the folder the SuperLink runs in.
    min_available_nodes : int
        Nodes to wait for before the first round.
    fraction_evaluate : float
        Fraction of the nodes that evaluate each round.
    node_timeout, round_timeout : float
        Seconds to wait for `min_available_nodes`, and for the replies of a round (a
        node that has not answered by then is a dropped client).
    """

    out_dir: str = field(
        default="runs/flower-app",
        metadata=param("folder for config.toml and history.json", metavar="DIR"),
    )
    min_available_nodes: int = field(
        default=2, metadata=param("nodes to wait for before the first round", check=number(1))
    )
    fraction_evaluate: float = field(
        default=1.0, metadata=param("fraction of the nodes that evaluate", check=number(0, 1))
    )
    node_timeout: float = field(
        default=60.0,
        metadata=param("seconds to wait for min-available-nodes", check=number(0, open_low=True)),
    )
    round_timeout: float = field(
        default=3600.0,
        metadata=param("seconds to wait for a round's replies", check=number(0, open_low=True)),
    )

    def __post_init__(self) -> None:
        params.validate(self)


def key_of(path: str) -> str:
    """The run-config key of a field path.

    Examples
    --------
    >>> key_of("rounds"), key_of("train.batch_size"), key_of("out_dir")
    ('num-server-rounds', 'train.batch-size', 'out-dir')
    """
    return FLOWER_NAMES.get(path, path.replace("_", "-"))


def _options() -> dict[str, tuple[type, Option]]:
    """Run-config key → (the configuration it belongs to, its option)."""
    found: dict[str, tuple[type, Option]] = {}
    for owner in (FedConfig, AppSettings):
        found.update({key_of(o.path): (owner, o) for o in params.options(owner)})
    return found


def run_config(config: FedConfig, app: AppSettings | None = None) -> dict[str, Scalar]:
    """The run-config values of `config` and `app`, keyed as the App reads them."""
    flat = {**params.to_flat(config), **params.to_flat(app or AppSettings())}
    return {key_of(path): "" if value is None else value for path, value in flat.items()}


def from_run_config(values: Mapping[str, Any]) -> tuple[FedConfig, AppSettings]:
    """The experiment and the App's settings of a ``context.run_config`` (keys not
    given keep their defaults).

    Raises
    ------
    ValueError
        A key that is none of the App's (the message lists them), or a value that breaks
        a field's rule (the message names the key).
    """
    known = _options()
    chosen: dict[type, dict[str, Any]] = {FedConfig: {}, AppSettings: {}}
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"run config: unknown key `{key}`; the keys: {', '.join(known)}")
        owner, option = known[key]
        chosen[owner][option.path] = None if option.optional and value == "" else value
    built = []
    for owner, given in chosen.items():
        try:
            built.append(params.build(owner, given))
        except ConfigError as err:
            name, key = err.field.rpartition(".")[2], key_of(err.field)
            text = re.sub(rf"^`{re.escape(name)}`", f"run config `{key}`", str(err))
            raise ValueError(text) from None
    return built[0], built[1]


def config_table(values: Mapping[str, Scalar]) -> str:
    """`values` as the ``[tool.flwr.app.config]`` table of a ``pyproject.toml`` (a dotted
    key's prefix as a sub-table; Flower reads both back as the same dotted key)."""
    top = [f"{k} = {params._toml_value(v)}" for k, v in values.items() if "." not in k]
    lines = ["[tool.flwr.app.config]", *top]
    tables: dict[str, list[str]] = {}
    for key, value in values.items():
        head, _, rest = key.partition(".")
        if rest:
            tables.setdefault(head, []).append(f"{rest} = {params._toml_value(value)}")
    for head, entries in tables.items():
        lines += ["", f"[tool.flwr.app.config.{head}]", *entries]
    return "\n".join(lines) + "\n"


def app_pyproject(values: Mapping[str, Scalar], *, name: str = "flexmoe-app") -> str:
    """A whole ``pyproject.toml`` of a Flower App whose components are flexmoe's
    ``server_app`` and ``client_app`` and whose run configuration is `values`."""
    from flexmoe import __version__

    return f"""[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "{__version__}"
description = "flexmoe: load-balanced expert assignment for federated MoE, as a Flower App"
license = "MIT"
dependencies = ["flexmoe[flower]=={__version__}"]

[tool.flwr.app]
publisher = "flexmoe"

[tool.flwr.app.components]
serverapp = "flexmoe.flower:server_app"
clientapp = "flexmoe.flower:client_app"

{config_table(values)}"""
