"""What travels in Flower messages between :class:`FlexMoEStrategy` and a client app.

Every message carries a :class:`~flwr.app.RecordDict` with these records:

=============  ===================  ==============================================
message        record               content
=============  ===================  ==============================================
query (hello)  ``config``           ``{"action": "hello"}``
  reply        ``client``           ``{"client": <client index>}``
train          ``arrays``           ψ and the assigned experts (``experts.<e>.*``)
               ``config``           ``client``, ``round``, ``experts`` (ids), ``seed``
  reply        ``arrays``           ψ and the held experts after local training
               ``feedback``         ``client``, ``n_samples``, ``train_loss``, and
                                    ``stats.<name>`` for every per-expert statistic
                                    of the reply (``routed``, ``accuracy``,
                                    ``loss``, ...: one value per expert, NaN where
                                    nothing was routed)
evaluate       ``arrays``, config   ψ and the held experts; ``client``, ``experts``
  reply        ``evaluation``       ``test_correct``, ``test_total``,
                                    ``val_correct``, ``val_total``, ``pooled_acc``
=============  ===================  ==============================================

The gate never travels: each client keeps it in ``context.state`` under :data:`GATE`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from flexmoe.fedloop.task import ClientPlan, ClientReply
from flexmoe.flower._flwr import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

__all__ = [
    "GATE",
    "STATS",
    "from_record",
    "plan_from_config",
    "plan_to_config",
    "reply_from_content",
    "reply_to_content",
    "to_record",
]

State = dict[str, Tensor]

#: Key of the client's gate in ``context.state``.
GATE = "flexmoe.gate"


def to_record(state: State) -> ArrayRecord:
    """A torch state dict as an :class:`~flwr.app.ArrayRecord` (copied, CPU)."""
    return ArrayRecord.from_torch_state_dict({k: v.detach().cpu() for k, v in state.items()})


def from_record(record: ArrayRecord) -> State:
    """An :class:`~flwr.app.ArrayRecord` as a torch state dict of writable tensors."""
    return {key: torch.from_numpy(np.array(array.numpy())) for key, array in record.items()}


def plan_to_config(plan: ClientPlan) -> ConfigRecord:
    """The train instruction for one client."""
    return ConfigRecord({"client": plan.client, "round": plan.round,
                         "experts": list(plan.experts), "seed": plan.seed})  # fmt: skip


def plan_from_config(config: ConfigRecord) -> ClientPlan:
    """Inverse of :func:`plan_to_config`."""
    experts = config["experts"]
    assert isinstance(experts, list)
    return ClientPlan(
        int(config["client"]),  # type: ignore[arg-type]
        int(config["round"]),  # type: ignore[arg-type]
        tuple(int(e) for e in experts),
        int(config["seed"]),  # type: ignore[arg-type]
    )


#: Prefix of the per-expert statistics in a train reply's ``feedback`` record.
STATS = "stats."


def reply_to_content(reply: ClientReply) -> RecordDict:
    """A :class:`~flexmoe.fedloop.ClientReply` as the content of a train reply; every
    per-expert statistic travels as ``stats.<name>``."""
    feedback = MetricRecord({
        "client": reply.client,
        "n_samples": reply.n_samples,
        "train_loss": float(reply.train_loss),
        **{STATS + name: [float(v) for v in values] for name, values in reply.stats.items()},
    })  # fmt: skip
    return RecordDict({"arrays": to_record(reply.weights), "feedback": feedback})


def reply_from_content(content: RecordDict) -> ClientReply:
    """Inverse of :func:`reply_to_content`."""
    feedback = content.metric_records["feedback"]
    stats = {
        key.removeprefix(STATS): np.asarray(value, dtype=np.float64)
        for key, value in feedback.items()
        if key.startswith(STATS)
    }
    return ClientReply(
        client=int(feedback["client"]),  # type: ignore[arg-type]
        n_samples=int(feedback["n_samples"]),  # type: ignore[arg-type]
        weights=from_record(content.array_records["arrays"]),
        stats=stats,
        train_loss=float(feedback["train_loss"]),  # type: ignore[arg-type]
    )
