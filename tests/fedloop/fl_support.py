"""What the federated-loop test modules share (a module, not a conftest: see
``tests/benchmarks/bench_support.py``)."""

from __future__ import annotations

from flexmoe.fedloop import FedConfig, TrainConfig

#: A federation small enough for a unit test: 6 clients, 4 experts, 3 rounds.
TINY = FedConfig(
    clients=6, experts=4, capacity="2", rounds=3, partition="dirichlet:0.5", min_size=15,
    train=TrainConfig(epochs=1, batch_size=16),
)  # fmt: skip
