"""Record and replay of Semtech UDP traffic (simulator/trace.py) between real sockets.

A forwarder (simulator/forwarder.py) talks to the agent's real Semtech UDP backend through the
recording relay; the trace is then replayed into a second backend, which must see the same frames.
Datagram layouts: Semtech PROTOCOL.TXT (lora_gateway / packet_forwarder), §3 and §5.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from pathlib import Path

import pytest

from gateway.radio.semtech_udp.backend import SemtechUdpBackend
from simulator.forwarder import PacketForwarder
from simulator.trace import read_trace, record, replay
from tests.conftest import free_port
from tests.e2e.harness import GATEWAY_EUI, make_device


async def test_a_recorded_trace_replays_the_same_frames(tmp_path: Path) -> None:
    first = SemtechUdpBackend("127.0.0.1", 0)
    await first.start()
    listen = ("127.0.0.1", free_port(socket.SOCK_DGRAM))
    trace = tmp_path / "trace.jsonl"
    device = make_device(1)
    frames = [device.uplink(bytes([1, 0x75, 90 - n]), 85) for n in range(5)]

    def forwarder_session() -> tuple[int, bool]:
        acked = 0
        with PacketForwarder(GATEWAY_EUI, listen) as fwd:
            pulled = fwd.pull(2.0)
            for phy in frames:
                acked += fwd.wait_ack(fwd.send_frames([(phy, {})]), 2.0)
        return acked, pulled

    try:
        with trace.open("w") as out:
            recorder = threading.Thread(
                target=record, args=(listen, ("127.0.0.1", first.bound_port), out, 1.5)
            )
            recorder.start()
            await asyncio.sleep(0.1)
            acked, pulled = await asyncio.to_thread(forwarder_session)
            await asyncio.to_thread(recorder.join, 5)
    finally:
        await first.stop()
    assert acked == 5 and pulled and first.counters["frames"] == 5

    lines = list(read_trace(trace))
    assert [line.direction for line in lines].count("up") == 6  # PULL_DATA + 5 PUSH_DATA
    assert [line.direction for line in lines].count("down") == 6  # PULL_ACK + 5 PUSH_ACK
    assert len({line.peer for line in lines}) == 2  # the forwarder's up and down sockets
    assert all(b - a >= 0 for a, b in zip([x.t_s for x in lines], [x.t_s for x in lines][1:], strict=False))

    second = SemtechUdpBackend("127.0.0.1", 0)
    await second.start()
    try:
        summary = await asyncio.to_thread(replay, trace, ("127.0.0.1", second.bound_port), 100.0, 0.3)
    finally:
        await second.stop()
    assert summary.sent == 6 and summary.answers == 6
    assert second.counters["frames"] == 5


def test_a_broken_trace_line_is_named(tmp_path: Path) -> None:
    trace = tmp_path / "bad.jsonl"
    trace.write_text(json.dumps({"t": 0, "dir": "up", "peer": 0, "data": "AAE="}) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not a trace line"):
        list(read_trace(trace))
