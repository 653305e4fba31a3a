"""The one error hierarchy of :mod:`flexmoe.assign`.

Infeasibility is never an exception: it is :attr:`Status.INFEASIBLE` on the result.
"""

from __future__ import annotations

__all__ = [
    "AssignError",
    "BackendUnavailableError",
    "InvalidProblemError",
    "SolverError",
    "UnknownBackendError",
    "UnsupportedProblemError",
]


class AssignError(Exception):
    """Base class of every error raised by :mod:`flexmoe.assign`."""


class InvalidProblemError(AssignError, ValueError):
    """Malformed problem data; the message names the field, the rule and what was received."""


class UnknownBackendError(AssignError, ValueError):
    """A backend name that is not registered; the message lists the registered ones."""


class BackendUnavailableError(AssignError, ImportError):
    """A registered backend whose vendor library is not installed."""


class UnsupportedProblemError(AssignError, ValueError):
    """A backend asked to solve a problem outside its structure (names the field and an
    alternative backend)."""


class SolverError(AssignError):
    """A vendor solver failed in a way that is not a status (crash, overflow, bad output)."""
