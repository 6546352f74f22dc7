"""A second ``edgegw run`` on the same data_dir (issue 16 finding 8): before, it opened the database
and the outbox, failed on the UDP port and deleted the running agent's control socket, so every
technician view was dead until a restart. Now it stops at once on the data_dir lock, before it
touches anything, with one line naming the running agent's pid and exit code 3.

Real processes, a real mosquitto, real UDP and Unix sockets; kill -9 to show that the kernel
releases the lock of a dead agent (no stale lock ever blocks a start).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from gateway import instance_lock
from gateway.control import SOCKET_NAME
from gateway.control.server import ControlServer
from gateway.errors import AlreadyRunning
from simulator.forwarder import PacketForwarder
from tests.conftest import Broker
from tests.e2e.harness import (
    GATEWAY_EUI,
    GATEWAY_ID,
    AgentProcess,
    cli,
    em310,
    make_device,
    minimal_config,
    register_abp,
    up_records,
    wait_ready,
)

pytestmark = pytest.mark.e2e

SECOND_RUN_MAX_S = 5.0


def _run_second(config_file: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEGW_")}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(config_file)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    return done, time.monotonic() - started


def test_a_second_run_exits_at_once_and_the_first_keeps_serving(
    tmp_path: Path, mosquitto: Broker, free_udp_port: int, subscribe: Any
) -> None:
    config_file = minimal_config(tmp_path, free_udp_port, mosquitto.port)
    device = make_device(1)
    register_abp(config_file, device)
    data_dir = tmp_path / "data"
    sub = subscribe(f"edgegw/{GATEWAY_ID}/up")
    first = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", free_udp_port)) as fwd:
            wait_ready(fwd)
            control = data_dir / SOCKET_NAME
            inode = control.stat().st_ino
            second, elapsed_s = _run_second(config_file)
            print(f"\nsecond run: exit {second.returncode} after {elapsed_s:.2f} s: {second.stderr.strip()}")
            assert second.returncode == instance_lock.EXIT_ALREADY_RUNNING, second.stderr
            assert elapsed_s < SECOND_RUN_MAX_S
            message = second.stderr.strip().splitlines()
            assert len(message) == 1, second.stderr  # one line, no traceback
            assert f"pid {first.proc.pid}" in message[0] and instance_lock.LOCK_NAME in message[0]
            # The running agent's socket is the same file, and it answers.
            assert control.is_socket() and control.stat().st_ino == inode
            status = cli(config_file, "status", "--json")
            assert status.returncode == 0, status.stderr
            # And it still accepts frames.
            fwd.send_frames([(device.uplink(em310(77, 1500, False), 85), {})])
            sub.wait_for(lambda _m: len(up_records(sub)) >= 1)
            # kill -9: the kernel releases the lock; the socket file stays behind, stale.
            first.proc.kill()
            first.proc.wait(10)
        assert (data_dir / instance_lock.LOCK_NAME).read_text().strip() == str(first.proc.pid)
        third = AgentProcess(config_file)
        try:
            with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", free_udp_port)) as fwd:
                wait_ready(fwd)
                status = cli(config_file, "status", "--json")
                assert status.returncode == 0, status.stderr
        finally:
            assert third.stop() == 0
        assert (data_dir / instance_lock.LOCK_NAME).read_text().strip() == str(third.proc.pid)
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
            first.proc.wait(10)


async def test_the_control_server_never_removes_a_socket_that_answers(tmp_path: Path) -> None:
    path = tmp_path / SOCKET_NAME

    async def status(_req: dict[str, Any]) -> dict[str, Any]:
        return {"agent": "first"}

    first = ControlServer(path, {"status": status})
    await first.start()
    try:
        second = ControlServer(path, {})
        with pytest.raises(AlreadyRunning):
            await second.start()
        await second.stop()  # never started: must not remove the first one's socket
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b'{"cmd": "status"}\n')
        assert b'"agent":"first"' in await reader.readline()
        writer.close()
    finally:
        await first.stop()
    # A socket file nobody listens on (an agent killed with -9) is replaced.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    third = ControlServer(path, {"status": status})
    await third.start()
    try:
        _reader, writer = await asyncio.open_unix_connection(str(path))
        writer.close()
    finally:
        await third.stop()
    assert not path.exists()


def test_the_lock_is_handed_on_through_exec_and_released_at_exit(tmp_path: Path) -> None:
    """The base install exec()s another agent version: the version adopts the lock, no gap."""
    data_dir = tmp_path / "data"
    script = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        from gateway import instance_lock
        lock = instance_lock.acquire(Path({str(data_dir)!r}))
        env = dict(os.environ)
        lock.pass_on(env)
        code = (
            "import sys; from pathlib import Path; from gateway import instance_lock;"
            "lock = instance_lock.acquire(Path({str(data_dir)!r}));"
            "print('adopted', lock.fd, flush=True); sys.stdin.read()"
        )
        os.execve(sys.executable, [sys.executable, "-c", code], env)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("adopted"), line
        with pytest.raises(AlreadyRunning) as caught:
            instance_lock.acquire(data_dir)
        assert caught.value.pid == proc.pid  # execve keeps the pid, and the file says so
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
    lock = instance_lock.acquire(data_dir)  # released by the kernel at exit
    lock.release()
