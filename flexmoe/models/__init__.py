"""PyTorch Mixture-of-Experts: backbone, local gate, experts, masked top-k routing.

>>> import torch
>>> from flexmoe.models import build_model
>>> model = build_model("mlp", in_shape=(64,), n_classes=10, n_experts=8, top_k=2)
>>> out = model(torch.randn(4, 64), held=torch.tensor([1, 1, 0, 0, 0, 0, 0, 0], dtype=torch.bool))
>>> bool((out.weights[:, 2:] == 0).all())
True
"""

from flexmoe.extras import require_extra

require_extra("fl", modules=("torch",), part="`flexmoe.models`")  # or the pip command


from flexmoe.models.moe import (
    ExpertStats,
    MoEClassifier,
    MoEOutput,
    held_experts,
    route,
    shared_keys,
)
from flexmoe.models.presets import PRESETS, ModelSpec, build_model

__all__ = [
    "PRESETS",
    "ExpertStats",
    "MoEClassifier",
    "MoEOutput",
    "ModelSpec",
    "build_model",
    "held_experts",
    "route",
    "shared_keys",
]
