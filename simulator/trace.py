"""Record and replay Semtech UDP traffic as JSONL.

Owns the trace format and the two loops that use it. ``record`` is a UDP relay between packet
forwarders and a server: every datagram in either direction is written as one line
``{"t": seconds since the start, "dir": "up" | "down", "peer": N, "data": base64}`` (``peer``
numbers each forwarder socket in the order it was first heard, so a replay keeps the up and
down sockets of one forwarder apart) and passed on unchanged. ``replay`` sends the ``up``
datagrams of a trace to a server at their recorded times divided by ``speed``, one socket per
recorded peer, and counts the answers.

It does not parse the datagrams (``gateway.radio.semtech_udp.packets`` does, at the server).
"""

from __future__ import annotations

import base64
import json
import logging
import selectors
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger(__name__)

_MAX_DATAGRAM = 65_535


@dataclass(frozen=True, slots=True)
class TraceLine:
    t_s: float
    direction: str
    peer: int
    data: bytes

    def to_json(self) -> str:
        return json.dumps(
            {
                "t": round(self.t_s, 6),
                "dir": self.direction,
                "peer": self.peer,
                "data": base64.b64encode(self.data).decode(),
            }
        )


def read_trace(path: Path) -> Iterator[TraceLine]:
    """The lines of a trace file; a malformed line raises ValueError naming its number."""
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                doc: dict[str, Any] = json.loads(line)
                yield TraceLine(
                    float(doc["t"]), str(doc["dir"]), int(doc["peer"]), base64.b64decode(doc["data"])
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: not a trace line: {exc}") from exc


def record(listen: tuple[str, int], target: tuple[str, int], out: TextIO, duration_s: float) -> int:
    """Relay forwarders at ``listen`` to the server at ``target`` for ``duration_s``; returns the lines."""
    selector = selectors.DefaultSelector()
    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.bind(listen)
    selector.register(front, selectors.EVENT_READ, None)
    peers: dict[Any, tuple[int, socket.socket]] = {}
    started = time.monotonic()
    lines = 0
    try:
        while (remaining := started + duration_s - time.monotonic()) > 0:
            for key, _ in selector.select(min(remaining, 0.5)):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                data, addr = sock.recvfrom(_MAX_DATAGRAM)
                now = time.monotonic() - started
                if key.data is None:  # from a forwarder: relay to the server on its own socket
                    if addr not in peers:
                        upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        upstream.connect(target)
                        peers[addr] = (len(peers), upstream)
                        selector.register(upstream, selectors.EVENT_READ, addr)
                    peer, upstream = peers[addr]
                    out.write(TraceLine(now, "up", peer, data).to_json() + "\n")
                    upstream.send(data)
                else:  # from the server: back to the forwarder that owns this socket
                    peer, _ = peers[key.data]
                    out.write(TraceLine(now, "down", peer, data).to_json() + "\n")
                    front.sendto(data, key.data)
                lines += 1
    finally:
        selector.close()
        front.close()
        for _, upstream in peers.values():
            upstream.close()
    return lines


@dataclass
class ReplaySummary:
    sent: int = 0
    answers: int = 0
    wall_s: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {"sent": self.sent, "answers": self.answers, "wall_s": round(self.wall_s, 3)}


def replay(path: Path, target: tuple[str, int], speed: float = 1.0, linger_s: float = 0.5) -> ReplaySummary:
    """Send a trace's ``up`` datagrams to ``target`` at their times / ``speed``."""
    summary = ReplaySummary()
    sockets: dict[int, socket.socket] = {}
    selector = selectors.DefaultSelector()
    started = time.monotonic()

    def drain(timeout_s: float) -> None:
        for key, _ in selector.select(timeout_s):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            try:
                sock.recv(_MAX_DATAGRAM)
                summary.answers += 1
            except ConnectionRefusedError:
                pass

    try:
        for line in read_trace(path):
            if line.direction != "up":
                continue
            for _ in range(1_000_000):
                remaining = started + line.t_s / speed - time.monotonic()
                if remaining <= 0:
                    break
                drain(min(remaining, 0.05))
            if line.peer not in sockets:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.connect(target)
                sockets[line.peer] = sock
                selector.register(sock, selectors.EVENT_READ)
            sockets[line.peer].send(line.data)
            summary.sent += 1
            drain(0)
        deadline = time.monotonic() + linger_s
        while time.monotonic() < deadline:
            drain(max(0.0, deadline - time.monotonic()))
    finally:
        selector.close()
        for sock in sockets.values():
            sock.close()
    summary.wall_s = time.monotonic() - started
    return summary
