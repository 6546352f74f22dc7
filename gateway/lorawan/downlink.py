"""Downlinks of the edge network server: what to send a device after its uplink, and when.

Owns, per device, the queue of application downlinks, the decision made on
each accepted uplink (LoRaWAN 1.0.4 §3.3, §4.3.1.2, §18): an ACK when the
uplink was confirmed, the MAC answers owed (LinkCheckAns §5.2, DeviceTimeAns
§5.9; other MAC commands are parsed, counted and logged), the next queued
payload with FPending when more wait, and the downlink frame counter
(``Session.fcnt_down``, persisted through the group commit as a ``CommitSink``).
Class A downlinks go in RX1 (the uplink's channel, its data rate minus
RX1DROffset, RxDelay after the uplink's concentrator timestamp) with RX2
(configured frequency and data rate, one second later) as the fallback; class C
downlinks go at once on the RX2 parameters.

The MAC features that ask devices something (ADR's LinkADRReq, DevStatusReq) are ``MacPeer``s
passed in: each reads the device's answers and says which requests go in the next downlink. The
scheduler owns the FOpts room: its own answers first, then the peers' requests in order. An uplink
with ADRACKReq set (FCtrl bit 6, §4.3.1.1) is always answered by a downlink, empty if need be.

Outcomes (issue 20): each queued downlink may carry a ``DownlinkRef`` (who asked: a platform
command's seq, a rule) and ends in one state reported through ``on_outcome``: ``sent`` (unconfirmed,
on the air), ``acknowledged``, ``unacknowledged`` (no ACK after 1 + ``lorawan.confirmed_retries``
transmissions), ``expired`` (still waiting after ``lorawan.downlink_ttl_s``: a silent class A device;
or replaced by a superseding one) or ``refused`` with its reason (``queue_full``, ``too_large``, or the
radio's last refusal: ``duty_cycle``, ``too_late``, ``disk_full``...). A confirmed downlink is
acknowledged by the ACK bit of the device's next uplink (§4.3.1.2); an uplink without it, or for
class C no uplink within ``lorawan.class_c_ack_timeout_s`` (§18: CLASS_C_RESP_TIMEOUT), sends it again
at the next opportunity as a NEW frame with a new FCntDown (§4.3.1.3: never the same counter twice).
Until then no other downlink goes to that class C device (§18: one confirmed downlink pending at a
time; keeping the queue's order). A frame the radio refused was never heard: it is sent again the
same way, within the same budget of transmissions, then ``refused`` with the radio's reason.

Roles (issue 21): ``is_home`` (set by the app from ``gateway.roles``) says whether this gateway
answers a device; where another gateway is its home, a command is refused at once (``not_home``)
and class C frames are not sent (the caller also gives it no class A uplink of such a device).

Sans-IO: it is fed accepted uplinks, radio verdicts (``transmitted``) and the time (``tick``) and
returns ``TxRequest`` values; it never sends, sleeps or reads a clock. The radio layer enforces
airtime and duty cycle.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from gateway.config import LorawanSection
from gateway.errors import DownlinkQueueFull
from gateway.lorawan import mac, phy, region
from gateway.lorawan.sessions import Session, SessionTable
from gateway.messages import DevEui, MType, TxRequest, UplinkData

__all__ = [
    "FOPTS_MAX_BYTES",
    "OUTCOME_STATES",
    "DownlinkPlan",
    "DownlinkRef",
    "DownlinkScheduler",
    "FcntDown",
    "MacPeer",
    "OnOutcome",
    "QueuedDownlink",
]

logger = logging.getLogger(__name__)

_TMST_WRAP = 1 << 32
_US = 1_000_000
MAX_QUEUE = 16
"""Queued downlinks per device, at most (a class A device takes one per uplink)."""
_MAX_MAC_PAYLOAD = (59, 59, 59, 123, 230, 230, 230)
"""EU868 maximum MACPayload size M per data rate DR0..DR6 (RP002-1.0.3 EU868 table, repeater-compatible)."""
_FHDR_FPORT_BYTES = 8
"""DevAddr 4 + FCtrl 1 + FCnt 2 + FPort 1: MACPayload minus FOpts and FRMPayload."""
FOPTS_MAX_BYTES = 15
"""FOptsLen is 4 bits (LoRaWAN 1.0.4 §4.3.1.6)."""
_FCTRL_ADR_ACK_REQ = 0x40
"""Uplink FCtrl bit 6 (§4.3.1.1): the device has heard no downlink for ADR_ACK_LIMIT uplinks."""


class MacPeer(Protocol):
    """A MAC feature that sends requests to devices and reads their answers (ADR, DevStatus).

    Both methods run on the event loop for each accepted uplink, answers first; they must be quick
    and must not raise.
    """

    def answer(self, up: UplinkData, command: mac.MacCommand) -> None:
        """A MAC command from the device that the scheduler does not answer itself (LinkADRAns,
        DevStatusAns, ...): the peer ignores those that are not its own."""

    def requests(self, up: UplinkData, room_bytes: int) -> bytes:
        """The MAC requests (CID + payload, at most ``room_bytes``) to send in the downlink that
        follows ``up``; b"" for none. A request the device does not answer is the peer's to send
        again (the downlink may be lost)."""


OUTCOME_STATES = ("sent", "acknowledged", "unacknowledged", "expired", "refused")
"""The end states of a queued downlink (module docstring)."""
_FLIGHT_FORGET_S = 60.0
"""A frame whose radio verdict did not come within this long (its task was cancelled) is forgotten."""


@dataclass(frozen=True, slots=True)
class DownlinkRef:
    """Who asked for a downlink, so that its outcome goes back to them."""

    source: str
    """``platform`` (a signed command) or ``rule`` (the rules engine)."""
    name: str
    """The platform command (``downlink``) or what the rule engine says asked (a rule's name)."""
    seq: int | None = None
    """The platform command's seq (its ``cmd-result`` messages carry it)."""


OnOutcome = Callable[[DownlinkRef | None, DevEui, str, str], None]
"""``on_outcome(ref, dev_eui, state, detail)``: ``state`` one of ``OUTCOME_STATES``; ``detail`` the
reason code for ``refused`` (``duty_cycle``, ``too_large``...), else a sentence for people. Called on
the event loop; must be quick and must not raise."""


@dataclass(frozen=True, slots=True)
class QueuedDownlink:
    fport: int
    payload: bytes
    confirmed: bool = False
    ref: DownlinkRef | None = None
    attempts: int = 0
    """Frames built for it so far, each with its own FCntDown."""
    queued_at_s: float | None = None
    """When it was queued, in the ``tick`` clock's seconds (None until the next ``tick`` stamps it)."""


@dataclass(slots=True)
class _Flight:
    """A frame built for a queued downlink, until its outcome is known."""

    item: QueuedDownlink
    """The downlink, its ``attempts`` counting this frame."""
    dev_eui: DevEui
    fcnt_down: int
    class_c: bool
    seen_at_s: float | None = None
    """When the radio said it was sent (else the first ``tick`` after it was built)."""


@dataclass(frozen=True, slots=True)
class DownlinkPlan:
    """One downlink frame and where to send it: try ``rx1``, then ``rx2`` if RX1 was refused."""

    dev_eui: DevEui
    fcnt_down: int
    phy_payload: bytes
    rx1: TxRequest | None
    rx2: TxRequest | None

    @property
    def requests(self) -> tuple[TxRequest, ...]:
        return tuple(r for r in (self.rx1, self.rx2) if r is not None)


@dataclass(frozen=True, slots=True)
class FcntDown:
    dev_eui: DevEui
    session_tag: str
    fcnt_down: int
    """The next downlink FCnt to use."""


class DownlinkScheduler:
    """Decides class A and class C downlinks; a ``CommitSink`` for the downlink counters."""

    def __init__(
        self,
        section: LorawanSection,
        sessions: SessionTable,
        *,
        clock_synced: Callable[[], bool] = lambda: True,
        peers: Sequence[MacPeer] = (),
        on_outcome: OnOutcome | None = None,
    ) -> None:
        self._section = section
        self.on_outcome = on_outcome
        """Told the end state of each queued downlink (``OnOutcome``); settable after construction."""
        self._sessions = sessions
        self._clock_synced = clock_synced
        self._peers = tuple(peers)
        self._queues: dict[bytes, deque[QueuedDownlink]] = {}
        self._class_c: set[bytes] = set()
        self._heard_by: dict[bytes, str] = {}
        """Class C device → the gateway EUI of its last accepted uplink: its downlinks go there, not
        to whichever forwarder pulled last (anyone who can reach the UDP port can send PULL_DATA)."""
        self._awaiting_ack: dict[bytes, _Flight] = {}
        """Device → its confirmed downlink on the air, until an uplink (or the class C timeout) says."""
        self._flights: dict[bytes, _Flight] = {}
        """PHYPayload → the queued downlink it carries, until the radio's verdict (``transmitted``)."""
        self._pending: dict[bytes, FcntDown] = {}
        self._writing: dict[bytes, int] = {}
        """Device → the downlink counter taken by a group commit that has not committed yet."""
        self.counters: Counter[str] = Counter()
        self.is_home: Callable[[DevEui], bool] = lambda _dev_eui: True
        """Whether this gateway answers the device (another gateway's device: nothing sent to it)."""
        self.fcnt_gate: Callable[[DevEui, int], bool] | None = None
        """Issue 21: may a frame with this FCntDown go to this device now? False past the FCntDown
        reserve a home gateway published while the broker is away (``gateway.fleet.fcnt_reserve``):
        the frame is not built, its downlink ends ``refused`` ``no_fcnt_reserve``. None: always."""
        rx2_rate = region.data_rate(section.rx2_dr)
        self._rx2_sf, self._rx2_bw_hz = rx2_rate.sf, rx2_rate.bw_hz

    # --- what the application asks for ---------------------------------------------------------

    def enqueue(
        self,
        dev_eui: DevEui,
        fport: int,
        payload: bytes,
        *,
        confirmed: bool = False,
        supersede: bool = False,
        ref: DownlinkRef | None = None,
        now_s: float | None = None,
    ) -> None:
        """Queue an application downlink (FPort 1..223).

        ``DownlinkQueueFull`` when the device has ``MAX_QUEUE`` downlinks waiting already (reported
        ``refused`` ``queue_full`` too); a ``ValueError`` for an FPort outside 1..223 (a caller's
        mistake: the platform's and the profiles' FPorts are checked before they get here).

        ``supersede``: drop what is still queued for the device on the same FPort first (a newer
        display content makes the older one pointless; each dropped one ends ``expired``).
        ``ref``: who asked, told the outcome. ``now_s``: the ``tick`` clock now (else the next
        ``tick`` stamps it), from which ``lorawan.downlink_ttl_s`` counts.
        """
        if not 1 <= fport <= 223:
            raise ValueError(f"application FPort must be 1..223, got {fport}")
        if not self.is_home(dev_eui):
            # Its home gateway sends its downlinks; ours would collide with them and use another
            # FCntDown. Refused at once, so the platform can send it to the home.
            self.counters["refused.not_home"] += 1
            refused = QueuedDownlink(fport, payload, confirmed, ref, queued_at_s=now_s)
            self._report(refused, dev_eui, "refused", "not_home")
            return
        queue = self._queues.setdefault(dev_eui.value, deque())
        if supersede:
            kept = [item for item in queue if item.fport != fport]
            for item in queue:
                if item.fport == fport:
                    self._report(item, dev_eui, "expired", f"replaced by a newer downlink on FPort {fport}")
            queue.clear()
            queue.extend(kept)
        item = QueuedDownlink(fport, payload, confirmed, ref, queued_at_s=now_s)
        if len(queue) >= MAX_QUEUE:
            self._report(item, dev_eui, "refused", "queue_full")
            raise DownlinkQueueFull(f"downlink queue of {dev_eui} is full ({MAX_QUEUE})", limit=MAX_QUEUE)
        queue.append(item)

    def queued(self, dev_eui: DevEui) -> int:
        return len(self._queues.get(dev_eui.value, ()))

    def set_class_c(self, dev_eui: DevEui, enabled: bool = True) -> None:
        """Mark a device as class C (listening on RX2 whenever it is not transmitting)."""
        if enabled:
            self._class_c.add(dev_eui.value)
        else:
            self._class_c.discard(dev_eui.value)
            self._heard_by.pop(dev_eui.value, None)

    # --- class A: after each accepted uplink ---------------------------------------------------

    def on_uplink(self, up: UplinkData, *, gw_count: int = 1) -> DownlinkPlan | None:
        """The downlink owed after an accepted uplink, or None when there is nothing to say.

        ``gw_count`` is how many gateways heard the uplink (LinkCheckAns GwCnt).
        """
        session = self._sessions.by_dev_eui(up.dev_eui)
        if session is None or session.session_tag != up.session_tag:
            return None  # the session changed (a join) since the uplink was accepted
        self.counters["uplinks"] += 1
        eui = up.dev_eui.value
        self._settle_ack(up)
        answers = self._mac_answers(up, gw_count)
        answers += self._peer_requests(up, FOPTS_MAX_BYTES - len(answers))
        adr_ack_req = bool(up.frame.phy_payload[5] & _FCTRL_ADR_ACK_REQ)
        if adr_ack_req:
            self.counters["adr_ack_req"] += 1
        rx = up.frame.rx
        if eui in self._class_c and rx.gateway_eui is not None:
            self._heard_by[eui] = rx.gateway_eui
        tmst = rx.concentrator_tmst_us
        if tmst is None:
            if up.confirmed or answers or adr_ack_req or self.queued(up.dev_eui):
                self.counters["no_timing"] += 1
            return None
        try:
            rx1_dr: int | None = region.rx1_dr(region.dr_of(rx.sf, rx.bw_hz), self._section.rx1_dr_offset)
        except ValueError:
            rx1_dr = None
        limit = min(
            _MAX_MAC_PAYLOAD[rx1_dr if rx1_dr is not None else 6], _MAX_MAC_PAYLOAD[self._section.rx2_dr]
        )
        item = self._next_fitting(eui, limit - _FHDR_FPORT_BYTES - len(answers))
        if item is None and not answers and not up.confirmed and not adr_ack_req:
            return None
        if not self._fcnt_allowed(session, item):
            return None
        phy_payload = self._build(session, item, answers, ack=up.confirmed)
        delay_s = self._section.rx_delay_s
        power = self._section.downlink_power_dbm
        rx1: TxRequest | None = None
        if rx1_dr is not None:
            rate = region.data_rate(rx1_dr)
            rx1 = TxRequest(
                phy_payload=phy_payload,
                freq_hz=rx.freq_hz,
                sf=rate.sf,
                bw_hz=rate.bw_hz,
                power_dbm=power,
                send_at_tmst_us=(tmst + delay_s * _US) % _TMST_WRAP,
                gateway_eui=rx.gateway_eui,
                dev_eui=up.dev_eui,
            )
        rx2 = TxRequest(
            phy_payload=phy_payload,
            freq_hz=self._section.rx2_freq_hz,
            sf=self._rx2_sf,
            bw_hz=self._rx2_bw_hz,
            power_dbm=power,
            send_at_tmst_us=(tmst + (delay_s + 1) * _US) % _TMST_WRAP,
            gateway_eui=rx.gateway_eui,
            dev_eui=up.dev_eui,
        )
        self.counters["class_a"] += 1
        return DownlinkPlan(up.dev_eui, session.fcnt_down - 1, phy_payload, rx1, rx2)

    # --- class C: any time ---------------------------------------------------------------------

    def class_c_ready(self, gateway_eui: str | None = None) -> list[TxRequest]:
        """One immediate RX2 downlink for each class C device with something queued, through
        ``gateway_eui`` if given, else through the forwarder that heard the device last (a device
        not heard since the start goes to the backend's default forwarder)."""
        requests: list[TxRequest] = []
        limit = _MAX_MAC_PAYLOAD[self._section.rx2_dr] - _FHDR_FPORT_BYTES
        for eui in sorted(self._class_c):
            if not self._queues.get(eui) or eui in self._awaiting_ack:
                continue  # §18: nothing more until its confirmed downlink is acknowledged or timed out
            if not self.is_home(DevEui(eui)):
                continue  # its home changed since the command was queued: the queue waits or expires
            session = self._sessions.by_dev_eui(DevEui(eui))
            if session is None:
                continue
            item = self._next_fitting(eui, limit)
            if item is None or not self._fcnt_allowed(session, item):
                continue
            phy_payload = self._build(session, item, b"", ack=False, class_c=True)
            requests.append(
                TxRequest(
                    phy_payload=phy_payload,
                    freq_hz=self._section.rx2_freq_hz,
                    sf=self._rx2_sf,
                    bw_hz=self._rx2_bw_hz,
                    power_dbm=self._section.downlink_power_dbm,
                    send_at_tmst_us=None,
                    gateway_eui=gateway_eui or self._heard_by.get(eui),
                    dev_eui=session.dev_eui,
                )
            )
            self.counters["class_c"] += 1
        return requests

    # --- outcomes: the radio's verdicts, the ACKs, the time -------------------------------------

    def transmitted(self, request: TxRequest, status: str, now_s: float) -> None:
        """The radio's last word on a frame this scheduler built: ``sent``, or why it was not
        (``too_late``, ``duty_cycle``, ``disk_full``...). An unconfirmed downlink on the air ends
        ``sent``; a confirmed one waits for its ACK; a refused frame was never heard, so its
        downlink is queued again at the head (a new frame, a new FCntDown) while transmissions
        remain, else it ends ``refused`` with the radio's reason."""
        flight = self._flights.pop(request.phy_payload, None)
        if flight is None:
            return  # an ACK or MAC answer without a queued downlink, a join-accept, or forgotten
        eui = flight.dev_eui.value
        if status == "sent":
            flight.seen_at_s = now_s
            if not flight.item.confirmed:
                self._report(flight.item, flight.dev_eui, "sent", f"FCntDown {flight.fcnt_down}")
            return
        if flight.item.confirmed:
            if self._awaiting_ack.get(eui) is not flight:
                return  # settled meanwhile by an uplink: this verdict comes too late to matter
            del self._awaiting_ack[eui]
        self.counters[f"not_sent_again.{status}"] += 1
        self._again(flight, "refused", status)

    def tick(self, now_s: float) -> None:
        """The time-driven outcomes, about every second (``now_s``: a monotonic clock's seconds):
        stamps what was queued without a time, expires what still waits after ``downlink_ttl_s``
        (a silent class A device), and sends again a class C confirmed downlink not acknowledged
        within ``class_c_ack_timeout_s``."""
        ttl_s = self._section.downlink_ttl_s
        for eui, queue in self._queues.items():
            if not queue:
                continue
            kept: deque[QueuedDownlink] = deque()
            for item in queue:
                if item.queued_at_s is None:
                    item = replace(item, queued_at_s=now_s)
                if now_s - (item.queued_at_s or now_s) >= ttl_s:
                    self._report(item, DevEui(eui), "expired", f"still queued after {ttl_s:g} s")
                else:
                    kept.append(item)
            queue.clear()
            queue.extend(kept)
        timeout_s = self._section.class_c_ack_timeout_s
        for eui, flight in list(self._awaiting_ack.items()):
            if flight.seen_at_s is None:
                flight.seen_at_s = now_s
            queued_at_s = flight.item.queued_at_s
            if queued_at_s is None:
                flight.item = replace(flight.item, queued_at_s=now_s)
                queued_at_s = now_s
            if flight.class_c and now_s - flight.seen_at_s >= timeout_s:
                del self._awaiting_ack[eui]
                self._again(flight, "unacknowledged", f"no ACK within {timeout_s:g} s")
            elif now_s - queued_at_s >= ttl_s:
                del self._awaiting_ack[eui]
                self._report(
                    flight.item, flight.dev_eui, "expired",
                    f"no uplink since transmission {flight.item.attempts} (FCntDown {flight.fcnt_down})",
                )  # fmt: skip
        for frame, flight in list(self._flights.items()):
            if flight.seen_at_s is None:
                flight.seen_at_s = now_s
            elif now_s - flight.seen_at_s >= _FLIGHT_FORGET_S:
                del self._flights[frame]

    def _settle_ack(self, up: UplinkData) -> None:
        """The device's next uplink after a confirmed downlink says whether it got it (§4.3.1.2:
        the end-device acknowledges with its next uplink)."""
        flight = self._awaiting_ack.pop(up.dev_eui.value, None)
        if flight is None:
            return
        if self._uplink_ack_bit(up):
            self.counters["confirmed_acked"] += 1
            detail = f"ACK in uplink FCnt {up.fcnt} (transmission {flight.item.attempts}, "
            detail += f"FCntDown {flight.fcnt_down})"
            self._report(flight.item, flight.dev_eui, "acknowledged", detail)
            return
        self._again(flight, "unacknowledged", f"uplink FCnt {up.fcnt} without ACK")

    def _again(self, flight: _Flight, state: str, detail: str) -> None:
        """Queue the downlink again at the head (the next opportunity: this very uplink's windows,
        or the next class C poll) while it has transmissions left, else end it in ``state``."""
        item = flight.item
        if item.attempts <= self._section.confirmed_retries:
            self.counters["retried"] += 1
            logger.debug("downlink to %s sent again (%s), transmission %d", flight.dev_eui, detail,
                         item.attempts + 1)  # fmt: skip
            self._queues.setdefault(flight.dev_eui.value, deque()).appendleft(item)
            return
        if state == "unacknowledged":
            self.counters["confirmed_unacked"] += 1
            detail = f"no ACK after {item.attempts} transmissions ({detail})"
        self._report(item, flight.dev_eui, state, detail)

    def _report(self, item: QueuedDownlink, dev_eui: DevEui, state: str, detail: str) -> None:
        self.counters[f"outcome.{state}"] += 1
        if self.on_outcome is None:
            return
        try:
            self.on_outcome(item.ref, dev_eui, state, detail)
        except Exception:  # a listener's bug must not stop the downlinks
            logger.exception("downlink outcome listener failed")

    # --- internals -----------------------------------------------------------------------------

    @staticmethod
    def _uplink_ack_bit(up: UplinkData) -> bool:
        # FCtrl is octet 5 of a data frame (MHDR 1 + DevAddr 4); the frame was parsed when accepted.
        return bool(up.frame.phy_payload[5] & 0x20)

    def _mac_answers(self, up: UplinkData, gw_count: int) -> bytes:
        fopts_len = up.frame.phy_payload[5] & 0x0F
        if up.fport == 0:
            stream = up.payload  # decrypted with NwkSKey by the session table
        elif fopts_len:
            stream = up.frame.phy_payload[8 : 8 + fopts_len]
        else:
            return b""
        commands, unread = mac.parse_commands(stream, uplink=True)
        if unread:
            self.counters["mac.unreadable"] += 1
            logger.debug("unreadable MAC commands from %s: %s", up.dev_eui, unread.hex())
        answers = bytearray()
        for command in commands:
            self.counters[f"mac.{command.name}"] += 1
            if command.cid == mac.LINK_CHECK:
                rx = up.frame.rx
                answers += mac.link_check_ans(mac.link_margin_db(rx.snr_db, rx.sf), gw_count)
            elif command.cid == mac.DEVICE_TIME:
                if self._clock_synced():
                    answers += mac.device_time_ans(mac.gps_time_s(up.frame.received_at_s))
                else:
                    self.counters["mac.device_time_unsynced"] += 1
            else:
                logger.debug("MAC command from %s: %s %s", up.dev_eui, command.name, command.payload.hex())
                for peer in self._peers:
                    peer.answer(up, command)
        # LinkCheckAns (3) + DeviceTimeAns (6) always fit the 15 bytes of FOpts.
        return bytes(answers[:FOPTS_MAX_BYTES])

    def _peer_requests(self, up: UplinkData, room_bytes: int) -> bytes:
        """The peers' MAC requests, in the order the peers were given, while they fit FOpts."""
        requests = b""
        for peer in self._peers:
            asked = peer.requests(up, room_bytes - len(requests))
            if len(requests) + len(asked) > room_bytes:
                self.counters["mac.requests_deferred"] += 1  # the peer asks again next uplink
                continue
            requests += asked
        return requests

    def _next_fitting(self, eui: bytes, room: int) -> QueuedDownlink | None:
        queue = self._queues.get(eui)
        while queue:
            item = queue[0]
            if len(item.payload) <= room:
                return queue.popleft()
            if len(item.payload) <= max(_MAX_MAC_PAYLOAD) - _FHDR_FPORT_BYTES:
                self.counters["deferred_too_large"] += 1
                return None  # fits a later window at a faster data rate; leave it queued
            queue.popleft()
            self.counters["dropped_too_large"] += 1
            logger.warning(
                "dropping a %d-byte downlink for %s: too large for EU868", len(item.payload), DevEui(eui)
            )
            self._report(item, DevEui(eui), "refused", "too_large")
        return None

    def _fcnt_allowed(self, session: Session, item: QueuedDownlink | None) -> bool:
        """``fcnt_gate`` on the session's next FCntDown; a refused frame's downlink ends ``refused``."""
        if self.fcnt_gate is None or self.fcnt_gate(session.dev_eui, session.fcnt_down):
            return True
        self.counters["no_fcnt_reserve"] += 1
        if item is not None:
            self._report(item, session.dev_eui, "refused", "no_fcnt_reserve")
        return False

    def raise_fcnt_down(self, dev_eui: DevEui, above: int) -> int | None:
        """Issue 21: a new home goes on above ``above`` (the coordinator's ``fcnt_floor``: the old
        home's reserve), durably with the next group commit; returns the next FCntDown, None
        without a session. A counter already above stays (FCntDown only grows)."""
        session = self._sessions.by_dev_eui(dev_eui)
        if session is None:
            return None
        if session.fcnt_down <= above:
            session.fcnt_down = above + 1
            self._pending[dev_eui.value] = FcntDown(session.dev_eui, session.session_tag, session.fcnt_down)
            self.counters["fcnt_down_raised"] += 1
        return session.fcnt_down

    def _build(
        self, session: Session, item: QueuedDownlink | None, fopts: bytes, *, ack: bool, class_c: bool = False
    ) -> bytes:
        eui = session.dev_eui.value
        confirmed = item is not None and item.confirmed
        fcnt = session.fcnt_down
        frame = phy.build_data_frame(
            session.keys,
            mtype=MType.CONFIRMED_DATA_DOWN if confirmed else MType.UNCONFIRMED_DATA_DOWN,
            dev_addr=session.dev_addr.value,
            fcnt32=fcnt,
            fport=item.fport if item is not None else None,
            payload=item.payload if item is not None else b"",
            fopts=fopts,
            ack=ack,
            fpending=bool(self._queues.get(eui)),
        )
        if item is not None:
            # Each frame its own FCntDown (§4.3.1.3), a retry too: attempts counts this one.
            flight = _Flight(replace(item, attempts=item.attempts + 1), session.dev_eui, fcnt, class_c)
            self._flights[frame] = flight
            if confirmed:
                self._awaiting_ack[eui] = flight
        session.fcnt_down = fcnt + 1
        self._pending[eui] = FcntDown(session.dev_eui, session.session_tag, session.fcnt_down)
        return frame

    # --- CommitSink: downlink counters ---------------------------------------------------------

    def take(self) -> list[FcntDown] | None:
        if not self._pending:
            return None
        taken = list(self._pending.values())
        self._pending = {}
        for counter in taken:
            self._writing[counter.dev_eui.value] = counter.fcnt_down
        return taken

    def write(self, conn: sqlite3.Connection, taken: list[FcntDown]) -> None:
        conn.executemany(
            "UPDATE sessions SET fcnt_down = ? WHERE dev_eui = ? AND session_tag = ? AND fcnt_down < ?",
            [(c.fcnt_down, str(c.dev_eui), c.session_tag, c.fcnt_down) for c in taken],
        )

    def committed(self, taken: list[FcntDown]) -> None:
        """The in-memory counters are already ahead; these are durable now (``counter_durable``)."""
        self._forget_writing(taken)

    def give_back(self, taken: list[FcntDown]) -> None:
        """The group failed (a full disk): these counters go with the next one, unless a later
        downlink of the same device already queued a higher one."""
        self._forget_writing(taken)
        for counter in taken:
            self._pending.setdefault(counter.dev_eui.value, counter)

    def _forget_writing(self, taken: list[FcntDown]) -> None:
        for counter in taken:
            eui = counter.dev_eui.value
            if self._writing.get(eui) == counter.fcnt_down:
                del self._writing[eui]

    def counter_durable(self, dev_eui: DevEui) -> bool:
        """True when the downlink counter of every frame built for the device so far is committed:
        a frame may go on the air then (after a crash, no FCntDown goes out twice under the same keys)."""
        eui = dev_eui.value
        return eui not in self._pending and eui not in self._writing
