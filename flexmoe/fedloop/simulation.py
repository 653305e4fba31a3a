"""The in-process client side: data per client, the local gates, training and evaluation.

Everything the server must not see lives here (the gates, the data). Clients run one
after another in this process; the strategy never touches this object: it gets the
federation's public :class:`~flexmoe.fedloop.FederationSpec` (:attr:`Simulation.federation`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from flexmoe.fedloop.clients import ClientProfile, client_capacities, client_profiles
from flexmoe.fedloop.config import FedConfig
from flexmoe.fedloop.data import Dataset, load_dataset
from flexmoe.fedloop.partition import LabelSkew, label_skew, partition, split_clients
from flexmoe.fedloop.spec import FederationSpec
from flexmoe.fedloop.task import (
    ClientPlan,
    ClientReply,
    EvaluationCounts,
    SharedPass,
    count_correct,
    evaluate,
    held_mask,
    shared_pass,
    train_client,
    workspace,
)
from flexmoe.models import ModelSpec, MoEClassifier, shared_keys

__all__ = ["ClientData", "Simulation"]

State = dict[str, Tensor]


@dataclass(frozen=True)
class ClientData:
    """One client's tensors by role."""

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor


def _tensors(data: Dataset, index: np.ndarray) -> tuple[Tensor, Tensor]:
    return torch.from_numpy(data.x[index]), torch.from_numpy(data.y[index])


class Simulation:
    """Clients of a :class:`~flexmoe.fedloop.FedConfig`, simulated in this process.

    Attributes
    ----------
    spec : ModelSpec
    clients : list of ClientData
    capacity : ndarray of int
    profiles : list of ClientProfile
    federation : FederationSpec
        What the server may know: capacities, budgets, expert sizes, the model.
    skew : LabelSkew
    gates : list of dict
        Each client's local gate state (never sent to the server).
    """

    def __init__(self, config: FedConfig) -> None:
        self.config = config
        data = load_dataset(
            config.dataset, root=config.data_dir, n_samples=config.n_samples, seed=config.seed
        )
        parts = partition(
            data.y, config.clients, config.partition, seed=config.seed, min_size=config.min_size
        )
        self.skew: LabelSkew = label_skew(data.y, parts, data.n_classes)
        splits = split_clients(
            parts, val_fraction=config.val_fraction, test_fraction=config.test_fraction,
            seed=config.seed,
        )  # fmt: skip
        self.clients = [
            ClientData(*_tensors(data, s.train), *_tensors(data, s.val), *_tensors(data, s.test))
            for s in splits
        ]
        self.pooled_test = _tensors(data, np.concatenate([s.test for s in splits]))
        self.pooled_val = _tensors(data, np.concatenate([s.val for s in splits]))
        self.spec = ModelSpec(
            data.preset, data.in_shape, data.n_classes, config.experts, config.k,
            config.width, config.expert_hidden,
        )  # fmt: skip
        self.capacity = client_capacities(
            config.capacity, config.clients, config.experts, seed=config.seed
        )
        self.profiles = self._profiles()
        self.federation = self._federation()
        self.gates: list[State] = []

    def _profiles(self) -> list[ClientProfile]:
        model = workspace(self.spec)
        return client_profiles(
            self.capacity,
            expert_bytes=max(model.expert_nbytes()),
            expert_params=max(model.expert_num_params()),
            train_sizes=[len(c.y_train) for c in self.clients],
            epochs=self.config.train.epochs,
        )

    def _federation(self) -> FederationSpec:
        model = workspace(self.spec)
        return FederationSpec(
            self.spec,
            tuple(self.profiles),
            expert_bytes=tuple(model.expert_nbytes()),
            expert_params=tuple(model.expert_num_params()),
            backbone_bytes=model.backbone_nbytes(),
        )

    def initial_weights(self) -> State:
        """Seeded initial ψ and experts; also (re)initialises every client's gate."""
        torch.manual_seed(self.config.seed)
        model = self.spec.build()
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.gates = []
        for _ in self.clients:
            gate = self.spec.build().gate.state_dict()
            self.gates.append({f"gate.{k}": v.detach().clone() for k, v in gate.items()})
        return {k: state[k] for k in shared_keys(state)}

    def train(self, plans: list[ClientPlan], weights: State) -> list[ClientReply]:
        """Run each plan's local training; the clients keep their new gates."""
        replies = []
        for plan in plans:
            data = self.clients[plan.client]
            reply, gate = train_client(
                self.spec, weights, self.gates[plan.client], data.x_train, data.y_train, plan,
                self.config.local_training,
            )  # fmt: skip
            self.gates[plan.client] = gate
            replies.append(reply)
        return replies

    def evaluate(
        self, weights: State, plans: Sequence[tuple[int, Sequence[int]]]
    ) -> list[EvaluationCounts]:
        """Each planned client's (correct, total) per split, with its own gate and the
        experts of its plan — ``(client, experts)`` pairs, as
        :meth:`~flexmoe.fedloop.Round.evaluation_plans` gives them (see
        :meth:`evaluate_client`)."""
        model = workspace(self.spec)
        model.load_state_dict(weights | self.gates[0], strict=True)
        used = sorted({int(e) for _, experts in plans for e in experts})
        shared = {name: shared_pass(model, x, y, used) for name, (x, y) in  # ψ and the experts
                  (("pooled_test", self.pooled_test), ("pooled_val", self.pooled_val))}  # fmt: skip
        counts = []
        for client, experts in plans:
            model.load_state_dict(self.gates[client], strict=False)
            counts.append(self.evaluate_client(model, client, list(experts), shared))
        return counts

    def evaluate_client(
        self,
        model: MoEClassifier,
        client: int,
        experts: list[int],
        shared: Mapping[str, SharedPass] | None = None,
    ) -> EvaluationCounts:
        """(correct, total) of `model` (holding `client`'s gate) with `experts` on each
        split: ``test`` and ``val`` (the client's own), ``pooled_test``, ``pooled_val``;
        a split in `shared` is read from its pass (ψ and the experts run once a round for
        every client: the same figures, computed once)."""
        mask = held_mask(experts, self.spec.n_experts)
        data = self.clients[client]
        splits = {"test": (data.x_test, data.y_test), "val": (data.x_val, data.y_val),
                  "pooled_test": self.pooled_test, "pooled_val": self.pooled_val}  # fmt: skip
        shared = shared or {}
        return {
            name: (count_correct(model, mask, shared[name]) if name in shared
                   else evaluate(model, mask, x, y), len(y))
            for name, (x, y) in splits.items()
        }  # fmt: skip

    def state_dict(self) -> State:
        """The client-side state to checkpoint: every gate, keyed ``client<n>.gate.*``."""
        return {f"client{n}.{k}": v for n, gate in enumerate(self.gates) for k, v in gate.items()}

    def load_state_dict(self, state: State) -> None:
        """Restore the gates written by :meth:`state_dict`."""
        self.gates = [
            {
                k.removeprefix(f"client{n}."): v
                for k, v in state.items()
                if k.startswith(f"client{n}.")
            }
            for n in range(len(self.clients))
        ]
