"""Checkpoints that survive corruption: two generations, each verified before it is trusted
(manifest, sizes, SHA-256, format, configuration, every shape against the run's); a damaged
latest one falls back to the one before it with a warning and the resumed history equals an
uninterrupted one; when none is usable, one line names the file and the fault — through
:func:`~flexmoe.fedloop.run` and through ``flexmoe train --resume``."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from flexmoe.cli import main
from flexmoe.fedloop import (
    FedConfig,
    History,
    MoEStrategy,
    ServerState,
    Simulation,
    checkpoint,
    run,
)
from flexmoe.fedloop.checkpoint import (
    CheckpointError,
    completed_rounds,
    load_checkpoint,
    save_checkpoint,
)

FLAGS = ["--dataset", "clustered", "--samples", "200", "--clients", "4", "--experts", "4",
         "--capacity", "2", "--partition", "iid", "--min-size", "5", "--local-epochs", "1",
         "--participation", "0.75", "--quiet"]  # fmt: skip
LOGGER = "flexmoe.fedloop.checkpoint"


@pytest.fixture(scope="module")
def cut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``flexmoe train`` run stopped after 2 of 3 rounds: generations 0 and 1."""
    out = tmp_path_factory.mktemp("cut") / "run"
    assert main(["train", *FLAGS, "--rounds", "2", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def config(cut: Path) -> FedConfig:
    """The configuration the command line built, for 3 rounds."""
    return FedConfig.from_dict(History.load(cut / "history.json").config).replace(rounds=3)


@pytest.fixture(scope="module")
def whole(config: FedConfig) -> dict:
    """The uninterrupted run's history, timings aside."""
    return run(config, threads=1).without_timings()


@pytest.fixture
def out(cut: Path, tmp_path: Path) -> Path:
    """A copy of the stopped run, to damage."""
    shutil.copytree(cut, tmp_path / "run")
    return tmp_path / "run"


# -- the damage -------------------------------------------------------------------------

Damage = Callable[[Path, int], None]


def _file(kind: str, folder: Path, completed: int) -> Path:
    return folder / f"{kind}-{completed}.{'pt' if kind == 'tensors' else 'json'}"


def rewritten(kind: str, change: Callable[[bytes], bytes]) -> Damage:
    """Replace the bytes of generation `completed`'s `kind` file (if it has one)."""

    def damage(folder: Path, completed: int) -> None:
        path = _file(kind, folder, completed)
        if path.exists():
            path.write_bytes(change(path.read_bytes()))

    return damage


def removed(kind: str) -> Damage:
    return lambda folder, completed: _file(kind, folder, completed).unlink(missing_ok=True)


def resealed(damage: Damage) -> Damage:
    """`damage`, then the manifest rewritten to match: a writer that got it wrong."""

    def both(folder: Path, completed: int) -> None:
        damage(folder, completed)
        manifest = _file("manifest", folder, completed)
        if manifest.exists():
            seal = json.loads(manifest.read_text())
            for name in seal["files"]:
                data = (folder / name).read_bytes()
                seal["files"][name] = {
                    "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            manifest.write_text(json.dumps(seal))

    return both


def random_bytes(data: bytes) -> bytes:
    return np.random.default_rng(0).bytes(len(data))


def other_values(data: bytes) -> bytes:
    """A valid tensor file of the same keys and shapes, one value changed."""
    tensors = torch.load(io.BytesIO(data), weights_only=True)
    key = next(k for k in tensors if k.endswith("weight"))
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] += 1.0
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    return buffer.getvalue()


def written_with(change: Callable[[ServerState], ServerState]) -> Damage:
    """A consistent generation (good checksums) whose state `change` made wrong, written
    with :func:`save_checkpoint` from the run's fresh state and its history so far."""

    def damage(folder: Path, completed: int) -> None:
        history = History.load(folder.parent / "history.json").to_dict()
        history["rounds"] = history["rounds"][: completed + 1]
        config = FedConfig.from_dict(history["config"])
        sim = Simulation(config)
        strategy = MoEStrategy(config, sim.federation)
        state = strategy.initial_state(sim.initial_weights())
        save_checkpoint(folder, completed, history["config"], change(state), sim.state_dict(),
                        strategy.rng, history)  # fmt: skip

    return damage


def short_held(state: ServerState) -> ServerState:
    return dataclasses.replace(state, held=state.held[:-1])


def wrong_shape(state: ServerState) -> ServerState:
    key = next(k for k in state.weights if k.startswith("experts.") and k.endswith("weight"))
    weights = dict(state.weights)
    weights[key] = torch.zeros(weights[key].shape[0], weights[key].shape[1] + 1)
    return dataclasses.replace(state, weights=weights)


#: Each corruption of a generation, and what the message says about it ({r}: its round).
CORRUPTIONS: dict[str, tuple[Damage, str]] = {
    "truncated tensors": (rewritten("tensors", lambda b: b[: len(b) // 2]),
                          r"tensors-{r}\.pt: \d+ bytes; manifest-{r}\.json records \d+ bytes"),
    "empty tensors": (rewritten("tensors", lambda b: b""), r"tensors-{r}\.pt: empty;"),
    "random bytes": (rewritten("tensors", random_bytes),
                     r"tensors-{r}\.pt: SHA-256 is \w+…, manifest-{r}\.json records \w+… "
                     r"\(the file changed after it was written\)"),
    "random bytes, resealed": (resealed(rewritten("tensors", random_bytes)),
                               r"tensors-{r}\.pt: not a tensor file torch\.load reads with "
                               r"weights_only=True \(UnpicklingError\)"),
    "truncated JSON": (rewritten("state", lambda b: b[: len(b) // 2]),
                       r"state-{r}\.json: \d+ bytes; manifest-{r}\.json records"),
    "truncated JSON, resealed": (resealed(rewritten("state", lambda b: b[: len(b) // 2])),
                                 r"state-{r}\.json: not JSON \(truncated or damaged\?\)"),
    "truncated manifest": (rewritten("manifest", lambda b: b[: len(b) // 2]),
                           r"manifest-{r}\.json: not JSON \(truncated or damaged\?\)"),
    "missing tensors": (removed("tensors"),
                        r"tensors-{r}\.pt: missing \(manifest-{r}\.json lists it\)"),
    "missing state": (removed("state"),
                      r"state-{r}\.json: missing \(manifest-{r}\.json lists it\)"),
    "short held": (written_with(short_held),
                   r"state-{r}\.json: `state\.held` must have shape \(4, 4\) and dtype bool as "
                   r"this run has; got \(3, 4\) bool"),
    "wrong-shaped tensor": (written_with(wrong_shape),
                            r"tensors-{r}\.pt: `state\.weights\.experts\.\d+\.\S+weight` must "
                            r"have shape \(\d+, \d+\) and dtype torch\.float32 as this run has"),
    "checksum mismatch": (rewritten("tensors", other_values), r"tensors-{r}\.pt: SHA-256"),
}  # fmt: skip


def fault(name: str, completed: int) -> str:
    return CORRUPTIONS[name][1].replace("{r}", str(completed))


def damage(out: Path, name: str, *rounds: int) -> None:
    for completed in sorted(rounds):  # oldest first: writing a generation prunes older ones
        CORRUPTIONS[name][0](out / "checkpoint", completed)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelname == "WARNING"]


# -- the latest generation damaged: fall back, and end as an uninterrupted run ------------


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(
    name: str, out: Path, config: FedConfig, whole: dict, caplog: pytest.LogCaptureFixture
) -> None:
    damage(out, name, 1)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        resumed = run(config, out=out, resume=True, threads=1)
    assert resumed.without_timings() == whole  # round 2 ran again
    assert History.load(out / "history.json").without_timings() == whole
    [warning] = warnings_of(caplog)
    assert re.search(fault(name, 1), warning), warning
    assert "resuming from the checkpoint after round 1 " in warning
    assert warning.endswith("manifest-0.json), so round 2 runs again")
    assert str(out / "checkpoint") in warning and "weights_only=False" not in warning
    assert completed_rounds(out / "checkpoint") == 3


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_no_usable_checkpoint_is_one_error_naming_each_file_and_fault(
    name: str, out: Path, config: FedConfig
) -> None:
    damage(out, name, 0, 1)
    with pytest.raises(CheckpointError) as error:
        run(config, out=out, resume=True, threads=1)
    message = str(error.value)
    assert "\n" not in message and "weights_only=False" not in message
    assert message.startswith(f"no usable checkpoint in {out / 'checkpoint'}: ")
    assert re.search(fault(name, 1), message) and re.search(fault(name, 0), message), message


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_train_resume_falls_back_or_fails_with_one_line(
    name: str, out: Path, whole: dict, capsys, caplog: pytest.LogCaptureFixture
) -> None:
    argv = ["train", *FLAGS, "--rounds", "3", "--out", str(out), "--resume"]
    spare = out.parent / "spare"
    shutil.copytree(out, spare)
    damage(out, name, 1)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert main(argv) == 0
    assert History.load(out / "history.json").without_timings() == whole
    assert re.search(fault(name, 1), " ".join(warnings_of(caplog)))
    capsys.readouterr()
    damage(spare, name, 0, 1)
    assert main([*argv[:-2], str(spare), "--resume"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("flexmoe train: error: no usable checkpoint in ")
    assert err.rstrip().endswith("; start over with --overwrite")
    assert re.search(fault(name, 0), err), err


def test_train_resume_in_a_process_fails_with_one_line_and_status_2(out: Path) -> None:
    damage(out, "random bytes, resealed", 0, 1)
    argv = ["train", *FLAGS, "--rounds", "3", "--out", str(out), "--resume"]
    done = subprocess.run([sys.executable, "-m", "flexmoe", *argv], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "weights_only=True (UnpicklingError)" in done.stderr
    assert "weights_only=False" not in done.stderr and "Re-running" not in done.stderr


# -- the layout and how it is written -----------------------------------------------------


def test_two_generations_each_sealed_by_a_manifest_of_sizes_and_checksums(cut: Path) -> None:
    folder = cut / "checkpoint"
    assert sorted(p.name for p in folder.iterdir()) == [
        "manifest-0.json", "manifest-1.json", "state-0.json", "state-1.json",
        "tensors-0.pt", "tensors-1.pt",
    ]  # fmt: skip
    seal = json.loads((folder / "manifest-1.json").read_text())
    assert seal["format"] == 2 and seal["completed"] == 1
    for name, entry in seal["files"].items():
        data = (folder / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert completed_rounds(folder) == 2 and completed_rounds(cut / "nothing") == 0


def test_an_unfinished_newest_generation_is_skipped_with_a_warning(
    out: Path, config: FedConfig, whole: dict, caplog: pytest.LogCaptureFixture
) -> None:
    folder = out / "checkpoint"
    (folder / "manifest-1.json").unlink()  # stopped before the seal: no generation 1
    (folder / "state-2.json.tmp").write_text("{")  # and while writing the next
    assert completed_rounds(folder) == 1
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert run(config, out=out, resume=True, threads=1).without_timings() == whole
    [warning] = warnings_of(caplog)
    assert "manifest-1.json: missing: the checkpoint after round 2 was never finished" in warning
    assert "resuming from the checkpoint after round 1 " in warning
    assert not list(folder.glob("*.tmp")) and completed_rounds(folder) == 3


class Killed(Exception):
    """Stands in for the process dying."""


def test_a_run_killed_while_rewriting_a_generation_leaves_it_unfinished(
    out: Path,
    config: FedConfig,
    whole: dict,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    damage(out, "random bytes", 1)
    write = checkpoint._write_durably

    def dies_before_the_seal(path: Path, data: bytes) -> None:
        if path.name.startswith("manifest-"):
            raise Killed
        write(path, data)

    monkeypatch.setattr(checkpoint, "_write_durably", dies_before_the_seal)
    with pytest.raises(Killed):  # round 2 runs again; its new files are written, unsealed
        run(config, out=out, resume=True, threads=1)
    monkeypatch.undo()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert run(config, out=out, resume=True, threads=1).without_timings() == whole
    [warning] = warnings_of(caplog)
    assert "manifest-1.json: missing: the checkpoint after round 2 was never finished" in warning


def test_only_unfinished_generations_start_afresh_with_a_warning(
    out: Path, config: FedConfig, whole: dict, caplog: pytest.LogCaptureFixture
) -> None:
    for manifest in (out / "checkpoint").glob("manifest-*.json"):
        manifest.unlink()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert run(config, out=out, resume=True, threads=1).without_timings() == whole
    assert "no finished checkpoint: starting afresh" in warnings_of(caplog)[0]


def test_a_format_1_checkpoint_is_refused_by_name(out: Path, config: FedConfig) -> None:
    (out / "checkpoint" / "latest.json").write_text('{"format": 1, "completed": 1}')
    with pytest.raises(CheckpointError, match=r"latest\.json: a checkpoint of format 1"):
        run(config, out=out, resume=True, threads=1)


def test_a_different_configuration_is_refused_before_any_shape_is_compared(
    out: Path, config: FedConfig
) -> None:
    with pytest.raises(ValueError, match=r"differing field\(s\): clients \(checkpoint 4, now 5\)"):
        run(config.replace(clients=5), out=out, resume=True, threads=1)


def test_only_the_newest_generations_are_kept(tmp_path: Path, cut: Path) -> None:
    config = FedConfig.from_dict(History.load(cut / "history.json").config)
    sim = Simulation(config)
    strategy = MoEStrategy(config, sim.federation)
    state = strategy.initial_state(sim.initial_weights())
    history = History.load(cut / "history.json").to_dict()
    for completed in range(4):
        save_checkpoint(tmp_path, completed, history["config"], state, sim.state_dict(),
                        strategy.rng, history, keep=3)  # fmt: skip
    assert sorted(p.name for p in tmp_path.glob("manifest-*")) == [
        "manifest-1.json",
        "manifest-2.json",
        "manifest-3.json",
    ]
    assert len(list(tmp_path.iterdir())) == 9
    with pytest.raises(ValueError, match="`keep` must be >= 1; got 0"):
        save_checkpoint(tmp_path, 4, history["config"], state, {}, strategy.rng, history, keep=0)


# -- generic state: whatever the server state and the method hold is saved ------------------


@dataclasses.dataclass
class GrownState(ServerState):
    """Server state with a field added later (as another part of the library may)."""

    visits: NDArray[np.int64] = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))


def test_state_added_later_is_saved_and_verified_without_a_change_here(
    tmp_path: Path, cut: Path
) -> None:
    config = FedConfig.from_dict(History.load(cut / "history.json").config)
    sim = Simulation(config)
    strategy = MoEStrategy(config, sim.federation)
    fresh = strategy.initial_state(sim.initial_weights())
    like = GrownState(**vars(fresh), visits=np.zeros((4, 4), dtype=np.int64))
    state = dataclasses.replace(like, visits=np.arange(16).reshape(4, 4))
    history = History.load(cut / "history.json").to_dict()
    history["rounds"] = history["rounds"][:1]
    method = {"order": np.array([3, 1, 2]), "gain": torch.ones(2), "note": "kept"}
    save_checkpoint(tmp_path, 0, history["config"], state, sim.state_dict(), strategy.rng,
                    history, method=method)  # fmt: skip
    found = load_checkpoint(tmp_path, config, like, sim.state_dict())
    assert found is not None and found.next_round == 1
    assert isinstance(found.state, GrownState)
    assert found.state.visits.tolist() == state.visits.tolist()
    assert found.state.visits.dtype == np.int64
    assert found.state.fitness.q.shape == (4, 4) and found.state.held.dtype == bool
    assert found.method["order"].tolist() == [3, 1, 2] and found.method["note"] == "kept"
    assert torch.equal(found.method["gain"], torch.ones(2))
    wider = dataclasses.replace(like, visits=np.zeros((4, 5), dtype=np.int64))
    with pytest.raises(CheckpointError, match=r"`state\.visits` must have shape \(4, 5\)"):
        load_checkpoint(tmp_path, config, wider, sim.state_dict())
    fewer = {k: v for k, v in sim.state_dict().items() if not k.startswith("client3.")}
    with pytest.raises(CheckpointError, match=r"`clients` must have the keys this run has; "
                       r"missing \[\], unexpected \['client3\.gate"):  # fmt: skip
        load_checkpoint(tmp_path, config, like, fewer)
