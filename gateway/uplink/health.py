"""The buffer and uplink part of the ``health`` message, and a task that publishes it periodically.

Owns which outbox and uplink facts go into ``health`` (schema ``gateway/schemas/health-v1.json``):
outbox depth, bytes, oldest record age, evictions per priority class, uplink state,
lag and reconnect count. It does not own the other sections (radio, CPU, disk,
clock: the fleet/health code adds them through ``extra``), nor the outbox itself:
any object with the ``BufferStats`` attributes fits (``gateway.outbox.OutboxStats``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from gateway.clock import iso_utc
from gateway.errors import GatewayError
from gateway.uplink import envelope
from gateway.uplink.forwarder import PublisherLike
from gateway.uplink.topics import Topics

log = logging.getLogger(__name__)


class BufferStats(Protocol):
    @property
    def depth(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def oldest_age_s(self) -> float | None: ...
    @property
    def max_bytes(self) -> int: ...
    @property
    def depth_by_class(self) -> dict[str, int]: ...
    @property
    def evicted_total(self) -> dict[str, int]: ...


class UplinkStatus(Protocol):
    def status(self) -> dict[str, Any]: ...


def sections(buffer: BufferStats, uplink: UplinkStatus) -> dict[str, Any]:
    """The ``buffer`` and ``uplink`` sections of ``health``."""
    oldest = buffer.oldest_age_s
    return {
        "buffer": {
            "depth": buffer.depth,
            "bytes": buffer.bytes,
            "max_bytes": buffer.max_bytes,
            "oldest_age_s": None if oldest is None else round(oldest, 3),
            "depth_by_class": dict(buffer.depth_by_class),
            "evicted": dict(buffer.evicted_total),
        },
        # lag_s: how far behind the platform is, i.e. the age of the oldest record not yet acknowledged.
        "uplink": {**uplink.status(), "lag_s": 0.0 if oldest is None else round(oldest, 3)},
    }


async def publish_health(
    uplink: PublisherLike,
    status: UplinkStatus,
    topics: Topics,
    gateway_id: str,
    buffer_stats: Callable[[], Awaitable[BufferStats]],
    *,
    interval_s: float,
    extra: Callable[[], Mapping[str, Any]] | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> None:
    """Publish ``health`` (QoS 1, not retained) every ``interval_s`` until cancelled; skips while offline."""
    while True:
        try:
            doc = sections(await buffer_stats(), status)
            if extra is not None:
                doc.update(extra())
            payload = envelope.health(gateway_id, iso_utc(wall_clock()), doc)
            await asyncio.wait_for(uplink.publish(topics.health, payload, qos=1), timeout=interval_s)
        except (GatewayError, TimeoutError) as exc:
            log.debug("health not published: %s", exc)
        await asyncio.sleep(interval_s)
