"""Moves committed records from the outbox to the broker's ``up`` topic, in batches.

Owns the two lanes of delivery and the rule of ARCHITECTURE.md §3.3 (rows are
acked, i.e. deleted, only after the broker's PUBACK; a failed publish gives them
back to be leased again after the reconnect):

* the alert lane: rows with priority >= ``alert_priority`` are published one per
  message on ``alert`` as soon as they are committed, never rate-limited, with
  their own in-flight slots, so a backlog never delays them;
* the bulk lane: everything else in batches on ``up`` (or ``up/zlib``), bounded
  by ``batch_max_records``, ``batch_max_bytes`` and ``batch_linger_ms``, with at
  most ``max_inflight_batches`` in flight, and paced by a token bucket at
  ``drain_rate_records_s`` so a backlog after an outage drains at a known rate.

Broker limits: a batch holds at most what fits in one message the broker takes
(``PublisherLike.max_payload_bytes``: ``mqtt.max_message_bytes`` or an MQTT 5 broker's
Maximum Packet Size), sized before compression, less the envelope. A batch the broker
refuses as too large anyway is given back and the bulk lane's byte budget drops to half
of it, again and again if need be; one record alone that is too large (a batch of one, or
an alert) can never be sent: it is quarantined (``OutboxLike.quarantine``), counted and
logged, and the others flow on. What was learned is forgotten at every (re)connect: the
broker may be another one, or reconfigured (``edgegw buffer quarantine --requeue`` then
sends the quarantined records again).

``flush()`` (``edgegw buffer flush``) means "drain now": the wait after a failed
publish is cut short and the drain-rate limit is lifted until a lease comes back
short of a full batch, i.e. the backlog is gone; then the limit applies again.
The in-flight window and the batch bounds still hold.

It does not own the storage (any ``OutboxLike``: the uplink may not import
``gateway.outbox``), the connection (``MqttUplink``) nor the formats (``topics``,
``envelope``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.clock import iso_utc
from gateway.config import Config
from gateway.errors import MessageTooLarge, StorageError, UplinkError
from gateway.loglimit import RateLimitedLog
from gateway.uplink import envelope
from gateway.uplink.topics import Topics

log = logging.getLogger(__name__)
_refusals = RateLimitedLog(log, interval_s=60.0)

QUARANTINE_TOO_LARGE = "too_large"
"""``OutboxLike.quarantine`` reason of a record bigger than any message the broker takes."""


ALERT_PRIORITY = 100
"""``gateway.messages.Priority.ALERT``: rows at or above it take the alert lane."""
MAX_PRIORITY = 1 << 30


ALERTS_FIRST_MAX_S = 1.0
ALERTS_FIRST_POLL_S = 0.01


class LeasedLike(Protocol):
    @property
    def seq(self) -> int: ...

    @property
    def record_id(self) -> str: ...

    @property
    def body_json(self) -> str: ...


class OutboxLike(Protocol):
    """What the forwarder needs from the outbox (``gateway.outbox.Outbox`` fits)."""

    async def wait_records(self, min_priority: int = 0, max_priority: int = MAX_PRIORITY) -> None: ...

    async def lease(
        self, n: int, *, min_priority: int = 0, max_priority: int = MAX_PRIORITY
    ) -> Sequence[LeasedLike]: ...

    async def ack(self, seqs: Sequence[int]) -> None: ...

    def release(self, seqs: Sequence[int]) -> None: ...

    def quarantine(self, seqs: Sequence[int], reason: str) -> None:
        """Set leased rows aside (this broker never takes them): out of the outbox, counted, kept."""
        ...

    def may_have(self, min_priority: int = 0, max_priority: int = MAX_PRIORITY) -> bool:
        """False when no committed, unleased row in the range exists (True may be a false alarm)."""
        ...


class PublisherLike(Protocol):
    """What the forwarder needs from the connection (``MqttUplink`` fits)."""

    async def wait_connected(self, timeout_s: float | None = None) -> bool: ...

    def add_connect_hook(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` on the loop after each (re)connect."""
        ...

    def max_payload_bytes(self, topic: str, *, content_type: str | None = None, qos: int = 1) -> int:
        """The largest payload the broker takes on ``topic`` now."""
        ...

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        content_type: str | None = None,
    ) -> None: ...


class TokenBucket:
    """Records per second, with a burst of ``burst`` records; ``rate_per_s`` 0 means no limit."""

    def __init__(self, rate_per_s: float, burst: float, clock: Callable[[], float]) -> None:
        self._rate = rate_per_s
        self._burst = burst
        self._tokens = burst
        self._clock = clock
        self._at = clock()

    def delay_s(self, n: int) -> float:
        """Take ``n`` tokens; return how long to wait before using them (0 when available now)."""
        if self._rate <= 0:
            return 0.0
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate


@dataclass(frozen=True, slots=True)
class ForwarderSettings:
    """How the forwarder batches and paces, from two config sections (``from_config``): the batch
    shape is the outbox's (``outbox.batch_*``, ``outbox.max_inflight_batches``), the pace and the
    encoding on the wire the broker's (``mqtt.drain_rate_records_s``, ``mqtt.compression``)."""

    batch_max_records: int = 100
    batch_linger_ms: int = 200
    max_inflight_batches: int = 8
    batch_max_bytes: int = 256 * 1024
    drain_rate_records_s: float = 0.0
    compression: str = "none"

    @classmethod
    def from_config(cls, config: Config) -> ForwarderSettings:
        outbox, mqtt = config.outbox, config.mqtt
        return cls(
            batch_max_records=outbox.batch_max_records,
            batch_linger_ms=outbox.batch_linger_ms,
            max_inflight_batches=outbox.max_inflight_batches,
            batch_max_bytes=outbox.batch_max_bytes,
            drain_rate_records_s=mqtt.drain_rate_records_s,
            compression=mqtt.compression,
        )


DEFAULT_SETTINGS = ForwarderSettings()


class Forwarder:
    """Lease → publish (QoS 1) → ack on PUBACK, or release on failure; alerts on their own lane."""

    def __init__(
        self,
        outbox: OutboxLike,
        uplink: PublisherLike,
        topics: Topics,
        gateway_id: str,
        settings: ForwarderSettings = DEFAULT_SETTINGS,
        *,
        max_inflight_alerts: int = 16,
        alert_priority: int = ALERT_PRIORITY,
        retry_delay_s: float = 1.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if settings.batch_max_records < 1 or settings.max_inflight_batches < 1 or max_inflight_alerts < 1:
            raise ValueError("batch_max_records and the in-flight bounds must be at least 1")
        if settings.compression not in ("none", "zlib"):
            raise ValueError(f"compression must be none or zlib, got {settings.compression!r}")
        batch_max_records, batch_linger_ms = settings.batch_max_records, settings.batch_linger_ms
        max_inflight_batches, batch_max_bytes = settings.max_inflight_batches, settings.batch_max_bytes
        drain_rate_records_s, compression = settings.drain_rate_records_s, settings.compression
        self._outbox = outbox
        self._uplink = uplink
        self._topics = topics
        self._gateway_id = gateway_id
        self._batch_max = batch_max_records
        self._batch_max_bytes = batch_max_bytes
        # Bytes of an empty `up` envelope; each record adds its body and a comma.
        self._envelope_bytes = len(envelope.up_batch(gateway_id, [], iso_utc(0.0)))
        self._refused_max_bytes: int | None = None  # learned: half of the last batch refused as too large
        uplink.add_connect_hook(self._broker_connected)
        self._linger_s = batch_linger_ms / 1000.0
        self._slots = asyncio.Semaphore(max_inflight_batches)
        self._alert_slots = asyncio.Semaphore(max_inflight_alerts)
        self._max_inflight_alerts = max_inflight_alerts
        self._alert_priority = alert_priority
        self._zlib = compression == "zlib"
        self._bucket = TokenBucket(drain_rate_records_s, float(batch_max_records), time.monotonic)
        self._retry_delay_s = retry_delay_s
        self._wall_clock = wall_clock
        self._inflight: set[asyncio.Task[None]] = set()
        self._lease_tasks: list[asyncio.Task[None]] = []
        self._draining = False
        self._retry_at = 0.0  # loop time before which no new batch is leased (after a failure)
        self._flushing = False  # flush(): no drain-rate limit until the backlog is empty
        self._woken = asyncio.Event()  # cuts a retry or rate-limit wait short (flush)
        self.counters: Counter[str] = Counter()

    async def run(self) -> None:
        """Forward until ``drain()`` (returns) or cancellation (in-flight rows are released)."""
        self._lease_tasks = [
            asyncio.create_task(self._alert_loop(), name="forwarder-alerts"),
            asyncio.create_task(self._lease_loop(), name="forwarder-lease"),
        ]
        try:
            await asyncio.gather(*self._lease_tasks)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._draining and current is not None and current.cancelling() == 0:
                return  # drain() stopped the leasing; it waits for the batches in flight
            for task in [*self._lease_tasks, *self._inflight]:
                task.cancel()
            raise

    async def drain(self, timeout_s: float) -> None:
        """Stop leasing, then wait up to ``timeout_s`` for the in-flight batches' PUBACKs.

        Batches still unacknowledged at the deadline are cancelled and their rows
        released: they stay in the outbox and are sent again after a restart.
        """
        self._draining = True
        for task in self._lease_tasks:
            task.cancel()
        inflight = set(self._inflight)
        if not inflight:
            return
        _done, still = await asyncio.wait(inflight, timeout=timeout_s)
        for task in still:
            task.cancel()
        if still:
            log.warning("drain: %d batches not acknowledged within %.1f s", len(still), timeout_s)
            await asyncio.wait(still, timeout=1.0)

    def flush(self) -> None:
        """Drain now: no more retry wait, no drain-rate limit until the backlog is empty."""
        self._flushing = True
        self._retry_at = 0.0
        self._woken.set()
        self.counters["flushes"] += 1
        log.info("flush requested: draining the backlog without the rate limit")

    def _broker_connected(self) -> None:
        """A (re)connect: the broker may have changed (a failover, a limit raised), so the batch size
        it refused is learned again rather than kept for good (issue 16, finding 7 review)."""
        if self._refused_max_bytes is not None:
            log.info(
                "broker (re)connected: the batch limit of %d bytes learned from a refusal no longer applies",
                self._refused_max_bytes,
            )
            self._refused_max_bytes = None

    @property
    def flushing(self) -> bool:
        """A flush is under way (the backlog has not been found empty since ``flush()``)."""
        return self._flushing

    async def _pause(self, delay_s: float) -> None:
        """Sleep up to ``delay_s``; ``flush()`` ends it early."""
        self._woken.clear()
        try:
            await asyncio.wait_for(self._woken.wait(), delay_s)
        except TimeoutError:
            pass

    # --- the alert lane ---------------------------------------------------------------

    async def _alert_loop(self) -> None:
        while not self._draining:
            await self._uplink.wait_connected()
            await self._outbox.wait_records(min_priority=self._alert_priority)
            await self._alert_slots.acquire()
            try:
                leased = await self._outbox.lease(1, min_priority=self._alert_priority)
            except StorageError as exc:
                self._alert_slots.release()
                log.error("cannot lease alerts from the outbox: %s", exc)
                await asyncio.sleep(self._retry_delay_s)
                continue
            except BaseException:
                self._alert_slots.release()
                raise
            if not leased:
                self._alert_slots.release()
                continue
            task = asyncio.create_task(self._send_alert(leased[0]), name="forwarder-alert")
            self._inflight.add(task)
            task.add_done_callback(self._alert_done)

    async def _send_alert(self, item: LeasedLike) -> None:
        payload = envelope.alert(self._gateway_id, item.body_json, iso_utc(self._wall_clock()))
        await self._deliver(self._topics.alert, payload, [item], envelope.CONTENT_TYPE_JSON, "alerts")

    def _alert_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._alert_slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("alert task failed", exc_info=task.exception())

    # --- the bulk lane ------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        loop = asyncio.get_running_loop()
        below_alerts = self._alert_priority - 1
        while not self._draining:
            delay_s = self._retry_at - loop.time()
            if delay_s > 0:
                await self._pause(delay_s)
                continue  # a flush may have cut the wait short: look again
            await self._uplink.wait_connected()
            await self._alerts_first()
            await self._outbox.wait_records(max_priority=below_alerts)
            await self._slots.acquire()
            try:
                batch = await self._lease_batch(below_alerts)
            except StorageError as exc:
                self._slots.release()
                log.error("cannot lease from the outbox: %s", exc)
                self._retry_at = loop.time() + self._retry_delay_s
                continue
            except BaseException:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                continue
            wait_s = 0.0 if self._flushing else self._bucket.delay_s(len(batch))
            if wait_s > 0:
                self.counters["rate_limited"] += 1
                try:
                    await self._pause(wait_s)
                except BaseException:
                    self._outbox.release([item.seq for item in batch])
                    self._slots.release()
                    raise
            task = asyncio.create_task(self._send(batch), name="forwarder-batch")
            self._inflight.add(task)
            task.add_done_callback(self._batch_done)

    async def _alerts_first(self) -> None:
        """Wait (at most ``ALERTS_FIRST_MAX_S``) while alerts wait to be leased by their lane.

        After a reconnection both lanes wake together; without this a batch of the backlog could
        be leased and published ahead of an alert raised during the outage (docs/outbox.md:
        "alerts first"). Bounded, so a stuck alert lane never stops the readings.
        """
        for _ in range(int(ALERTS_FIRST_MAX_S / ALERTS_FIRST_POLL_S)):
            if not self._outbox.may_have(min_priority=self._alert_priority):
                return
            await asyncio.sleep(ALERTS_FIRST_POLL_S)

    async def _lease_batch(self, max_priority: int) -> list[LeasedLike]:
        """Lease up to batch_max_records, waiting up to the linger time for a partial batch to fill,
        then give back what exceeds batch_max_bytes (it leads the next batch)."""
        loop = asyncio.get_running_loop()
        batch = list(await self._outbox.lease(self._batch_max, max_priority=max_priority))
        deadline = loop.time() + self._linger_s
        try:
            while batch and len(batch) < self._batch_max:
                remaining_s = deadline - loop.time()
                if remaining_s <= 0:
                    break
                try:
                    await asyncio.wait_for(self._outbox.wait_records(max_priority=max_priority), remaining_s)
                except TimeoutError:
                    break
                batch.extend(
                    await self._outbox.lease(self._batch_max - len(batch), max_priority=max_priority)
                )
        except BaseException:
            # Cancelled (drain) or the store failed mid-linger: nothing was sent, give them back.
            self._outbox.release([item.seq for item in batch])
            raise
        if self._flushing and len(batch) < self._batch_max:
            self._flushing = False  # short of a full batch after the linger: the backlog is gone
            log.info("flush done: backlog drained, drain rate limit applies again")
        budget = self._batch_budget_bytes()
        size = 0
        for index, item in enumerate(batch):
            size += len(item.body_json) + 1
            if size > budget and index > 0:
                self._outbox.release([extra.seq for extra in batch[index:]])
                return batch[:index]
        return batch

    def _up_topic(self) -> tuple[str, str]:
        if self._zlib:
            return self._topics.up_zlib, envelope.CONTENT_TYPE_ZLIB
        return self._topics.up, envelope.CONTENT_TYPE_JSON

    def _batch_budget_bytes(self) -> int:
        """Record bytes of one batch: ``batch_max_bytes``, what fits in a message the broker takes
        (before compression: compressed is smaller but not known before), and what was learned."""
        topic, content_type = self._up_topic()
        fits = self._uplink.max_payload_bytes(topic, content_type=content_type) - self._envelope_bytes
        budget = min(self._batch_max_bytes, fits)
        if self._refused_max_bytes is not None:
            budget = min(budget, self._refused_max_bytes)
        return max(1, budget)

    async def _send(self, batch: list[LeasedLike]) -> None:
        payload = envelope.up_batch(
            self._gateway_id, [item.body_json for item in batch], iso_utc(self._wall_clock())
        )
        topic, content_type = self._up_topic()
        if self._zlib:
            payload = envelope.compress(payload)
        self.counters["batches_sent"] += 1
        if await self._deliver(topic, payload, batch, content_type, "records"):
            self.counters["batches_acked"] += 1

    async def _deliver(
        self, topic: str, payload: bytes, items: Sequence[LeasedLike], content_type: str, what: str
    ) -> bool:
        """Publish, then ack the rows on PUBACK or release them on failure; True when acked."""
        seqs = [item.seq for item in items]
        try:
            await self._uplink.publish(topic, payload, qos=1, content_type=content_type)
        except MessageTooLarge as exc:
            self._too_large(items, len(payload), exc, what)
            return False
        except UplinkError as exc:
            self.counters["publish_failures"] += 1
            self._outbox.release(seqs)
            self._retry_at = asyncio.get_running_loop().time() + self._retry_delay_s
            log.debug("%d %s not delivered (%s); released for retry", len(seqs), what, exc)
            return False
        except BaseException:
            # Cancelled before the PUBACK: the broker may or may not have it; send again later.
            self._outbox.release(seqs)
            raise
        try:
            await self._outbox.ack(seqs)
        except StorageError as exc:
            # The broker has them; deleting failed. Releasing would resend at once, so keep
            # them leased: they go again after a restart (at least once, §3.3).
            log.error("cannot delete %d acknowledged %s: %s", len(seqs), what, exc)
            return True
        self.counters[f"{what}_acked"] += len(seqs)
        return True

    def _too_large(
        self, items: Sequence[LeasedLike], payload_bytes: int, exc: MessageTooLarge, what: str
    ) -> None:
        """The broker does not take this message: split the batch, or set a lone record aside.

        Sending the same message again never helps (it stalled the whole outbox: issue 16,
        finding 7), so nothing here waits for a retry.
        """
        seqs = [item.seq for item in items]
        self.counters["too_large"] += 1
        if len(items) > 1:
            record_bytes = sum(len(item.body_json) + 1 for item in items)
            halved = max(1, record_bytes // 2)
            if self._refused_max_bytes is None or halved < self._refused_max_bytes:
                self._refused_max_bytes = halved
                log.warning(
                    "a batch of %d %s (%d bytes) is too large for the broker (%s); batches of at most "
                    "%d bytes until the next (re)connect", len(items), what, payload_bytes, exc, halved,
                )  # fmt: skip
            self._outbox.release(seqs)
            return
        self._outbox.quarantine(seqs, QUARANTINE_TOO_LARGE)
        self.counters[f"{what}_quarantined"] += 1
        _refusals.error(
            "quarantined_too_large",
            "%s %s of %d bytes can never be sent (%s): quarantined, the others go on",
            what, items[0].record_id, payload_bytes, exc,
        )  # fmt: skip

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("batch task failed", exc_info=task.exception())
