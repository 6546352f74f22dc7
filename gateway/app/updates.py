"""Agent updates from the central platform, bound to narrow callables (docs/fleet.md "Agent updates").

Owns what happens between the ``update_agent`` command (it announces a package: version, SHA-256,
size) and the switch: the chunks received on ``<prefix>/<id>/update/<sha256>/<index>/<count>``
and their reassembly (bounded: a command is verified on the loop, its chunks may overtake it),
installing and switching to the package (a graceful restart, exit 75), the health check of a
version on trial (the broker reached, and radio frames again if they were flowing before the
switch, within ``fleet.update_check_s``), confirming or rolling back, and the retained
``update-state`` report. The files and the decisions about them belong to
``gateway.fleet.updates``; choosing the version at start-up to ``gateway.cli.run_cmd``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway import __version__
from gateway.clock import iso_utc
from gateway.errors import CommandRejected, UplinkError
from gateway.fleet.update_transfer import MAX_CHUNK_BYTES, MAX_CHUNKS
from gateway.fleet.updates import MAX_PACKAGE_BYTES, Updates

__all__ = ["MAX_CHUNKS", "MAX_CHUNK_BYTES", "AgentUpdater", "UpdateLinks"]

log = logging.getLogger(__name__)

RECENT_FRAME_S = 120.0
""""Frames are flowing": a device heard within this long."""
MAX_PACKAGES_HELD = 3
HEALTH_POLL_S = 0.2


@dataclass(frozen=True, slots=True)
class UpdateLinks:
    """What the updater needs of the running agent."""

    chunks_root: str
    """``<prefix>/<id>``: the chunks of a package come on ``<root>/update/<sha256>/<index>/<count>``."""
    publish_state: Callable[[bytes], Awaitable[None]]
    """Publish the retained ``update-state`` document."""
    connected: Callable[[], bool]
    accepted_frames: Callable[[], int]
    """Uplinks the pipeline accepted since the start (the trial's radio check)."""
    last_heard_s: Callable[[], list[float]]
    """When each device was last heard (Unix seconds): are frames flowing before a switch?"""
    request_restart: Callable[[], None]
    check_s: float
    """``fleet.update_check_s``: how long a version on trial has to prove itself."""


class AgentUpdater:
    """One transfer at a time; the trial's health check; reports on ``update-state``."""

    def __init__(
        self, updates: Updates, links: UpdateLinks, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.updates = updates
        self._links = links
        self._clock = clock
        self.counters: dict[str, int] = {}
        self._transfer: dict[str, Any] | None = None  # the announced package: version, sha256, size
        # Chunks by package hash: (count, index -> bytes). Those of a package not announced (yet) are
        # kept too, bounded: a command is verified on the loop, its chunks may overtake it.
        self._parts: dict[str, tuple[int, dict[int, bytes]]] = {}
        self._pending: asyncio.Task[None] | None = None

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    # --- the command and the chunks ----------------------------------------------------------

    def announce(self, params: dict[str, Any]) -> dict[str, Any]:
        """The ``update_agent`` command's handler (parameters checked by the dispatcher)."""
        if params["version"] == __version__:
            raise ValueError(f"version {__version__} is the one running")
        sha = params["sha256"].lower()
        self._transfer = {**params, "sha256": sha}
        self._parts = {sha: self._parts[sha]} if sha in self._parts else {}
        self._count("announced")
        # Complete already? Then after this command's result is on its way.
        asyncio.get_running_loop().call_soon(self._complete)
        return {
            "version": params["version"],
            "send_chunks_to": f"{self._links.chunks_root}/update/{sha}/<index>/<count>",
        }

    def on_chunk(self, topic: str, payload: bytes) -> None:
        """One chunk from ``<root>/update/<sha256>/<index>/<count>`` (on the loop)."""
        try:
            sha, index_text, count_text = topic.rsplit("/", 3)[1:]
            index, count = int(index_text), int(count_text)
        except ValueError:
            self._count("chunks_refused")
            return
        if not 0 <= index < count <= MAX_CHUNKS or len(payload) > MAX_PACKAGE_BYTES:
            self._count("chunks_refused")
            return
        _count, chunks = self._parts.setdefault(sha, (count, {}))
        held = sum(len(c) for _n, parts in self._parts.values() for c in parts.values())
        if len(self._parts) > MAX_PACKAGES_HELD or held + len(payload) > 2 * MAX_PACKAGE_BYTES:
            if not chunks:
                del self._parts[sha]
            self._count("chunks_refused")
            return
        chunks[index] = payload
        self._parts[sha] = (count, chunks)
        transfer = self._transfer
        if transfer is None or sha != transfer["sha256"]:
            self._count("chunks_unannounced")
            return
        self._complete()

    def _complete(self) -> None:
        transfer = self._transfer
        if transfer is None or transfer["sha256"] not in self._parts:
            return
        count, chunks = self._parts[transfer["sha256"]]
        if len(chunks) < count:
            return
        sha = transfer["sha256"]
        package = b"".join(chunks.get(i, b"") for i in range(count))
        self._transfer, self._parts = None, {}
        if len(package) != transfer["size_bytes"] or hashlib.sha256(package).hexdigest() != sha:
            self._refuse(transfer["version"], "the package received is not the one announced")
            return
        try:
            self.updates.install(transfer["version"], package, sha)
        except (CommandRejected, OSError) as exc:
            self._refuse(transfer["version"], str(exc))
            return
        now_s = self._clock()
        flowing = any(seen_s > now_s - RECENT_FRAME_S for seen_s in self._links.last_heard_s())
        self.updates.activate(transfer["version"], frames_flowing=flowing)
        self._count("installed")
        log.warning("agent %s installed beside %s; restarting into it", transfer["version"], __version__)
        self._links.request_restart()

    def _refuse(self, version: str, reason: str) -> None:
        self._count("refused")
        log.error("agent update to %s refused: %s", version, reason)
        self._publish({"status": "refused", "version": version, "previous": __version__, "reason": reason})

    # --- the trial's health check and the report --------------------------------------------

    async def run(self) -> None:
        """Judge a trial of this very version, then wait (the app cancels this task)."""
        trial = self.updates.trial()
        if trial is not None and trial.version == __version__:
            await self._health_check(trial.frames_flowing)
        await asyncio.get_running_loop().create_future()

    async def _health_check(self, frames_were_flowing: bool) -> None:
        links = self._links
        deadline = time.monotonic() + links.check_s
        at_start = links.accepted_frames()
        while time.monotonic() < deadline:
            frames_ok = not frames_were_flowing or links.accepted_frames() > at_start
            if links.connected() and frames_ok:
                self.updates.confirm()
                self._count("confirmed")
                log.warning("agent %s passed its health check: it stays", __version__)
                self.report()
                return
            await asyncio.sleep(HEALTH_POLL_S)
        why = "no broker connection" if not links.connected() else "no radio frames"
        self.updates.rollback(f"{why} within {links.check_s:g} s")
        self._count("rolled_back")
        links.request_restart()

    def report(self) -> None:
        """Publish an outcome not yet reported (at each connection: the broker may have been away)."""
        doc = self.updates.unreported()
        if doc is not None and self._links.connected():
            self._publish({k: v for k, v in doc.items() if k in ("status", "version", "previous", "reason")},
                          then=self.updates.mark_reported)  # fmt: skip

    def _publish(self, doc: dict[str, Any], then: Callable[[], None] | None = None) -> None:
        data = json.dumps({"v": 1, "at": iso_utc(self._clock()), "running": __version__, **doc}).encode()

        async def send() -> None:
            try:
                await self._links.publish_state(data)
            except UplinkError as exc:
                log.debug("update-state not published: %s", exc)
                return
            if then is not None:
                then()

        # Keep a reference: a task nobody holds may be collected before it runs.
        self._pending = asyncio.get_running_loop().create_task(send())
