"""Run a :class:`~flexmoe.fedloop.FedConfig` on Flower's simulation engine (Ray).

:func:`run_flower` is the ``--engine flower`` counterpart of :func:`flexmoe.fedloop.run`:
same configuration, same seeded assignments, same :class:`~flexmoe.fedloop.History`.
Flower's and Ray's state go to a temporary folder (never ``$HOME``), which is removed
afterwards, and Ray is shut down when the run ends.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from flexmoe.fedloop.config import FedConfig
from flexmoe.fedloop.history import History
from flexmoe.fedloop.loop import RoundHook, new_history
from flexmoe.fedloop.simulation import Simulation
from flexmoe.fedloop.strategy import MoEStrategy
from flexmoe.flower._flwr import Context, Grid, ServerApp, require_flwr
from flexmoe.flower.client import client_app
from flexmoe.flower.protocol import to_record
from flexmoe.flower.strategy import FlexMoEStrategy, StoppableGrid

__all__ = ["RayOptions", "run_flower"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayOptions:
    """Where and how the simulated clients run.

    Attributes
    ----------
    client_cpus, client_gpus : float
        Resources Ray reserves for each client (one actor per ``client_cpus``); each
        client trains with ``max(1, int(client_cpus))`` torch threads.
    address : str or None
        An existing Ray cluster (``"auto"``, ``"<head-ip>:6379"``); None starts a
        private local Ray instance for this run.
    num_cpus : int or None
        CPUs of the private local instance (None: all).
    temp_dir : str or None
        Parent folder of Ray's and Flower's temporary state (None: the system's).
    verbose : bool
        Keep Flower's INFO log and the Ray workers' output (otherwise Flower's errors
        only; a failed client is reported by :class:`FlexMoEStrategy` either way).
    """

    client_cpus: float = 1.0
    client_gpus: float = 0.0
    address: str | None = None
    num_cpus: int | None = None
    temp_dir: str | None = None
    verbose: bool = False

    def __post_init__(self) -> None:
        if not self.client_cpus > 0 or self.client_gpus < 0:
            raise ValueError(f"`client_cpus` must be > 0 and `client_gpus` >= 0; got "
                             f"{self.client_cpus}, {self.client_gpus}")  # fmt: skip

    def check_local(self) -> None:
        """Refuse resources a private local Ray instance cannot give one client (Flower
        would stop with an empty actor pool); a cluster (`address`) is not checked."""
        if self.address:
            return
        cpus = self.num_cpus or os.cpu_count() or 1
        if self.client_cpus > cpus:
            raise ValueError(f"`client_cpus` = {self.client_cpus:g} exceeds the {cpus} CPUs "
                             "of the local Ray instance")  # fmt: skip
        gpus = _local_gpus() if self.client_gpus > 0 else 0.0
        if self.client_gpus > gpus:
            raise ValueError(f"`client_gpus` = {self.client_gpus:g}, but the local Ray "
                             f"instance has {gpus:g} GPU(s); set it to 0, or run on a Ray "
                             "cluster with GPUs (`address`)")  # fmt: skip

    @property
    def threads(self) -> int:
        """Torch threads per client: its reserved CPUs, at least 1."""
        return max(1, int(self.client_cpus))

    def backend_config(self, ray_dir: str) -> dict[str, Any]:
        """Flower's ``backend_config``: client resources and ``ray.init`` arguments."""
        init: dict[str, Any] = {"address": self.address} if self.address else {}
        init["log_to_driver"] = self.verbose  # client failures come back in the replies
        if not self.address:
            init["_temp_dir"] = ray_dir
            if self.num_cpus is not None:
                init["num_cpus"] = self.num_cpus
        resources = {"num_cpus": self.client_cpus, "num_gpus": self.client_gpus}
        return {"client_resources": resources, "init_args": init}


def _local_gpus() -> float:
    """The GPUs Ray finds on this machine (its own detection); infinite when Ray's
    detector is not where this Ray version keeps it (then nothing is refused)."""
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource

        manager = get_accelerator_manager_for_resource("GPU")
        if manager is None:
            return 0.0
        return float(manager.get_current_node_num_accelerators())
    except Exception:  # a private Ray API: any failure means "unknown"
        return math.inf


@contextlib.contextmanager
def _private_state(parent: str | None, verbose: bool) -> Iterator[str]:
    """A temporary folder for Flower (``FLWR_HOME``) and Ray; environment and Flower's
    log level restored afterwards, the folder removed."""
    root = tempfile.mkdtemp(prefix="flexmoe-", dir=parent)  # short: Ray's socket paths
    saved = {k: os.environ.get(k) for k in ("FLWR_HOME", "PYTHONPATH")}
    os.environ["FLWR_HOME"] = os.path.join(root, "flwr")
    flwr_log = logging.getLogger("flwr")
    level = flwr_log.level
    if not verbose:
        flwr_log.setLevel(logging.ERROR)  # e.g. "run_simulation is deprecated": not ours
    try:
        yield os.path.join(root, "ray")
    finally:
        flwr_log.setLevel(level)
        for key, value in saved.items():  # Flower's Ray backend rewrites PYTHONPATH
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(root, ignore_errors=True)


def _shutdown_ray() -> None:
    """Flower stops Ray when the run ends; make sure of it when the run failed."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _server_app(strategy: FlexMoEStrategy, sim: Simulation, rounds: int) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        stoppable = cast(Grid, StoppableGrid(grid, strategy.stopped))
        strategy.start(grid=stoppable, initial_arrays=to_record(sim.initial_weights()),
                       num_rounds=rounds)  # fmt: skip

    return app


def run_flower(
    config: FedConfig,
    *,
    out: str | Path | None = None,
    ray: RayOptions | None = None,
    hooks: Sequence[RoundHook] = (),
) -> History:
    """Run a federated MoE experiment on Flower's simulation engine (Ray).

    Parameters
    ----------
    config : FedConfig
        As for :func:`flexmoe.fedloop.run`; ``clients`` virtual nodes are simulated.
    out : path, optional
        Folder for ``history.json`` (no checkpoints: this engine does not resume).
    ray : RayOptions, optional
        Client resources, and an existing cluster to run on.
    hooks : sequence of callables
        ``hook(round, state, history)`` after every round.

    Returns
    -------
    History
        The same records as :func:`flexmoe.fedloop.run` gives for the same `config`
        (timings aside).
    """
    require_flwr()
    from flwr.simulation import run_simulation

    options = ray if ray is not None else RayOptions()
    options.check_local()
    sim = Simulation(config)
    history = new_history(sim)
    strategy = FlexMoEStrategy(MoEStrategy(config, sim.federation), history=history,
                               hooks=hooks)  # fmt: skip
    with _private_state(options.temp_dir, options.verbose) as ray_dir:
        try:
            run_simulation(
                _server_app(strategy, sim, config.rounds),
                client_app(config, threads=options.threads),
                num_supernodes=config.clients,
                backend_config=options.backend_config(ray_dir),
            )
        except BaseException:
            strategy.stop()  # the ServerApp thread must not outlive the engine
            raise
        finally:
            _shutdown_ray()
    if len(history.rounds) != config.rounds:
        raise RuntimeError(f"the Flower run stopped after {len(history.rounds)} of "
                           f"{config.rounds} rounds; see the log above")  # fmt: skip
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        history.save(Path(out) / "history.json")
    return history
