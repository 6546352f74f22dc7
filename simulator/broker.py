"""A local mosquitto for a simulated run: the demo's, ``edgegw-sim city``'s and the tests' broker.

Owns one mosquitto process on a loopback port and its configuration file: start (returns once
it accepts TCP connections), stop (SIGTERM, which makes a persistent broker save its sessions)
and start again on the same port, which is what a ``broker_outage`` fault does. With
``persistent=True`` the broker keeps subscribers' sessions and their queued messages across a
restart, so a durable subscriber (clean session off, QoS 1) loses nothing of an outage.

It does not own subscribers or the agent (``simulator.citylab``). ``free_port`` is the one
free-loopback-port helper of the simulator, the tests and the benchmarks.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class MosquittoMissing(RuntimeError):
    """The mosquitto binary is not installed (``make demo`` / ``make test`` install it)."""


@dataclass
class Mosquitto:
    """mosquitto on ``host:port`` with its files in ``workdir``; ``start`` and ``stop`` repeatedly."""

    port: int
    workdir: Path
    persistent: bool = False
    proc: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def config_text(self) -> str:
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "max_inflight_messages 0",
            # Unbounded: a subscriber's queue must hold a whole outage's backlog (the default drops
            # past 1,000 messages, silently for QoS 1).
            "max_queued_messages 0",
            "log_type error",
            "log_type warning",
            f"log_dest file {self.workdir / 'mosquitto.log'}",
        ]
        if self.persistent:
            lines += [
                # Started as root, mosquitto drops to the user `mosquitto`, which cannot write the
                # persistence file into a private directory: sessions would be lost on restart.
                f"user {pwd.getpwuid(os.getuid()).pw_name}",
                "persistence true",
                f"persistence_location {self.workdir}/",
                "autosave_interval 1",
            ]
        else:
            lines.append("persistence false")
        return "\n".join(lines) + "\n"

    def start(self, timeout_s: float = 10.0) -> None:
        if not Path(MOSQUITTO).exists():
            raise MosquittoMissing("mosquitto is not installed (apt-get install mosquitto)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config_text())
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited at start: {err}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout_s} s")

    def stop(self) -> None:
        """SIGTERM (a persistent broker saves its sessions), SIGKILL after 5 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free on 127.0.0.1 right now (TCP by default, UDP with ``socket.SOCK_DGRAM``)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
