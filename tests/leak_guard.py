"""The leak guard (a pytest plugin, loaded by tests/conftest.py): a test fails when it leaves behind
what it started — threads, child processes, sockets, asyncio tasks.

Owns the autouse fixture ``leak_guard``, the ``allow_leaks(reason)`` marker and the check of the
test's event loop. What counts is what the test's own function scope created: the fixture is
function-scoped and autouse, so pytest sets it up after every session- and module-scoped fixture
(higher scopes first) and before the test's other function-scoped fixtures, and tears it down after
them. A broker of a module fixture exists before and after: not counted; a broker of a function
fixture must be stopped by that fixture's teardown: counted if it is not.

What it compares, with /proc and the interpreter only (well under a millisecond for a test that
starts no process):
- threads: ``threading.enumerate()`` (threads started outside ``threading`` are not seen); no
  library this suite uses keeps a thread of its own for the life of the process, so none is exempt;
- child processes: every ``/proc/<pid>/stat`` whose parent is this process (this kernel has no
  ``/proc/<pid>/task/*/children``), as (pid, start time) so a reused pid is a new process, scanned
  only when an audit event says a process may have been started; a zombie has exited and is not
  counted; grandchildren are not followed;
- sockets: the ``socket:[inode]`` entries of ``/proc/self/fd``, named from ``/proc/net``;
- asyncio tasks: the tasks still pending on the test's pytest-asyncio loop (function scope) after
  every async fixture's teardown, just before the loop is closed (closing would cancel them in
  silence). Tasks left on loops of ``asyncio.run`` inside a test are cancelled by ``asyncio.run``
  itself and are not seen.

Something that looks leaked gets a grace period: the test's fixture values are dropped and the
garbage collected (what only they held is freed a moment later anyway), then polling up to
``GRACE_S``, since threads and processes told to stop may take a moment. Only what is still there
fails the test, at teardown, with one line per leaked thing.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import ipaddress
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

GRACE_S = 2.0
"""How long something new may take to stop after the test's teardown before it counts as leaked
(the ini option ``leak_guard_grace_s`` changes it: tests/test_leak_guard.py shortens it)."""

# pytest-asyncio's fixture that owns the loop of a test with the default (function) loop scope.
# tests/test_leak_guard.py fails if a pytest-asyncio upgrade renames it (the task check would be lost).
FUNCTION_RUNNER_FIXTURE = "_function_scoped_runner"


@dataclass(frozen=True)
class Snapshot:
    """What this process holds at one moment."""

    threads: frozenset[threading.Thread]
    children: frozenset[tuple[int, int]]  # (pid, start time in clock ticks since boot)
    sockets: frozenset[tuple[int, str]]  # (fd, "socket:[inode]")

    def __sub__(self, before: Snapshot) -> Snapshot:
        return Snapshot(
            self.threads - before.threads, self.children - before.children, self.sockets - before.sockets
        )

    def __bool__(self) -> bool:
        return bool(self.threads or self.children or self.sockets)


def snapshot(*, fresh: bool = False) -> Snapshot:
    """What this process holds now; ``fresh`` scans /proc for children even if nothing was spawned."""
    return Snapshot(_threads(), _CHILDREN.current(fresh=fresh), _sockets())


def _threads() -> frozenset[threading.Thread]:
    return frozenset(
        t
        for t in threading.enumerate()
        # A _DummyThread stands for a thread started outside `threading` that once called into it;
        # it never leaves the list, alive or not, so it says nothing about a leak.
        if t.is_alive() and not isinstance(t, threading._DummyThread)
    )


def _stat_fields(pid: str) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None if it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return data[data.rindex(b")") + 2 :].split()


def _scan_children() -> frozenset[tuple[int, int]]:
    me = os.getpid()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        # proc(5): state is field 3, ppid field 4, starttime field 22.
        if fields is not None and int(fields[1]) == me and fields[0] != b"Z":
            found.add((int(entry), int(fields[19])))
    return frozenset(found)


# Audit events (PEP 578) raised by every way Python starts a process (asyncio's subprocesses go
# through subprocess.Popen); multiprocessing's "spawn" start method does not raise one, and nothing
# here uses it.
_SPAWN_EVENTS = frozenset(
    {"subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.system"}
)


class _ChildScan:
    """The children of this process, scanned again only after something may have spawned one.

    The scan reads every /proc/<pid>/stat (about 2 ms here, twice per test); without a spawn since
    the last scan no child can have appeared, so the last scan still holds every child there is."""

    def __init__(self) -> None:
        self.spawns = 0
        self._scanned_at = -1
        self._children: frozenset[tuple[int, int]] = frozenset()

    def audit(self, event: str, _args: tuple[object, ...]) -> None:
        if event in _SPAWN_EVENTS:
            self.spawns += 1

    def current(self, *, fresh: bool = False) -> frozenset[tuple[int, int]]:
        if fresh or self._scanned_at != self.spawns:
            spawns = self.spawns  # read first: a spawn during the scan makes the next call scan again
            self._children = _scan_children()
            self._scanned_at = spawns
        return self._children


_CHILDREN = _ChildScan()
sys.addaudithook(_CHILDREN.audit)  # for the life of the process: audit hooks cannot be removed


def _sockets() -> frozenset[tuple[int, str]]:
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own fd, among others)
            continue
        if target.startswith("socket:["):
            found.add((int(fd), target))
    return frozenset(found)


def _inet_address(hex_address: str) -> str:
    """``0100007F:1F90`` (/proc/net/tcp: each 32-bit word in host order) -> ``127.0.0.1:8080``."""
    host_hex, port_hex = hex_address.split(":")
    raw = b"".join(bytes.fromhex(host_hex[i : i + 8])[::-1] for i in range(0, len(host_hex), 8))
    host = ipaddress.ip_address(raw)
    return f"[{host}]:{int(port_hex, 16)}" if host.version == 6 else f"{host}:{int(port_hex, 16)}"


def _socket_names() -> dict[str, str]:
    """inode -> what the socket is (protocol and addresses), for the sockets of this network namespace."""
    names: dict[str, str] = {}
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/self/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            # "0A" is LISTEN for TCP (include/net/tcp_states.h); other states are not worth a name.
            state = " listening" if proto.startswith("tcp") and cols[3] == "0A" else ""
            names[cols[9]] = f"{proto} {_inet_address(cols[1])} -> {_inet_address(cols[2])}{state}"
    try:
        lines = Path("/proc/self/net/unix").read_text().splitlines()[1:]
    except OSError:
        lines = []
    for line in lines:
        cols = line.split()
        names[cols[6]] = f"unix {cols[7] if len(cols) > 7 else '(unnamed)'}"
    return names


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "(gone)"
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)[:200]


def describe(leaked: Snapshot) -> str:
    lines = []
    for t in sorted(leaked.threads, key=lambda t: t.name):
        lines.append(f"  thread {t.name!r}{' (daemon)' if t.daemon else ''}, still alive")
    for pid, _start in sorted(leaked.children):
        lines.append(f"  child process {pid}: {_cmdline(pid)}")
    names = _socket_names() if leaked.sockets else {}
    for fd, target in sorted(leaked.sockets):
        inode = target[len("socket:[") : -1]
        lines.append(f"  socket fd {fd}: {names.get(inode, target)}")
    return "\n".join(lines)


def _configured_grace_s(config: pytest.Config) -> float:
    return float(config.getini("leak_guard_grace_s"))


def wait_for_leaks(item: pytest.Item, before: Snapshot, grace_s: float) -> Snapshot:
    """What is new since ``before`` and still there after the grace period (empty at once if nothing)."""
    leaked = snapshot() - before
    if not leaked:
        return leaked
    # Every fixture of the test is torn down, but pytest drops their values only after this
    # teardown (runtestprotocol sets item.funcargs to None), and the traceback of a failed test
    # (kept in sys.last_traceback for post-mortem debugging) holds its locals: an object stopped by
    # its fixture and freed only when collected (paho closes a loop_start client's wake-up socket
    # pair in __del__) would look leaked. Drop them now, then collect: what is still there is held
    # by something else.
    funcargs = getattr(item, "funcargs", None)
    if funcargs:
        funcargs.clear()
    for name in ("last_type", "last_value", "last_traceback", "last_exc"):
        if hasattr(sys, name):
            delattr(sys, name)
    gc.collect()
    deadline = time.monotonic() + grace_s
    pause_s = 0.01
    while True:
        leaked = snapshot(fresh=True) - before  # a child that exits spawns nothing: scan for it
        if not leaked or time.monotonic() >= deadline:
            return leaked
        time.sleep(pause_s)
        pause_s = min(pause_s * 2, 0.1)


def _allowed(node: pytest.Item) -> bool:
    marker = node.get_closest_marker("allow_leaks")
    if marker is None:
        return False
    if not (marker.args and isinstance(marker.args[0], str) and marker.args[0].strip()):
        pytest.fail("@pytest.mark.allow_leaks needs the reason as its argument", pytrace=False)
    return True


@pytest.fixture(autouse=True)
def leak_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails the test at teardown if it left threads, child processes or sockets behind."""
    if _allowed(request.node):
        yield
        return
    before = snapshot()
    yield
    grace = _configured_grace_s(request.config)
    leaked = wait_for_leaks(request.node, before, grace)
    if leaked:
        pytest.fail(
            f"the test left behind, {grace:g} s after its teardown (stop what it starts; "
            f"tests/leak_guard.py):\n{describe(leaked)}",
            pytrace=False,
        )


def _check_tasks(loop: asyncio.AbstractEventLoop, grace_s: float) -> None:
    """Runs after the test and its async fixtures' teardowns, before pytest-asyncio closes ``loop``."""
    if loop.is_closed():
        return
    pending = asyncio.all_tasks(loop)
    if not pending:
        return
    # A task told to stop (cancelled, or waiting for something the teardown closed) finishes when
    # the loop runs again: the same grace as threads get.
    loop.run_until_complete(asyncio.wait(pending, timeout=grace_s))
    still = [t for t in pending if not t.done()]
    if still:
        lines = "\n".join(f"  task {t!r}" for t in still)
        pytest.fail(
            f"the test left asyncio tasks pending, {grace_s:g} s after its teardown (await or cancel "
            f"what it creates; tests/leak_guard.py):\n{lines}",
            pytrace=False,
        )


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> Any:
    __tracebackhide__ = True  # every fixture's setup passes here: not a frame worth showing
    runner = yield
    if fixturedef.argname == FUNCTION_RUNNER_FIXTURE and not _allowed(request.node):
        # Finalizers run last-in first-out: this one runs after those of the async fixtures (added
        # to this fixture when they were set up, later) and before the runner's own teardown, which
        # cancels whatever is still pending and closes the loop.
        check = functools.partial(_check_tasks, runner.get_loop(), _configured_grace_s(request.config))
        fixturedef.addfinalizer(check)
    return runner


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "leak_guard_grace_s",
        "seconds a new thread, process, socket or task may take to stop after a test's teardown",
        default=str(GRACE_S),
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "allow_leaks(reason): the leak guard does not check this test (the reason says why it must leak)",
    )
