"""Named federated experiments: *variants* (a method with pinned settings) and *presets*
(a task, the arms run on it, the seeds), each one command::

    flexmoe-bench fl --preset experts-matter

An *arm* of a sweep is a registered method (``flex``, ``fixed``, ...: the run's
configuration as it is) or a registered variant (``flex-paper``: ``flex`` with the
paper's fitness settings pinned, whatever the defaults are). Both registries take user
entries (``register_variant``, ``register_preset``, typically from a ``--plugin``).

The built-in presets (issue 12):

``experts-matter``
    digits, 20 clients, ``shards:2`` (2–3 classes each), 16 small experts
    (``expert_hidden`` 4), 2 per client, 30 rounds: experts are the bottleneck, so
    which expert a client holds matters.
``default``
    today's acceptance task (``dirichlet:0.3``, 8 experts of 32 hidden units): the
    control, where no effect is expected. Reported, never tuned.
``mnist1d``
    the default task on MNIST-1D, at its learning rate chosen on validation.
``tiers``
    ``experts-matter`` with capacities 2/4/8 in equal shares: each client's storage and
    compute budgets come from the model's expert bytes and training FLOPs and reach the
    solver as its storage and compute rows.
``fitness-options``
    the selection sweep: every fitness option of ``flex`` on ``experts-matter``, and
    ``fixed`` for reference; the default of :class:`~flexmoe.fedloop.FitnessConfig` is
    the option it chooses on the validation split.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flexmoe.fedloop.registry import Registry

__all__ = [
    "PRESETS",
    "VARIANTS",
    "Preset",
    "Variant",
    "arm_settings",
    "flat_settings",
    "merge",
    "register_preset",
    "register_variant",
]


@dataclass(frozen=True)
class Variant:
    """A method with settings of its own.

    Attributes
    ----------
    method : str
        A registered method.
    settings : mapping
        :class:`~flexmoe.fedloop.FedConfig` fields it pins, nested for ``train`` and
        ``fitness`` (``{"switch_cost": 0.05, "fitness": {"probe": 2}}``); they win over
        the sweep's settings.
    help : str
    """

    method: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    help: str = ""


#: Variants by name.
VARIANTS: Registry[Variant] = Registry("variant")


def register_variant(
    name: str,
    method: str,
    settings: Mapping[str, Any] | None = None,
    *,
    help: str = "",
    replace: bool = False,
) -> None:
    """Make `name` an arm of ``flexmoe-bench fl --methods``: `method` with `settings`.

    Examples
    --------
    >>> register_variant("toy-slow", "flex", {"train": {"lr": 0.01}})
    >>> arm_settings("toy-slow")
    {'method': 'flex', 'train': {'lr': 0.01}}
    >>> VARIANTS.unregister("toy-slow")
    """
    VARIANTS.register(name, Variant(method, dict(settings or {}), help), replace=replace)


def arm_settings(arm: str) -> dict[str, Any]:
    """The configuration fields an arm sets: its variant's, or just ``method``."""
    if arm in VARIANTS:
        variant = VARIANTS[arm]
        return {"method": variant.method, **copy.deepcopy(dict(variant.settings))}
    return {"method": arm}


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`base` updated with `over`, nested tables (``train``, ``fitness``) merged key by
    key.

    Examples
    --------
    >>> merge({"rounds": 3, "fitness": {"beta": 0.3, "probe": 0}}, {"fitness": {"probe": 2}})
    {'rounds': 3, 'fitness': {'beta': 0.3, 'probe': 2}}
    """
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def flat_settings(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as the flat keys of a configuration file or ``run_config``.

    Examples
    --------
    >>> flat_settings({"rounds": 3, "fitness": {"probe": 2}})
    {'rounds': 3, 'fitness.probe': 2}
    """
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            out |= flat_settings(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


@dataclass(frozen=True)
class Preset:
    """A named experiment: the task, the arms, the seeds.

    Attributes
    ----------
    help : str
    config : mapping
        :class:`~flexmoe.fedloop.FedConfig` fields of the task (``partition`` included),
        nested for ``train`` and ``fitness``.
    methods : tuple of str
        The arms (methods or variants), in report order.
    seeds : str
        ``0-4``: five paired seeds.
    options : tuple of str
        Arms that compete as the fitness of ``flex``: the report chooses one of them on
        the validation split (see :mod:`flexmoe.benchmarks.fl_stats`); empty when
        ``flex`` is the package default, already chosen.
    reference : str
        The arm every other is compared with, paired by seed.
    """

    help: str
    config: Mapping[str, Any]
    methods: tuple[str, ...]
    seeds: str = "0-4"
    options: tuple[str, ...] = ()
    reference: str = "flex"


#: Presets by name.
PRESETS: Registry[Preset] = Registry("preset")


def register_preset(name: str, preset: Preset, *, replace: bool = False) -> None:
    """Make `preset` runnable as ``flexmoe-bench fl --preset name``."""
    PRESETS.register(name, preset, replace=replace)


# -- the built-ins ---------------------------------------------------------------------

#: The paper's fitness: the routed accuracy of the held experts, optimistic start.
PAPER = {"signal": "accuracy", "beta": 0.3, "initial": 1.0, "bonus": 0.0, "probe": 0,
         "normalise": "none"}  # fmt: skip
#: The routed accuracy with a neutral start.
NEUTRAL = {**PAPER, "initial": None}
#: Two probes a round, scored alone with the held experts; neutral start.
PROBE = {**NEUTRAL, "signal": "alone", "probe": 2, "pick": "stale"}

for _name, _method, _settings, _help in [
    ("flex-paper", "flex", {"fitness": PAPER, "switch_cost": 0.0},
     "the paper: routed accuracy, EMA β 0.3, optimistic start Q0 = 1, no switch cost"),
    ("flex-neutral", "flex", {"fitness": NEUTRAL, "switch_cost": 0.05},
     "routed accuracy, neutral start, switch cost 0.05"),
    ("flex-bonus", "flex", {"fitness": {**NEUTRAL, "bonus": 0.05}, "switch_cost": 0.05},
     "flex-neutral with an exploration bonus 0.05/sqrt(1 + tries)"),
    ("flex-probe", "flex", {"fitness": PROBE, "switch_cost": 0.05},
     "2 stale probes a round, experts scored alone on the training split, neutral start, "
     "switch cost 0.05"),
    ("flex-probe-free", "flex", {"fitness": PROBE, "switch_cost": 0.0},
     "flex-probe without the switch cost"),
    ("flex-probe-z", "flex", {"fitness": {**PROBE, "normalise": "z"}, "switch_cost": 0.05},
     "flex-probe with per-round z-scores"),
    ("flex-probe-rank", "flex", {"fitness": {**PROBE, "normalise": "rank"}, "switch_cost": 0.05},
     "flex-probe with per-round ranks"),
    ("flex-fresh", "flex", {"fitness": {**PROBE, "probe": -1, "beta": 1.0}, "switch_cost": 0.1},
     "every expert scored alone every round (fresh fitness), β 1, switch cost 0.1"),
    ("greedy-paper", "greedy", {"fitness": PAPER, "switch_cost": 0.0},
     "greedy with the paper's fitness (the issue's baseline)"),
]:  # fmt: skip
    register_variant(_name, _method, _settings, help=_help)

#: digits, shards:2, 16 small experts, 2 per client: where experts matter.
EXPERTS_MATTER = {"dataset": "digits", "partition": "shards:2", "clients": 20, "experts": 16,
                  "expert_hidden": 4, "capacity": "2", "rounds": 30}  # fmt: skip
#: Today's acceptance task: the control.
DEFAULT = {"dataset": "digits", "partition": "dirichlet:0.3", "clients": 20, "experts": 8,
           "capacity": "2", "rounds": 30}  # fmt: skip
#: Every arm a preset compares: flex (the package default) and the paper, the controls.
CONTROLS = ("flex", "flex-paper", "greedy", "greedy-paper", "fixed", "round_robin", "random",
            "full")  # fmt: skip

register_preset("experts-matter", Preset(
    "digits, shards:2, 16 experts of 4 hidden units, 2 per client, 30 rounds", EXPERTS_MATTER,
    CONTROLS))  # fmt: skip
register_preset("default", Preset(
    "the acceptance task (dirichlet:0.3, 8 experts): the control, reported, not tuned",
    DEFAULT, CONTROLS))  # fmt: skip
register_preset("mnist1d", Preset(
    "the default task on MNIST-1D at its validated learning rate",
    {**DEFAULT, "dataset": "mnist1d"}, CONTROLS))  # fmt: skip
register_preset("tiers", Preset(
    "experts-matter with capacities 2/4/8: storage and compute rows from the model",
    {**EXPERTS_MATTER, "capacity": "tiers:2/4/8"}, CONTROLS))  # fmt: skip
register_preset("fitness-options", Preset(
    "every fitness option of flex on experts-matter, validation only: the selection",
    EXPERTS_MATTER,
    ("flex-paper", "flex-neutral", "flex-bonus", "flex-probe", "flex-probe-free",
     "flex-probe-z", "flex-probe-rank", "flex-fresh", "fixed"),
    options=("flex-paper", "flex-neutral", "flex-bonus", "flex-probe", "flex-probe-free",
             "flex-probe-z", "flex-probe-rank", "flex-fresh"),
    reference="fixed"))  # fmt: skip
