"""The MoE classifier: shared extractor ψ, E experts, a local gate, masked top-k routing."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["ExpertStats", "MoEClassifier", "MoEOutput", "held_experts", "route", "shared_keys"]


def route(gate_logits: Tensor, held: Tensor, top_k: int) -> Tensor:
    """Sparse routing weights over the experts a client holds.

    Parameters
    ----------
    gate_logits : Tensor, shape (batch, n_experts)
    held : Tensor of bool, shape (n_experts,)
        The experts the client holds; every other expert gets weight exactly 0.
    top_k : int
        Experts per sample; if it exceeds the number held, every held expert is used.

    Returns
    -------
    Tensor, shape (batch, n_experts)
        Softmax over each sample's top-k held logits, zero elsewhere.

    Examples
    --------
    >>> import torch
    >>> w = route(torch.tensor([[3.0, 2.0, 1.0]]), torch.tensor([False, True, True]), 1)
    >>> w.tolist()
    [[0.0, 1.0, 0.0]]
    """
    if held.dtype != torch.bool or held.shape != gate_logits.shape[1:]:
        raise ValueError(
            f"`held` must be a bool tensor of shape ({gate_logits.shape[1]},); "
            f"got {held.dtype} {tuple(held.shape)}"
        )
    n_held = int(held.sum())
    if n_held == 0:
        raise ValueError("a client must hold at least one expert to route; `held` is all False")
    if top_k < 1:
        raise ValueError(f"`top_k` must be >= 1; got {top_k}")
    k = min(top_k, n_held)
    masked = gate_logits.masked_fill(~held, float("-inf"))
    values, index = masked.topk(k, dim=1)
    weights = torch.zeros_like(gate_logits)
    return weights.scatter(1, index, torch.softmax(values, dim=1))


@dataclass(frozen=True)
class MoEOutput:
    """One forward pass.

    Attributes
    ----------
    logits : Tensor, shape (batch, n_classes)
        The mixture: ``Σ_e weight[:, e] · expert_logits[e]``.
    weights : Tensor, shape (batch, n_experts)
        Routing weights (zero for experts not routed to, always zero for absent ones).
    expert_logits : dict of int to Tensor, shape (batch, n_classes)
        Each held expert's own prediction on the whole batch.
    """

    logits: Tensor
    weights: Tensor
    expert_logits: dict[int, Tensor]

    def expert_stats(self, target: Tensor) -> ExpertStats:
        """Per-expert routed counts, loss and accuracy on the samples routed to it."""
        n_experts = self.weights.shape[1]
        if not self.expert_logits:
            return ExpertStats(*(torch.zeros(n_experts) for _ in range(3)))
        return ExpertStats.spread(self.expert_sums(target), list(self.expert_logits), n_experts)

    def expert_sums(self, target: Tensor) -> Tensor:
        """:meth:`expert_stats` of the held experts only, in index order, as one tensor of
        shape (3, held): routed count, loss sum and correct predictions. Batches with the
        same held experts add elementwise (a training loop's running sum)."""
        with torch.no_grad():
            experts = torch.tensor(list(self.expert_logits), dtype=torch.long)
            logits = torch.stack(list(self.expert_logits.values()), dim=1)  # (batch, held, C)
            routed = (self.weights[:, experts] > 0).float()
            labels = target[:, None].expand(-1, len(experts))
            nll = -logits.log_softmax(-1).gather(-1, labels[..., None])[..., 0]
            hits = (logits.argmax(-1) == labels).float()
            return torch.stack([routed.sum(0), (nll * routed).sum(0), (hits * routed).sum(0)])


@dataclass
class ExpertStats:
    """Sums over samples, per expert: routed count, loss sum and correct predictions.

    Add batches with ``+``; :attr:`mean_loss` and :attr:`accuracy` divide by the count
    (NaN for an expert no sample was routed to).
    """

    count: Tensor
    loss_sum: Tensor
    correct: Tensor

    @classmethod
    def spread(cls, sums: Tensor, experts: list[int], n_experts: int) -> ExpertStats:
        """The stats of every expert from :meth:`MoEOutput.expert_sums` of `experts`
        (zero for the others)."""
        count, loss, correct = (torch.zeros(n_experts) for _ in range(3))
        index = torch.tensor(experts, dtype=torch.long)
        count[index], loss[index], correct[index] = sums[0], sums[1], sums[2]
        return cls(count, loss, correct)

    def __add__(self, other: ExpertStats) -> ExpertStats:
        return ExpertStats(
            self.count + other.count, self.loss_sum + other.loss_sum, self.correct + other.correct
        )

    @property
    def mean_loss(self) -> Tensor:
        return torch.where(self.count > 0, self.loss_sum / self.count.clamp(min=1), torch.nan)

    @property
    def accuracy(self) -> Tensor:
        return torch.where(self.count > 0, self.correct / self.count.clamp(min=1), torch.nan)


class MoEClassifier(nn.Module):
    r"""Mixture-of-Experts classifier with a client-local gate.

    ``ψ`` (``backbone``) maps an input to a feature vector ``h``; the gate scores every
    expert on ``h``; routing keeps each sample's top-k experts *among those the client
    holds*; the output is the routed mixture of the experts' logits.

    Parameters
    ----------
    backbone : nn.Module
        Shared feature extractor ψ: input → (batch, feature_dim).
    experts : sequence of nn.Module
        Each maps (batch, feature_dim) → (batch, n_classes).
    feature_dim : int
    top_k : int
        Experts per sample (capped by the number held).

    Notes
    -----
    Federated state is ``backbone.*`` and ``experts.<e>.*`` (:func:`shared_keys`); the
    ``gate.*`` parameters stay on the client and are never averaged. An expert that is
    not held is never evaluated: its weights cannot influence the output.

    .. math::

        y(x) = \sum_{e \in \mathrm{topk}_{A_n}(g_n(ψ(x)))} \mathrm{softmax}(g_n)_e\,
               θ_e(ψ(x))

    Examples
    --------
    >>> import torch
    >>> from flexmoe.models import build_model
    >>> model = build_model("mlp", in_shape=(64,), n_classes=10, n_experts=4, top_k=1)
    >>> out = model(torch.zeros(5, 64), held=torch.tensor([False, True, False, True]))
    >>> out.logits.shape, sorted(out.expert_logits)
    (torch.Size([5, 10]), [1, 3])
    """

    def __init__(
        self, backbone: nn.Module, experts: list[nn.Module], feature_dim: int, top_k: int = 2
    ) -> None:
        super().__init__()
        if top_k < 1:
            raise ValueError(f"`top_k` must be >= 1; got {top_k}")
        self.backbone = backbone
        self.experts = nn.ModuleList(experts)
        self.gate = nn.Linear(feature_dim, len(experts))
        self.feature_dim = feature_dim
        self.top_k = top_k

    @property
    def n_experts(self) -> int:
        return len(self.experts)

    def forward(self, x: Tensor, held: Tensor | None = None) -> MoEOutput:
        if held is None:
            held = torch.ones(self.n_experts, dtype=torch.bool)
        h = self.backbone(x)
        weights = route(self.gate(h), held, self.top_k)
        return _mixture(weights, {e: self.experts[e](h) for e in held_experts(held)})

    def mix(self, h: Tensor, held: Tensor, expert_logits: dict[int, Tensor]) -> MoEOutput:
        """:meth:`forward` from ``h = ψ(x)`` and each held expert's logits on it
        (`expert_logits` may hold more experts: only the held ones are used). ψ and the
        experts are global; this is the part a client's own gate decides, so a pass
        over a common set is shared by every client's evaluation."""
        weights = route(self.gate(h), held, self.top_k)
        return _mixture(weights, {e: expert_logits[e] for e in held_experts(held)})

    def expert_num_params(self) -> list[int]:
        """Parameters of each expert (for the storage constraint)."""
        return [sum(p.numel() for p in expert.parameters()) for expert in self.experts]

    def expert_nbytes(self) -> list[int]:
        """Bytes of each expert's tensors, as sent over the wire."""
        return [_nbytes(expert) for expert in self.experts]

    def backbone_nbytes(self) -> int:
        """Bytes of ψ's tensors (sent to and from every participating client)."""
        return _nbytes(self.backbone)


def held_experts(held: Tensor) -> list[int]:
    """The experts a `held` mask holds, in index order.

    >>> held_experts(torch.tensor([False, True, False, True]))
    [1, 3]
    """
    return [int(e) for e in held.nonzero().flatten()]


def _mixture(weights: Tensor, expert_logits: dict[int, Tensor]) -> MoEOutput:
    """``Σ_e weight[:, e] · expert_logits[e]`` over the held experts, in index order."""
    logits = sum(
        (weights[:, e, None] * out for e, out in expert_logits.items()), start=torch.zeros(())
    )
    return MoEOutput(logits, weights, expert_logits)


def _nbytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def shared_keys(state: dict[str, Tensor], experts: list[int] | None = None) -> list[str]:
    """Keys of the federated state: ψ and (all, or the listed) experts; never the gate.

    Examples
    --------
    >>> shared_keys({"backbone.w": 0, "experts.0.w": 0, "experts.1.w": 0, "gate.w": 0}, [1])
    ['backbone.w', 'experts.1.w']
    """
    keep = None if experts is None else {f"experts.{e}." for e in experts}
    out = []
    for key in state:
        if key.startswith("backbone."):
            out.append(key)
        elif key.startswith("experts.") and (keep is None or key[: key.index(".", 8) + 1] in keep):
            out.append(key)
    return out
