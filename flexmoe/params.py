"""One definition per parameter: configuration fields that describe themselves.

A configuration dataclass (:class:`~flexmoe.fedloop.FedConfig` and the ones nested in
it, the sweep settings of ``flexmoe bench fl``) declares each field once — default, help
text, flag name, rule — with :func:`param` in ``dataclasses.field(metadata=...)``.
Everything else is generated from those declarations:

* validation on construction (:func:`validate`, called from ``__post_init__``): types
  checked, value objects parsed once (``"tiers:2/4/8"`` → ``CapacitySpec``), rules and
  registry choices checked, every failure a :class:`ConfigError` naming the field;
* command-line flags (:func:`add_arguments`, :func:`given`), nested configurations
  included, booleans as ``--x/--no-x``, every default shown in ``--help``;
* configuration files (:func:`read_file`: TOML or JSON, top-level keys are field names,
  nested configurations are tables) and the resolved file written next to a run's
  results (:func:`write_toml`);
* a flat ``{"train.lr": 0.05, ...}`` mapping (:func:`to_flat`, :func:`build`), the form
  a Flower ``run_config`` takes;
* error messages that name the flag or file key that set the faulty value
  (:func:`explain`).

It depends on nothing but the standard library, so a command line can be built from
the declarations without importing what runs them.

Examples
--------
>>> from dataclasses import dataclass, field
>>> @dataclass(frozen=True)
... class Toy:
...     size: int = field(default=3, metadata=param("how many", check=number(low=1)))
...     name: str = field(default="a", metadata=param("what it is called", flag="--label"))
...     def __post_init__(self) -> None:
...         validate(self)
>>> [(o.path, o.flag, o.default) for o in options(Toy)]
[('size', '--size', 3), ('name', '--label', 'a')]
>>> build(Toy, {"size": 5})
Toy(size=5, name='a')
>>> try:
...     Toy(size=0)
... except ConfigError as err:
...     print(err, "|", explain(err, options(Toy), {"size": "--size"}))
`size` must be >= 1; got 0 | ('--size', 'must be >= 1; got 0')
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import numbers
import re
import tomllib
import types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ConfigError",
    "Option",
    "Param",
    "add_arguments",
    "build",
    "explain",
    "given",
    "number",
    "options",
    "param",
    "read_file",
    "to_flat",
    "to_nested",
    "validate",
    "write_toml",
]

#: The key of a field's :class:`Param` in ``dataclasses.field(metadata=...)``.
PARAM = "flexmoe.param"


class ConfigError(ValueError):
    """A configuration value breaks a rule.

    Attributes
    ----------
    field : str
        Dotted path of the faulty field (``"train.lr"``); the message names it in
        backticks by its own name.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field

    def within(self, prefix: str) -> ConfigError:
        """The same error, seen from the configuration that holds this one at `prefix`."""
        return ConfigError(f"{prefix}.{self.field}", str(self))


Rule = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class Param:
    """What a field says about itself (see :func:`param`)."""

    help: str
    flag: str | None = None
    parse: Callable[[Any], Any] | None = None
    choices: Callable[[], Collection[str]] | None = None
    choice_key: Callable[[str], str] | None = None
    check: Rule | None = None
    metavar: str | None = None
    group: str | None = None


def param(
    help: str,
    *,
    flag: str | None = None,
    parse: Callable[[Any], Any] | None = None,
    choices: Callable[[], Collection[str]] | None = None,
    choice_key: Callable[[str], str] | None = None,
    check: Rule | None = None,
    metavar: str | None = None,
    group: str | None = None,
) -> dict[str, Param]:
    """Field metadata: ``field(default=..., metadata=param("help", ...))``.

    Parameters
    ----------
    help : str
        One line for ``--help``; the default is appended to it.
    flag : str, optional
        The flag; default ``--<name>`` with dashes for underscores.
    parse : callable, optional
        For a value object: turns text (or a TOML value) into it; ``str(value)`` must
        give text that parses back to an equal value.
    choices : callable, optional
        Returns the valid names (read when validating or building ``--help``, so names
        registered later by a plugin count).
    choice_key : callable, optional
        The part of the value that must be a choice (``"emnist:balanced"`` → ``"emnist"``).
    check : callable, optional
        ``check(value) -> None`` or the rule it breaks (``"must be >= 1; got 0"``).
    metavar, group : str, optional
        For ``--help``: the value's placeholder, and the section the flag is listed in
        (a nested configuration's own help is the section of its fields).
    """
    return {PARAM: Param(help, flag, parse, choices, choice_key, check, metavar, group)}


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> Rule:
    """A rule: a finite number within ``[low, high]`` (ends open on request).

    Examples
    --------
    >>> number(0, 1, open_low=True)(0.0)
    'must be > 0 and <= 1; got 0.0'
    >>> number(low=0)(float("inf"))
    'must be finite; got inf'
    >>> number(low=0)(2) is None
    True
    """
    parts = []
    if low is not None:
        parts.append(f"{'>' if open_low else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if open_high else '<='} {high:g}")
    span = " and ".join(parts)

    def rule(value: Any) -> str | None:
        if not math.isfinite(value):
            return f"must be finite; got {value}"
        below = low is not None and (value <= low if open_low else value < low)
        above = high is not None and (value >= high if open_high else value > high)
        return f"must be {span}; got {value}" if below or above else None

    return rule


@dataclass(frozen=True)
class Option:
    """One field of a configuration tree, as flags, files and messages see it.

    Attributes
    ----------
    path : str
        Dotted from the root configuration: ``"clients"``, ``"train.lr"``.
    flag : str
    kind : type
        ``bool``, ``int``, ``float``, ``str`` or a value-object type.
    optional : bool
        None is a valid value.
    default : object
    param : Param
    """

    path: str
    flag: str
    kind: type
    optional: bool
    default: Any
    param: Param

    @property
    def name(self) -> str:
        return self.path.rpartition(".")[2]

    def help_text(self) -> str:
        """Help with the choices and the default, escaped for argparse."""
        text = self.param.help
        if self.param.choices is not None:
            text += f"; one of: {', '.join(self.param.choices())}"
        shown = "none" if self.default is None else str(self.default)
        if self.kind is bool:
            shown = "on" if self.default else "off"
        return f"{text} (default: {shown})".replace("%", "%%")


# -- reading the declarations -----------------------------------------------------------


def _is_config(kind: Any) -> bool:
    """A configuration: a dataclass with declared fields (a value object has none)."""
    return (
        isinstance(kind, type)
        and dataclasses.is_dataclass(kind)
        and any(PARAM in f.metadata for f in dataclasses.fields(kind))
    )


def _kind(hint: Any) -> tuple[Any, bool]:
    """(type, optional) of a field's resolved annotation."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return hint, False


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


_FIELDS: dict[type, tuple[tuple[dataclasses.Field[Any], Any, bool], ...]] = {}


def _fields(cls: type) -> tuple[tuple[dataclasses.Field[Any], Any, bool], ...]:
    """The declared fields of `cls` with their (type, optional), read once per class."""
    if cls not in _FIELDS:
        hints = typing.get_type_hints(cls)
        _FIELDS[cls] = tuple(
            (f, *_kind(hints[f.name])) for f in dataclasses.fields(cls) if PARAM in f.metadata
        )
    return _FIELDS[cls]


def options(cls: type, *, exclude: Iterable[str] = (), prefix: str = "") -> list[Option]:
    """Every declared field of `cls`, nested configurations flattened (depth first).

    `exclude` lists dotted paths left out (a sweep sets them itself).
    """
    skip = set(exclude)
    found: list[Option] = []
    for f, kind, optional in _fields(cls):
        path = prefix + f.name
        if path in skip:
            continue
        meta: Param = f.metadata[PARAM]
        if _is_config(kind):
            inner = options(kind, exclude=skip, prefix=path + ".")
            found += [dataclasses.replace(o, param=_in_group(o.param, meta)) for o in inner]
            continue
        flag = meta.flag or "--" + f.name.replace("_", "-")
        found.append(Option(path, flag, kind, optional, _default(f), meta))
    return found


def _in_group(meta: Param, outer: Param) -> Param:
    return meta if meta.group else dataclasses.replace(meta, group=outer.help)


# -- validation -------------------------------------------------------------------------


def validate(config: Any) -> None:
    """Coerce and check every declared field of `config` in place (for ``__post_init__``
    of a frozen dataclass); the first failure raises :class:`ConfigError`."""
    for f, kind, optional in _fields(type(config)):
        value = _coerce(f.name, getattr(config, f.name), kind, optional, f.metadata[PARAM])
        object.__setattr__(config, f.name, value)
        if value is not None and not _is_config(kind):
            _check(f.name, value, f.metadata[PARAM])


_KIND_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _coerce(name: str, value: Any, kind: Any, optional: bool, meta: Param) -> Any:
    if value is None and optional:
        return None
    if _is_config(kind):
        if isinstance(value, Mapping):
            try:
                return build(kind, value)
            except ConfigError as err:
                raise err.within(name) from None
        if isinstance(value, kind):
            return value
    elif meta.parse is not None:
        return value if isinstance(value, kind) else _parsed(name, value, meta.parse)
    elif kind is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    elif kind is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    elif isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    word = _KIND_WORDS.get(kind, f"a {getattr(kind, '__name__', kind)}")
    raise ConfigError(name, f"`{name}` must be {word}; got {value!r}")


def _parsed(name: str, value: Any, parse: Callable[[Any], Any]) -> Any:
    try:
        return parse(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(name, f"`{name}`: {err}") from None


def _check(name: str, value: Any, meta: Param) -> None:
    if meta.choices is not None:
        valid = meta.choices()
        key = meta.choice_key(value) if meta.choice_key else value
        if key not in valid:
            raise ConfigError(name, f"`{name}` must be one of {', '.join(valid)}; got {value!r}")
    broken = meta.check(value) if meta.check else None
    if broken:
        raise ConfigError(name, f"`{name}` {broken}")


# -- building and writing back ----------------------------------------------------------


def build(cls: type, values: Mapping[str, Any]) -> Any:
    """An instance of `cls` from flat (``"train.lr"``) or nested (``{"train": {...}}``)
    values; fields not given keep their defaults.

    Raises
    ------
    ConfigError
        An unknown field, or a value that breaks a rule (its path names the field).
    """
    known = {f.name: kind for f, kind, _ in _fields(cls)}
    kwargs: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for path, value in values.items():
        head, _, rest = path.partition(".")
        if head not in known:
            raise ConfigError(path, f"unknown configuration field `{path}`")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            kwargs[head] = value
    for head, inner in nested.items():
        current = kwargs.get(head, {})
        if not _is_config(known[head]) or not isinstance(current, Mapping):
            raise ConfigError(head, f"`{head}` is not a table of settings")
        kwargs[head] = {**current, **inner}
    return cls(**kwargs)


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def to_flat(config: Any) -> dict[str, Any]:
    """``{"clients": 20, "capacity": "2", "train.lr": 0.1, ...}``: plain values (value
    objects as text) keyed by dotted path; :func:`build` reads it back."""
    flat: dict[str, Any] = {}
    for f, kind, _ in _fields(type(config)):
        value = getattr(config, f.name)
        if _is_config(kind):
            flat.update({f"{f.name}.{k}": v for k, v in to_flat(value).items()})
        else:
            flat[f.name] = _plain(value)
    return flat


def to_nested(config: Any) -> dict[str, Any]:
    """Plain values with nested configurations as nested dicts (the JSON form)."""
    nested: dict[str, Any] = {}
    for f, kind, _ in _fields(type(config)):
        value = getattr(config, f.name)
        nested[f.name] = to_nested(value) if _is_config(kind) else _plain(value)
    return nested


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else {math.inf: "inf", -math.inf: "-inf"}.get(value, repr(value))
        )
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)  # a valid TOML basic string


def write_toml(path: str | Path, flat: Mapping[str, Any], *, header: str = "") -> None:
    """Write flat values as TOML: top-level keys first, then one table per prefix.
    None (a default that TOML cannot spell) is left out."""
    top = [(k, v) for k, v in flat.items() if "." not in k and v is not None]
    tables: dict[str, list[tuple[str, Any]]] = {}
    for key, value in flat.items():
        head, _, rest = key.partition(".")
        if rest and value is not None:
            tables.setdefault(head, []).append((rest, value))
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines += [f"{k} = {_toml_value(v)}" for k, v in top]
    for head, items in tables.items():
        lines += ["", f"[{head}]", *(f"{k} = {_toml_value(v)}" for k, v in items)]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


# -- files ------------------------------------------------------------------------------


def read_file(path: str | Path, known: list[Option]) -> dict[str, Any]:
    """The settings of a ``.toml`` (or ``.json``) file, flat, each key one of `known`.

    Raises
    ------
    ValueError
        The file cannot be read or parsed, or holds a key that is not a field (the
        message names the file and the key, and lists the valid keys of its table).
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
        data = json.loads(text) if file.suffix == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read configuration file {file}: {err}") from None
    flat = _flatten(data)
    paths = [o.path for o in known]
    for key in flat:
        if key not in paths:
            head = key.rpartition(".")[0]
            valid = [p.rpartition(".")[2] for p in paths if p.rpartition(".")[0] == head]
            inner = (p.removeprefix(f"{head}.") if head else p for p in paths)
            valid += list(dict.fromkeys(f"[{p.split('.')[0]}]" for p in inner if "." in p))
            where = f"table [{head}]" if head else "the top level"
            raise ValueError(
                f"{file}: unknown key `{key}`; valid keys at {where}: {', '.join(valid)}"
            )
    return flat


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


# -- command lines ----------------------------------------------------------------------


def _converter(option: Option) -> Callable[[str], Any]:
    """An argparse ``type``: primitive conversion only (rules are the configuration's)."""
    kind = option.kind if option.kind in (int, float) else str

    def convert(text: str) -> Any:
        if option.optional and text.lower() == "none":
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}; got {text!r}") from None

    convert.__name__ = kind.__name__
    return convert


def add_arguments(parser: argparse.ArgumentParser, known: list[Option]) -> None:
    """One flag per option, grouped by section. Flags that are not given stay out of the
    namespace (see :func:`given`), so a configuration file's values are kept."""
    groups: dict[str | None, Any] = {}
    for option in known:
        title = option.param.group
        if title not in groups:
            groups[title] = parser if title is None else parser.add_argument_group(title)
        target = groups[title]
        common: dict[str, Any] = {"dest": option.path, "default": argparse.SUPPRESS}
        if option.kind is bool:
            target.add_argument(option.flag, action=argparse.BooleanOptionalAction,
                                help=option.help_text(), **common)  # fmt: skip
        else:
            metavar = option.param.metavar or option.name.upper()
            target.add_argument(option.flag, type=_converter(option), metavar=metavar,
                                help=option.help_text(), **common)  # fmt: skip


def given(args: argparse.Namespace, known: list[Option]) -> dict[str, Any]:
    """The options set on the command line, flat (``{"train.lr": 0.05}``)."""
    return {o.path: getattr(args, o.path) for o in known if hasattr(args, o.path)}


# -- messages ---------------------------------------------------------------------------

_NAME = re.compile(r"`([A-Za-z_][\w.]*)`")


def _resolve(name: str, field: str, known: list[Option]) -> Option | None:
    """The option a backticked `name` in an error about `field` means: the one in the
    same configuration first, then any with that path or name."""
    scope = field.rpartition(".")[0]
    for path in (f"{scope}.{name}" if scope else name, name):
        for option in known:
            if option.path == path:
                return option
    matches = [o for o in known if o.name == name]
    return matches[0] if len(matches) == 1 else None


def explain(
    err: Exception, known: list[Option], sources: Mapping[str, str]
) -> tuple[str | None, str]:
    """Where a configuration error came from and what it says, in command-line terms.

    Parameters
    ----------
    err : Exception
        A :class:`ConfigError` (its field is located) or any error whose message names
        fields in backticks.
    known : list of Option
    sources : mapping
        Dotted path → who set it: its flag (``"--clients"``) or a file name.

    Returns
    -------
    where : str or None
        The flag, or ``"<file>: `key`"`` for a value a file set; None when no single
        field is at fault.
    text : str
        The message without the field's own name at its start, other field names as
        flags (as keys when the value came from a file).
    """
    text = str(err)
    field = err.field if isinstance(err, ConfigError) else ""
    source = sources.get(field, "")
    from_file = bool(source) and not source.startswith("-")
    option = _resolve(field.rpartition(".")[2], field, known) if field else None
    if option is not None:
        text = re.sub(rf"^`{re.escape(option.name)}`:?\s*", "", text)

    def name_of(match: re.Match[str]) -> str:
        found = _resolve(match[1], field, known)
        return match[0] if found is None or from_file else found.flag

    text = _NAME.sub(name_of, text)
    if option is None:
        return None, text
    return (f"{source}: `{field}`" if from_file else option.flag), text
