"""Server-side aggregation: FedAvg of ψ and a routed-sample-weighted average per expert."""

from __future__ import annotations

import torch
from torch import Tensor

from flexmoe.fedloop.task import ClientReply

__all__ = ["aggregate", "expert_of", "weighted_mean"]

State = dict[str, Tensor]


def expert_of(key: str) -> int | None:
    """The expert index of a state key (``experts.3.0.weight`` → 3), None for ψ.

    Examples
    --------
    >>> expert_of("experts.3.0.weight"), expert_of("backbone.1.bias")
    (3, None)
    """
    if not key.startswith("experts."):
        return None
    return int(key.split(".", 2)[1])


def weighted_mean(tensors: list[Tensor], weights: list[float]) -> Tensor:
    """``Σ w_i t_i / Σ w_i`` in float64, cast back to the tensors' dtype."""
    total = float(sum(weights))
    acc = torch.zeros_like(tensors[0], dtype=torch.float64)
    for tensor, weight in zip(tensors, weights, strict=True):
        acc += tensor.double() * (weight / total)
    return acc.to(tensors[0].dtype)


def aggregate(weights: State, replies: list[ClientReply]) -> State:
    r"""New global state from the replies of one round.

    Notes
    -----
    ψ: FedAvg over the replies weighted by local sample counts. Expert e: average over
    the replies that hold it, weighted by the routed-sample counts ``u[n, e]``,

    .. math::  θ_e ← \sum_n u_{ne} θ_e^{(n)} / \sum_n u_{ne},

    and an expert no reply holds, or that no sample was routed to, keeps its weights.
    The gates are not in the replies: they stay on the clients.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from flexmoe.fedloop.task import ClientReply
    >>> g = {"backbone.w": torch.zeros(1), "experts.0.w": torch.zeros(1),
    ...      "experts.1.w": torch.ones(1)}
    >>> r = [ClientReply(0, 3, {"backbone.w": torch.ones(1), "experts.0.w": torch.full((1,), 2.0)},
    ...                  {"routed": np.array([3.0, 0.0])})]
    >>> {k: v.item() for k, v in aggregate(g, r).items()}
    {'backbone.w': 1.0, 'experts.0.w': 2.0, 'experts.1.w': 1.0}
    """
    new = dict(weights)
    if not replies:
        return new
    for key in weights:
        expert = expert_of(key)
        if expert is None:
            holders = [(r.weights[key], float(r.n_samples)) for r in replies]
        else:
            holders = [
                (r.weights[key], float(r.routed[expert]))
                for r in replies
                if key in r.weights and r.routed[expert] > 0
            ]
        if holders and sum(w for _, w in holders) > 0:
            new[key] = weighted_mean([t for t, _ in holders], [w for _, w in holders])
    return new
