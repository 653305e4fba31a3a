"""Name → object registries of the federated loop: methods, data sets, fitness signals.

Each registry is a read-only mapping in registration order (the built-ins first), so
``list(METHODS)`` gives the valid names and ``"flex" in METHODS`` checks one; users add
entries through the module's ``register_*`` function (:func:`register_method`,
:func:`register_dataset`, :func:`register_signal`), typically from a ``--plugin`` module.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name no entry is registered under; the message lists the valid ones."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Mapping[str, T], Generic[T]):
    """A named collection of `kind` entries (``"method"``, ``"data set"``, ...).

    Examples
    --------
    >>> colours = Registry[int]("colour")
    >>> colours.register("red", 1)
    >>> list(colours), colours["red"]
    (['red'], 1)
    >>> colours["blue"]
    Traceback (most recent call last):
    ...
    flexmoe.fedloop.registry.UnknownNameError: unknown colour 'blue'; valid colours: red
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T, *, replace: bool = False) -> None:
        """Add `entry` under `name`; an existing name needs ``replace=True``."""
        if not isinstance(name, str) or not name or ":" in name or "," in name:
            raise ValueError(
                f"a {self.kind} name must be a non-empty string without ':' or ','; got {name!r}"
            )
        if name in self._entries and not replace:
            raise ValueError(
                f"{self.kind} {name!r} is already registered; pass replace=True to replace it"
            )
        self._entries[name] = entry

    def unregister(self, name: str) -> None:
        """Remove `name` (for tests and plugins that clean up after themselves)."""
        self._entries.pop(name, None)

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown(name)) from None

    def unknown(self, name: object) -> str:
        """The message for a name that is not registered: it lists the valid ones."""
        return f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self._entries)}"

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
