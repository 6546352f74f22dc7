"""Control socket server: answers status queries and streams frame events.

Owns the socket file, the line protocol and per-connection bounded queues for
streams (a slow `edgegw tail` loses events, counted, and never slows the
pipeline). What a command answers is given by the composition root as plain
callables, so this module knows nothing of the stages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Query = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
STREAM_QUEUE = 1000
MAX_REQUEST_BYTES = 4096


class ControlServer:
    """Serve ``queries`` (one answer) and ``streams`` (events pushed by ``publish``)."""

    def __init__(self, path: Path, queries: dict[str, Query], streams: tuple[str, ...] = ("tail",)) -> None:
        self.path = path
        self._queries = queries
        self._streams = set(streams)
        self._subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {name: set() for name in streams}
        self._server: asyncio.AbstractServer | None = None
        self.dropped_events = 0

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a socket left by a killed agent
        old_umask = os.umask(0o117)  # created 0660 atomically: no window where others could connect
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old_umask)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def publish(self, stream: str, event: dict[str, Any]) -> None:
        """Hand an event to every subscriber of ``stream`` (on the loop; never blocks)."""
        for queue in self._subscribers.get(stream, ()):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self.dropped_events += 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            if len(line) > MAX_REQUEST_BYTES:
                raise ValueError("request too long")
            request = json.loads(line or b"{}")
            if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
                raise ValueError('expected {"cmd": NAME, ...}')
            cmd = request["cmd"]
            if cmd in self._streams:
                await self._stream(cmd, reader, writer)
            elif cmd in self._queries:
                await self._send(writer, {"ok": True, **(await self._queries[cmd](request))})
            else:
                known = sorted([*self._queries, *self._streams])
                await self._send(writer, {"ok": False, "error": f"unknown command {cmd!r} (known: {known})"})
        except (ValueError, json.JSONDecodeError) as exc:
            await self._send(writer, {"ok": False, "error": str(exc)})
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _stream(self, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(STREAM_QUEUE)
        self._subscribers[name].add(queue)
        closed = asyncio.create_task(reader.read())  # EOF when the client goes away
        try:
            await self._send(writer, {"ok": True, "stream": name})
            while True:
                getter = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
                if closed in done:
                    getter.cancel()
                    return
                await self._send(writer, getter.result())
        finally:
            self._subscribers[name].discard(queue)
            closed.cancel()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, doc: dict[str, Any]) -> None:
        writer.write(json.dumps(doc, separators=(",", ":")).encode() + b"\n")
        await writer.drain()
