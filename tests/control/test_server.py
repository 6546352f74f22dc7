"""ControlServer bounds over a real Unix socket: connection cap, idle eviction and timeout,
request size, clean close (no traceback) when the agent stops with connections open."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.control.server import MAX_REQUEST_BYTES, ControlServer

TIMEOUT_S = 2.0


async def _status(_req: dict[str, Any]) -> dict[str, Any]:
    return {"state": "running"}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ControlServer]:
    srv = ControlServer(tmp_path / "control.sock", {"status": _status}, max_connections=4, idle_timeout_s=0.5)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def _connect(srv: ControlServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(str(srv.path))


async def _ask(srv: ControlServer, doc: dict[str, Any]) -> dict[str, Any]:
    reader, writer = await _connect(srv)
    try:
        writer.write(json.dumps(doc).encode() + b"\n")
        answer: dict[str, Any] = json.loads(await asyncio.wait_for(reader.readline(), TIMEOUT_S))
        return answer
    finally:
        writer.close()


async def _line(reader: asyncio.StreamReader) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(await asyncio.wait_for(reader.readline(), TIMEOUT_S))
    return doc


async def test_idle_connections_make_room_for_a_new_query(server: ControlServer) -> None:
    idle = [await _connect(server) for _ in range(4)]
    await asyncio.sleep(0.05)
    assert server.open_connections == 4
    assert await _ask(server, {"cmd": "status"}) == {"ok": True, "state": "running"}
    # The oldest idle one was closed with a reason, the others are still open.
    assert (await _line(idle[0][0]))["error"].startswith("closed: idle")
    assert server.counters["idle_evicted"] == 1
    for _, writer in idle:
        writer.close()


async def test_when_every_connection_is_busy_a_new_one_is_refused_at_once(server: ControlServer) -> None:
    streams = []
    for _ in range(4):
        reader, writer = await _connect(server)
        writer.write(b'{"cmd": "tail"}\n')
        assert await _line(reader) == {"ok": True, "stream": "tail"}
        streams.append((reader, writer))
    reader, writer = await _connect(server)
    answer = await _line(reader)
    assert answer["ok"] is False and answer["error"].startswith("busy")
    assert await asyncio.wait_for(reader.read(), TIMEOUT_S) == b""  # closed by the server
    assert server.counters["refused_busy"] == 1
    # Streams are not idle: they are still served.
    server.publish("tail", {"n": 1})
    assert [await _line(r) for r, _ in streams] == [{"n": 1}] * 4
    for _, w in [*streams, (reader, writer)]:
        w.close()


async def test_a_silent_client_is_closed_after_the_idle_timeout(server: ControlServer) -> None:
    reader, writer = await _connect(server)
    assert await asyncio.wait_for(reader.read(), TIMEOUT_S) == b""
    assert server.counters["idle_timeout"] == 1
    assert server.open_connections == 0
    writer.close()


async def test_a_request_longer_than_the_limit_is_refused(server: ControlServer) -> None:
    answer = await _ask(server, {"cmd": "status", "pad": "x" * MAX_REQUEST_BYTES})
    assert answer["ok"] is False and "longer than" in answer["error"]
    assert await _ask(server, {"cmd": "status"}) == {"ok": True, "state": "running"}


async def test_stopping_with_open_connections_leaves_no_task_and_no_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    srv = ControlServer(tmp_path / "c.sock", {"status": _status}, max_connections=8, idle_timeout_s=30)
    await srv.start()
    clients = [await _connect(srv) for _ in range(6)]
    reader, writer = await _connect(srv)
    writer.write(b'{"cmd": "tail"}\n')
    await _line(reader)
    before = asyncio.all_tasks()
    await srv.stop()
    await asyncio.sleep(0.05)
    assert srv.open_connections == 0
    assert not [t for t in asyncio.all_tasks() - before if not t.done()]
    for _, w in [*clients, (reader, writer)]:
        w.close()
    await asyncio.sleep(0.05)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors


async def _refuse(req: dict[str, Any]) -> dict[str, Any]:
    raise ValueError(f"{req.get('dev_eui')} is not registered")


async def _bug(_req: dict[str, Any]) -> dict[str, Any]:
    raise KeyError("a query's bug")


async def test_a_query_that_raises_is_answered_and_a_nested_request_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    srv = ControlServer(tmp_path / "control.sock", {"status": _status, "device": _refuse, "bug": _bug})
    await srv.start()
    try:
        refused = await _ask(srv, {"cmd": "device", "dev_eui": "0000000000000001"})
        assert refused == {"ok": False, "error": "0000000000000001 is not registered"}
        failed = await _ask(srv, {"cmd": "bug"})
        assert failed["ok"] is False and "KeyError" in failed["error"]
        reader, writer = await _connect(srv)
        writer.write(b"[" * 3000 + b"\n")  # json.loads recurses: RecursionError, not a traceback
        nested = await _line(reader)
        writer.close()
        assert nested["ok"] is False
        assert (await _ask(srv, {"cmd": "status"}))["ok"] is True
    finally:
        await srv.stop()
    assert srv.counters["query_failed"] == 1 and srv.counters["bad_request"] == 1
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
