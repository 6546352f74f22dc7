"""The contract every radio front end implements, and the work they all share.

Owns ``RadioBackend``: the bounded queue that hands received frames to the
pipeline, the counters shown in health and ``edgegw status``, the ring of recent
raw frames shown by ``edgegw diag``, and the "log the first of each problem per
minute loudly, count the rest" rule for untrusted input (``gateway.loglimit``). It owns no wire format and
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
* To transmit, implement ``_transmit(request, airtime_s)``; callers use ``transmit()``, which
  does the shared work first: the airtime (``airtime.py``), the EU868 duty cycle
  (``dutycycle.py``: refuse with ``DUTY_CYCLE``, or defer an immediate class C send
  when the budget frees up within ``max_defer_s``), the transmit power limit of its sub-band
  (``eu868.max_conducted_dbm`` through ``antenna_gain_dbi``: a request above it is sent at it),
  and the ``tx_*`` counters. ``_transmit`` receives the request with its power already limited.
* Class A windows come first (``txplan.py``): every frame ``_deliver`` hands over is told to
  ``tx_plan`` (its gateway's ``tmst`` clock, the receive windows it may be answered in), a timed
  downlink books its window until the radio's verdict, and an immediate send waits until it
  touches no booked or reserved window (at most ``tx_plan.max_yield_s``, then ``COLLISION_PACKET``).
  A backend serving several gateways says which one a frame or a request belongs to
  (``_rx_plan_key`` / ``_tx_plan_key``); a single radio is one plan.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import SplitResult, parse_qsl

from gateway.errors import ConfigError
from gateway.eu868 import DEFAULT_ANTENNA_GAIN_DBI, max_conducted_dbm
from gateway.loglevels import TRACE
from gateway.loglimit import RateLimitedLog
from gateway.messages import RadioFrame, RxInfo, TxRequest, TxResult, TxStatus
from gateway.radio.airtime import LoraParams, airtime_s
from gateway.radio.dutycycle import DutyCycle
from gateway.radio.txplan import Booking, TxPlan

_log = logging.getLogger(__name__)

# A problem that repeats is logged at WARNING at most once per this interval, with a count.
LOG_INTERVAL_S: Final = 60.0


def url_options(url: SplitResult, spec: Mapping[str, Callable[[str], Any]]) -> dict[str, Any]:
    """The query parameters of a backend URL, converted by ``spec`` (name → converter).

    Unknown names, repeated names and values the converter refuses are ConfigErrors on
    ``radio.url``: a typo in a URL must not be silently ignored on a gateway in the field.
    """
    try:
        pairs = parse_qsl(url.query, keep_blank_values=True, strict_parsing=bool(url.query))
    except ValueError as exc:
        raise ConfigError(f"bad query in {url.geturl()!r}: {exc}", key_path="radio.url") from exc
    options: dict[str, Any] = {}
    for name, text in pairs:
        convert = spec.get(name)
        if convert is None:
            known = ", ".join(sorted(spec)) or "none"
            raise ConfigError(
                f"{url.geturl()!r}: unknown parameter {name!r} (known: {known})", key_path="radio.url"
            )
        if name in options:
            raise ConfigError(f"{url.geturl()!r}: parameter {name!r} given twice", key_path="radio.url")
        try:
            options[name] = convert(text)
        except ValueError as exc:
            raise ConfigError(f"{url.geturl()!r}: bad {name}={text!r}: {exc}", key_path="radio.url") from exc
    return options


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0.0 or value == float("inf"):
        raise ValueError("must be a finite number >= 0")
    return value


COMMON_URL_OPTIONS: Final[Mapping[str, Callable[[str], Any]]] = {"max_defer_s": non_negative_float}
"""Query parameters every backend accepts (they configure ``RadioBackend`` itself)."""


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
    ``tx_requests``             calls of ``transmit()``
    ``tx_ok`` / ``tx_failed``   outcomes (SENT / anything else), and ``tx.<status>`` per TxStatus
    ``tx_deferred``             immediate sends held back until the duty-cycle budget allowed them
    ``tx_power_limited``        requests asked above their sub-band's limit, sent at the limit
    ``tx_yielded_to_class_a``   immediate sends that waited for class A windows (``tx_plan``), and
                                ``tx_yielded_ms`` the time they waited in all; ``tx_yield_refused``
                                those refused because booked windows filled ``max_yield_s``
    ``tx_airtime_ms``           airtime actually spent (whole milliseconds)

    Backends add their own (the Semtech backend counts ``datagrams``, ``push_data``, ...).
    """

    name: str

    def __init__(
        self,
        name: str,
        *,
        queue_size: int = 10000,
        ring_size: int = 64,
        duty_cycle: DutyCycle | None = None,
        max_defer_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        self.name = name
        self.duty_cycle = duty_cycle if duty_cycle is not None else DutyCycle()
        """EU868 airtime accounting of this transmitter (one per radio)."""
        self.max_defer_s = max_defer_s
        """An immediate (class C) send may wait this long for budget; 0 refuses at once."""
        self.antenna_gain_dbi = DEFAULT_ANTENNA_GAIN_DBI
        """Gain of the antenna net of cable loss (``radio.antenna_gain_dbi``): what the radiated power
        adds to the conducted power commanded, so the limit of each sub-band is taken off it."""
        self.tx_plan = TxPlan()
        """The receive windows of class A devices this radio's transmit path owes (``txplan.py``)."""
        self._clock = clock
        self._sleep = sleep
        self.counters: collections.Counter[str] = collections.Counter()
        self.recent: collections.deque[RecentFrame] = collections.deque(maxlen=ring_size)
        # asyncio.Queue binds to the running loop at first use, so building it here is safe.
        self._queue: asyncio.Queue[RadioFrame] = asyncio.Queue(maxsize=queue_size)
        self._rate_log = RateLimitedLog(_log, interval_s=LOG_INTERVAL_S, clock=clock)

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

    async def transmit(self, request: TxRequest) -> TxResult:
        """Send one downlink; never raises for radio trouble, the result says what happened.

        Order: airtime of the request (LoRa, explicit header, no CRC: LoRaWAN downlinks
        carry none), the duty-cycle check of its sub-band, its power limited to the sub-band's
        e.i.r.p. minus ``antenna_gain_dbi`` (whole dBm, rounded down), the backend's ``_transmit``.
        The airtime is booked before the backend is asked (so concurrent sends cannot
        overshoot together) and given back when the radio reports it did not send.
        """
        self.counters["tx_requests"] += 1
        try:
            params = LoraParams(
                sf=request.sf, bw_hz=request.bw_hz, coding_rate=request.coding_rate, crc=False
            )
            spend_s = airtime_s(len(request.phy_payload), params)
        except ValueError as exc:
            return self._finish_tx(request, TxResult(TxStatus.FAILED, f"bad request: {exc}"))
        decision = self.duty_cycle.check(request.freq_hz, spend_s, self._clock(), request.bw_hz)
        if not decision.allowed and decision.band is None:
            return self._finish_tx(request, TxResult(TxStatus.TX_FREQ, decision.reason))
        immediate = request.send_at_tmst_us is None and request.send_at_gps_ms is None
        if not decision.allowed and immediate and decision.wait_s <= self.max_defer_s:
            # Class C: nothing ties the send to a receive window, so waiting is better than
            # dropping. Only one wait: a second refusal after it is final.
            self.counters["tx_deferred"] += 1
            _log.info(
                "%s: downlink deferred %.1f s by the duty cycle (%s)",
                self.name,
                decision.wait_s,
                decision.reason,
            )
            await self._sleep(decision.wait_s)
            decision = self.duty_cycle.check(request.freq_hz, spend_s, self._clock(), request.bw_hz)
        if decision.allowed and immediate:
            refused, waited_s = await self._yield_to_class_a(request, spend_s)
            if refused is not None:
                return self._finish_tx(request, refused)
            if waited_s > 0.0:  # others may have spent the budget meanwhile
                decision = self.duty_cycle.check(request.freq_hz, spend_s, self._clock(), request.bw_hz)
        if not decision.allowed:
            result = TxResult(TxStatus.DUTY_CYCLE, decision.reason, spend_s * 1000.0)
            return self._finish_tx(request, result)
        if decision.band is not None:
            request = self._limit_power(request, max_conducted_dbm(decision.band, self.antenna_gain_dbi))
        spend = self.duty_cycle.record(request.freq_hz, spend_s, self._clock(), request.bw_hz)
        booking = self._book(request, spend_s)
        try:
            result = await self._transmit(request, spend_s)
        except asyncio.CancelledError:
            if spend is not None:
                self.duty_cycle.cancel(spend)
            if booking is not None:
                self.tx_plan.settle(booking, sent=False)
            raise
        if booking is not None:
            self.tx_plan.settle(booking, sent=result.status is TxStatus.SENT)
        if result.status is not TxStatus.SENT and spend is not None:
            self.duty_cycle.cancel(spend)
        elif result.status is TxStatus.SENT:
            self.counters["tx_airtime_ms"] += round(spend_s * 1000.0)
        if result.airtime_ms is None:
            result = TxResult(result.status, result.detail, spend_s * 1000.0)
        return self._finish_tx(request, result)

    async def _yield_to_class_a(self, request: TxRequest, airtime_s: float) -> tuple[TxResult | None, float]:
        """Wait until an immediate frame touches no class A window; (a refusal or None, seconds waited).

        Bound: ``tx_plan.max_yield_s`` in all. Reservations are the plan's guesses, so when honouring
        them would pass the bound they stop counting and only booked frames do; a frame still blocked
        by booked windows at the bound is refused ``COLLISION_PACKET`` (the scheduler sends it again
        at its next opportunity): a class A frame never loses its window to an immediate one.
        """
        plan, key = self.tx_plan, self._tx_plan_key(request)
        began_s = self._clock()
        reserved = True
        waited_s = 0.0
        while True:
            now_s = self._clock()
            waited_s = now_s - began_s
            wait_s = plan.wait_s(key, now_s, airtime_s, reserved=reserved)
            if wait_s <= 0.0:
                break
            if waited_s + wait_s > plan.max_yield_s:
                if reserved:
                    reserved = False
                    continue
                self.counters["tx_yield_refused"] += 1
                detail = (
                    f"class A downlinks booked on the radio for {wait_s:.1f} s more "
                    f"(waited {waited_s:.1f} s of {plan.max_yield_s:.1f} s)"
                )
                return TxResult(TxStatus.COLLISION_PACKET, detail, airtime_s * 1000.0), waited_s
            await self._sleep(min(wait_s, plan.recheck_s(key, now_s, reserved=reserved)))
        if waited_s > 0.0:
            self.counters["tx_yielded_to_class_a"] += 1
            self.counters["tx_yielded_ms"] += round(waited_s * 1000.0)
            _log.debug("%s: immediate downlink waited %.3f s for class A windows", self.name, waited_s)
        return None, waited_s

    def _book(self, request: TxRequest, airtime_s: float) -> Booking | None:
        if request.send_at_tmst_us is None:
            return None
        return self.tx_plan.book(self._tx_plan_key(request), request.send_at_tmst_us, airtime_s)

    def _rx_plan_key(self, frame: RadioFrame) -> str:
        """The gateway (one transmit path) that heard ``frame``; a single radio has one."""
        return ""

    def _tx_plan_key(self, request: TxRequest) -> str:
        """The gateway that will send ``request`` (same keys as ``_rx_plan_key``)."""
        return ""

    def _limit_power(self, request: TxRequest, limit_dbm: int) -> TxRequest:
        # Not logged: lorawan.downlink_power_dbm is the radio's ceiling and the RX1 bands sit 13 dB
        # under RX2's, so with the default configuration every RX1 downlink is limited here.
        if request.power_dbm <= limit_dbm:
            return request
        self.counters["tx_power_limited"] += 1
        return dataclasses.replace(request, power_dbm=float(limit_dbm))

    async def _transmit(self, request: TxRequest, airtime_s: float) -> TxResult:
        """Hand the downlink to the radio and report the outcome (backends override this)."""
        return TxResult(TxStatus.FAILED, f"the {self.name} backend cannot transmit")

    def _finish_tx(self, request: TxRequest, result: TxResult) -> TxResult:
        self.counters["tx_ok" if result.status is TxStatus.SENT else "tx_failed"] += 1
        self.counters[f"tx.{result.status.value}"] += 1
        if result.status is not TxStatus.SENT:
            self._log_once(
                f"tx_{result.status.value}",
                "%s: downlink on %d Hz not sent (%s): %s",
                self.name,
                request.freq_hz,
                result.status.value,
                result.detail,
            )
        return result

    def health(self) -> dict[str, Any]:
        """Counters and the duty-cycle budget left per sub-band, for the health message."""
        return {
            "backend": self.name,
            "counters": dict(self.counters),
            "duty_cycle": self.duty_cycle.health(self._clock()),
        }

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
            return
        # Only a frame the pipeline will see may be answered: its windows are reserved.
        key, tmst_us = self._rx_plan_key(frame), frame.rx.concentrator_tmst_us
        self.tx_plan.heard(key, frame.phy_payload, tmst_us, frame.received_mono_s)

    def _drop(self, frame: RadioFrame, reason: str) -> None:
        """Count a frame that was heard but is not for the pipeline (e.g. ``crc_error``).

        It still goes to the ring: a technician looking at ``edgegw diag`` wants to see it.
        """
        self.counters[reason] += 1
        self._remember(frame)

    def _reject(self, reason: str, detail: str) -> None:
        """Count malformed input as ``bad_datagram`` and ``bad_datagram.<reason>`` and log it.

        The first occurrence of each reason per ``LOG_INTERVAL_S`` is logged at WARNING,
        later ones at DEBUG and summed up with their count in the next WARNING line of
        that reason, so a misbehaving sender cannot flood the log.
        """
        self.counters["bad_datagram"] += 1
        self.counters[f"bad_datagram.{reason}"] += 1
        self._log_once(f"bad_datagram.{reason}", "%s: rejected input (%s): %s", self.name, reason, detail)

    def _remember(self, frame: RadioFrame) -> None:
        self.recent.append(RecentFrame(frame.received_at_s, frame.phy_payload.hex(), frame.rx))
        if _log.isEnabledFor(TRACE):
            _log.log(TRACE, "%s: frame %s %s", self.name, frame.phy_payload.hex(), frame.rx)

    def _log_once(self, key: str, message: str, *args: object) -> None:
        """WARNING for the first ``key`` per LOG_INTERVAL_S, DEBUG and counted after that."""
        self._rate_log.warn(key, message, *args)
