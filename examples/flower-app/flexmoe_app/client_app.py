"""The ClientApp: partition ``partition-id`` of the data set split ``num-partitions`` ways;
local training of the shared extractor, the assigned experts and the node's own gate."""

from flexmoe.flower import client_app as app

__all__ = ["app"]
