"""``edgegw-sim run`` says how far it is while it plays (issue 19): simulated time, frames sent, ETA.

The run is a real subprocess against a real UDP socket that answers like a packet forwarder's
server (PUSH_ACK, PULL_ACK: Semtech's PROTOCOL.TXT); its stderr is a pty (a terminal) or a pipe.
"""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.cli import RunProgress

FLOOD_DAY = Path(__file__).resolve().parents[2] / "simulator" / "scenarios" / "flood-day.yaml"
SPEED = "20000"  # the day in about 4 s: long enough to be seen running


@pytest.fixture
def server() -> Iterator[int]:
    """A UDP port acknowledging PUSH_DATA and PULL_DATA, as the agent's Semtech backend does."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(65535)
            except TimeoutError:
                continue
            if len(data) >= 4 and data[3] in (0x00, 0x02):  # PUSH_DATA → PUSH_ACK, PULL_DATA → PULL_ACK
                sock.sendto(data[:3] + bytes([0x01 if data[3] == 0x00 else 0x04]), addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join(5)
    sock.close()


def sim_run(port: int, *extra: str, stderr: int) -> subprocess.Popen[bytes]:
    argv = ["run", "--scenario", str(FLOOD_DAY), "--target", f"127.0.0.1:{port}", "--speed", SPEED, *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "simulator.cli", *argv], stdout=subprocess.PIPE, stderr=stderr
    )


@pytest.mark.timeout(60)
def test_on_a_terminal_the_line_counts_frames_while_the_run_goes_on(server: int) -> None:
    main_fd, tty_fd = pty.openpty()
    proc = sim_run(server, "--json", stderr=tty_fd)
    os.close(tty_fd)
    seen, seen_while_running = b"", False
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            if not select.select([main_fd], [], [], 0.5)[0]:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(main_fd, 65536)
            except OSError:  # the terminal closed with the process (EIO on Linux)
                break
            if not chunk:
                break
            seen += chunk
            last = seen.decode(errors="replace").split("\r")[-1]
            if "frames sent" in last and " 0 frames sent" not in last and proc.poll() is None:
                seen_while_running = True
        out, _ = proc.communicate(timeout=30)
    finally:
        os.close(main_fd)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = seen.decode(errors="replace")
    assert seen_while_running, text
    assert "edgegw-sim run flood-day: simulated" in text and "ETA" in text and "\r" in text
    assert json.loads(out)["frames"]["reading"] == 863  # --json unchanged


@pytest.mark.timeout(60)
def test_piped_the_progress_is_lines_and_quiet_silences_it(server: int) -> None:
    proc = sim_run(server, "--json", stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=45)
    assert proc.returncode == 0, err
    lines = err.decode().splitlines()
    assert lines and all(line.startswith("edgegw-sim run flood-day: simulated") for line in lines), lines
    assert b"\r" not in err and b"\x1b" not in err
    assert json.loads(out)["no_push_acks"] == 0
    quiet = sim_run(server, "--quiet", stderr=subprocess.PIPE)
    out, err = quiet.communicate(timeout=45)
    assert quiet.returncode == 0 and err == b"" and out.startswith(b"scenario flood-day")


def test_eta_follows_the_pace_or_the_slower_rate_seen() -> None:
    line = RunProgress("day", 86_400.0, 3600.0)
    assert line.eta_s(0.0) == 24.0
    line.simulated_s = 43_200.0  # half the day after 6 s: on pace
    assert line.eta_s(6.0) == 18.0
    assert line.eta_s(20.0) == 20.0  # behind the pace: the rate seen, 20 s per half day
    assert "simulated 12:00:00/24:00:00, ETA 20 s" in line.describe(20.0)
