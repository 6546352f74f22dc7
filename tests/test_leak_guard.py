"""The leak guard (tests/leak_guard.py) fails a test that leaves a thread, a child process, a socket
or an asyncio task behind, names what leaked, and passes a test that cleans up.

The tests it judges are written to a temporary directory and run by a separate pytest process with
the guard loaded: what they leak on purpose dies with that process, not in this one.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

LEAKY_TESTS = """
import asyncio
import socket
import subprocess
import sys
import threading

import pytest

never = threading.Event()


def test_leaks_a_thread():
    threading.Thread(target=never.wait, name="leaky-thread", daemon=True).start()


def test_leaks_a_process():
    # Reads its stdin until this pytest process exits: it cannot outlive the run.
    subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)


held = []


def test_leaks_a_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen()
    held.append(s)


@pytest.mark.asyncio
async def test_leaks_a_task():
    held.append(asyncio.create_task(asyncio.Event().wait(), name="leaky-task"))


def test_cleans_up():
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))


# Like a stopped paho client: its socket is closed by __del__, and a cycle leaves it to the collector.
class ClosedWhenCollected:
    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.me = self

    def __del__(self):
        self.sock.close()


@pytest.fixture
def stopped_client():
    return ClosedWhenCollected()


def test_whose_fixture_value_is_freed_after_its_teardown(stopped_client):
    pass


def test_that_fails_with_its_fixture_value_in_its_traceback(stopped_client):
    assert stopped_client is None


@pytest.mark.asyncio
async def test_cancels_its_task():
    task = asyncio.create_task(asyncio.Event().wait())
    await asyncio.sleep(0)
    task.cancel()  # not awaited: the loop finishes the cancellation in the grace period


def test_stops_its_thread_a_moment_later():
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, name="slow-to-stop")
    t.start()
    threading.Timer(0.1, stop.set).start()


@pytest.mark.allow_leaks("this test checks the marker")
def test_allowed_to_leak():
    threading.Thread(target=never.wait, name="allowed-thread", daemon=True).start()
"""


def test_the_guard_fails_each_kind_of_leak_and_passes_a_test_that_cleans_up(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # so the inner pytest can import tests.leak_guard
    pytester.makepyfile(test_leaky=LEAKY_TESTS)
    # A short grace period (the default is 2 s) keeps the four leaking tests quick.
    result = pytester.runpytest_subprocess(
        "-p",
        "tests.leak_guard",
        "-p",
        "no:cacheprovider",
        "-o",
        "leak_guard_grace_s=0.5",
        "-rA",
        timeout=120,
    )
    output = result.stdout.str()
    # -rA lists each phase's outcome: a test that leaks has its call PASSED and its teardown ERROR.
    outcomes: dict[str, set[str]] = {}
    for m in re.finditer(r"^(PASSED|ERROR|FAILED) test_leaky\.py::(\w+)", output, re.MULTILINE):
        outcomes.setdefault(m.group(2), set()).add(m.group(1))
    # A leak fails the test at its teardown, with what leaked named.
    for name in ("test_leaks_a_thread", "test_leaks_a_process", "test_leaks_a_socket", "test_leaks_a_task"):
        assert outcomes.get(name) == {"PASSED", "ERROR"}, f"{name}: {outcomes.get(name)}\n{output}"
    assert "thread 'leaky-thread' (daemon), still alive" in output
    assert re.search(r"child process \d+: \S*python\S* -c import sys; sys.stdin.read\(\)", output), output
    assert re.search(r"socket fd \d+: tcp 127\.0\.0\.1:\d+ -> 0\.0\.0\.0:0 listening", output), output
    assert "task <Task pending name='leaky-task'" in output
    # A test that fails is reported once, for its failure (its traceback, which pytest keeps,
    # holds what its fixtures stopped: not a leak).
    outcome = outcomes.get("test_that_fails_with_its_fixture_value_in_its_traceback")
    assert outcome == {"FAILED"}, f"{outcome}\n{output}"
    # What stops within the grace period passes, and so does a test marked allow_leaks.
    for name in (
        "test_cleans_up",
        "test_whose_fixture_value_is_freed_after_its_teardown",
        "test_cancels_its_task",
        "test_stops_its_thread_a_moment_later",
        "test_allowed_to_leak",
    ):
        assert outcomes.get(name) == {"PASSED"}, f"{name}: {outcomes.get(name)}\n{output}"
