"""Control socket server: answers status queries and streams frame events.

Owns the socket file, the line protocol, the connection bounds and per-connection
bounded queues for streams (a slow `edgegw tail` loses events, counted, and never
slows the pipeline). What a command answers is given by the composition root as
plain callables, so this module knows nothing of the stages.

Bounds: at most ``max_connections`` at once. A new connection over the cap closes
the oldest one that has not sent its request yet; when every connection is busy
(a query or a stream), the new one gets one JSON error line and is closed at once.
A request line is at most ``MAX_REQUEST_BYTES``, sent within ``idle_timeout_s``; a
client has ``idle_timeout_s`` to take an answer or a stream event. A client that goes
away (reset, broken pipe, timeout) is counted in ``counters`` and logged at DEBUG
only: it is the client's business, not the agent's. No connection ever ends in a
traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from gateway.errors import AlreadyRunning
from gateway.loglimit import RateLimitedLog

log = logging.getLogger(__name__)

Query = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
STREAM_QUEUE = 1000
MAX_REQUEST_BYTES = 4096
# A technician runs a command or two at a time, `edgegw tail` in another terminal, and
# a monitoring script: 32 leaves room for all of them and bounds the file descriptors
# and tasks a local misbehaving client can take.
MAX_CONNECTIONS: Final = 32
# The CLI sends its request as soon as it is connected; 30 s is generous for a human
# typing into socat and short enough that idle connections cannot pile up.
IDLE_TIMEOUT_S: Final = 30.0


class ControlServer:
    """Serve ``queries`` (one answer) and ``streams`` (events pushed by ``publish``).

    ``counters``: ``connections`` (accepted), ``idle_evicted`` (an idle connection closed to
    make room for a new one), ``refused_busy`` (``max_connections`` busy with queries or
    streams), ``idle_timeout`` (no request, or an answer not taken, within
    ``idle_timeout_s``), ``client_gone`` (reset or broken pipe), ``bad_request``.
    """

    def __init__(
        self,
        path: Path,
        queries: dict[str, Query],
        streams: tuple[str, ...] = ("tail",),
        *,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        self.path = path
        self._queries = queries
        self._streams = set(streams)
        self._subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {name: set() for name in streams}
        self._server: asyncio.AbstractServer | None = None
        self._max_connections = max_connections
        self._idle_timeout_s = idle_timeout_s
        self._connections: set[asyncio.Task[Any]] = set()
        # Connections that have not sent their request yet, oldest first (dict as ordered set).
        self._idle: dict[asyncio.Task[Any], None] = {}
        self._evicted: set[asyncio.Task[Any]] = set()
        self._log = RateLimitedLog(log, interval_s=60.0)
        self.counters: Counter[str] = Counter()
        self.dropped_events = 0

    async def start(self) -> None:
        """Listen on ``path``; a socket file left by a killed agent is replaced, a live one never.

        Raises ``AlreadyRunning`` when another agent answers on ``path`` (the data_dir lock
        should have stopped that agent earlier: this is the second guard, for the technicians'
        only window into the running agent).
        """
        if await _answers(self.path):
            raise AlreadyRunning(f"another agent answers on {self.path}; its control socket is left alone")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket: nobody listens on it
        old_umask = os.umask(0o117)  # created 0660 atomically: no window where others could connect
        try:
            # limit: readline refuses a longer line itself, so a request is never buffered past it.
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_REQUEST_BYTES
            )
        finally:
            os.umask(old_umask)

    async def stop(self) -> None:
        if self._server is None:
            return  # never started (or refused to): the socket file is not ours to remove
        self._server.close()
        # Open connections outlive close() (asyncio): end them so no task is left pending.
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    @property
    def subscribers(self) -> dict[str, int]:
        """Clients reading each stream now (``edgegw tail``, ``device verify``, ``radio test``)."""
        return {name: len(queues) for name, queues in self._subscribers.items()}

    def publish(self, stream: str, event: dict[str, Any]) -> None:
        """Hand an event to every subscriber of ``stream`` (on the loop; never blocks)."""
        for queue in self._subscribers.get(stream, ()):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self.dropped_events += 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # a stream handler always runs in its own task
        if len(self._connections) >= self._max_connections and not self._evict_idle():
            self.counters["refused_busy"] += 1
            self._log.warn(
                "busy",
                "control socket: connection refused, %d already busy (at most %d)",
                len(self._connections),
                self._max_connections,
            )
            # The answer fits the socket buffer: write it without waiting for the client.
            writer.write(_line({"ok": False, "error": "busy: too many control connections, try again"}))
            await self._close(writer)
            return
        self._connections.add(task)
        self._idle[task] = None
        self.counters["connections"] += 1
        try:
            await self._handle(reader, writer, task)
        except TimeoutError:
            self.counters["idle_timeout"] += 1
            log.debug("control socket: client idle for %.0f s, closed", self._idle_timeout_s)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            self.counters["client_gone"] += 1
            log.debug("control socket: client went away: %s", exc)
        except asyncio.CancelledError:
            # Evicted (idle while the socket is full) or the agent stops. Not re-raised:
            # Python 3.11's StreamReaderProtocol calls task.exception() on the handler task
            # when it ends, which raises for a cancelled task and logs a traceback per
            # connection (583 idle connections, 583 ERROR tracebacks at shutdown).
            task.uncancel()
            if task in self._evicted:
                self.counters["idle_evicted"] += 1
                writer.write(_line({"ok": False, "error": "closed: idle while the control socket is full"}))
        finally:
            self._connections.discard(task)
            self._idle.pop(task, None)
            self._evicted.discard(task)
            await self._close(writer)

    def _evict_idle(self) -> bool:
        """Close the oldest connection that has not sent its request yet, to make room.

        Idle connections cannot lock technicians out: a new `edgegw status` always gets a
        place unless every connection is busy with a query or a stream.
        """
        for task in self._idle:
            del self._idle[task]
            self._connections.discard(task)
            self._evicted.add(task)
            task.cancel()
            return True
        return False

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, task: asyncio.Task[Any]
    ) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), self._idle_timeout_s)
        except ValueError:  # readline's LimitOverrunError: longer than MAX_REQUEST_BYTES
            self.counters["bad_request"] += 1
            await self._send(writer, {"ok": False, "error": f"request longer than {MAX_REQUEST_BYTES} bytes"})
            return
        finally:
            self._idle.pop(task, None)  # from here on it is busy, not idle
        try:
            request = json.loads(line or b"{}")
            if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
                raise ValueError('expected {"cmd": NAME, ...}')
        except (ValueError, RecursionError) as exc:  # JSONDecodeError; RecursionError: "[[[[..."
            self.counters["bad_request"] += 1
            await self._send(writer, {"ok": False, "error": str(exc)[:200]})
            return
        cmd = request["cmd"]
        if cmd in self._streams:
            await self._stream(cmd, reader, writer)
        elif cmd in self._queries:
            try:
                answer = await self._queries[cmd](request)
            except ValueError as exc:  # the request's own fault: a bad or unregistered DevEUI...
                await self._send(writer, {"ok": False, "error": str(exc)[:200]})
                return
            except Exception as exc:  # a query's bug: answered and counted, never an unread traceback
                self.counters["query_failed"] += 1
                self._log.error("query_failed", "control query %s failed: %r", cmd[:64], exc)
                await self._send(writer, {"ok": False, "error": f"{cmd} failed: {exc!r}"[:200]})
                return
            await self._send(writer, {"ok": True, **answer})
        else:
            known = sorted([*self._queries, *self._streams])
            await self._send(writer, {"ok": False, "error": f"unknown command {cmd[:64]!r} (known: {known})"})

    async def _stream(self, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A stream has no idle timeout while its client reads: events may be minutes apart.
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(STREAM_QUEUE)
        self._subscribers[name].add(queue)
        closed = asyncio.create_task(reader.read())  # EOF when the client goes away
        getter: asyncio.Task[dict[str, Any]] | None = None
        try:
            await self._send(writer, {"ok": True, "stream": name})
            while True:
                getter = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
                if closed in done:
                    return
                await self._send(writer, getter.result())
        finally:
            self._subscribers[name].discard(queue)
            for pending in (getter, closed):
                if pending is not None and not pending.done():
                    pending.cancel()
            # Collected here, so that no task is left pending (or its error unread) at shutdown.
            await asyncio.gather(*(t for t in (getter, closed) if t is not None), return_exceptions=True)

    async def _send(self, writer: asyncio.StreamWriter, doc: dict[str, Any]) -> None:
        writer.write(_line(doc))
        # A client that does not read its answer is an idle one.
        await asyncio.wait_for(writer.drain(), self._idle_timeout_s)

    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> None:
        writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)


def _line(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


async def _answers(path: Path, timeout_s: float = 1.0) -> bool:
    """True when something accepts a connection on the Unix socket ``path`` (a live agent)."""
    if not path.is_socket():
        return False
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), timeout_s)
    except (ConnectionRefusedError, FileNotFoundError):
        return False  # nobody listens: a socket file left by a killed agent
    except (BlockingIOError, TimeoutError):
        return True  # a listener whose backlog is full is alive: never remove its socket
    except OSError:
        return False  # cannot tell (e.g. no permission); binding will say what is wrong
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
