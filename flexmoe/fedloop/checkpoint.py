"""Checkpoints after every round that survive a crash and tell damage apart, without pickle.

A checkpoint is a *generation* of three files under ``<out>/checkpoint/``, one per
completed round ``r`` (0-based):

``tensors-<r>.pt``
    Every tensor (the server state's weights, the clients' gates, torch's RNG state),
    written with ``torch.save`` and read back with ``weights_only=True`` only.
``state-<r>.json``
    Everything else, generically: every field of the
    :class:`~flexmoe.fedloop.ServerState` (the fitness and any state added to it), the
    assignment method's ``state_dict()``, the strategy's numpy RNG, the configuration
    and the history so far. Arrays keep their dtype and shape; a tensor is a reference
    into the tensor file.
``manifest-<r>.json``
    Written last: the format, the round, and the size and SHA-256 of the other two. A
    generation exists once its manifest does.

Each file goes to a temporary name, is fsynced and renamed; the folder is fsynced
before the manifest is written and after. The newest :data:`KEEP` generations stay.

Resume (:func:`load_checkpoint`) verifies the newest generation before trusting it — the
manifest, each file's size and checksum, the format, the configuration, then every
restored value against a fresh state of the run (every tensor's and array's shape and
dtype, every dict's keys, the history's length) — and falls back to the generation
before it with a warning naming the bad file, the fault and the round it resumes
after. When no generation is usable it raises :class:`CheckpointError`, one line naming
each file and its fault.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flexmoe.fedloop.config import FedConfig
from flexmoe.fedloop.history import History
from flexmoe.fedloop.strategy import ServerState

__all__ = [
    "KEEP",
    "Checkpoint",
    "CheckpointError",
    "check_config",
    "completed_rounds",
    "load_checkpoint",
    "save_checkpoint",
]

log = logging.getLogger(__name__)

#: Version of the layout; a checkpoint of another format is not read.
FORMAT = 2

#: Generations kept: the latest and the one before it.
KEEP = 2

#: The files of a generation (and their temporaries while being written).
_NAME = re.compile(
    r"(?:(?P<kind>state|manifest)-(?P<round>\d+)\.json|(?P<tensors>tensors)-(?P<r>\d+)\.pt)"
    r"(?P<tmp>\.tmp)?"
)

#: Markers of a tensor (a key of the tensor file) and of an array in the state's JSON.
_TENSOR, _ARRAY = "__tensor__", "__ndarray__"


class CheckpointError(ValueError):
    """No checkpoint in the folder can be used; the message (one line) names each file
    and what is wrong with it."""


@dataclass
class Checkpoint:
    """A restored, verified checkpoint: the next round to run and the state to run it from."""

    next_round: int
    config: dict[str, Any]
    state: ServerState
    clients: dict[str, Tensor]
    rng: np.random.Generator
    history: History
    method: dict[str, Any]
    """What the assignment method's ``state_dict()`` returned."""
    torch_rng: Tensor


class _Fault(Exception):
    """What is wrong with one file of a generation."""

    def __init__(self, path: Path, reason: str, *, unfinished: bool = False) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason, self.unfinished = path, reason, unfinished

    def brief(self) -> str:
        """The fault with the file's name only (its folder said once before)."""
        return f"{self.path.name}: {self.reason}"


def _parse(name: str) -> tuple[str, int, bool] | None:
    """(kind, round, whether a temporary) of a generation's file name; None for others."""
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    return match["kind"] or "tensors", int(match["round"] or match["r"]), bool(match["tmp"])


def _names(completed: int) -> dict[str, str]:
    return {
        kind: f"{kind}-{completed}.{'pt' if kind == 'tensors' else 'json'}"
        for kind in ("tensors", "state", "manifest")
    }


# -- writing ----------------------------------------------------------------------------


def save_checkpoint(
    folder: Path,
    completed: int,
    config: dict[str, Any],
    state: ServerState,
    clients: dict[str, Tensor],
    rng: np.random.Generator,
    history: dict[str, Any],
    *,
    method: dict[str, Any] | None = None,
    keep: int = KEEP,
) -> None:
    """Write the generation of round `completed` (0-based); keep the newest `keep`.

    `rng` is the strategy's generator; `method` the assignment method's state (JSON,
    arrays and tensors allowed); torch's RNG state is taken here. Every field of `state`
    is saved (tensors, arrays, dataclasses, JSON values), so state added later is too.
    """
    if keep < 1:
        raise ValueError(f"`keep` must be >= 1; got {keep}")
    tensors: dict[str, Tensor] = {}
    meta = {
        "format": FORMAT,
        "completed": completed,
        "config": _encode(config, "config", tensors),
        "state": _encode(state, "state", tensors),
        "clients": _encode(dict(clients), "clients", tensors),
        "rng": {
            "numpy": rng.bit_generator.state,
            "torch": _encode(torch.get_rng_state(), "rng.torch", tensors),
        },
        "method": _encode(method or {}, "method", tensors),
        "history": _encode(history, "history", tensors),
    }
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    names = _names(completed)
    files = {names["tensors"]: buffer.getvalue(), names["state"]: _json_bytes(meta)}
    _write_generation(Path(folder), names["manifest"], completed, files)
    _prune(Path(folder), completed, keep)


def _write_generation(folder: Path, manifest: str, completed: int, files: dict[str, bytes]) -> None:
    """The data files, durable, then the manifest that seals them. A generation being
    rewritten (a round run again after a fallback) loses its old seal first: half
    rewritten, it reads as unfinished."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / manifest).unlink(missing_ok=True)
    for name, data in files.items():
        _write_durably(folder / name, data)
    _sync_folder(folder)
    entries = {
        name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in files.items()
    }
    seal = {"format": FORMAT, "completed": completed, "files": entries}
    _write_durably(folder / manifest, _json_bytes(seal))
    _sync_folder(folder)


def _json_bytes(data: Any) -> bytes:
    # NaN and infinities as Python's JSON writes them: floats come back bit for bit
    return json.dumps(data, indent=1).encode()


def _write_durably(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def _sync_folder(folder: Path) -> None:
    """Make the renames in `folder` durable (POSIX; elsewhere the rename has to do)."""
    if os.name != "posix":  # pragma: no cover
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    except OSError as err:  # pragma: no cover - a file system without directory fsync
        log.debug("cannot fsync %s: %s", folder, err)
    finally:
        os.close(handle)


def _prune(folder: Path, completed: int, keep: int) -> None:
    """Remove every generation but rounds ``completed − keep + 1 .. completed`` (their
    manifests first, so no manifest outlives its files), and stray temporaries."""
    kept = range(completed - keep + 1, completed + 1)
    doomed = []
    for path in folder.iterdir():
        parsed = _parse(path.name)
        if parsed is not None and (parsed[1] not in kept or parsed[2]):
            doomed.append((parsed[0] != "manifest", path.name, path))
    for *_, path in sorted(doomed):
        path.unlink(missing_ok=True)


def _encode(value: Any, path: str, tensors: dict[str, Tensor]) -> Any:
    """The JSON form of `value`; its tensors go to `tensors`, keyed by their dotted path."""
    if isinstance(value, Tensor):
        if path in tensors:
            raise ValueError(f"two tensors of the checkpoint have the same path {path!r}")
        tensors[path] = value
        return {_TENSOR: path}
    if isinstance(value, np.ndarray):
        return {_ARRAY: value.dtype.str, "shape": list(value.shape), "data": value.tolist()}
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _encode(getattr(value, f.name), f"{path}.{f.name}", tensors)
            for f in dataclasses.fields(value)
            if f.init
        }
    if isinstance(value, dict):
        return {str(k): _encode(v, f"{path}.{k}", tensors) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]
    return value


# -- reading ----------------------------------------------------------------------------


def completed_rounds(folder: Path) -> int:
    """Rounds the newest generation in `folder` holds (0 without one). Reads only the
    file names: the generation is not verified."""
    return 1 + max(_rounds(Path(folder), sealed=True), default=-1)


def _rounds(folder: Path, *, sealed: bool = False) -> set[int]:
    """The rounds with a file of a generation (with a manifest, if `sealed`)."""
    if not folder.is_dir():
        return set()
    files = [parsed for p in folder.iterdir() if (parsed := _parse(p.name)) is not None]
    return {r for kind, r, tmp in files if not tmp and (kind == "manifest" or not sealed)}


def load_checkpoint(
    folder: Path, config: FedConfig, like: ServerState, clients: dict[str, Tensor]
) -> Checkpoint | None:
    """The newest usable checkpoint in `folder`, or None if it holds none.

    Parameters
    ----------
    folder : Path
    config : FedConfig
        The run's configuration: the checkpoint's must be the same (``rounds`` aside).
    like : ServerState
        A fresh state of the run (its round-0 state): every restored value must have the
        shape, dtype and keys of its counterpart here.
    clients : dict of str to Tensor
        The run's fresh client state (:meth:`~flexmoe.fedloop.Simulation.state_dict`).

    Returns
    -------
    Checkpoint or None
        Verified; torch's RNG state is restored from it. A bad newest generation falls
        back to the one before with a warning; a generation that was never finished
        (no manifest) is skipped, and only such leave None (start afresh) with a warning.

    Raises
    ------
    CheckpointError
        When there are generations and none is usable: one line naming each bad file and
        its fault.
    ValueError
        When the checkpoint was written by a different configuration.
    """
    folder = Path(folder)
    _refuse_older_format(folder)
    faults: list[_Fault] = []
    for completed in sorted(_rounds(folder), reverse=True):
        try:
            found = _Generation(folder, completed).read(config, like, clients)
        except _Fault as fault:
            faults.append(fault)
            continue
        if faults:
            log.warning(
                "%s; resuming from the checkpoint after round %d (%s), so %s again",
                "; ".join(map(str, faults)),
                completed + 1,
                folder / _names(completed)["manifest"],
                _rerun(completed + 2, max(_rounds(folder)) + 1),
            )
        torch.set_rng_state(found.torch_rng)
        log.info("resuming from %s after round %d", folder, completed + 1)
        return found
    if any(not f.unfinished for f in faults):
        listed = "; ".join(f.brief() for f in faults)
        raise CheckpointError(f"no usable checkpoint in {folder}: {listed}")
    if faults:
        log.warning("%s; no finished checkpoint: starting afresh", "; ".join(map(str, faults)))
    return None


def _rerun(first: int, last: int) -> str:
    return f"round {first} runs" if first == last else f"rounds {first}–{last} run"


def _refuse_older_format(folder: Path) -> None:
    """A format-1 checkpoint (``latest.json``, no checksums) is not read."""
    pointer = folder / "latest.json"
    if pointer.exists():
        raise CheckpointError(
            f"{pointer}: a checkpoint of format 1 (no checksums), which this version does not "
            f"read (it reads format {FORMAT}); finish the run with the version that wrote it"
        )


class _Generation:
    """Reads and verifies the generation of round `completed`; every fault is a
    :class:`_Fault` naming the file."""

    def __init__(self, folder: Path, completed: int) -> None:
        self.folder, self.completed = folder, completed
        self.paths = {kind: folder / name for kind, name in _names(completed).items()}
        self.tensors: dict[str, Tensor] = {}
        self.used: set[str] = set()

    def fault(self, kind: str, reason: str) -> _Fault:
        return _Fault(self.paths[kind], reason)

    def read(self, config: FedConfig, like: ServerState, clients: dict[str, Tensor]) -> Checkpoint:
        files = self.manifest()
        meta = self.state_json(self.verified("state", files))
        check_config(meta["config"], config)
        self.tensors = self.tensor_file(self.verified("tensors", files))
        rng: dict[str, Any] = meta["rng"] if isinstance(meta.get("rng"), dict) else {}
        restored = Checkpoint(
            next_round=self.completed + 1,
            config=meta["config"],
            state=self.decode(meta.get("state"), like, "state"),
            clients=self.decode(meta.get("clients"), clients, "clients"),
            rng=self.generator(rng.get("numpy")),
            history=self.history(meta.get("history")),
            method=self.method(meta.get("method", {})),
            torch_rng=self.decode(rng.get("torch"), torch.get_rng_state(), "rng.torch"),
        )
        unused = sorted(set(self.tensors) - self.used)
        if unused:
            raise self.fault("tensors", f"holds tensor(s) the state does not name: {unused}")
        return restored

    def manifest(self) -> dict[str, Any]:
        """The manifest's record of the data files (their names, sizes and checksums)."""
        path = self.paths["manifest"]
        if not path.exists():
            raise _Fault(
                path,
                f"missing: the checkpoint after round {self.completed + 1} was "
                "never finished (the run stopped while writing it?)",
                unfinished=True,
            )
        seal = self.parse_json("manifest", self.read_bytes("manifest"))
        if seal.get("format") != FORMAT:
            raise self.fault(
                "manifest", f"format {seal.get('format')!r}; this version reads format {FORMAT}"
            )
        if seal.get("completed") != self.completed:
            raise self.fault(
                "manifest",
                f"`completed` must be {self.completed} as the name "
                f"says; got {seal.get('completed')!r}",
            )
        files = seal.get("files")
        wanted = {self.paths[k].name for k in ("tensors", "state")}
        if not isinstance(files, dict) or set(files) != wanted:
            raise self.fault(
                "manifest",
                f"`files` must list {sorted(wanted)}; got "
                f"{sorted(files) if isinstance(files, dict) else files!r}",
            )
        return files

    def read_bytes(self, kind: str) -> bytes:
        try:
            return self.paths[kind].read_bytes()
        except FileNotFoundError:
            raise self.fault(kind, f"missing ({self.paths['manifest'].name} lists it)") from None
        except OSError as err:
            raise self.fault(kind, f"cannot be read: {err.strerror or err}") from None

    def verified(self, kind: str, files: dict[str, Any]) -> bytes:
        """The bytes of `kind`'s file, once their size and SHA-256 match the manifest's."""
        data, entry = self.read_bytes(kind), files[self.paths[kind].name]
        manifest = self.paths["manifest"].name
        if not isinstance(entry, dict):
            raise self.fault(
                "manifest", f"the entry of {self.paths[kind].name} must be an object; got {entry!r}"
            )
        if len(data) != entry.get("bytes"):
            what = "empty" if not data else f"{len(data)} bytes"
            raise self.fault(
                kind,
                f"{what}; {manifest} records {entry.get('bytes')!r} bytes "
                "(truncated or overwritten?)",
            )
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry.get("sha256"):
            raise self.fault(
                kind,
                f"SHA-256 is {digest[:16]}…, {manifest} records "
                f"{str(entry.get('sha256'))[:16]}… (the file changed after it was written)",
            )
        return data

    def parse_json(self, kind: str, data: bytes) -> dict[str, Any]:
        try:
            value = json.loads(data)
        except UnicodeDecodeError:
            raise self.fault(kind, "not JSON: not UTF-8 text") from None
        except json.JSONDecodeError as err:
            raise self.fault(
                kind,
                f"not JSON (truncated or damaged?): {err.msg}: line {err.lineno} column "
                f"{err.colno}",
            ) from None
        if not isinstance(value, dict):
            raise self.fault(kind, f"must hold a JSON object; got {type(value).__name__}")
        return value

    def state_json(self, data: bytes) -> dict[str, Any]:
        meta = self.parse_json("state", data)
        if meta.get("format") != FORMAT or meta.get("completed") != self.completed:
            raise self.fault(
                "state",
                f"`format`, `completed` must be {FORMAT}, "
                f"{self.completed}; got {meta.get('format')!r}, "
                f"{meta.get('completed')!r}",
            )
        if not isinstance(meta.get("config"), dict):
            raise self.fault(
                "state", f"`config` must be an object; got {type(meta.get('config')).__name__}"
            )
        return meta

    def tensor_file(self, data: bytes) -> dict[str, Tensor]:
        try:
            tensors = torch.load(io.BytesIO(data), weights_only=True)
        except Exception as err:  # torch raises many kinds; its text may advise unsafe loading
            raise self.fault(
                "tensors",
                f"not a tensor file torch.load reads with weights_only=True ({type(err).__name__})",
            ) from None
        if not isinstance(tensors, dict) or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in tensors.items()
        ):
            raise self.fault("tensors", "must hold a dict of named tensors")
        return tensors

    # -- values, verified against the fresh run's ---------------------------------------

    def decode(self, data: Any, like: Any, path: str) -> Any:
        """The value `data` encodes (see :func:`_encode`), checked against `like` (its
        counterpart in a fresh run; None checks nothing)."""
        if dataclasses.is_dataclass(like) and not isinstance(like, type):
            return self.instance(data, like, path)
        value: Any = data
        if isinstance(data, dict) and _TENSOR in data:
            value = self.tensor(data[_TENSOR], path)
        elif isinstance(data, dict) and _ARRAY in data:
            value = self.array(data, path)
        elif isinstance(data, dict):
            sub = like if isinstance(like, dict) else {}
            value = {k: self.decode(v, sub.get(k), f"{path}.{k}") for k, v in data.items()}
        elif isinstance(data, list):
            value = [self.decode(v, None, f"{path}.{i}") for i, v in enumerate(data)]
            value = tuple(value) if isinstance(like, tuple) else value
        self.check_like(value, like, path)
        return value

    def instance(self, data: Any, like: Any, path: str) -> Any:
        names = {f.name for f in dataclasses.fields(like) if f.init}
        if not isinstance(data, dict) or set(data) != names:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise self.fault(
                "state",
                f"`{path}` must have the fields {sorted(names)} of "
                f"{type(like).__name__}; got {got}",
            )
        values = {k: self.decode(data[k], getattr(like, k), f"{path}.{k}") for k in names}
        try:
            return dataclasses.replace(like, **values)
        except (TypeError, ValueError) as err:
            raise self.fault("state", f"`{path}`: {err}") from None

    def tensor(self, key: Any, path: str) -> Tensor:
        if not isinstance(key, str) or key not in self.tensors:
            raise self.fault("tensors", f"has no tensor {key!r}, which `{path}` names")
        self.used.add(key)
        return self.tensors[key]

    def array(self, data: dict[str, Any], path: str) -> np.ndarray:
        try:
            dtype, shape = np.dtype(data[_ARRAY]), tuple(data["shape"])
            if dtype.hasobject:
                raise ValueError(f"dtype {dtype} holds Python objects")
            value = np.array(data["data"], dtype=dtype)
        except (KeyError, TypeError, ValueError) as err:
            raise self.fault("state", f"`{path}` is not a valid array: {err}") from None
        if value.shape != shape:
            raise self.fault(
                "state", f"`{path}` must have its recorded shape {shape}; got {value.shape}"
            )
        return value

    def check_like(self, value: Any, like: Any, path: str) -> None:
        """`value` has the type, shape, dtype (arrays, tensors) or keys (dicts) of `like`."""
        if like is None:
            return
        kind = "tensors" if isinstance(like, Tensor) else "state"
        if isinstance(like, Tensor | np.ndarray):
            if not isinstance(value, type(like)):
                raise self.fault(
                    kind, f"`{path}` must be a {type(like).__name__}; got {type(value).__name__}"
                )
            if tuple(value.shape) != tuple(like.shape) or value.dtype != like.dtype:
                raise self.fault(
                    kind,
                    f"`{path}` must have shape {tuple(like.shape)} and "
                    f"dtype {like.dtype} as this run has; got "
                    f"{tuple(value.shape)} {value.dtype}",
                )
        elif isinstance(like, dict) and isinstance(value, dict) and set(value) != set(like):
            missing, extra = sorted(set(like) - set(value)), sorted(set(value) - set(like))
            raise self.fault(
                "state",
                f"`{path}` must have the keys this run has; missing {missing}, unexpected {extra}",
            )
        elif not isinstance(value, _kinds(like)):
            raise self.fault(
                "state", f"`{path}` must be a {type(like).__name__}; got {type(value).__name__}"
            )

    def generator(self, state: Any) -> np.random.Generator:
        generator = np.random.default_rng()
        try:
            generator.bit_generator.state = state
        except (KeyError, TypeError, ValueError) as err:
            raise self.fault("state", f"`rng.numpy` is not a numpy RNG state: {err}") from None
        return generator

    def method(self, data: Any) -> dict[str, Any]:
        state = self.decode(data, None, "method")
        if not isinstance(state, dict):
            raise self.fault("state", f"`method` must be an object; got {type(state).__name__}")
        return state

    def history(self, data: Any) -> History:
        try:
            history = History.from_dict(self.decode(data, None, "history"))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            raise self.fault("state", f"`history` is not a run's history: {err!r}") from None
        if len(history.rounds) != self.completed + 1:
            raise self.fault(
                "state",
                f"`history` must hold {self.completed + 1} rounds as the "
                f"checkpoint does; got {len(history.rounds)}",
            )
        return history


def _kinds(like: Any) -> type | tuple[type, ...]:
    """The types a JSON value may have where the fresh run has `like` (an int for a float)."""
    if isinstance(like, float):
        return (float, int)
    return type(like)


def check_config(saved: dict[str, Any], config: FedConfig) -> None:
    """Refuse a checkpoint written by a different configuration (``rounds`` may differ;
    a field newer than the checkpoint counts as its default)."""
    current = config.to_dict()
    defaults = FedConfig().to_dict()
    differ = sorted(k for k in current if k != "rounds" and saved.get(k, defaults[k]) != current[k])
    if differ:
        raise ValueError(
            "the checkpoint was written by a different configuration; differing field(s): "
            + ", ".join(f"{k} (checkpoint {saved.get(k)!r}, now {current[k]!r})" for k in differ)
        )
