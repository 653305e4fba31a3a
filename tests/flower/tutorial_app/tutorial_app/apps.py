"""A Flower App as Flower's PyTorch tutorial writes one — its own model, its own data, a
``ClientApp`` with ``@app.train()`` / ``@app.evaluate()`` — with :class:`FlexMoEStrategy`
in the ``ServerApp``. What it adds for the strategy: it routes only through the experts
its ``config["experts"]`` lists and reports a per-expert loss (``stats.loss``).

The model has a shared body, three experts (``moe.<e>.*``) and a shared head: the head
must be averaged FedAvg-style like the body (no ``backbone.*`` naming needed).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from torch import nn

from flexmoe.flower import FlexMoEStrategy

N_EXPERTS = 3


class TinyMoE(nn.Module):
    """Body → the held experts, averaged → head."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.moe = nn.ModuleList(nn.Linear(8, 8) for _ in range(N_EXPERTS))
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor, experts: list[int]) -> torch.Tensor:
        h = torch.relu(self.body(x))
        return self.head(torch.stack([self.moe[e](h) for e in experts]).mean(0))


def new_model() -> TinyMoE:
    torch.manual_seed(0)
    return TinyMoE()


def load_data(partition_id: int, num_partitions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A few samples of a 3-class problem, skewed per partition."""
    g = torch.Generator().manual_seed(100 + partition_id)
    y = (torch.arange(24) + partition_id) % 3
    x = torch.randn(24, 4, generator=g) + y[:, None].float()
    return x, y


client = ClientApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    partition = int(context.node_config["partition-id"])
    if (
        partition == int(context.run_config["crash-partition"])
        and int(msg.content["config"]["server-round"]) == 1
    ):
        raise RuntimeError("this node crashes in round 1")
    model = new_model()
    received = msg.content["arrays"].to_torch_state_dict()
    model.load_state_dict(received, strict=False)
    config = msg.content["config"]
    experts = [int(e) for e in config["experts"]]
    x, y = load_data(partition, int(context.node_config["num-partitions"]))
    optimiser = torch.optim.SGD(model.parameters(), lr=float(config["lr"]))
    for _ in range(3):
        loss = nn.functional.cross_entropy(model(x, experts), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        per_expert = [float("nan")] * N_EXPERTS
        for e in experts:
            per_expert[e] = float(nn.functional.cross_entropy(model(x, [e]), y))
    extra = [k for k in received if k.startswith("moe.") and int(k.split(".")[1]) not in experts]
    metrics = {
        "train_loss": loss.item(),
        "num-examples": len(y),
        "stats.loss": per_expert,
        "lr_seen": float(config["lr"]),
        "unassigned_experts_received": len(extra),
    }
    return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()),
                               "metrics": MetricRecord(metrics)}), reply_to=msg)  # fmt: skip


@client.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    model = new_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict(), strict=False)
    experts = [int(e) for e in msg.content["config"]["experts"]]
    x, y = load_data(int(context.node_config["partition-id"]), 1)
    with torch.no_grad():
        accuracy = float((model(x, experts).argmax(1) == y).float().mean())
    metrics = {"eval_acc": accuracy, "num-examples": len(y),
               "tag_seen": float(msg.content["config"]["tag"])}  # fmt: skip
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


def make_strategy(**options: object) -> FlexMoEStrategy:
    return FlexMoEStrategy.for_model(
        ArrayRecord(new_model().state_dict()),
        experts=r"moe\.(\d+)\.",
        config={"capacity": 1, "fitness": {"signal": "loss"}, "seed": 0},
        **options,  # type: ignore[arg-type]
    )


server = ServerApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    strategy = make_strategy(min_available_nodes=2)
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(new_model().state_dict()),
        num_rounds=int(context.run_config["num-server-rounds"]),
        train_config=ConfigRecord({"lr": float(context.run_config["lr"])}),
        evaluate_config=ConfigRecord({"tag": 7}),
        timeout=120,
    )
    out = Path(str(context.run_config["out-dir"]))
    out.mkdir(parents=True, exist_ok=True)
    strategy.history.save(out / "history.json")
    summary = {
        "train": {r: dict(m) for r, m in result.train_metrics_clientapp.items()},
        "evaluate": {r: dict(m) for r, m in result.evaluate_metrics_clientapp.items()},
        "rows": len(strategy.rows),
    }
    (out / "result.json").write_text(json.dumps(summary))
