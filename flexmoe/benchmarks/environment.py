"""Plugins (user backends) and the library versions recorded with every run."""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "default_memory_limit",
    "environment",
    "load_plugin",
    "spec_modules",
    "versions",
]


def load_plugin(spec: str) -> ModuleType:
    """Import a plugin: a module name (``mypkg.backends``) or a ``.py`` file path.

    A plugin registers backends with :func:`flexmoe.assign.register` when imported.
    The benchmark imports it in the parent (to check backend names) and in every child
    process (to solve). A file is imported once per process under a name derived from
    its path, so registering twice never happens.

    Raises
    ------
    ImportError
        The module or file cannot be imported (the message says why).
    """
    if not (spec.endswith(".py") or os.sep in spec):
        return importlib.import_module(spec)
    path = Path(spec).resolve()
    if not path.is_file():
        raise ImportError(f"no such plugin file: {spec}")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    name = f"_flexmoe_plugin_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"cannot import plugin file {spec}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def versions(modules: tuple[str, ...] | list[str] = ()) -> dict[str, str]:
    """Versions of Python, flexmoe, numpy and the distributions providing `modules`.

    Examples
    --------
    >>> sorted(versions(["numpy"]))[:3]
    ['flexmoe', 'numpy', 'python']
    """
    return dict(_versions(tuple(modules)))


@functools.cache
def _owners() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


@functools.cache
def _versions(modules: tuple[str, ...]) -> dict[str, str]:
    found = {"python": platform.python_version()}
    owners = _owners()
    for module in ("flexmoe", "numpy", *modules):
        for dist in owners.get(module.split(".")[0], [module]):
            try:
                found[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
    return found


def environment() -> dict[str, Any]:
    """The machine a sweep ran on: platform, CPU count, memory, Python executable."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(_physical_memory() / 2**30, 1),
        "python": sys.executable,
    }


def spec_modules(spec: str) -> tuple[str, ...]:
    """Modules a backend spec uses: the backend's required modules, plus the variant
    when it names an installed module (``flow:networkx``, ``milp:pulp``).

    Examples
    --------
    >>> spec_modules("flow:networkx")
    ('ortools', 'networkx')
    """
    from flexmoe.assign import get_backend

    name, _, variant = spec.partition(":")
    modules = get_backend(name).required_modules
    if variant and variant not in modules and importlib.util.find_spec(variant) is not None:
        modules = (*modules, variant)
    return tuple(modules)


def default_memory_limit() -> float:
    """Default per-run memory limit in GiB: half the physical memory, at most 16."""
    return float(min(16.0, max(1.0, round(_physical_memory() / 2**31, 1))))


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30
