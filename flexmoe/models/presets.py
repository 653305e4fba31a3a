"""Model presets: an MLP for tabular/digits, a 1-D conv net for MNIST-1D, a small CNN for
32×32 images. Each is a :class:`~flexmoe.models.MoEClassifier` built from a frozen,
JSON-serialisable :class:`ModelSpec`."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from flexmoe.models.moe import MoEClassifier

__all__ = ["PRESETS", "ModelSpec", "build_model"]


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the same architecture on a client.

    Attributes
    ----------
    preset : str
        ``"mlp"``, ``"conv1d"`` or ``"cnn"``.
    in_shape : tuple of int
        Shape of one input: ``(features,)``, ``(length,)`` or ``(channels, 32, 32)``.
    n_classes, n_experts, top_k : int
    width : int
        Feature dimension of ψ.
    expert_hidden : int
        Hidden units of each expert's two-layer head.
    """

    preset: str
    in_shape: tuple[int, ...]
    n_classes: int
    n_experts: int
    top_k: int = 2
    width: int = 64
    expert_hidden: int = 32

    def build(self) -> MoEClassifier:
        """A fresh model (initialised from torch's global RNG; seed it first)."""
        return build_model(**asdict(self))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "in_shape": list(self.in_shape)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(**{**data, "in_shape": tuple(data["in_shape"])})


def _expert(width: int, hidden: int, n_classes: int) -> nn.Module:
    return nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))


def _mlp(in_shape: tuple[int, ...], width: int) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(math.prod(in_shape), width), nn.ReLU(), nn.Linear(width, width),
        nn.ReLU(),
    )  # fmt: skip


def _conv1d(in_shape: tuple[int, ...], width: int) -> nn.Module:
    length = in_shape[-1]
    return nn.Sequential(
        nn.Unflatten(1, (1, length)) if len(in_shape) == 1 else nn.Identity(),
        nn.Conv1d(1 if len(in_shape) == 1 else in_shape[0], 16, 5, padding=2), nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(4), nn.Flatten(),
        nn.Linear(32 * 4, width), nn.ReLU(),
    )  # fmt: skip


def _cnn(in_shape: tuple[int, ...], width: int) -> nn.Module:
    channels = in_shape[0] if len(in_shape) == 3 else 1
    return nn.Sequential(
        nn.Unflatten(1, (1, *in_shape)) if len(in_shape) == 2 else nn.Identity(),
        nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(32 * 4, width), nn.ReLU(),
    )  # fmt: skip


PRESETS: dict[str, Callable[[tuple[int, ...], int], nn.Module]] = {
    "mlp": _mlp,
    "conv1d": _conv1d,
    "cnn": _cnn,
}


def build_model(
    preset: str,
    *,
    in_shape: tuple[int, ...],
    n_classes: int,
    n_experts: int,
    top_k: int = 2,
    width: int = 64,
    expert_hidden: int = 32,
) -> MoEClassifier:
    """Build a preset MoE classifier.

    Parameters
    ----------
    preset : {"mlp", "conv1d", "cnn"}
        ``mlp``: two dense layers (digits: 64 features; synthetic data).
        ``conv1d``: two 1-D convolutions (MNIST-1D, length 40).
        ``cnn``: three 3×3 convolutions (32×32 images, 1 or 3 channels).
    in_shape : tuple of int
    n_classes, n_experts, top_k, width, expert_hidden : int

    Examples
    --------
    >>> model = build_model("cnn", in_shape=(3, 32, 32), n_classes=10, n_experts=4)
    >>> model.expert_num_params()[0]
    2410
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    for name, value in (("n_classes", n_classes), ("n_experts", n_experts), ("width", width)):
        if value < 1:
            raise ValueError(f"`{name}` must be >= 1; got {value}")
    backbone = PRESETS[preset](tuple(in_shape), width)
    experts = [_expert(width, expert_hidden, n_classes) for _ in range(n_experts)]
    model = MoEClassifier(backbone, experts, width, top_k)
    with torch.no_grad():
        model.gate.weight.mul_(0.1)  # near-uniform routing until the gate has learned
        model.gate.bias.zero_()
    return model
