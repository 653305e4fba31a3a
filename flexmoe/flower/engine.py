"""Run a :class:`~flexmoe.fedloop.FedConfig` as a Flower App on a private local
federation (``flexmoe train --engine flower``).

:func:`run_flower` is the ``--engine flower`` counterpart of :func:`flexmoe.fedloop.run`:
same configuration, same seeded assignments, same :class:`~flexmoe.fedloop.History`. It
writes a Flower App whose run configuration is the experiment's (its components are
:data:`~flexmoe.flower.server_app` and :data:`~flexmoe.flower.client_app`) and runs it
with ``flwr run`` on a :class:`~flexmoe.flower.launch.LocalFederation` of
``config.clients`` simulated nodes: Flower's simulation runtime on Ray, everything in a
temporary folder that is removed afterwards, no process left running.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flexmoe.fedloop.config import FedConfig
from flexmoe.fedloop.history import History
from flexmoe.flower._flwr import require_flwr
from flexmoe.flower.launch import LocalFederation, RayOptions
from flexmoe.flower.runconfig import AppSettings, app_pyproject, run_config

__all__ = ["RayOptions", "run_flower"]

log = logging.getLogger(__name__)

#: ``hook(round, None, history)`` after every round (the server state stays in the
#: ServerApp's process).
EngineHook = Callable[[int, Any, History], None]


class _Progress:
    """Calls the hooks for every round the ServerApp's ``history.json`` gained."""

    def __init__(self, path: Path, hooks: Sequence[EngineHook]) -> None:
        self.path, self.hooks, self.done = path, list(hooks), 0

    def __call__(self) -> None:
        if not self.hooks or not self.path.is_file():
            return
        try:
            history = History.load(self.path)
        except (OSError, ValueError):  # being replaced this very moment
            return
        for rnd in range(self.done, len(history.rounds)):
            partial = History(history.config, history.setup, history.rounds[: rnd + 1])
            for hook in self.hooks:
                hook(rnd, None, partial)
        self.done = max(self.done, len(history.rounds))


def run_flower(
    config: FedConfig,
    *,
    out: str | Path | None = None,
    ray: RayOptions | None = None,
    hooks: Sequence[EngineHook] = (),
) -> History:
    """Run a federated MoE experiment as a Flower App on Flower's simulation runtime.

    Parameters
    ----------
    config : FedConfig
        As for :func:`flexmoe.fedloop.run`; ``clients`` simulated nodes.
    out : path, optional
        Folder for ``config.toml`` and ``history.json`` (no checkpoints: this engine
        does not resume).
    ray : RayOptions, optional
        Client resources, and an existing Ray cluster to run on.
    hooks : sequence of callables
        ``hook(round, None, history)`` after every round.

    Returns
    -------
    History
        The same records as :func:`flexmoe.fedloop.run` gives for the same `config`
        (timings aside).

    Raises
    ------
    ValueError
        Resources the local machine lacks, or a Ray cluster that does not answer (the
        message names the option: ``client_cpus``, ``address``).
    RuntimeError
        The run failed (the message has Flower's reason and the end of its log).
    """
    require_flwr()
    options = ray if ray is not None else RayOptions()
    options.check_local()
    with LocalFederation(options) as federation:
        assert federation.root is not None
        folder = Path(out).resolve() if out is not None else federation.root / "run"
        settings = AppSettings(out_dir=str(folder), min_available_nodes=config.clients)
        app = federation.root / "app"
        app.mkdir()
        (app / "pyproject.toml").write_text(app_pyproject(run_config(config, settings)))
        saved = folder / "history.json"
        result = federation.run(app, num_supernodes=config.clients,
                                progress=_Progress(saved, hooks))  # fmt: skip
        history = History.load(saved) if saved.is_file() else None
    done = 0 if history is None else len(history.rounds)
    if not result.ok or history is None or done != config.rounds:
        raise RuntimeError(
            f"the Flower run ended ({result.status}) after {done} of {config.rounds} rounds: "
            f"{result.details}\n{result.output}"
        )
    return history
