"""flexmoe on Flower: a Flower App, a drop-in Message-API strategy, and the engine.

Needs the ``flower`` extra (``pip install 'flexmoe[flower]'``); ``import flexmoe`` never
imports this package.

- :data:`server_app`, :data:`client_app` — the Flower App's components
  (``flexmoe.flower:server_app`` / ``:client_app``): they read every key of
  ``context.run_config`` (:mod:`flexmoe.flower.runconfig`) and the node's
  ``partition-id`` / ``num-partitions``, and write what ``flexmoe train`` writes.
- :class:`FlexMoEStrategy` — a ``flwr.serverapp.strategy.Strategy`` whose four
  callbacks are the steps of :class:`~flexmoe.fedloop.MoEStrategy`'s round driver
  (:class:`~flexmoe.fedloop.Round`), over whatever nodes the grid has; with
  :meth:`FlexMoEStrategy.for_model` for your own torch model.
- :func:`run_flower` — ``flexmoe train --engine flower``: the App on a private local
  federation (:class:`~flexmoe.flower.launch.LocalFederation`), ``python -m
  flexmoe.flower run <app>`` for any App folder.
- :mod:`flexmoe.flower.protocol` — the records the messages carry.
"""

from flexmoe.extras import require_extra

require_extra("fl", part="`flexmoe.flower`")  # it runs the federated loop: torch


from flexmoe.flower.client import client_app
from flexmoe.flower.engine import RayOptions, run_flower
from flexmoe.flower.launch import LocalFederation
from flexmoe.flower.model import expert_rule
from flexmoe.flower.protocol import from_record, to_record
from flexmoe.flower.runconfig import AppSettings, from_run_config, run_config
from flexmoe.flower.server import server_app
from flexmoe.flower.strategy import FlexMoEStrategy

__all__ = [
    "AppSettings",
    "FlexMoEStrategy",
    "LocalFederation",
    "RayOptions",
    "client_app",
    "expert_rule",
    "from_record",
    "from_run_config",
    "run_config",
    "run_flower",
    "server_app",
    "to_record",
]
