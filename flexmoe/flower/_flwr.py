"""The one place that imports Flower: quietly, with telemetry off, and optional.

Flower's import pulls in click/typer, which emit DeprecationWarnings at import time; they
are silenced here, narrowly, so that ``filterwarnings = error`` test runs can import this
package. Flower reads ``FLWR_TELEMETRY_ENABLED`` when it is imported: flexmoe sets it to
``0`` unless the user chose otherwise (no network at run time).

Without Flower installed the names below are placeholders and :func:`require_flwr`
raises :class:`~flexmoe.extras.MissingExtraError` (an ``ImportError``) naming the extra.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from typing import TYPE_CHECKING, Any

from flexmoe.extras import require_extra

__all__ = ["HAVE_FLWR", "require_flwr"]

HAVE_FLWR = importlib.util.find_spec("flwr") is not None

if TYPE_CHECKING or HAVE_FLWR:
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        from flwr.app import (
            ArrayRecord,
            ConfigRecord,
            Context,
            Message,
            MessageType,
            MetricRecord,
            RecordDict,
        )
        from flwr.clientapp import ClientApp
        from flwr.serverapp import Grid, ServerApp
        from flwr.serverapp.strategy import Strategy
else:  # pragma: no cover - exercised only without the extra
    ArrayRecord = ConfigRecord = Context = Message = MessageType = MetricRecord = Any
    RecordDict = ClientApp = Grid = ServerApp = Any
    Strategy = object


def require_flwr() -> None:
    """Raise ``ImportError`` with the install command if Flower is missing."""
    require_extra("flower")
