"""The thin federated loop: data and partitions, clients, server rounds, fitness, metrics.

``run(FedConfig(...))`` trains a federated MoE and returns its :class:`History`; the
pieces are usable on their own: :class:`MoEStrategy` (the server's two hooks),
:func:`train_client` (pure client training), :class:`Simulation` (in-process clients).
"""

from flexmoe.extras import require_extra

require_extra("fl", part="`flexmoe.fedloop`")  # torch + scikit-learn, or the pip command


from flexmoe.fedloop.clients import (
    CapacitySpec,
    ClientProfile,
    client_capacities,
    client_profiles,
    parse_capacity,
    sample_round,
)
from flexmoe.fedloop.config import FedConfig
from flexmoe.fedloop.data import (
    DATASETS,
    Dataset,
    load_dataset,
    load_digits,
    make_clustered,
    make_mnist1d,
)
from flexmoe.fedloop.fitness import Fitness, FitnessConfig
from flexmoe.fedloop.history import History
from flexmoe.fedloop.loop import federated_loop, run
from flexmoe.fedloop.partition import (
    ClientSplit,
    LabelSkew,
    PartitionSpec,
    label_skew,
    parse_partition,
    partition,
    split_clients,
)
from flexmoe.fedloop.policies import METHODS, RoundAssignment, assign_experts, load_band
from flexmoe.fedloop.simulation import Simulation
from flexmoe.fedloop.strategy import MoEStrategy, RoundPlan, ServerState
from flexmoe.fedloop.task import ClientPlan, ClientReply, TrainConfig, evaluate, train_client

__all__ = [
    "DATASETS",
    "METHODS",
    "CapacitySpec",
    "ClientPlan",
    "ClientProfile",
    "ClientReply",
    "ClientSplit",
    "Dataset",
    "FedConfig",
    "Fitness",
    "FitnessConfig",
    "History",
    "LabelSkew",
    "MoEStrategy",
    "PartitionSpec",
    "RoundAssignment",
    "RoundPlan",
    "ServerState",
    "Simulation",
    "TrainConfig",
    "assign_experts",
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
    "run",
    "sample_round",
    "split_clients",
    "train_client",
]
