"""Pure PyTorch client work: local training with per-expert feedback, and evaluation.

:func:`train_client` is a pure function of (global weights of ψ and the held experts,
the client's gate, its data, the plan) → (reply to the server, new gate). Nothing else is
read or kept, so the same function runs in-process or inside a Flower ``ClientApp``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor

from flexmoe.fedloop.config import FEEDBACK, TrainConfig
from flexmoe.models import ExpertStats, ModelSpec, MoEClassifier, held_experts, shared_keys

__all__ = [
    "FEEDBACK",
    "ClientPlan",
    "ClientReply",
    "EvaluationCounts",
    "SharedPass",
    "TrainConfig",
    "alone_scores",
    "count_correct",
    "evaluate",
    "held_mask",
    "shared_pass",
    "train_client",
    "workspace",
]

State = dict[str, Tensor]

#: One client's evaluation: (correct, total) per split — ``test``, ``val`` (its own),
#: ``pooled_test``, ``pooled_val``.
EvaluationCounts = dict[str, tuple[int, int]]


@dataclass(frozen=True)
class ClientPlan:
    """What the server asks of one client this round.

    Attributes
    ----------
    client, round : int
    experts : tuple of int
        The experts it holds and trains.
    seed : int
        Seeds the client's batch order.
    scored : tuple of int
        Experts it scores alone on its training split before it trains (an ``alone``
        fitness signal): held ones and probes. A probe (scored, not held) is downloaded,
        scored and discarded.
    """

    client: int
    round: int
    experts: tuple[int, ...]
    seed: int
    scored: tuple[int, ...] = ()

    @property
    def probes(self) -> tuple[int, ...]:
        """The scored experts the client does not hold."""
        return tuple(e for e in self.scored if e not in self.experts)

    @property
    def downloads(self) -> tuple[int, ...]:
        """Every expert the client receives: the held ones, then the probes."""
        return (*self.experts, *self.probes)


@dataclass
class ClientReply:
    """What a client sends back: updated ψ and held experts, and per-expert statistics.

    Attributes
    ----------
    client, n_samples : int
    weights : dict of str to Tensor
        ψ and the held experts after local training (never the gate).
    stats : dict of str to ndarray, shape (n_experts,) each
        Per-expert statistics, by name. ``routed`` (u[n, e]: samples routed to each
        expert, 0 for experts not held) is always there; :func:`train_client` adds
        ``accuracy`` and ``loss`` (of each expert's own prediction on the samples routed
        to it; NaN where nothing was routed), and for a plan with ``scored`` experts
        ``alone_accuracy`` and ``alone_loss`` (:func:`alone_scores`). Fitness signals
        read them by name, and the Flower protocol carries every entry, so a new
        statistic needs neither a new field here nor a protocol change.
    train_loss : float
        Mean training loss of the mixture.
    """

    client: int
    n_samples: int
    weights: State
    stats: dict[str, NDArray[np.float64]]
    train_loss: float = 0.0

    def __post_init__(self) -> None:
        if "routed" not in self.stats:
            raise ValueError(f"`stats` must hold `routed`; got {sorted(self.stats)}")
        self.stats = {k: np.asarray(v, dtype=np.float64) for k, v in self.stats.items()}

    @property
    def routed(self) -> NDArray[np.float64]:
        """u[n, e]: samples routed to each expert."""
        return self.stats["routed"]


@functools.lru_cache(maxsize=4)
def workspace(spec: ModelSpec) -> MoEClassifier:
    """A scratch model of architecture `spec`, reused across calls; every call loads all
    the state it uses first. Built without touching torch's global RNG."""
    with torch.random.fork_rng(devices=[]):
        return spec.build()


def held_mask(experts: tuple[int, ...] | list[int], n_experts: int) -> Tensor:
    """Boolean mask of the held experts."""
    mask = torch.zeros(n_experts, dtype=torch.bool)
    mask[list(experts)] = True
    return mask


def _load(model: MoEClassifier, weights: State, gate: State) -> None:
    with torch.no_grad():
        params = dict(model.named_parameters()) | dict(model.named_buffers())
        for key, value in (weights | gate).items():
            params[key].copy_(value)


def _trainable(model: MoEClassifier, experts: tuple[int, ...]) -> list[Tensor]:
    params: list[Tensor] = [*model.backbone.parameters(), *model.gate.parameters()]
    for e in experts:
        params += list(model.experts[e].parameters())
    return params


def _stats(model: MoEClassifier, held: Tensor, x: Tensor, y: Tensor) -> ExpertStats:
    with torch.no_grad():
        return model(x, held).expert_stats(y)


def alone_scores(
    model: MoEClassifier, experts: tuple[int, ...], x: Tensor, y: Tensor
) -> dict[str, NDArray[np.float64]]:
    """Accuracy and mean loss of each listed expert on its own — ψ then θ_e, no gate —
    on (x, y), in eval mode; NaN for the experts not listed.

    Every listed expert is scored on the same model state with the same yardstick, held
    or not: a gate has no trained logit for an expert it never held, so it cannot score
    one.
    """
    accuracy = np.full(model.n_experts, np.nan)
    loss = np.full(model.n_experts, np.nan)
    if model.training:
        model.eval()
    with torch.no_grad():
        h = model.backbone(x)
        for e in experts:
            logits = model.experts[e](h)
            accuracy[e] = float((logits.argmax(1) == y).double().mean())
            loss[e] = float(F.cross_entropy(logits, y))
    return {"alone_accuracy": accuracy, "alone_loss": loss}


def _fit(
    model: MoEClassifier, held: Tensor, x: Tensor, y: Tensor, plan: ClientPlan, cfg: TrainConfig
) -> tuple[ExpertStats, float]:
    assert cfg.lr is not None  # train_client checked it
    optimiser = torch.optim.SGD(
        _trainable(model, plan.experts), lr=cfg.lr, momentum=cfg.momentum,
        weight_decay=cfg.weight_decay, foreach=True,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(plan.seed)
    experts = held_experts(held)
    sums = torch.zeros(3, len(experts))  # routed, loss, correct of the held experts
    total, batches = 0.0, 0
    for _ in range(cfg.epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), cfg.batch_size):
            batch = order[start : start + cfg.batch_size]
            out = model(x[batch], held)
            loss = F.cross_entropy(out.logits, y[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            sums += out.expert_sums(y[batch])
            total, batches = total + loss.item(), batches + 1
    return ExpertStats.spread(sums, experts, len(held)), total / max(batches, 1)


def train_client(
    spec: ModelSpec, weights: State, gate: State, x: Tensor, y: Tensor, plan: ClientPlan,
    config: TrainConfig,
) -> tuple[ClientReply, State]:  # fmt: skip
    """Train ψ, the held experts and the local gate on one client's data.

    Parameters
    ----------
    spec : ModelSpec
    weights : dict of str to Tensor
        Global ψ and (at least) the experts in ``plan.downloads``.
    gate : dict of str to Tensor
        The client's own gate (``gate.*``).
    x, y : Tensor
        The client's training data.
    plan : ClientPlan
    config : TrainConfig

    Returns
    -------
    reply : ClientReply
        For the server; with ``plan.scored`` its stats hold ``alone_accuracy`` and
        ``alone_loss`` (:func:`alone_scores` with the received weights, before training).
    gate : dict of str to Tensor
        The updated gate, kept by the client.
    """
    if config.lr is None:
        raise ValueError("`lr` is None: train with a resolved learning rate "
                         "(`FedConfig.local_training`)")  # fmt: skip
    model = workspace(spec)
    experts = tuple(sorted(plan.experts))
    held = held_mask(experts, spec.n_experts)
    received = shared_keys(weights, list(plan.downloads))
    _load(model, {k: weights[k] for k in received}, gate)
    alone = alone_scores(model, plan.scored, x, y) if plan.scored else {}
    if not model.training:
        model.train()
    before = _stats(model, held, x, y) if config.feedback == "before" else None
    stats, train_loss = _fit(model, held, x, y, plan, config)
    if config.feedback == "before":
        stats = before  # type: ignore[assignment]
    elif config.feedback == "after":
        stats = _stats(model, held, x, y)
    else:  # counted over every epoch: report routed samples per pass over the data
        stats = ExpertStats(stats.count / config.epochs, stats.loss_sum / config.epochs,
                            stats.correct / config.epochs)  # fmt: skip
    state = model.state_dict()
    reply = ClientReply(
        client=plan.client,
        n_samples=len(y),
        weights={k: state[k].detach().clone() for k in shared_keys(state, list(experts))},
        stats={
            "routed": stats.count.double().numpy(),
            "accuracy": stats.accuracy.double().numpy(),
            "loss": stats.mean_loss.double().numpy(),
            **alone,
        },
        train_loss=train_loss,
    )
    return reply, {k: v.detach().clone() for k, v in state.items() if k.startswith("gate.")}


@dataclass(frozen=True)
class SharedPass:
    """ψ(x) and some experts' logits on an evaluation set, batch by batch: what every
    client's evaluation on a common set shares (ψ and the experts are global; only the
    gate is a client's own). Built by :func:`shared_pass`, read by :func:`count_correct`.
    """

    features: tuple[Tensor, ...]
    expert_logits: tuple[dict[int, Tensor], ...]
    labels: tuple[Tensor, ...]


def shared_pass(
    model: MoEClassifier, x: Tensor, y: Tensor, experts: list[int], batch: int = 1024
) -> SharedPass:
    """ψ and the logits of `experts` on (x, y) in batches of `batch`, in eval mode."""
    if model.training:
        model.eval()
    features, logits, labels = [], [], []
    with torch.no_grad():
        for start in range(0, len(y), batch):
            h = model.backbone(x[start : start + batch])
            features.append(h)
            logits.append({e: model.experts[e](h) for e in experts})
            labels.append(y[start : start + batch])
    return SharedPass(tuple(features), tuple(logits), tuple(labels))


def count_correct(model: MoEClassifier, held: Tensor, shared: SharedPass) -> int:
    """Correct predictions of `model`'s gate routing among `held` on a shared pass (which
    must hold every held expert's logits)."""
    correct = 0
    with torch.no_grad():
        for h, logits, y in zip(shared.features, shared.expert_logits, shared.labels, strict=True):
            out = model.mix(h, held, logits)
            correct += int((out.logits.argmax(1) == y).sum())
    return correct


def evaluate(model: MoEClassifier, held: Tensor, x: Tensor, y: Tensor, batch: int = 1024) -> int:
    """Correct predictions of `model` (with the gate and weights it holds) on (x, y), in
    eval mode."""
    experts = held_experts(held)
    return count_correct(model, held, shared_pass(model, x, y, experts, batch))
