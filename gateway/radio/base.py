"""The contract every radio front end implements, and the work they all share.

Owns ``RadioBackend``: the bounded queue that hands received frames to the
pipeline, the counters shown in health and ``edgegw status``, the ring of recent
raw frames shown by ``edgegw diag``, and the "log the first of each problem
loudly, the rest quietly" rule for untrusted input. It owns no wire format and
no socket or device: each backend (``semtech_udp/``, ...) receives bytes its own
way and calls ``_deliver`` / ``_drop`` / ``_reject`` on the event loop.

A backend moves bytes plus RF metadata; it never parses LoRaWAN.

Contract for backend authors:

* ``start()`` opens the device or socket and returns once frames can arrive;
  ``stop()`` releases it and may be called any number of times, also before
  ``start()``.
* Call the ``_deliver``/``_drop``/``_reject`` hooks on the event loop thread only
  (a thread-based adapter hands over with ``loop.call_soon_threadsafe``).
* Never raise into the loop because of what came over the air or the wire:
  count it with ``_reject`` and carry on.
* ``from_url`` builds the backend from its ``radio.url`` (see ``gateway.radio.open_backend``).
"""

from __future__ import annotations

import abc
import asyncio
import collections
import logging
from dataclasses import dataclass
from typing import Final
from urllib.parse import SplitResult

from gateway.errors import ConfigError
from gateway.messages import RadioFrame, RxInfo

_log = logging.getLogger(__name__)

# Same number as gateway.cli.main.TRACE (stage packages do not import the CLI).
TRACE: Final = 5


@dataclass(frozen=True, slots=True)
class RecentFrame:
    """One raw frame as kept in a backend's ring for ``edgegw diag``."""

    received_at_s: float
    phy_payload_hex: str
    rx: RxInfo


class RadioBackend(abc.ABC):
    """A radio front end: something that hears LoRa frames and hands them to the pipeline.

    Counters (``collections.Counter``, keys are stable and appear in health):

    ``frames``                  good frames handed to ``_deliver`` (including queue_full drops)
    ``queue_full``              frames dropped because the pipeline lags ``queue_size`` behind
    ``crc_error`` / ``no_crc``  frames the radio heard with a bad / absent PHY CRC (``_drop``)
    ``bad_datagram``            malformed input from the device or forwarder, also per reason
                                as ``bad_datagram.<reason>``

    Backends add their own (the Semtech backend counts ``datagrams``, ``push_data``, ...).
    """

    name: str

    def __init__(self, name: str, *, queue_size: int = 10000, ring_size: int = 64) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        self.name = name
        self.counters: collections.Counter[str] = collections.Counter()
        self.recent: collections.deque[RecentFrame] = collections.deque(maxlen=ring_size)
        # asyncio.Queue binds to the running loop at first use, so building it here is safe.
        self._queue: asyncio.Queue[RadioFrame] = asyncio.Queue(maxsize=queue_size)
        self._warned: set[str] = set()

    @classmethod
    def from_url(cls, url: SplitResult) -> RadioBackend:
        """Build the backend from its ``radio.url``; raise ConfigError for a bad URL."""
        raise ConfigError(f"radio backend {cls.__name__} cannot be opened from a URL", key_path="radio.url")

    @abc.abstractmethod
    async def start(self) -> None:
        """Open the device or socket; frames may arrive once this returns."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Release the device or socket. Idempotent; frames already queued stay receivable."""

    async def receive(self) -> RadioFrame:
        """The next received frame (waits until one arrives; cancel the waiting task to stop)."""
        return await self._queue.get()

    @property
    def pending(self) -> int:
        """Frames received and not yet taken by ``receive()``."""
        return self._queue.qsize()

    def _deliver(self, frame: RadioFrame) -> None:
        """Hand a good frame to the pipeline: count it, keep it in the ring, queue it.

        When the queue is full the frame is dropped and counted as ``queue_full``:
        the radio must never wait for the pipeline (the air does not wait either).
        """
        self.counters["frames"] += 1
        self._remember(frame)
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.counters["queue_full"] += 1
            size = self._queue.maxsize
            self._log_once("queue_full", "%s: receive queue full (%d frames), dropping", self.name, size)

    def _drop(self, frame: RadioFrame, reason: str) -> None:
        """Count a frame that was heard but is not for the pipeline (e.g. ``crc_error``).

        It still goes to the ring: a technician looking at ``edgegw diag`` wants to see it.
        """
        self.counters[reason] += 1
        self._remember(frame)

    def _reject(self, reason: str, detail: str) -> None:
        """Count malformed input as ``bad_datagram`` and ``bad_datagram.<reason>`` and log it.

        The first occurrence of each reason is logged at WARNING, later ones at DEBUG,
        so a misbehaving sender cannot flood the log.
        """
        self.counters["bad_datagram"] += 1
        self.counters[f"bad_datagram.{reason}"] += 1
        self._log_once(f"bad_datagram.{reason}", "%s: rejected input (%s): %s", self.name, reason, detail)

    def _remember(self, frame: RadioFrame) -> None:
        self.recent.append(RecentFrame(frame.received_at_s, frame.phy_payload.hex(), frame.rx))
        if _log.isEnabledFor(TRACE):
            _log.log(TRACE, "%s: frame %s %s", self.name, frame.phy_payload.hex(), frame.rx)

    def _log_once(self, key: str, message: str, *args: object) -> None:
        if key in self._warned:
            _log.debug(message, *args)
        else:
            self._warned.add(key)
            _log.warning(message + " (further occurrences are logged at DEBUG)", *args)
