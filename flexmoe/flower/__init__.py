"""flexmoe on Flower: a Message-API strategy, a ClientApp, and the Ray simulation engine.

Needs the ``flower`` extra (``pip install 'flexmoe[flower]'``); ``import flexmoe`` never
imports this package.

- :class:`FlexMoEStrategy` — a ``flwr.serverapp.strategy.Strategy`` whose four
  callbacks are the steps of :class:`~flexmoe.fedloop.MoEStrategy`'s round driver
  (:class:`~flexmoe.fedloop.Round`): assignment per round with any
  :mod:`flexmoe.assign` backend, ψ and only the assigned experts sent to each node,
  experts averaged over their holders weighted by routed samples, fitness from the
  clients' per-expert feedback.
- :func:`client_app` — the ``ClientApp`` (training and evaluation from
  :mod:`flexmoe.fedloop`; each client's gate kept in ``context.state``).
- :func:`run_flower` — ``flexmoe train --engine flower``: the experiment of a
  :class:`~flexmoe.fedloop.FedConfig` on Flower's simulation engine (Ray).
- :mod:`flexmoe.flower.protocol` — the records the messages carry.
"""

from flexmoe.extras import require_extra

require_extra("fl", part="`flexmoe.flower`")  # it runs the federated loop: torch


from flexmoe.flower.client import client_app
from flexmoe.flower.engine import RayOptions, run_flower
from flexmoe.flower.protocol import from_record, to_record
from flexmoe.flower.strategy import FlexMoEStrategy

__all__ = ["FlexMoEStrategy", "RayOptions", "client_app", "from_record", "run_flower", "to_record"]
