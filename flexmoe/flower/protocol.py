"""What travels in Flower messages between :class:`FlexMoEStrategy` and a client app.

The records follow Flower's own conventions (``flwr.serverapp.strategy.FedAvg``): a
train or evaluate message carries an :class:`~flwr.app.ArrayRecord` under ``arrays`` and
a :class:`~flwr.app.ConfigRecord` under ``config``; a reply carries one ArrayRecord (train
only) and one :class:`~flwr.app.MetricRecord` with the sample count under
``weighted_by_key`` (``num-examples``). So a ClientApp written the way Flower's tutorials
write one answers the strategy as it is; what flexmoe adds is optional.

=============  ===========  =========================================================
message        record       content
=============  ===========  =========================================================
train          ``arrays``   the shared parameters and only the experts of
                            ``ClientPlan.downloads`` (the assigned ones, then the
                            probes: scored, not trained, not sent back)
               ``config``   ``train_config`` of ``start()``, ``server-round``, and
                            every field of :class:`~flexmoe.fedloop.ClientPlan`
                            (``client`` = the node's fitness row, ``round``,
                            ``experts`` = the assigned expert ids, ``seed``,
                            ``scored`` = the experts it scores alone, ...)
  reply        any name     one ArrayRecord: the shared parameters and the held
                            experts after training
               any name     one MetricRecord: ``num-examples``, optionally
                            ``train_loss``, and ``stats.<name>``: one value per
                            expert for every per-expert statistic (``routed``:
                            samples routed to each expert; ``accuracy``, ``loss``:
                            NaN where nothing was routed). Without ``stats.routed``
                            every held expert counts ``num-examples`` routed samples.
evaluate       ``arrays``   the shared parameters and the experts the node holds
               ``config``   ``evaluate_config``, ``server-round``, ``client``,
                            ``experts``
  reply        any name     one MetricRecord: ``num-examples`` and, from flexmoe's
                            ClientApp, ``counts.<split>_correct`` and
                            ``counts.<split>_total`` for the splits ``test``,
                            ``val``, ``pooled_test``, ``pooled_val`` (flexmoe's
                            accuracy metrics)
query          ``config``   ``{"flexmoe": "identify"}`` (only with ``identify``)
  reply        ``identity``  ``partition-id`` and the node's
                            :class:`~flexmoe.fedloop.ClientProfile` fields
=============  ===========  =========================================================

Plans and replies are carried generically: every field of ``ClientPlan`` and every
entry of ``ClientReply.stats`` travels, so a field or a statistic added to them needs no
change here. flexmoe's gate never travels: its ClientApp keeps it in ``context.state``
under :data:`GATE`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flexmoe.fedloop.clients import ClientProfile
from flexmoe.fedloop.task import ClientPlan, ClientReply, EvaluationCounts
from flexmoe.flower._flwr import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

__all__ = [
    "COUNTS",
    "GATE",
    "IDENTIFY",
    "NUM_EXAMPLES",
    "PLAN_KEYS",
    "SPLITS",
    "STATS",
    "ProtocolError",
    "counts_from_metrics",
    "counts_to_metrics",
    "from_record",
    "identity_from_content",
    "identity_reply",
    "identity_request",
    "is_identity_request",
    "only_record",
    "plan_from_config",
    "plan_to_config",
    "reply_from_content",
    "reply_to_content",
    "sample_count",
    "to_record",
]

State = dict[str, Tensor]

#: Key of flexmoe's gate in its ClientApp's ``context.state``.
GATE = "flexmoe.gate"

#: The default ``weighted_by_key``: Flower's name of a reply's sample count.
NUM_EXAMPLES = "num-examples"

#: Prefix of the per-expert statistics in a train reply's MetricRecord.
STATS = "stats."

#: Prefix of flexmoe's evaluation counts in an evaluate reply's MetricRecord.
COUNTS = "counts."

#: The splits flexmoe's ClientApp evaluates on.
SPLITS = ("test", "val", "pooled_test", "pooled_val")

#: The query that asks a node who it is.
IDENTIFY = {"flexmoe": "identify"}

#: The train config keys of a plan: every field of :class:`~flexmoe.fedloop.ClientPlan`.
PLAN_KEYS = tuple(f.name for f in dataclasses.fields(ClientPlan))


class ProtocolError(ValueError):
    """A reply that lacks what the protocol asks of it (the message says what)."""


def to_record(state: State) -> ArrayRecord:
    """A torch state dict as an :class:`~flwr.app.ArrayRecord` (copied, CPU)."""
    return ArrayRecord.from_torch_state_dict({k: v.detach().cpu() for k, v in state.items()})


def from_record(record: ArrayRecord) -> State:
    """An :class:`~flwr.app.ArrayRecord` as a torch state dict of writable tensors."""
    return {key: torch.from_numpy(np.array(array.numpy())) for key, array in record.items()}


# -- plans ------------------------------------------------------------------------------


@functools.cache
def _plan_fields() -> tuple[tuple[dataclasses.Field[Any], Any], ...]:
    hints = typing.get_type_hints(ClientPlan)
    return tuple((f, hints[f.name]) for f in dataclasses.fields(ClientPlan))


def plan_to_config(plan: ClientPlan) -> dict[str, Any]:
    """Every field of `plan` as a ConfigRecord value (tuples as lists)."""
    return {
        f.name: list(value) if isinstance(value := getattr(plan, f.name), tuple) else value
        for f, _ in _plan_fields()
    }


def _field_value(hint: Any, value: Any) -> Any:
    if typing.get_origin(hint) is tuple:
        (item, *_) = typing.get_args(hint)
        return tuple(item(v) for v in value)
    return hint(value)


def plan_from_config(config: Mapping[str, Any]) -> ClientPlan:
    """The :class:`~flexmoe.fedloop.ClientPlan` a train ``config`` carries (inverse of
    :func:`plan_to_config`; a field the sender did not know keeps its default)."""
    values = {}
    for f, hint in _plan_fields():
        if f.name in config:
            values[f.name] = _field_value(hint, config[f.name])
        elif f.default is dataclasses.MISSING:
            raise ProtocolError(f"the train config has no `{f.name}`; got {sorted(config)}")
    return ClientPlan(**values)


# -- replies ----------------------------------------------------------------------------


def reply_to_content(reply: ClientReply, weighted_by_key: str = NUM_EXAMPLES) -> RecordDict:
    """A :class:`~flexmoe.fedloop.ClientReply` as the content of a train reply; every
    per-expert statistic travels as ``stats.<name>``."""
    metrics = MetricRecord({
        weighted_by_key: reply.n_samples,
        "train_loss": float(reply.train_loss),
        **{STATS + name: [float(v) for v in values] for name, values in reply.stats.items()},
    })  # fmt: skip
    return RecordDict({"arrays": to_record(reply.weights), "metrics": metrics})


def only_record(records: Mapping[str, Any], kind: str) -> Any:
    """The one record of `records` (a reply's ``array_records`` / ``metric_records``)."""
    if len(records) != 1:
        raise ProtocolError(f"expected exactly one {kind}, got {len(records)}: {sorted(records)}")
    return next(iter(records.values()))


def sample_count(metrics: Mapping[str, Any], weighted_by_key: str) -> float:
    """The reply's sample count: ``metrics[weighted_by_key]``, a number >= 0."""
    value = metrics.get(weighted_by_key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ProtocolError(f"its MetricRecord must hold `{weighted_by_key}` (the sample count, "
                            f"a number >= 0; `weighted_by_key`); got {value!r}")  # fmt: skip
    return float(value)


def reply_from_content(
    content: RecordDict,
    client: int,
    held: tuple[int, ...],
    n_experts: int,
    weighted_by_key: str = NUM_EXAMPLES,
) -> ClientReply:
    """The :class:`~flexmoe.fedloop.ClientReply` of `client`, who held `held`, from its
    train reply; without ``stats.routed`` each held expert counts every sample."""
    metrics = only_record(content.metric_records, "MetricRecord")
    n_samples = sample_count(metrics, weighted_by_key)
    stats = {
        key.removeprefix(STATS): np.asarray(value, dtype=np.float64)
        for key, value in metrics.items()
        if key.startswith(STATS)
    }
    for name, values in stats.items():
        if values.shape != (n_experts,):
            got = values.shape[0] if values.ndim else "a scalar"
            raise ProtocolError(f"`{STATS}{name}` must hold one value per expert ({n_experts}); "
                                f"got {got}")  # fmt: skip
    if "routed" not in stats:
        stats["routed"] = np.zeros(n_experts)
        stats["routed"][list(held)] = n_samples
    loss = metrics.get("train_loss", math.nan)
    return ClientReply(
        client=client,
        n_samples=int(n_samples),
        weights=from_record(only_record(content.array_records, "ArrayRecord")),
        stats=stats,
        train_loss=float(loss) if isinstance(loss, int | float) else math.nan,
    )


# -- evaluation -------------------------------------------------------------------------


def counts_to_metrics(counts: EvaluationCounts) -> dict[str, int | float]:
    """flexmoe's evaluation counts as MetricRecord entries (``num-examples`` = the own
    test split)."""
    entries: dict[str, int | float] = {NUM_EXAMPLES: counts["test"][1]}
    for split, (correct, total) in counts.items():
        entries[f"{COUNTS}{split}_correct"], entries[f"{COUNTS}{split}_total"] = correct, total
    return entries


def counts_from_metrics(metrics: Mapping[str, Any]) -> EvaluationCounts | None:
    """The counts of :func:`counts_to_metrics`; None for a reply without them (a
    ClientApp that is not flexmoe's)."""
    keys = [f"{COUNTS}{s}_{part}" for s in SPLITS for part in ("correct", "total")]
    if not all(key in metrics for key in keys):
        return None
    return {s: (int(metrics[f"{COUNTS}{s}_correct"]), int(metrics[f"{COUNTS}{s}_total"]))
            for s in SPLITS}  # fmt: skip


# -- identity ---------------------------------------------------------------------------


def identity_request() -> RecordDict:
    """The content of the query that asks a node who it is."""
    return RecordDict({"config": ConfigRecord(dict(IDENTIFY))})


def is_identity_request(content: RecordDict) -> bool:
    config = content.config_records.get("config")
    return config is not None and config.get("flexmoe") == IDENTIFY["flexmoe"]


def identity_reply(partition_id: int, profile: ClientProfile) -> RecordDict:
    """A node's answer: its partition id and its profile (what it can hold and spend)."""
    return RecordDict({"identity": ConfigRecord({"partition-id": partition_id,
                                                 **dataclasses.asdict(profile)})})  # fmt: skip


def identity_from_content(content: RecordDict) -> tuple[int, ClientProfile]:
    """Inverse of :func:`identity_reply`."""
    identity = content.config_records.get("identity")
    if identity is None:
        raise ProtocolError(f"an identity reply holds an `identity` ConfigRecord; got "
                            f"{sorted(content.config_records)}")  # fmt: skip
    hints = typing.get_type_hints(ClientProfile)
    profile = ClientProfile(**{k: kind(identity[k]) for k, kind in hints.items() if k in identity})
    return int(identity["partition-id"]), profile  # type: ignore[arg-type]
