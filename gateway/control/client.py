"""Control socket client for the CLI (blocking: the CLI has no event loop).

Every failure to talk to the agent (no socket, refused, no answer in time, connection reset, an
answer that is not JSON) is ``AgentUnreachable`` with one readable line: the CLI prints it and
exits 1, never a traceback.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError


class AgentUnreachable(GatewayError):
    """The agent's control socket is missing or refuses the connection (the agent is not running?)."""


def _connect(path: Path, timeout_s: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        sock.close()
        raise AgentUnreachable(f"the agent is not running (no control socket at {path})") from exc
    except PermissionError as exc:
        sock.close()
        raise AgentUnreachable(
            f"permission denied on {path}: run as root or as a member of the edgegw group"
        ) from exc
    return sock


def request(path: Path, cmd: str, timeout_s: float = 5.0, **args: Any) -> dict[str, Any]:
    """One command, one answer."""
    with _connect(path, timeout_s) as sock:
        try:
            sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            with sock.makefile("rb") as stream:
                line = stream.readline()
        except TimeoutError as exc:
            raise AgentUnreachable(f"the agent did not answer {cmd!r} within {timeout_s:g} s") from exc
        except OSError as exc:  # reset or broken pipe: the agent stopped meanwhile
            raise AgentUnreachable(f"the control connection failed: {exc}") from exc
    if not line:
        raise AgentUnreachable("the agent closed the control connection without answering")
    answer = _decode(line)
    if not answer.get("ok"):
        raise GatewayError(f"agent: {answer.get('error', 'unknown error')}")
    return answer


def stream(
    path: Path, cmd: str, *, deadline_mono: float | None = None, **args: Any
) -> Iterator[dict[str, Any]]:
    """Events of a streaming command, until the caller stops iterating, the agent stops,
    or ``time.monotonic()`` reaches ``deadline_mono`` (then the iteration just ends)."""
    with _connect(path, None) as sock:
        sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        with sock.makefile("rb") as lines:
            first = _decode(lines.readline() or b'{"ok": false, "error": "no answer"}')
            if not first.get("ok"):
                raise GatewayError(f"agent: {first.get('error', 'unknown error')}")
            while True:
                if deadline_mono is not None:
                    left_s = deadline_mono - time.monotonic()
                    if left_s <= 0:
                        return
                    sock.settimeout(left_s)
                try:
                    line = lines.readline()
                except TimeoutError:
                    return
                except OSError:  # reset: the agent stopped, as when it closes the stream
                    return
                if not line:
                    return
                yield _decode(line)


def _decode(line: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(line)
    except ValueError as exc:
        raise AgentUnreachable(f"the control socket answered no JSON: {line[:80]!r}") from exc
    if not isinstance(doc, dict):
        raise AgentUnreachable(f"the control socket answered no JSON object: {line[:80]!r}")
    return doc
