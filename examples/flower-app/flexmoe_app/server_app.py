"""The ServerApp: load-balanced expert assignment with ``FlexMoEStrategy``.

It reads every key of ``[tool.flwr.app.config]`` (see ``python -m flexmoe.flower config``)
and writes ``config.toml`` and ``history.json`` to ``out-dir``, as ``flexmoe train`` does.
"""

from flexmoe.flower import server_app as app

__all__ = ["app"]
