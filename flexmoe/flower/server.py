"""flexmoe's ``ServerApp``: the experiment of ``context.run_config`` with
:class:`~flexmoe.flower.FlexMoEStrategy`, writing what ``flexmoe train`` writes.

:data:`server_app` reads every key of the App's run configuration (see
:mod:`flexmoe.flower.runconfig`), builds the server from the federation's public spec,
runs ``num-server-rounds`` rounds over the nodes the grid has, and writes
``config.toml`` and ``history.json`` (after every round) to ``out-dir``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flexmoe import params
from flexmoe.fedloop.config import FedConfig
from flexmoe.fedloop.history import History
from flexmoe.fedloop.loop import new_history
from flexmoe.fedloop.simulation import Simulation
from flexmoe.fedloop.strategy import MoEStrategy, ServerState
from flexmoe.flower._flwr import Context, Grid, ServerApp
from flexmoe.flower.protocol import to_record
from flexmoe.flower.runconfig import AppSettings, from_run_config
from flexmoe.flower.strategy import FlexMoEStrategy

__all__ = ["run_app", "server_app"]

log = logging.getLogger(__name__)


def run_app(grid: Grid, config: FedConfig, app: AppSettings) -> History:
    """Run `config` on `grid` as the App does; returns (and writes) its history."""
    out = Path(app.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params.write_toml(out / "config.toml", params.to_flat(config),
                      header="flexmoe train configuration; load it with --config")  # fmt: skip
    sim = Simulation(config)
    history = new_history(sim)

    def save(rnd: int, state: ServerState, history: History) -> None:
        history.save(out / "history.json")
        log.info("round %d of %d done; history in %s", rnd + 1, config.rounds, out)

    strategy = FlexMoEStrategy(
        MoEStrategy(config, sim.federation),
        identify=True,
        min_available_nodes=app.min_available_nodes,
        fraction_evaluate=app.fraction_evaluate,
        node_timeout=app.node_timeout,
        history=history,
        hooks=[save],
    )
    strategy.start(grid=grid, initial_arrays=to_record(sim.initial_weights()),
                   num_rounds=config.rounds, timeout=app.round_timeout)  # fmt: skip
    history.save(out / "history.json")
    return history


def _main(grid: Grid, context: Context) -> None:
    config, app = from_run_config(context.run_config)
    run_app(grid, config, app)


def _server_app() -> ServerApp:
    app = ServerApp()
    app.main()(_main)
    return app


#: flexmoe's ``ServerApp`` (the component ``flexmoe.flower:server_app``).
server_app = _server_app()
