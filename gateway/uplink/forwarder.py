"""Moves committed records from the outbox to the broker's ``up`` topic, in batches.

Owns the batching (up to ``batch_max_records`` per message, lingering up to
``batch_linger_ms`` for a batch to fill), the number of batches in flight, and
the delivery rule of ARCHITECTURE.md §3.3: rows are acked (deleted) only after
the broker's PUBACK; a failed publish gives them back to be leased again after
the reconnect. It does not own the storage (any ``OutboxLike``: the uplink may
not import ``gateway.outbox``), the connection (``MqttUplink``) nor the formats
(``topics``, ``envelope``).

Not yet here (issue 7): alerts on their own topic ahead of the backlog, and
compression. Every record goes to ``up`` in lease order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

from gateway.clock import iso_utc
from gateway.errors import StorageError, UplinkError
from gateway.uplink import envelope
from gateway.uplink.topics import Topics

log = logging.getLogger(__name__)


class LeasedLike(Protocol):
    @property
    def seq(self) -> int: ...

    @property
    def body_json(self) -> str: ...


class OutboxLike(Protocol):
    """What the forwarder needs from the outbox (``gateway.outbox.Outbox`` fits)."""

    async def wait_records(self) -> None: ...

    async def lease(self, n: int) -> Sequence[LeasedLike]: ...

    async def ack(self, seqs: Sequence[int]) -> None: ...

    def release(self, seqs: Sequence[int]) -> None: ...


class PublisherLike(Protocol):
    """What the forwarder needs from the connection (``MqttUplink`` fits)."""

    async def wait_connected(self, timeout_s: float | None = None) -> bool: ...

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None: ...


class Forwarder:
    """Lease → publish (QoS 1) → ack on PUBACK, or release on failure; several batches in flight."""

    def __init__(
        self,
        outbox: OutboxLike,
        uplink: PublisherLike,
        topics: Topics,
        gateway_id: str,
        *,
        batch_max_records: int,
        batch_linger_ms: int,
        max_inflight_batches: int,
        retry_delay_s: float = 1.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if batch_max_records < 1 or max_inflight_batches < 1:
            raise ValueError("batch_max_records and max_inflight_batches must be at least 1")
        self._outbox = outbox
        self._uplink = uplink
        self._topics = topics
        self._gateway_id = gateway_id
        self._batch_max = batch_max_records
        self._linger_s = batch_linger_ms / 1000.0
        self._slots = asyncio.Semaphore(max_inflight_batches)
        self._retry_delay_s = retry_delay_s
        self._wall_clock = wall_clock
        self._inflight: set[asyncio.Task[None]] = set()
        self._lease_task: asyncio.Task[None] | None = None
        self._draining = False
        self._retry_at = 0.0  # loop time before which no new batch is leased (after a failure)
        self.counters: Counter[str] = Counter()

    async def run(self) -> None:
        """Forward until ``drain()`` (returns) or cancellation (in-flight rows are released)."""
        self._lease_task = asyncio.create_task(self._lease_loop(), name="forwarder-lease")
        try:
            await self._lease_task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._draining and current is not None and current.cancelling() == 0:
                return  # drain() stopped the leasing; it waits for the batches in flight
            for task in self._inflight:
                task.cancel()
            raise

    async def drain(self, timeout_s: float) -> None:
        """Stop leasing, then wait up to ``timeout_s`` for the in-flight batches' PUBACKs.

        Batches still unacknowledged at the deadline are cancelled and their rows
        released: they stay in the outbox and are sent again after a restart.
        """
        self._draining = True
        if self._lease_task is not None:
            self._lease_task.cancel()
        inflight = set(self._inflight)
        if not inflight:
            return
        _done, still = await asyncio.wait(inflight, timeout=timeout_s)
        for task in still:
            task.cancel()
        if still:
            log.warning("drain: %d batches not acknowledged within %.1f s", len(still), timeout_s)
            await asyncio.wait(still, timeout=1.0)

    async def _lease_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._draining:
            delay_s = self._retry_at - loop.time()
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            await self._uplink.wait_connected()
            await self._outbox.wait_records()
            await self._slots.acquire()
            try:
                batch = await self._lease_batch()
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
            task = asyncio.create_task(self._send(batch), name="forwarder-batch")
            self._inflight.add(task)
            task.add_done_callback(self._batch_done)

    async def _lease_batch(self) -> list[LeasedLike]:
        """Lease up to batch_max_records, waiting up to the linger time for a partial batch to fill."""
        loop = asyncio.get_running_loop()
        batch = list(await self._outbox.lease(self._batch_max))
        deadline = loop.time() + self._linger_s
        try:
            while batch and len(batch) < self._batch_max:
                remaining_s = deadline - loop.time()
                if remaining_s <= 0:
                    break
                try:
                    await asyncio.wait_for(self._outbox.wait_records(), remaining_s)
                except TimeoutError:
                    break
                batch.extend(await self._outbox.lease(self._batch_max - len(batch)))
        except BaseException:
            # Cancelled (drain) or the store failed mid-linger: nothing was sent, give them back.
            self._outbox.release([item.seq for item in batch])
            raise
        return batch

    async def _send(self, batch: list[LeasedLike]) -> None:
        seqs = [item.seq for item in batch]
        payload = envelope.up_batch(
            self._gateway_id, [item.body_json for item in batch], iso_utc(self._wall_clock())
        )
        self.counters["batches_sent"] += 1
        try:
            await self._uplink.publish(self._topics.up, payload, qos=1)
        except UplinkError as exc:
            self.counters["publish_failures"] += 1
            self._outbox.release(seqs)
            self._retry_at = asyncio.get_running_loop().time() + self._retry_delay_s
            log.debug("batch of %d records not delivered (%s); released for retry", len(seqs), exc)
            return
        except BaseException:
            # Cancelled before the PUBACK: the broker may or may not have it; send again later.
            self._outbox.release(seqs)
            raise
        self.counters["batches_acked"] += 1
        try:
            await self._outbox.ack(seqs)
        except StorageError as exc:
            # The broker has them; deleting failed. Releasing would resend at once, so keep
            # them leased: they go again after a restart (at least once, §3.3).
            log.error("cannot delete %d acknowledged records: %s", len(seqs), exc)
            return
        self.counters["records_acked"] += len(seqs)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("batch task failed", exc_info=task.exception())
