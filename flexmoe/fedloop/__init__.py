"""The thin federated loop: data and partitions, clients, the server's round driver,
fitness, metrics.

``run(FedConfig(...))`` trains a federated MoE and returns its :class:`History`. The
pieces stand on their own: :class:`FedConfig` (every parameter declared once, see
:mod:`~flexmoe.params`), :class:`Simulation` (the in-process client side) and
its public :class:`FederationSpec`, :class:`MoEStrategy` (the server: sampling, the
assignment, aggregation) and its per-round :class:`Round`, :func:`train_client` (pure
client training). Methods, data sets and fitness signals are registries:
:func:`register_method`, :func:`register_dataset`, :func:`register_signal`.

The configuration, the registries and the parameter machinery import without torch (a
command line is built from them cheaply); the names that need torch are imported on
first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from flexmoe.extras import require_extra
from flexmoe.fedloop.clients import (
    CapacitySpec,
    ClientProfile,
    client_capacities,
    client_profiles,
    parse_capacity,
    sample_round,
)
from flexmoe.fedloop.config import FedConfig, TrainConfig
from flexmoe.fedloop.data import (
    DATASETS,
    DataRequest,
    Dataset,
    load_dataset,
    load_digits,
    make_clustered,
    make_mnist1d,
    register_dataset,
)
from flexmoe.fedloop.fitness import SIGNALS, Fitness, FitnessConfig, register_signal
from flexmoe.fedloop.history import History, RoundRecord
from flexmoe.fedloop.partition import (
    ClientSplit,
    LabelSkew,
    PartitionSpec,
    label_skew,
    parse_partition,
    partition,
    split_clients,
)
from flexmoe.fedloop.policies import (
    METHODS,
    Method,
    MethodSetup,
    RoundInput,
    load_band,
    register_method,
)
from flexmoe.params import ConfigError

if TYPE_CHECKING:
    from flexmoe.fedloop.loop import federated_loop, run
    from flexmoe.fedloop.simulation import Simulation
    from flexmoe.fedloop.spec import FederationSpec
    from flexmoe.fedloop.strategy import MoEStrategy, Round, ServerState
    from flexmoe.fedloop.task import ClientPlan, ClientReply, evaluate, train_client

#: Names that need torch → the submodule that defines them (imported on first use).
_LAZY = {
    **dict.fromkeys(["federated_loop", "run"], "loop"),
    "Simulation": "simulation",
    "FederationSpec": "spec",
    **dict.fromkeys(["MoEStrategy", "Round", "ServerState"], "strategy"),
    **dict.fromkeys(["ClientPlan", "ClientReply", "evaluate", "train_client"], "task"),
}

__all__ = [
    "DATASETS",
    "METHODS",
    "SIGNALS",
    "CapacitySpec",
    "ClientPlan",
    "ClientProfile",
    "ClientReply",
    "ClientSplit",
    "ConfigError",
    "DataRequest",
    "Dataset",
    "FedConfig",
    "FederationSpec",
    "Fitness",
    "FitnessConfig",
    "History",
    "LabelSkew",
    "Method",
    "MethodSetup",
    "MoEStrategy",
    "PartitionSpec",
    "Round",
    "RoundInput",
    "RoundRecord",
    "ServerState",
    "Simulation",
    "TrainConfig",
    "client_capacities",
    "client_profiles",
    "evaluate",
    "federated_loop",
    "label_skew",
    "load_band",
    "load_dataset",
    "load_digits",
    "make_clustered",
    "make_mnist1d",
    "parse_capacity",
    "parse_partition",
    "partition",
    "register_dataset",
    "register_method",
    "register_signal",
    "run",
    "sample_round",
    "split_clients",
    "train_client",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    require_extra("fl", part=f"`flexmoe.fedloop.{name}`")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
