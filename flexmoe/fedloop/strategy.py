"""The server strategy: two hooks, as in Flower's ``configure_train`` / ``aggregate_train``.

:meth:`MoEStrategy.configure_round` turns the server state into per-client plans (the
assignment); :meth:`MoEStrategy.aggregate_round` turns the replies into the next state
(aggregated weights, fitness, load deficit) and the round's server-side metrics.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from torch import Tensor

from flexmoe.assign import LoadStats
from flexmoe.fedloop.aggregate import aggregate, expert_of
from flexmoe.fedloop.fitness import Fitness, FitnessConfig
from flexmoe.fedloop.policies import RoundAssignment, assign_experts
from flexmoe.fedloop.task import ClientPlan, ClientReply

__all__ = ["MoEStrategy", "RoundPlan", "ServerState", "load_summary"]

State = dict[str, Tensor]


@dataclass
class ServerState:
    """Everything the server carries from round to round.

    Attributes
    ----------
    weights : dict of str to Tensor
        Global ψ and experts (no gate).
    fitness : Fitness
        Q[n, e] and how often each pair was tried.
    deficit : ndarray, shape (n_experts,)
        Historical load deficit per expert (holders below the fair share, carried).
    held : ndarray of bool, shape (n_clients, n_experts)
        Each client's most recent assignment (what it evaluates with); before its first
        round, experts ``0 .. capacity − 1`` (every expert under ``full``).
    """

    weights: State
    fitness: Fitness
    deficit: NDArray[np.float64]
    held: NDArray[np.bool_]


@dataclass(frozen=True)
class RoundPlan:
    """Output of :meth:`MoEStrategy.configure_round`."""

    round: int
    participants: tuple[int, ...]
    plans: tuple[ClientPlan, ...]
    assignment: RoundAssignment
    seeds: tuple[int, ...] = field(default=(), repr=False)


def load_summary(loads: NDArray[np.float64]) -> dict[str, float]:
    """CV, max/mean, normalised entropy and the number of zero loads, as plain floats."""
    stats = LoadStats.of(loads)
    return {
        "cv": stats.cv,
        "max_over_mean": stats.max_over_mean,
        "entropy": stats.entropy,
        "zero": stats.zero,
    }


class MoEStrategy:
    """Assignment from fitness, FedAvg of ψ, routed-sample-weighted expert averages.

    Parameters
    ----------
    method : str
        See :func:`~flexmoe.fedloop.policies.assign_experts`.
    capacity : ndarray of int, shape (n_clients,)
    n_experts : int
    fitness : FitnessConfig
    backend : str
        Assignment backend for ``flex``.
    carry_deficit : bool
    switch_cost : float
        μ ≥ 0 charged by ``flex`` and ``greedy`` per expert a client did not hold last time
        (the problem's churn term): favours keeping experts and gates in step.
    """

    def __init__(
        self,
        method: str,
        capacity: NDArray[np.int64],
        n_experts: int,
        fitness: FitnessConfig,
        *,
        backend: str = "auto",
        carry_deficit: bool = False,
        switch_cost: float = 0.0,
    ) -> None:
        self.method = method
        self.capacity = np.asarray(capacity, dtype=np.int64)
        self.n_experts = n_experts
        self.fitness_config = fitness
        self.backend = backend
        self.carry_deficit = carry_deficit
        self.switch_cost = switch_cost

    def initial_state(self, weights: State) -> ServerState:
        """Round-0 state: the initial weights, optimistic fitness, no deficit."""
        n = len(self.capacity)
        held = np.zeros((n, self.n_experts), dtype=bool)
        for client, cap in enumerate(self.capacity):
            held[client, : (self.n_experts if self.method == "full" else cap)] = True
        return ServerState(
            weights=dict(weights),
            fitness=Fitness.start(n, self.n_experts, self.fitness_config),
            deficit=np.zeros(self.n_experts),
            held=held,
        )

    def configure_round(
        self, state: ServerState, rnd: int, participants: list[int], rng: np.random.Generator
    ) -> RoundPlan:
        """Solve the assignment for `participants` and build each one's plan."""
        rows = np.asarray(participants, dtype=np.int64)
        utility = state.fitness.utility()[rows]
        assignment = assign_experts(
            self.method,
            utility,
            self.capacity[rows],
            round=rnd,
            rng=rng,
            backend=self.backend,
            deficit=state.deficit if self.carry_deficit else None,
            previous=self._previous(state, rows) if self.switch_cost > 0 else None,
            switch_cost=self.switch_cost,
        )
        seeds = rng.integers(2**31, size=len(rows))
        plans = tuple(
            ClientPlan(int(n), rnd, tuple(int(e) for e in np.flatnonzero(x)), int(seed))
            for n, x, seed in zip(rows, assignment.x, seeds, strict=True)
        )
        return RoundPlan(rnd, tuple(int(n) for n in rows), plans, assignment)

    @staticmethod
    def _previous(state: ServerState, rows: NDArray[np.int64]) -> NDArray[np.bool_]:
        """Last holdings of `rows`; none for a client that never reported (its initial
        holdings are an evaluation default, not downloaded experts)."""
        reported = state.fitness.tries[rows].sum(axis=1) > 0
        return state.held[rows] & reported[:, None]

    def aggregate_round(
        self, state: ServerState, plan: RoundPlan, replies: list[ClientReply]
    ) -> tuple[ServerState, dict[str, Any]]:
        """Aggregate the replies; update fitness, deficit and holdings; report metrics."""
        weights = aggregate(state.weights, replies)
        fitness = Fitness(state.fitness.config, state.fitness.q.copy(), state.fitness.tries.copy())
        for reply in replies:
            fitness.update(reply.client, reply.accuracy, reply.loss, reply.routed)
        held = state.held.copy()
        for p in plan.plans:
            held[p.client] = False
            held[p.client, list(p.experts)] = True
        trained = np.zeros(self.n_experts)
        for reply in replies:
            trained += reply.routed > 0
        fair = self.capacity[list(plan.participants)].sum() / self.n_experts
        deficit = np.maximum(0.0, state.deficit + fair - trained)
        new = dataclasses.replace(
            state, weights=weights, fitness=fitness, deficit=deficit, held=held
        )
        return new, self._metrics(state, plan, replies)

    def _metrics(
        self, state: ServerState, plan: RoundPlan, replies: list[ClientReply]
    ) -> dict[str, Any]:
        planned = plan.assignment.x.sum(axis=0).astype(float)
        routed = np.sum([r.routed for r in replies], axis=0) if replies else np.zeros(len(planned))
        trained = np.sum([r.routed > 0 for r in replies], axis=0) if replies else 0 * planned
        down, up = _traffic(state.weights, plan, replies)
        return {
            "participants": list(plan.participants),
            "dropped": sorted(set(plan.participants) - {r.client for r in replies}),
            "assignment": {
                "backend": plan.assignment.backend,
                "status": plan.assignment.status,
                "objective": plan.assignment.objective,
                "experts": [list(p.experts) for p in plan.plans],
                "load_min": list(plan.assignment.load_min),
                "load_max": list(plan.assignment.load_max),
            },
            "load_holders": planned.tolist(),
            "load_trained": np.asarray(trained, dtype=float).tolist(),
            "load_routed": np.asarray(routed, dtype=float).tolist(),
            "holders": load_summary(planned),
            "routed": load_summary(np.asarray(routed, dtype=float)),
            "never_trained": int((np.asarray(routed) <= 0).sum()),
            "bytes_down": down,
            "bytes_up": up,
            "train_loss": float(np.mean([r.train_loss for r in replies])) if replies else None,
            "time": {"assign": plan.assignment.solve_time},
        }


def _tensor_bytes(tensors: dict[str, Tensor], keys: list[str]) -> int:
    return int(sum(tensors[k].numel() * tensors[k].element_size() for k in keys))


def _traffic(
    weights: State, plan: RoundPlan, replies: list[ClientReply]
) -> tuple[list[int], list[int]]:
    """Bytes sent to and received from each participant (ψ plus its held experts)."""
    by_expert: dict[int | None, list[str]] = {}
    for key in weights:
        by_expert.setdefault(expert_of(key), []).append(key)
    backbone = _tensor_bytes(weights, by_expert.get(None, []))
    sizes = {e: _tensor_bytes(weights, k) for e, k in by_expert.items() if e is not None}
    down = [backbone + sum(sizes[e] for e in p.experts) for p in plan.plans]
    returned = {r.client for r in replies}
    up = [d if p.client in returned else 0 for p, d in zip(plan.plans, down, strict=True)]
    return down, up
