"""`end_tagged`: every process with a tag ends, gracefully when it can, and the call
returns by its timeout when one cannot be ended.

Each test tags its own processes with a fresh value and checks only those.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from flexmoe.benchmarks.processes import alive, end_tagged, tagged

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

VARIABLE = "FLEXMOE_TEST_END_TAGGED"

#: Ignores SIGTERM and starts `n` children that ignore it too, then prints "ready".
STUBBORN_TREE = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
kids = [subprocess.Popen([sys.executable, "-c", child]) for _ in range(int(sys.argv[1]))]
print("ready", flush=True)
time.sleep(120)
"""

#: Not tagged itself: starts a tagged `sleep` every 50 ms (a supervisor outside the
#: tagged processes, which end_tagged cannot stop).
RESPAWNER = """
import os, subprocess, sys, time
env = {**os.environ, sys.argv[1]: sys.argv[2]}
print("ready", flush=True)
while True:
    subprocess.Popen(["sleep", "60"], env=env)
    time.sleep(0.05)
"""


def _start(code: str, tag: str | None, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, **({VARIABLE: tag} if tag else {})}
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    assert proc.stdout is not None
    with proc.stdout:  # it prints nothing more
        assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_tree_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    tag = uuid.uuid4().hex
    proc = _start(STUBBORN_TREE, tag, "3")
    deadline = time.monotonic() + 30
    while len(tagged(tag, VARIABLE)) < 4:
        assert time.monotonic() < deadline, "the children did not start"
        time.sleep(0.05)
    began = time.monotonic()
    signalled = end_tagged(tag, VARIABLE, grace=0.5, settle=0.3)
    took = time.monotonic() - began
    assert tagged(tag, VARIABLE) == []
    assert proc.pid in signalled and len(signalled) == 4
    with pytest.raises(ChildProcessError):  # reaped: it was this process's child
        os.waitpid(proc.pid, os.WNOHANG)
    proc.wait(5)  # Popen learns that it ended
    assert 0.5 <= took < 10


#: Tagged; starts a child with an environment of its own (no tag: as a process that
#: retitles itself reads in /proc), then ends on SIGTERM, leaving the child an orphan.
UNTAGGED_CHILD = """
import subprocess, sys, time
child = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
kid = subprocess.Popen([sys.executable, "-c", child], env={})
print(kid.pid, flush=True)
time.sleep(120)
"""


def test_a_descendant_whose_environment_lacks_the_tag_is_ended_too() -> None:
    tag = uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, "-c", UNTAGGED_CHILD], env={**os.environ, VARIABLE: tag},
                            stdout=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    assert proc.stdout is not None
    with proc.stdout:
        kid = int(proc.stdout.readline())
    try:
        assert tagged(tag, VARIABLE) == [proc.pid]  # the child does not show the tag
        signalled = end_tagged(tag, VARIABLE, grace=0.5, settle=0.3)
        assert not alive(kid), "the untagged child was left running"
        assert set(signalled) == {proc.pid, kid}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(kid, signal.SIGKILL)
        proc.wait(5)


def test_a_process_that_honours_sigterm_ends_within_the_grace() -> None:
    tag = uuid.uuid4().hex
    proc = _start("import time; print('ready', flush=True); time.sleep(120)", tag)
    began = time.monotonic()
    end_tagged(tag, VARIABLE, grace=20, settle=0.3)
    assert time.monotonic() - began < 10  # not the 20 s grace: SIGTERM sufficed
    with pytest.raises(ChildProcessError):
        os.waitpid(proc.pid, os.WNOHANG)
    proc.wait(5)  # Popen learns that it ended
    assert tagged(tag, VARIABLE) == []


def test_what_cannot_be_ended_is_logged_and_the_call_returns_by_its_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tag = uuid.uuid4().hex
    proc = _start(RESPAWNER, None, VARIABLE, tag)
    try:
        began = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="flexmoe.benchmarks.processes"):
            end_tagged(tag, VARIABLE, grace=0.2, timeout=1.5)
        assert time.monotonic() - began < 1.5 + 1.0
        assert (
            f"processes tagged {VARIABLE}={tag} (or descended from one) still running after 2 s"
            in (caplog.text)
        )
    finally:
        proc.kill()
        proc.wait(5)
    end_tagged(tag, VARIABLE, grace=0, settle=0.2)
    assert tagged(tag, VARIABLE) == []


def test_nothing_tagged_returns_after_settling() -> None:
    began = time.monotonic()
    assert end_tagged(uuid.uuid4().hex, VARIABLE, settle=0.2) == []
    assert time.monotonic() - began < 5
