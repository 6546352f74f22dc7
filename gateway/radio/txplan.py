"""Which moments a radio's one transmit path owes to class A receive windows (sans-IO).

A concentrator, the single-channel SX127x and the serial modem are half-duplex with one TX path:
an immediate (class C or multicast) frame on the air when a class A device opens RX1 or RX2 takes
that device's only chance until its next uplink (the Semtech forwarder answers the timed frame
COLLISION_PACKET or TOO_LATE). Owns, per gateway (a Semtech forwarder's EUI; a single radio has
one, key ``""``), the map from the concentrator's microsecond ``tmst`` to this host's monotonic
clock, the windows booked by timed downlinks, the windows reserved provisionally after uplinks,
and the answer to "may an immediate frame of this airtime start now, and if not, when to ask
again". It owns no radio, no clock and no sleeping: ``RadioBackend`` feeds it every uplink it
delivers (``heard``), every timed downlink it accepts and its outcome (``book`` / ``settle``), and
asks ``wait_s`` before an immediate send.

The rules (times on the monotonic clock, ``guard_s`` on each side of every window):

* **Booked**: a timed downlink accepted for sending occupies ``[start, start + airtime]``, its start
  mapped from ``send_at_tmst_us`` through the last uplink heard by the same gateway (same counter;
  the signed distance on the 32-bit wrap). It stands until it has ended, or until the radio says
  it was not sent.
* **Reserved** (provisional): an uplink that may get an answer (``answer_expected``, below) reserves
  the start of each of its receive windows: RX1 at ``rx1_delay_s`` (RECEIVE_DELAY1, 1 s) and RX2 one
  second later (RECEIVE_DELAY2), or JOIN_ACCEPT_DELAY1/2 (5 s / 6 s) for a join-request (LoRaWAN
  1.0.4 §3.3, RP002 EU868 defaults). A reservation is a promise the network server may still keep,
  so it lapses at its window's start (less the guard): a frame not booked by then would be too late
  anyway. A booking for that window replaces it; an RX1 booking the radio accepted also ends the
  RX2 reservation of the same uplink (the device closes RX2 once RX1 brought it a frame).
* **Immediate** frames yield: ``[now, now + airtime]`` may not overlap a booked window nor contain
  a reserved start; ``wait_s`` is how long until it could (assuming no reservation gets booked
  meanwhile), and the caller asks again then. Timed frames never wait for immediate ones.
* **Bound** (``RadioBackend.transmit``): an immediate frame waits ``max_yield_s`` (4 s) at most in
  all. When honouring reservations would take longer they stop counting (they are guesses) and only
  booked windows do; a frame still blocked by booked windows at the bound is refused
  COLLISION_PACKET (its scheduler sends it again at its next opportunity) rather than taking a
  booked window. Immediate frames are not booked: the radio is deaf while it sends, so no uplink
  heard later can have a window inside it (RX1 ≥ 1 s after any uplink heard from now on).

Which uplinks reserve (``answer_expected``): a join-request, a confirmed data uplink, a data uplink
with ADRACKReq set or with MAC commands (FOpts, or FPort 0), since the server answers those (or
may: LinkCheckReq, DeviceTimeReq). An uplink of a device with queued downlinks is reserved only
when the owner adds that knowledge (``TxPlan(extra_answer=...)``): the radio layer does not know
the queues. Measured by ``bench/bench_txplan.py`` (docs/performance.md, "Class C against class A
receive windows"; seed 2026): at 1 000 / 5 000 / 20 000 uplinks an hour a class C command overlaps
a class A answer 2.4 % / 13.9 % / 44.4 % of the time with no plan, 0.06 % / 0.24 % / 1.6 % with this
rule, at a mean delay of 25 / 157 / 672 ms; reserving every uplink does worse at load (1.7 % /
6.7 %): its reservations fill ``max_yield_s``, after which only booked windows count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from gateway.messages import MType

__all__ = [
    "DEFAULT_GUARD_S",
    "DEFAULT_MAX_YIELD_S",
    "JOIN_ACCEPT_DELAY1_S",
    "JOIN_ACCEPT_DELAY2_S",
    "RECEIVE_DELAY1_S",
    "RECEIVE_DELAY2_S",
    "Booking",
    "TxPlan",
    "all_uplinks",
    "answer_expected",
]

# LoRaWAN 1.0.4 §3.3.1 / RP002-1.0.3 §2.4.8 (EU868 defaults). Restated here: the radio stage may
# not import gateway.lorawan (the stages are independent, .importlinter).
RECEIVE_DELAY1_S: Final = 1.0
RECEIVE_DELAY2_S: Final = 2.0
JOIN_ACCEPT_DELAY1_S: Final = 5.0
JOIN_ACCEPT_DELAY2_S: Final = 6.0

DEFAULT_GUARD_S: Final = 0.05
"""Kept free on each side of a window: the PUSH_DATA reaches us some milliseconds after the
concentrator stamped ``tmst`` (the forwarder polls every 10 ms), so a window mapped from it is late
by that much, and a PULL_RESP ``imme`` leaves some milliseconds after we send it."""
DEFAULT_MAX_YIELD_S: Final = 4.0
"""The most an immediate frame yields to class A windows: RX1 start to the end of an SF12 RX2 answer
of an uplink is 1 s + 1.2..2.8 s of airtime, so one uplink's windows always fit in it."""

TMST_WRAP: Final = 1 << 32
_HALF_WRAP: Final = 1 << 31
_US: Final = 1_000_000
MAX_GATEWAYS: Final = 256
"""Gateways planned at most: keys come from untrusted datagrams (the oldest anchor is forgotten)."""
MAX_WINDOWS: Final = 4096
"""Booked or reserved windows kept per gateway at most (the oldest go first): ~6 s of uplinks."""

# LoRaWAN 1.0.4 §4.3.1: FHDR = DevAddr (4) FCtrl (1) FCnt (2) FOpts; FCtrl uplink bit 6 ADRACKReq,
# bits 3..0 FOptsLen. MHDR (1) comes first, the MIC (4) last.
_FCTRL_INDEX: Final = 5
_ADR_ACK_REQ: Final = 0x40
_FOPTS_LEN: Final = 0x0F
_FPORT_AFTER_FOPTS_INDEX: Final = 8


def answer_expected(phy_payload: bytes) -> bool:
    """May the network server answer this uplink in its receive windows? (module docstring)"""
    if not phy_payload:
        return False
    mtype = phy_payload[0] >> 5
    if mtype == MType.JOIN_REQUEST:
        return True
    if mtype == MType.CONFIRMED_DATA_UP:
        return True
    if mtype != MType.UNCONFIRMED_DATA_UP or len(phy_payload) <= _FCTRL_INDEX:
        return False
    fctrl = phy_payload[_FCTRL_INDEX]
    if fctrl & (_ADR_ACK_REQ | _FOPTS_LEN):
        return True
    fport_index = _FPORT_AFTER_FOPTS_INDEX
    # An FPort is there when bytes remain before the MIC; FPort 0 carries MAC commands.
    return len(phy_payload) > fport_index + 4 and phy_payload[fport_index] == 0


def all_uplinks(phy_payload: bytes) -> bool:
    """The other rule measured: every uplink reserves its windows."""
    return bool(phy_payload)


@dataclass(slots=True)
class _Reservation:
    uplink_tmst_us: int
    window_tmst_us: int
    start_s: float


@dataclass(slots=True, eq=False)
class Booking:
    """A timed downlink's place in the plan, until ``TxPlan.settle`` (compared by identity)."""

    key: str
    start_s: float
    end_s: float
    uplink_tmst_us: int | None
    """The uplink whose window it takes, when a reservation told (for ``settle``)."""


@dataclass(slots=True)
class _Gateway:
    anchor_tmst_us: int
    anchor_mono_s: float
    booked: list[Booking] = field(default_factory=list)
    reserved: list[_Reservation] = field(default_factory=list)


class TxPlan:
    """Booked and reserved receive windows per gateway, and the yield rule for immediate frames."""

    def __init__(
        self,
        *,
        guard_s: float = DEFAULT_GUARD_S,
        max_yield_s: float = DEFAULT_MAX_YIELD_S,
        rx1_delay_s: float = RECEIVE_DELAY1_S,
        expects_answer: Callable[[bytes], bool] = answer_expected,
        extra_answer: Callable[[bytes], bool] | None = None,
    ) -> None:
        if guard_s < 0 or max_yield_s < 0 or rx1_delay_s <= 0:
            raise ValueError("guard_s and max_yield_s must be >= 0, rx1_delay_s > 0")
        self.guard_s = guard_s
        self.max_yield_s = max_yield_s
        """An immediate frame yields to reservations and bookings for this long at most (``RadioBackend``)."""
        self.rx1_delay_s = rx1_delay_s
        """RX1 delay of data uplinks (``lorawan.rx_delay_s``); RX2 is one second later."""
        self.expects_answer = expects_answer
        self.extra_answer = extra_answer
        """Optional knowledge the radio lacks (e.g. "this device has downlinks queued")."""
        self._gateways: dict[str, _Gateway] = {}

    # --- what the radio tells ------------------------------------------------------------------

    def heard(self, key: str, phy_payload: bytes, tmst_us: int | None, mono_s: float) -> None:
        """An uplink delivered to the pipeline: the gateway's clock anchor, and its reservations."""
        if tmst_us is None:
            return  # no timing: the pipeline cannot answer it in a window either ("no_timing")
        tmst_us %= TMST_WRAP
        gateway = self._gateways.pop(key, None)
        if gateway is None:
            gateway = _Gateway(tmst_us, mono_s)
            if len(self._gateways) >= MAX_GATEWAYS:
                del self._gateways[next(iter(self._gateways))]
        gateway.anchor_tmst_us, gateway.anchor_mono_s = tmst_us, mono_s
        self._gateways[key] = gateway  # newest anchor last
        self._prune(gateway, mono_s)
        if not (self.expects_answer(phy_payload) or (self.extra_answer and self.extra_answer(phy_payload))):
            return
        if phy_payload[0] >> 5 == MType.JOIN_REQUEST:
            delays = (JOIN_ACCEPT_DELAY1_S, JOIN_ACCEPT_DELAY2_S)
        else:
            delays = (self.rx1_delay_s, self.rx1_delay_s + (RECEIVE_DELAY2_S - RECEIVE_DELAY1_S))
        for delay_s in delays:
            window_tmst = (tmst_us + round(delay_s * _US)) % TMST_WRAP
            gateway.reserved.append(_Reservation(tmst_us, window_tmst, mono_s + delay_s))
        del gateway.reserved[:-MAX_WINDOWS]

    def book(self, key: str, send_at_tmst_us: int, airtime_s: float) -> Booking | None:
        """A timed downlink accepted for sending; None when this gateway's clock is unknown (no uplink
        heard from it), then it is not planned (the radio still checks its own timing)."""
        gateway = self._gateways.get(key)
        if gateway is None:
            return None
        send_at = send_at_tmst_us % TMST_WRAP
        distance_us = (send_at - gateway.anchor_tmst_us + _HALF_WRAP) % TMST_WRAP - _HALF_WRAP
        start_s = gateway.anchor_mono_s + distance_us / _US
        uplink: int | None = None
        for reservation in gateway.reserved:
            if reservation.window_tmst_us == send_at:
                uplink = reservation.uplink_tmst_us
                gateway.reserved.remove(reservation)  # the booking stands in its place
                break
        booking = Booking(key, start_s, start_s + airtime_s, uplink)
        gateway.booked.append(booking)
        del gateway.booked[:-MAX_WINDOWS]
        return booking

    def settle(self, booking: Booking, sent: bool) -> None:
        """The radio's verdict on a booked frame: not sent frees its window; sent ends the other
        reservation of its uplink (a device that got its frame in RX1 does not listen in RX2)."""
        gateway = self._gateways.get(booking.key)
        if gateway is None:
            return
        if not sent:
            if booking in gateway.booked:
                gateway.booked.remove(booking)
            return
        if booking.uplink_tmst_us is not None:
            gateway.reserved = [r for r in gateway.reserved if r.uplink_tmst_us != booking.uplink_tmst_us]

    # --- what an immediate frame asks ----------------------------------------------------------

    def wait_s(self, key: str, now_s: float, airtime_s: float, *, reserved: bool = True) -> float:
        """Seconds until an immediate frame of ``airtime_s`` could start without touching a booked
        window (nor a reserved window's start, when ``reserved``): 0 means now. The answer assumes no
        reservation is booked meanwhile; the caller asks again when it has waited."""
        gateway = self._gateways.get(key)
        if gateway is None:
            return 0.0
        self._prune(gateway, now_s)
        guard = self.guard_s
        booked = [(b.start_s - guard, b.end_s + guard) for b in gateway.booked]
        starts = [r.start_s - guard for r in gateway.reserved] if reserved else []
        # Candidate start times: now, the end of each booked window, each reservation's lapse.
        later = [end for _, end in booked] + starts
        candidates = sorted({now_s, *(t for t in later if t > now_s)})
        for start in candidates:
            end = start + airtime_s
            if any(b_start < end and start < b_end for b_start, b_end in booked):
                continue
            if any(start < lapse < end for lapse in starts):
                continue
            return start - now_s
        return candidates[-1] - now_s  # unreachable: after the last candidate nothing remains

    def recheck_s(self, key: str, now_s: float, *, reserved: bool = True) -> float:
        """Seconds until the plan changes by itself (a booked window ends, a reservation lapses); a
        waiting frame asks again then rather than at its predicted time, since a reservation booked
        meanwhile may have ended the others of its uplink (inf: nothing planned)."""
        gateway = self._gateways.get(key)
        if gateway is None:
            return float("inf")
        guard = self.guard_s
        changes = [b.end_s + guard for b in gateway.booked]
        if reserved:
            changes.extend(r.start_s - guard for r in gateway.reserved)
        return min((t - now_s for t in changes if t > now_s), default=float("inf"))

    def _prune(self, gateway: _Gateway, now_s: float) -> None:
        guard = self.guard_s
        if gateway.booked and any(b.end_s + guard <= now_s for b in gateway.booked):
            gateway.booked = [b for b in gateway.booked if b.end_s + guard > now_s]
        if gateway.reserved and any(r.start_s - guard <= now_s for r in gateway.reserved):
            gateway.reserved = [r for r in gateway.reserved if r.start_s - guard > now_s]
