"""The server: one strategy, one round driver, for every engine.

:class:`MoEStrategy` is built from the configuration and the federation's public
:class:`~flexmoe.fedloop.FederationSpec`. Like Flower's ``FedAvg`` it samples its own
participants from its own seeded generator. Each round it opens a :class:`Round`, which
follows Flower's four callbacks:

1. :meth:`MoEStrategy.open_round` (``configure_train``): sample, build the round's
   assignment problem once, let the method assign, plan each participant's training;
2. :meth:`Round.aggregate` (``aggregate_train``): average ψ and the experts, update
   fitness, load deficit and holdings;
3. :meth:`Round.evaluation_plans` (``configure_evaluate``): every client evaluates ψ and
   the experts it holds with its own gate;
4. :meth:`Round.evaluate` then :meth:`Round.close` (``aggregate_evaluate``): accuracy,
   and the round's :class:`~flexmoe.fedloop.RoundRecord` with its clocks.

The in-process loop and the Flower strategy both call exactly these, so the same seed
gives the same assignments on both engines.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from torch import Tensor

from flexmoe.assign import Assignment, AssignmentProblem, BalanceMetric
from flexmoe.fedloop.aggregate import aggregate, expert_of
from flexmoe.fedloop.clients import sample_round
from flexmoe.fedloop.config import FedConfig
from flexmoe.fedloop.fitness import Fitness
from flexmoe.fedloop.history import AssignmentRecord, LoadSummary, RoundRecord, Timings
from flexmoe.fedloop.policies import Method, MethodSetup, RoundInput, load_band, make_method
from flexmoe.fedloop.spec import FederationSpec
from flexmoe.fedloop.task import ClientPlan, ClientReply, EvaluationCounts

__all__ = ["MoEStrategy", "Round", "ServerState", "summarise_evaluation"]

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
        round, what the method's :meth:`~flexmoe.fedloop.Method.initial_holdings` says.
    """

    weights: State
    fitness: Fitness
    deficit: NDArray[np.float64]
    held: NDArray[np.bool_]


class MoEStrategy:
    """Assignment from fitness, FedAvg of ψ, routed-sample-weighted expert averages.

    Parameters
    ----------
    config : FedConfig
        The method and its options, the fitness, participation and dropout, the seed.
    spec : FederationSpec
        Clients, experts, capacities, storage and compute budgets.

    Attributes
    ----------
    method : Method
        The configured assignment method (it may keep state across rounds).
    rng : numpy.random.Generator
        Seeded with ``config.seed``; draws participants, drop-outs, solver and client
        seeds, in that order every round.
    """

    def __init__(self, config: FedConfig, spec: FederationSpec) -> None:
        if spec.n_experts != config.experts:
            raise ValueError(f"the spec has {spec.n_experts} experts, the config "
                             f"{config.experts}")  # fmt: skip
        self.config = config
        self.spec = spec
        self.capacity = spec.capacity()
        self.method: Method = make_method(MethodSetup(config, spec))
        self.rng = np.random.default_rng(config.seed)

    @property
    def n_clients(self) -> int:
        return self.spec.n_clients

    @property
    def n_experts(self) -> int:
        return self.spec.n_experts

    def initial_state(self, weights: State) -> ServerState:
        """Round-0 state: the initial weights, optimistic fitness, no deficit, the
        method's initial holdings."""
        return ServerState(
            weights=dict(weights),
            fitness=Fitness.start(self.n_clients, self.n_experts, self.config.fitness),
            deficit=np.zeros(self.n_experts),
            held=np.asarray(self.method.initial_holdings(), dtype=bool),
        )

    def open_round(self, state: ServerState, rnd: int) -> Round:
        """Sample the participants, assign their experts and plan their training."""
        began = time.perf_counter()
        participants, dropped = sample_round(
            self.rng, self.n_clients, self.config.participation, self.config.dropout
        )
        rows = np.asarray(participants, dtype=np.int64)
        seed = int(self.rng.integers(2**31))
        assigning = time.perf_counter()
        round_input = RoundInput(rnd, tuple(participants), self.problem(state, rows), self.rng,
                                 seed, carried=self.config.carry_deficit)  # fmt: skip
        assignment = self.method.assign(round_input)
        assigned = time.perf_counter()
        if assignment.x is None or assignment.x.shape != round_input.problem.shape:
            raise RuntimeError(
                f"method {self.config.method!r} returned no assignment of the round's problem "
                f"({assignment.status}: {assignment.message})"
            )
        seeds = self.rng.integers(2**31, size=len(rows))
        plans = tuple(
            ClientPlan(int(n), rnd, tuple(int(e) for e in np.flatnonzero(x)), int(s))
            for n, x, s in zip(rows, assignment.x, seeds, strict=True)
        )
        return Round(self, state, rnd, plans, set(dropped), round_input.problem, assignment,
                     {"began": began, "assign": assigned - assigning})  # fmt: skip

    def problem(self, state: ServerState, rows: NDArray[np.int64]) -> AssignmentProblem:
        """The round's assignment problem over clients `rows` (built once per round)."""
        config = self.config
        capacity = self.capacity[rows]
        deficit = state.deficit if config.carry_deficit else None
        load_min, load_max = load_band(capacity, self.n_experts, deficit)
        previous = self._previous(state, rows) if config.switch_cost > 0 else None
        return AssignmentProblem(
            state.fitness.utility()[rows],
            max_experts=capacity,
            load_min=load_min,
            load_max=load_max,
            **self.spec.budgets(rows),
            balance_penalty=config.balance_penalty,
            balance_metric=BalanceMetric(config.balance_metric),
            previous=previous,
            switch_cost=config.switch_cost,
        )

    @staticmethod
    def _previous(state: ServerState, rows: NDArray[np.int64]) -> NDArray[np.bool_]:
        """Last holdings of `rows`; none for a client that never reported (its initial
        holdings are an evaluation default, not downloaded experts)."""
        reported = state.fitness.tries[rows].sum(axis=1) > 0
        return state.held[rows] & reported[:, None]

    def aggregate(
        self, state: ServerState, plans: Sequence[ClientPlan], replies: list[ClientReply]
    ) -> ServerState:
        """The next state: aggregated weights, fitness, deficit and holdings."""
        fitness = state.fitness.copy()
        for reply in replies:
            fitness.update(reply.client, reply.stats)
        held = state.held.copy()
        for p in plans:
            held[p.client] = False
            held[p.client, list(p.experts)] = True
        trained = np.zeros(self.n_experts)
        for reply in replies:
            trained += reply.routed > 0
        fair = self.capacity[[p.client for p in plans]].sum() / self.n_experts
        deficit = np.maximum(0.0, state.deficit + fair - trained)
        weights = aggregate(state.weights, replies)
        return dataclasses.replace(
            state, weights=weights, fitness=fitness, deficit=deficit, held=held
        )


class Round:
    """One round in progress: opened by :meth:`MoEStrategy.open_round`, fed the train
    replies (:meth:`aggregate`) and the evaluations (:meth:`evaluate`), closed into a
    :class:`~flexmoe.fedloop.RoundRecord` (:meth:`close`).

    Attributes
    ----------
    number : int
    plans : tuple of ClientPlan
        One per participant.
    train_plans : tuple of ClientPlan
        The plans of the participants that do not drop out: what to send.
    problem : AssignmentProblem
    assignment : Assignment
    state : ServerState
        The state the round started from; after :meth:`aggregate`, the new one.
    """

    def __init__(
        self,
        strategy: MoEStrategy,
        state: ServerState,
        number: int,
        plans: tuple[ClientPlan, ...],
        dropped: set[int],
        problem: AssignmentProblem,
        assignment: Assignment,
        clock: dict[str, float],
    ) -> None:
        self.strategy, self.state, self.number = strategy, state, number
        self.plans, self.problem, self.assignment = plans, problem, assignment
        self.train_plans = tuple(p for p in plans if p.client not in dropped)
        self._clock = clock | {"planned": time.perf_counter()}
        self._server: dict[str, Any] | None = None
        self._evaluation: dict[str, Any] | None = None

    def aggregate(self, replies: Sequence[ClientReply]) -> ServerState:
        """Take the train replies (any order); return (and keep) the next state."""
        self._clock["trained"] = time.perf_counter()
        replies = sorted(replies, key=lambda r: r.client)
        before = self.state
        self.state = self.strategy.aggregate(before, self.plans, replies)
        self._server = self._server_metrics(before, replies)
        self._clock["aggregated"] = time.perf_counter()
        return self.state

    def train_summary(self) -> dict[str, float]:
        """Headline figures of the aggregated training (after :meth:`aggregate`)."""
        if self._server is None:
            raise RuntimeError(f"round {self.number} has not aggregated its replies yet")
        summary = {"never_trained": float(self._server["never_trained"]),
                   "holders_cv": float(self._server["holders"].cv)}  # fmt: skip
        if self._server["train_loss"] is not None:
            summary["train_loss"] = float(self._server["train_loss"])
        return summary

    def evaluation_plans(self) -> list[tuple[int, tuple[int, ...]]]:
        """(client, experts it holds) for every client, in client order."""
        held = self.state.held
        return [(n, tuple(int(e) for e in np.flatnonzero(held[n]))) for n in range(len(held))]

    def evaluate(self, counts: Sequence[EvaluationCounts]) -> None:
        """Take every client's evaluation counts (in client order)."""
        self._evaluation = summarise_evaluation(list(counts))

    def close(self) -> RoundRecord:
        """The round's record (after :meth:`aggregate` and :meth:`evaluate`)."""
        if self._server is None or self._evaluation is None:
            raise RuntimeError(f"round {self.number} closed before its replies were aggregated "
                               "and evaluated")  # fmt: skip
        now, clock = time.perf_counter(), self._clock
        timings = Timings(assign=clock["assign"], train=clock["trained"] - clock["planned"],
                          eval=now - clock["aggregated"], round=now - clock["began"])  # fmt: skip
        return RoundRecord(round=self.number, **self._server, time=timings, **self._evaluation)

    def _server_metrics(self, state: ServerState, replies: list[ClientReply]) -> dict[str, Any]:
        assert self.assignment.x is not None
        planned = self.assignment.x.sum(axis=0).astype(float)
        routed = np.sum([r.routed for r in replies], axis=0) if replies else 0 * planned
        trained = np.sum([r.routed > 0 for r in replies], axis=0) if replies else 0 * planned
        down, up = _traffic(state.weights, self.plans, replies)
        return {
            "participants": [p.client for p in self.plans],
            "dropped": sorted({p.client for p in self.plans} - {r.client for r in replies}),
            "assignment": self._assignment_record(),
            "load_holders": planned.tolist(),
            "load_trained": np.asarray(trained, dtype=float).tolist(),
            "load_routed": np.asarray(routed, dtype=float).tolist(),
            "holders": LoadSummary.of(planned),
            "routed": LoadSummary.of(routed),
            "never_trained": int((np.asarray(routed) <= 0).sum()),
            "bytes_down": down,
            "bytes_up": up,
            "train_loss": float(np.mean([r.train_loss for r in replies])) if replies else None,
        }

    def _assignment_record(self) -> AssignmentRecord:
        a, p = self.assignment, self.problem
        return AssignmentRecord(
            backend=a.backend,
            status=str(a.status),
            objective=float(a.objective),
            experts=[list(plan.experts) for plan in self.plans],
            load_min=p.load_min.tolist(),
            load_max=p.load_max.tolist(),
        )


def summarise_evaluation(counts: list[EvaluationCounts]) -> dict[str, Any]:
    """The round's accuracy metrics from each client's counts: personalised = pooled
    over the clients' own splits, global = the mean over clients of their accuracy on
    the pooled split."""

    def split(name: str) -> list[tuple[int, int]]:
        return [c[name] for c in counts]

    return {
        "personalized_acc": _pooled(split("test")),
        "personalized_val_acc": _pooled(split("val")),
        "global_acc": _mean_ratio(split("pooled_test")),
        "global_val_acc": _mean_ratio(split("pooled_val")),
        "client_acc": [c / t if t else None for c, t in split("test")],
    }


def _mean_ratio(pairs: list[tuple[int, int]]) -> float | None:
    ratios = [c / t for c, t in pairs if t]
    return float(np.mean(ratios)) if ratios else None


def _pooled(pairs: list[tuple[int, int]]) -> float | None:
    total = sum(t for _, t in pairs)
    return sum(c for c, _ in pairs) / total if total else None


def _tensor_bytes(tensors: dict[str, Tensor], keys: list[str]) -> int:
    return int(sum(tensors[k].numel() * tensors[k].element_size() for k in keys))


def _traffic(
    weights: State, plans: Sequence[ClientPlan], replies: list[ClientReply]
) -> tuple[list[int], list[int]]:
    """Bytes sent to and received from each participant (ψ plus its held experts)."""
    by_expert: dict[int | None, list[str]] = {}
    for key in weights:
        by_expert.setdefault(expert_of(key), []).append(key)
    backbone = _tensor_bytes(weights, by_expert.get(None, []))
    sizes = {e: _tensor_bytes(weights, k) for e, k in by_expert.items() if e is not None}
    down = [backbone + sum(sizes[e] for e in p.experts) for p in plans]
    returned = {r.client for r in replies}
    up = [d if p.client in returned else 0 for p, d in zip(plans, down, strict=True)]
    return down, up
