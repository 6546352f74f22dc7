"""MicroPython's raw REPL over a byte stream: the framing (pure) and one session over a serial port.

The protocol (MicroPython docs, "The MicroPython Interactive Interpreter Mode (aka REPL)", section
"Raw mode and raw-paste mode"; the same as ``tools/pyboard.py``):

* ``\\r\\x03\\x03`` interrupts a running program; ``\\r\\x01`` (Ctrl-A) enters the raw REPL, which
  answers ``raw REPL; CTRL-B to exit\\r\\n>``;
* code is sent as text, then ``\\x04`` (Ctrl-D) runs it: the board answers ``OK``, the program's
  stdout, ``\\x04``, its stderr (a traceback), ``\\x04``, then the prompt ``>``;
* ``\\r\\x02`` (Ctrl-B) goes back to the friendly REPL.

``parse_exec_reply`` is pure (bytes in, reply or "need more" out); ``RawRepl`` drives it over any
object with pyserial's ``write``/``read``/``reset_input_buffer``. It does not know about files or
firmware (``gateway.provisioning.node``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

from gateway.errors import NodeError

log = logging.getLogger(__name__)

INTERRUPT = b"\r\x03\x03"
ENTER_RAW = b"\r\x01"
EXIT_RAW = b"\r\x02"
RUN = b"\x04"
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n>"
# Real boards have small UART buffers: pyboard.py writes code in 256-byte pieces with a pause.
WRITE_CHUNK_BYTES = 256
WRITE_PAUSE_S = 0.01


@dataclass(frozen=True, slots=True)
class ExecReply:
    """What one ``exec`` printed: stdout, stderr (non-empty means an exception), bytes consumed."""

    stdout: bytes
    stderr: bytes
    consumed: int


def exec_request(code: str) -> bytes:
    """The bytes that run ``code`` in the raw REPL (the code then Ctrl-D)."""
    raw = code.encode("utf-8")
    if b"\x04" in raw or b"\x01" in raw or b"\x02" in raw or b"\x03" in raw:
        raise ValueError("code must not contain raw-REPL control characters")
    return raw + RUN


def parse_exec_reply(buf: bytes) -> ExecReply | None:
    """Parse ``OK<stdout>\\x04<stderr>\\x04>``; None while incomplete, NodeError when not that."""
    if len(buf) < 2:
        return None if b"OK".startswith(buf) else _not_ok(buf)
    if not buf.startswith(b"OK"):
        return _not_ok(buf)
    end_out = buf.find(RUN, 2)
    if end_out < 0:
        return None
    end_err = buf.find(RUN, end_out + 1)
    if end_err < 0 or len(buf) < end_err + 2:
        return None
    if buf[end_err + 1 : end_err + 2] != b">":
        raise NodeError(f"raw REPL: expected the '>' prompt after a reply, got {buf[end_err + 1 :][:20]!r}")
    return ExecReply(stdout=buf[2:end_out], stderr=buf[end_out + 1 : end_err], consumed=end_err + 2)


def _not_ok(buf: bytes) -> ExecReply:
    # The board did not accept the code (usually: it is not in the raw REPL any more).
    raise NodeError(f"raw REPL: the node did not accept the code (answered {buf[:40]!r})")


class SerialLike(Protocol):
    """The part of ``serial.Serial`` used here (``timeout`` set by the caller)."""

    def write(self, data: bytes, /) -> int | None: ...

    def read(self, size: int = 1, /) -> bytes: ...

    def reset_input_buffer(self) -> None: ...


class RawRepl:
    """One raw-REPL session: ``enter()``, then ``exec(code)`` any number of times, then ``leave()``."""

    def __init__(
        self, port: SerialLike, *, timeout_s: float = 5.0, write_pause_s: float = WRITE_PAUSE_S
    ) -> None:
        self._port = port
        self.timeout_s = timeout_s
        self.write_pause_s = write_pause_s

    def enter(self) -> None:
        """Interrupt whatever runs and enter the raw REPL; NodeError when the node does not answer."""
        self._port.write(INTERRUPT)
        time.sleep(0.05)
        self._port.reset_input_buffer()
        self._port.write(ENTER_RAW)
        self._read_until(RAW_BANNER, "entering the raw REPL (Ctrl-A)")

    def exec(self, code: str) -> str:
        """Run ``code``; its stdout as text. NodeError with the node's traceback when it raised."""
        request = exec_request(code)
        for start in range(0, len(request), WRITE_CHUNK_BYTES):
            self._port.write(request[start : start + WRITE_CHUNK_BYTES])
            if len(request) > WRITE_CHUNK_BYTES and self.write_pause_s > 0:
                time.sleep(self.write_pause_s)
        buf = b""
        deadline = time.monotonic() + self.timeout_s
        while True:
            reply = parse_exec_reply(buf)
            if reply is not None:
                break
            if time.monotonic() >= deadline:
                raise NodeError(f"no reply from the node within {self.timeout_s:g} s (got {len(buf)} bytes)")
            buf += self._port.read(max(1, self._port_waiting()))
        if reply.stderr:
            # Only the last traceback line: the code itself may carry keys and is never echoed.
            last = reply.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
            raise NodeError(f"the node raised: {last[0] if last else '?'}")
        return reply.stdout.decode("utf-8", "replace")

    def leave(self) -> None:
        self._port.write(EXIT_RAW)

    def _port_waiting(self) -> int:
        waiting = getattr(self._port, "in_waiting", 0)
        return int(waiting) if isinstance(waiting, int) else 0

    def _read_until(self, marker: bytes, what: str) -> bytes:
        buf = b""
        deadline = time.monotonic() + self.timeout_s
        while not buf.endswith(marker):
            if time.monotonic() >= deadline:
                raise NodeError(
                    f"no answer from the node while {what} within {self.timeout_s:g} s"
                    + (f" (got {buf[-40:]!r})" if buf else " (nothing received)")
                )
            buf += self._port.read(1)
        log.debug("raw REPL: %s done", what)
        return buf
