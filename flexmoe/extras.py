"""The optional parts of flexmoe and the pip extra that installs each.

``pip install flexmoe`` installs the assignment library (:mod:`flexmoe.assign`: numpy,
SciPy, OR-Tools, highspy, networkx). Every other part needs an extra; a part whose
extra is missing raises :class:`MissingExtraError` (an ``ImportError``) naming the
command that installs it, instead of a bare ``No module named 'torch'``.

Examples
--------
>>> install_command("fl")
"pip install 'flexmoe[fl]'"
>>> require_extra("fl", modules=("nope",), part="`fedloop`")
Traceback (most recent call last):
...
flexmoe.extras.MissingExtraError: `fedloop` needs nope, which is not installed; install the extra: pip install 'flexmoe[fl]'
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTRAS", "MissingExtraError", "extra_of", "install_command", "require_extra"]

#: Extra → the import names it provides (its distributions are in ``pyproject.toml``;
#: ``tests/test_packaging.py`` checks that the two agree).
EXTRAS: dict[str, tuple[str, ...]] = {
    "convex": ("cvxpy",),
    "pulp": ("pulp",),
    "fl": ("torch", "sklearn"),
    "bench": ("matplotlib", "tqdm"),
    "flower": ("flwr",),
}

#: What each extra is for, as the error message says it.
PARTS: dict[str, str] = {
    "convex": "the `convex` backend",
    "pulp": "the `milp:pulp` backend",
    "fl": "the federated loop",
    "bench": "flexmoe-bench",
    "flower": "the Flower integration",
}


class MissingExtraError(ImportError):
    """A part of flexmoe whose pip extra is not installed; the message names the extra."""

    def __init__(self, message: str, *, extra: str, missing: tuple[str, ...]) -> None:
        super().__init__(message, name=missing[0] if missing else None)
        self.extra = extra
        self.missing = missing


def install_command(extra: str) -> str:
    """The pip command that installs `extra`."""
    return f"pip install 'flexmoe[{extra}]'"


def extra_of(module: str) -> str | None:
    """The extra that installs import name `module` (None: the base install, or unknown).

    >>> extra_of("cvxpy"), extra_of("numpy")
    ('convex', None)
    """
    top = module.split(".")[0]
    return next((extra for extra, names in EXTRAS.items() if top in names), None)


def require_extra(
    extra: str, *, modules: tuple[str, ...] | None = None, part: str | None = None
) -> None:
    """Raise :class:`MissingExtraError` unless every module of `extra` can be imported.

    Parameters
    ----------
    extra : str
        A key of :data:`EXTRAS`.
    modules : tuple of str, optional
        The import names this part needs (default: all of the extra's).
    part : str, optional
        What needs them, as the message starts (default: what the extra is for).

    Notes
    -----
    Availability is checked with :func:`importlib.util.find_spec`: nothing is imported.
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; valid: {', '.join(EXTRAS)}")
    missing = tuple(m for m in (modules or EXTRAS[extra]) if importlib.util.find_spec(m) is None)
    if not missing:
        return
    needs = ", ".join(missing)
    raise MissingExtraError(
        f"{part or PARTS[extra]} needs {needs}, which {'is' if len(missing) == 1 else 'are'} "
        f"not installed; install the extra: {install_command(extra)}",
        extra=extra,
        missing=missing,
    )
