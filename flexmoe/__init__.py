"""flexmoe: load-balanced expert assignment for federated Mixture-of-Experts.

``flexmoe.assign`` solves the assignment problem (the product); ``flexmoe.models`` and
``flexmoe.fedloop`` are a thin PyTorch federated loop that shows the accuracy gain;
``flexmoe.benchmarks`` is the ``flexmoe-bench`` CLI. Importing ``flexmoe`` imports none
of the vendor solvers nor PyTorch.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("flexmoe")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = ["__version__"]
