"""``flwr run`` on a private local federation that leaves nothing behind.

``flwr run`` with Flower's default connection (``:local:``) starts a SuperLink in the
background that keeps running after the run, on a fixed port, with its state under
``$HOME/.flwr``; its runs install the App's dependencies from the package index first.
:class:`LocalFederation` runs ``flwr run`` against a SuperLink of its own instead:

* a ``flower-superlink --simulation`` on a free port, with run-time dependency
  installation off (flexmoe and Flower are already installed: nothing is downloaded);
* Flower's state (``FLWR_HOME``), Ray's (``RAY_TMPDIR``) and every temporary file of
  the processes it starts (``TMPDIR``) in one temporary folder;
* on exit, the SuperLink stopped, every process it started ended — found by a tag in
  their environment (:data:`TAG_VARIABLE`), as Flower and Ray start some in sessions of
  their own — and the folder removed.

This is Flower's current simulation path (the run goes through the SuperLink's
simulation runtime, as any ``flwr run``), used by ``flexmoe train --engine flower``
(:func:`~flexmoe.flower.run_flower`) and by ``python -m flexmoe.flower run <app>``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from flexmoe.benchmarks.processes import end_tagged

__all__ = ["CONNECTION", "TAG_VARIABLE", "LocalFederation", "RayOptions", "RunResult"]

log = logging.getLogger(__name__)

#: Environment variable whose value marks every process of one federation.
TAG_VARIABLE = "FLEXMOE_FLOWER_RUN"

#: Name of the SuperLink connection in the federation's Flower configuration.
CONNECTION = "flexmoe-local"

#: Seconds the SuperLink gets to come up, and to stop.
STARTUP, SHUTDOWN = 60.0, 10.0

#: Ray's socket paths must stay under 107 bytes: Ray's folder goes to the system's temp
#: folder when the federation's would be longer than this.
RAY_DIR_MAX = 48


@dataclass(frozen=True)
class RayOptions:
    """Where and how the simulated clients run.

    Attributes
    ----------
    client_cpus : int
        CPUs Ray reserves for each client (one actor per ``client_cpus`` CPUs).
    client_gpus : float
        GPUs Ray reserves for each client (a fraction shares one).
    address : str or None
        An existing Ray cluster (``"auto"``, ``"<head-ip>:6379"``); None starts a
        private local Ray instance for the run.
    num_cpus : int or None
        CPUs of the private local instance (None: all).
    temp_dir : str or None
        Parent folder of the run's temporary state (None: the system's).
    verbose : bool
        Flower's DEBUG log, and the Ray workers' output.
    """

    client_cpus: float = 1.0
    client_gpus: float = 0.0
    address: str | None = None
    num_cpus: int | None = None
    temp_dir: str | None = None
    verbose: bool = False

    def __post_init__(self) -> None:
        if not self.client_cpus >= 1 or self.client_cpus != int(self.client_cpus):
            raise ValueError(f"`client_cpus` must be a whole number >= 1 (Flower's simulation "
                             f"runtime reserves whole CPUs); got {self.client_cpus:g}")  # fmt: skip
        if not self.client_gpus >= 0:
            raise ValueError(f"`client_gpus` must be >= 0; got {self.client_gpus:g}")

    def check_local(self) -> None:
        """Refuse what a private local Ray instance cannot give one client (Flower would
        stop with an empty actor pool); a cluster (`address`) is not checked here."""
        if self.address:
            return
        cpus = self.num_cpus or os.cpu_count() or 1
        if self.client_cpus > cpus:
            raise ValueError(f"`client_cpus` = {self.client_cpus:g} exceeds the {cpus} CPUs "
                             "of the local Ray instance")  # fmt: skip

    def federation_config(self, num_supernodes: int) -> str:
        """The ``--federation-config`` of ``flwr run`` for `num_supernodes` nodes."""
        values: dict[str, Any] = {
            "num-supernodes": num_supernodes,
            "client-resources-num-cpus": int(self.client_cpus),
            "client-resources-num-gpus": float(self.client_gpus),
            "init-args-log-to-driver": self.verbose,
            "verbose": self.verbose,
        }
        if self.num_cpus is not None and not self.address:
            values["init-args-num-cpus"] = self.num_cpus
        return " ".join(f"{k}={json.dumps(v)}" for k, v in values.items())


def cluster_address(address: str) -> str:
    """``host:port`` of the Ray cluster `address` names, checked to answer: ``auto`` is
    ``RAY_ADDRESS``, else the cluster ``ray start`` started on this machine.

    Raises
    ------
    ValueError
        Naming `address` (the ``--ray-address`` flag), when there is no cluster or
        nothing answers at its address within 5 s.
    """
    given = address
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS") or _started_cluster() or ""
        if not address:
            raise ValueError("`address` auto: no Ray cluster on this machine (RAY_ADDRESS is "
                             "unset and `ray start` runs none); start one with `ray start "
                             "--head`, or give its <head-ip>:<port>")  # fmt: skip
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"`address` must be auto or <host>:<port>; got {given!r}")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise ValueError(f"`address` {given}: no Ray cluster answers at {host}:{port} ({err}); "
                         "start one (`ray start --head`), or leave the address out for a "
                         "private local Ray instance") from None  # fmt: skip
    return f"{host}:{port}"


def _started_cluster() -> str | None:
    """The address ``ray start`` recorded on this machine (Ray's documented
    ``<tmp>/ray/ray_current_cluster``), if any."""
    root = os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()
    with contextlib.suppress(OSError):
        return (Path(root) / "ray" / "ray_current_cluster").read_text().strip() or None
    return None


@dataclass(frozen=True)
class RunResult:
    """How a run ended: Flower's status (``finished:completed``, ``finished:failed``,
    ...), its details, and (when the output was captured) the warnings and errors Flower
    logged with the end of the log."""

    status: str
    details: str
    output: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "finished:completed"


class LocalFederation:
    """A private SuperLink with the simulation runtime, for ``flwr run`` (a context
    manager: everything it started ends, and its folder goes, when the block ends).

    Parameters
    ----------
    ray : RayOptions, optional
        Client resources, the Ray cluster (None: a private local instance).
    cwd : path, optional
        Working folder of the SuperLink and its runs (relative ``out-dir`` paths of
        the App start there); default: the current one.
    capture : bool
        Keep ``flwr run``'s output in the federation's folder (shown when a run
        fails) instead of printing it.

    Attributes
    ----------
    root : Path
        The temporary folder (None until entered).
    """

    def __init__(
        self,
        ray: RayOptions | None = None,
        *,
        cwd: str | Path | None = None,
        capture: bool = True,
    ) -> None:
        self.ray = ray or RayOptions()
        self.cwd = Path(cwd or os.getcwd())
        self.capture = capture
        self.tag = uuid.uuid4().hex
        self.root: Path | None = None
        self.folders: list[Path] = []
        self._link: subprocess.Popen[bytes] | None = None
        self._env: dict[str, str] = {}

    # -- set-up -------------------------------------------------------------------------

    def __enter__(self) -> LocalFederation:
        address = cluster_address(self.ray.address) if self.ray.address else None
        self.root = Path(tempfile.mkdtemp(prefix="flexmoe-", dir=self.ray.temp_dir))
        self.folders = [self.root]
        try:
            self._env = self._environment(address)
            self._start_link()
        except BaseException:
            self.close()
            raise
        return self

    def _environment(self, address: str | None) -> dict[str, str]:
        assert self.root is not None
        env = dict(os.environ)
        env.update({
            TAG_VARIABLE: self.tag,
            "FLWR_HOME": str(self.root / "flwr"),
            "TMPDIR": str(self.root / "tmp"),
            "FLWR_TELEMETRY_ENABLED": os.environ.get("FLWR_TELEMETRY_ENABLED", "0"),
            "FLWR_DISABLE_UPDATE_CHECK": "1",  # no network at run time
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
            "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
        })  # fmt: skip
        if address is not None:
            env["RAY_ADDRESS"] = address
        else:
            env.pop("RAY_ADDRESS", None)
            env["RAY_TMPDIR"] = str(self._ray_dir())
        for folder in ("flwr", "tmp"):
            (self.root / folder).mkdir()
        return env

    def _ray_dir(self) -> Path:
        """Ray's folder: in the federation's, unless that makes Ray's socket paths too long."""
        assert self.root is not None
        if len(str(self.root)) <= RAY_DIR_MAX:
            return self.root
        system = "/tmp" if os.name == "posix" else None  # not $TMPDIR: it may be long too
        short = Path(tempfile.mkdtemp(prefix="flexmoe-ray-", dir=system))
        self.folders.append(short)
        return short

    def _start_link(self) -> None:
        assert self.root is not None
        port = _free_port()
        (self.root / "flwr" / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{port}"\ninsecure = true\n'
        )
        command = [_program("flower-superlink"), "--insecure", "--simulation", "--host",
                   "127.0.0.1", "--port", str(port),
                   "--disable-runtime-dependency-installation"]  # fmt: skip
        with open(self.root / "superlink.log", "wb") as out:
            self._link = subprocess.Popen(
                command, env=self._env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        deadline = time.monotonic() + STARTUP
        while not _healthy(port):
            if self._link.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Flower SuperLink did not start: "
                                   f"{_tail(self.root / 'superlink.log')}")  # fmt: skip
            time.sleep(0.1)
        log.debug("SuperLink on 127.0.0.1:%d, state in %s", port, self.root)

    # -- runs ---------------------------------------------------------------------------

    def run(
        self,
        app: str | Path,
        *,
        num_supernodes: int,
        arguments: Sequence[str] = (),
        progress: Callable[[], None] | None = None,
    ) -> RunResult:
        """``flwr run <app>`` on this federation with `num_supernodes` nodes; `arguments`
        go to ``flwr run`` as they are (``--run-config ...``; a ``--federation-config``
        there overrides the nodes and resources set here). `progress` is called about
        twice a second while the run goes on."""
        assert self.root is not None, "LocalFederation.run needs the `with` block"
        command = [_program("flwr"), "run", str(app), CONNECTION, "--stream",
                   "--federation-config", self.ray.federation_config(num_supernodes),
                   *arguments]  # fmt: skip
        output = self.root / "run.log"
        with self._output(output) as out:
            proc = subprocess.Popen(command, env=self._env, cwd=self.cwd, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
            try:
                while proc.poll() is None:
                    if progress is not None:
                        progress()
                    time.sleep(0.5)
            finally:
                _end(proc)
        if progress is not None:
            progress()
        return self._result(output if self.capture else None)

    @contextlib.contextmanager
    def _output(self, path: Path) -> Iterator[IO[bytes] | None]:
        if not self.capture:
            sys.stdout.flush()
            yield None
            return
        with open(path, "wb") as out:
            yield out

    def _result(self, output: Path | None) -> RunResult:
        """The status of the (one) run this SuperLink had."""
        listed = subprocess.run([_program("flwr"), "list", CONNECTION, "--format", "json"],
                                env=self._env, cwd=self.cwd, capture_output=True, text=True,
                                timeout=120)  # fmt: skip
        tail = _notable(output) if output is not None else ""
        try:
            runs = json.loads(listed.stdout)["runs"]
        except (ValueError, KeyError):
            return RunResult("unknown", f"`flwr list` said: {listed.stdout or listed.stderr}", tail)
        if not runs:
            return RunResult("not started", "the SuperLink has no run", tail)
        run = runs[-1]
        return RunResult(run["status"], run.get("status-details", ""), tail)

    # -- tear-down ----------------------------------------------------------------------

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the SuperLink, end every process of this federation, remove its folders."""
        if self._link is not None:
            _end(self._link, signal.SIGTERM, SHUTDOWN)
            self._link = None
        end_tagged(self.tag, TAG_VARIABLE)
        for folder in self.folders:
            shutil.rmtree(folder, ignore_errors=True)
        self.folders = []


def _program(name: str) -> str:
    """`name`'s script of this Python environment (else the one on PATH)."""
    own = Path(sys.executable).parent / name
    return str(own) if own.exists() else name


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=0.5) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _notable(path: Path, most: int = 8) -> str:
    """The distinct warnings and errors Flower logged (why a run failed comes first
    there; its tracebacks come last), then the end of the log."""
    try:
        lines = [
            _ANSI.sub("", line).strip() for line in path.read_text(errors="replace").splitlines()
        ]
    except OSError:
        return ""
    marked = [line for line in lines if line.startswith(("WARNING", "ERROR"))]
    found = list(dict.fromkeys(m for m in marked if "default simulated SuperNodes" not in m))
    return "\n".join([*found[:most], "...", *lines[-8:]])


def _end(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT, grace: float = 5.0) -> None:
    """Stop `proc` (`sig`, then SIGKILL after `grace` seconds) and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
