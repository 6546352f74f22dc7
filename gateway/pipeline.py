"""The uplink path, as one short readable function: frame → MAC → profile → rules → outbox → downlink.

Owns the order of the stages, the shape of a reading record (ARCHITECTURE.md
§3.2), the routing of rule outputs (alerts and aggregates to the outbox, commands
to the downlink queue) and the per-reason rejection counters. Rejected input is
counted, logged once per reason at WARNING (then at DEBUG) and dropped; it never
raises out. Transmissions are handed to ``send`` (the app runs them as tasks:
the radio may wait for a TX_ACK).

Roles (issue 21, docs/fleet.md): ``is_home(dev_eui_hex)`` says whether this gateway answers a
device. For a device it only witnesses, a frame is still verified, decoded and forwarded under the
same record id, and its rules are evaluated (their state stays current for a failover), but
nothing is answered: no join-accept (its join-request is counted ``witness.join_requests`` and left
to the home, whose join announcement gives this gateway the session), no ACK or MAC answer, no rule
output (alerts, aggregates, commands: ``witness.rule_outputs``, one answer per episode, the home's).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.clock import SystemClock, iso_utc
from gateway.codec import ProfileStore
from gateway.errors import DecodeError, DownlinkQueueFull, EncodeError, FrameError, InputError, ReplayedFrame
from gateway.loglimit import RateLimitedLog
from gateway.lorawan.dedup import HeardFrame
from gateway.lorawan.downlink import DownlinkRef, DownlinkScheduler
from gateway.lorawan.join import JoinAccepted, JoinCommits, JoinRateLimit, JoinServer, join_request_dev_eui
from gateway.lorawan.multicast import MulticastScheduler
from gateway.lorawan.phy import DataFrame
from gateway.lorawan.phy import parse as parse_phy
from gateway.lorawan.sessions import Session, SessionTable
from gateway.messages import Alert, DevEui, MType, Priority, RadioFrame, Record, TxRequest, UplinkData
from gateway.rules import actions
from gateway.rules.engine import ReadingFacts, RuleEngine

log = logging.getLogger(__name__)

PRIORITY_READING = int(Priority.READING)

Send = Callable[[TxRequest | None, TxRequest | None], None]
"""Transmit a downlink: try the first request, then the second if the first was refused."""


class RecordSink(Protocol):
    def put(self, record: Record) -> None: ...


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the registry says about a device beyond its keys: where it is and how it is installed."""

    site: str = ""
    params: Mapping[str, float] = field(default_factory=dict)


def record_id(up: UplinkData) -> str:
    """Stable id (ARCHITECTURE.md §3.4): the same frame always gets the same id, new sessions new ids."""
    return f"{up.dev_eui}-{up.session_tag}-{up.fcnt}"


class UplinkPipeline:
    """Runs each heard frame through the stages; counts what happens."""

    def __init__(
        self,
        sessions: SessionTable,
        profiles: ProfileStore,
        outbox: RecordSink,
        clock: SystemClock,
        *,
        joins: JoinServer | None = None,
        join_commits: JoinCommits | None = None,
        downlinks: DownlinkScheduler | None = None,
        rules: RuleEngine | None = None,
        send: Send | None = None,
        commit_now: Callable[[], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._profiles = profiles
        self._outbox = outbox
        self._clock = clock
        self._joins = joins
        self._join_commits = join_commits
        self._join_limit = JoinRateLimit()
        if join_commits is not None:
            # A join is served (counted, its join-accept sent) only once the group commit made it durable.
            join_commits.on_durable = self._joined
            join_commits.on_lost = self._join_lost
        self._downlinks = downlinks
        self.rules = rules
        self.send = send
        self._commit_now = commit_now
        self.devices: dict[str, DeviceInfo] = {}
        """Site and installation parameters per DevEUI hex, refreshed by the app from the registry."""
        self.counters: Counter[str] = Counter()
        # Rejections and rule-command failures: one WARNING per reason per minute, with a count.
        self._reject_log = RateLimitedLog(log, interval_s=60.0)
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        """Called with a frame event (verdict, reason, device, signal, data) for every frame:
        the inventory and `edgegw tail` listen here. Listeners must be quick and must not raise."""
        self.downlink_listeners: list[Callable[[dict[str, Any]], None]] = []
        """Called with a downlink event (``downlink_event``) for each downlink sent or given up:
        `edgegw tail` listens here (the inventory does not: a downlink is not a frame heard)."""
        self.multicast: MulticastScheduler | None = None
        """The class C multicast groups' queue (set by the app): rule commands to a group go there."""
        self.is_home: Callable[[str], bool] = _always
        """Whether this gateway answers the device (DevEUI hex); set by the app from ``gateway.roles``."""
        self.group_is_home: Callable[[str], bool] = _always
        """Whether this gateway sends the frames of the multicast group (its name)."""
        self.join_listeners: list[Callable[[JoinAccepted], None]] = []
        """Called with each join of this gateway once durable (after its join-accept was handed on):
        the join announcements listen here."""

    async def handle(self, heard: HeardFrame) -> Record | None:
        """The whole uplink path for one frame; returns the reading put in the outbox, if any."""
        frame = heard.frame
        self.counters["frames"] += 1
        if frame.phy_payload[:1] and frame.phy_payload[0] >> 5 == MType.JOIN_REQUEST:
            claimed = join_request_dev_eui(frame.phy_payload)
            if claimed is not None and not self.is_home(claimed.hex()):
                # The home answers it; its announcement will give this gateway the session.
                self.counters["witness.join_requests"] += 1
                return None
            self._join(frame)
            return None
        try:
            up = self._sessions.accept(frame)
        except ReplayedFrame as exc:
            repeated = self._sessions.retransmission_of(frame)
            if repeated is None:
                self._reject(exc, frame)
            else:
                self._retransmitted(repeated, heard)
            return None
        except InputError as exc:
            self._reject(exc, frame)
            return None
        self.counters["accepted"] += 1
        data, extra = self._decode(up)
        record = self._record(up, data, extra)
        self._outbox.put(record)
        if data and self.rules is not None:
            info = self.devices.get(str(up.dev_eui))
            facts = ReadingFacts(
                str(up.dev_eui), up.profile, frame.received_at_s, data,
                info.site if info else "", info.params if info else {}, record.record_id,
            )  # fmt: skip
            self.route(self.rules.evaluate(facts))
        self._answer(up, heard)
        if self.listeners:
            self._emit(
                frame,
                "accepted",
                dev_eui=str(up.dev_eui),
                fcnt=up.fcnt,
                fport=up.fport,
                data=data,
                decode_error=extra.get("decode_error"),
                record_id=record.record_id,
                payload_hex=up.payload.hex(),
            )
        return record

    def set_devices(self, devices: dict[str, DeviceInfo]) -> None:
        """Take the registry's device table (on the loop: ``gateway.app.registry`` reads it apart)."""
        self.devices = devices

    def route(self, outputs: list[actions.Output]) -> None:
        """Rule outputs: alerts and aggregates to the outbox, commands to the device's downlink queue.
        Those of a device (or group) another gateway answers are dropped: its home sends them."""
        for out in outputs:
            if not self._answers(out):
                self.counters["witness.rule_outputs"] += 1
                continue
            if isinstance(out, (Alert, actions.AggregateRecord)):
                self.counters[f"rules.{'alert' if isinstance(out, Alert) else 'aggregate'}"] += 1
                self._outbox.put(actions.to_record(out, time_quality=self._clock.quality(None)))
            elif isinstance(out, actions.GroupDownlinkRequest):
                self._group_command(out)
            else:
                request = out.as_downlink() if isinstance(out, actions.DisplayUpdate) else out
                self._command(request, supersede=isinstance(out, actions.DisplayUpdate))

    def _answers(self, out: actions.Output) -> bool:
        """Whether this gateway is the home of what the output is about: a group's command or a group's
        alert (a lighting fail-safe, ``group:NAME``) by the group's home, the rest by the device's."""
        if isinstance(out, actions.GroupDownlinkRequest):
            return self.group_is_home(out.group)
        if out.dev_eui.startswith(actions.GROUP_TARGET_PREFIX):
            return self.group_is_home(out.dev_eui.removeprefix(actions.GROUP_TARGET_PREFIX))
        return self.is_home(out.dev_eui)

    def _command(self, request: actions.DownlinkRequest, *, supersede: bool = False) -> None:
        try:
            session = self._sessions.by_dev_eui(DevEui.from_hex(request.dev_eui))
        except ValueError:
            session = None
        ref = DownlinkRef("rule", request.reason)
        if self._downlinks is None or session is None:
            self.counters["rules.command_no_session"] += 1
            self._log_once(
                "command_no_session", "rule command %s for %s: no session", request.command, request.dev_eui
            )
            try:
                self.downlink_outcome(ref, DevEui.from_hex(request.dev_eui), "refused", "no_session")
            except ValueError:
                pass  # not even a DevEUI: counted above, no device to show it for
            return
        try:
            downlink = self._profiles.get(session.profile).encode(request.command, request.params)
        except (KeyError, EncodeError) as exc:
            self.counters["rules.command_failed"] += 1
            self._log_once(
                f"command.{request.command}", "rule command %s cannot be encoded: %s", request.command, exc
            )
            return
        try:
            self._downlinks.enqueue(
                session.dev_eui, downlink.fport, downlink.payload, supersede=supersede, ref=ref
            )
        except DownlinkQueueFull as exc:  # drop this command, keep running (its outcome: refused)
            self.counters["rules.command_queue_full"] += 1
            self._log_once("queue_full", "rule command %s dropped: %s", request.command, exc)
            return
        except ValueError as exc:  # an FPort outside 1..223 from the profile: its author's mistake
            self.counters["rules.command_failed"] += 1
            self._log_once(
                f"command.{request.command}", "rule command %s cannot be queued: %s", request.command, exc
            )
            return
        self.counters["rules.command_queued"] += 1

    def queue_group_command(
        self, group: str, command: str, params: Mapping[str, object], ref: DownlinkRef | None = None
    ) -> int:
        """Encode ``command`` with the profile of ``group``'s members and queue it as one multicast
        frame (``ref``: who asked, told its end state); returns the group's queue length.
        ValueError (no such group, no member, a payload
        too large for the group's data rate), EncodeError, KeyError (unknown command or profile),
        DownlinkQueueFull."""
        if self.multicast is None:
            raise ValueError("multicast groups are not served by this agent")
        found = self.multicast.group(group)
        if found is None:
            raise ValueError(f"no multicast group named {group!r}")
        if found.profile is None:
            raise ValueError(f"multicast group {group} has no member (edgegw group add-member)")
        downlink = self._profiles.get(found.profile).encode(command, params)
        self.multicast.enqueue(group, downlink.fport, downlink.payload, ref=ref)
        return self.multicast.queued(group)

    def _group_command(self, request: actions.GroupDownlinkRequest) -> None:
        """A rule's command to a multicast group: one frame for every member."""
        try:
            self.queue_group_command(
                request.group, request.command, request.params, DownlinkRef("rule", request.reason)
            )
        except DownlinkQueueFull as exc:
            self.counters["rules.group_command_queue_full"] += 1
            self._log_once("group_queue_full", "rule command %s dropped: %s", request.command, exc)
            return
        except (KeyError, EncodeError, ValueError) as exc:
            self.counters["rules.group_command_failed"] += 1
            self._log_once(
                f"group_command.{request.group}", "rule command %s for group %s: %s", request.command,
                request.group, exc,
            )  # fmt: skip
            return
        self.counters["rules.group_command_queued"] += 1

    def downlink_outcome(self, ref: DownlinkRef | None, dev_eui: DevEui, state: str, detail: str) -> None:
        """The end state of a queued downlink (``DownlinkScheduler.on_outcome``): a rule's counted per
        state (``rules.downlink.<state>``: `edgegw status`, `edgegw rules`), and every one a ``tail``
        event (``outcome_event``)."""
        if ref is not None and ref.source == "rule":
            self.counters[f"rules.downlink.{state}"] += 1
        if self.downlink_listeners:
            event = outcome_event(ref, dev_eui, state, detail, time.time())
            for listener in self.downlink_listeners:
                listener(event)

    def _join(self, frame: RadioFrame) -> None:
        """Decide a join-request and stage it for the group commit; never waits for the disk.

        The cheap refusals come first, before any crypto or disk work: a device looping through
        joins (issue 16: 545 joins/s, each its own fsync'd transaction, starved every data frame)
        costs a dictionary lookup per request.
        """
        joins, commits = self._joins, self._join_commits
        if joins is None or commits is None:
            self._reject(
                InputError("join-request: OTAA is not enabled here", reason="join_not_served"), frame
            )
            return
        if self._join_limit.refuses(frame):
            self._reject(
                FrameError(
                    f"less than {self._join_limit.min_interval_s:g} s after this device's last join",
                    reason="join_rate_limited",
                ),
                frame,
            )
            return
        if commits.full:
            self._reject(FrameError("too many joins wait for the disk", reason="join_backlog"), frame)
            return
        try:
            accepted = joins.handle(frame, self._sessions, commits.reserved)
        except InputError as exc:
            self._reject(exc, frame)
            return
        self._join_limit.joined(accepted.dev_eui, frame.received_at_s)
        commits.add(accepted)  # served by _joined after the next group commit

    def _joined(self, accepted: JoinAccepted) -> None:
        """The join is durable (its DevNonce and session survive any crash): answer it, announce it."""
        self.counters["joins"] += 1
        log.info("device %s joined as %s", accepted.dev_eui, accepted.session.dev_addr)
        self._transmit(accepted.rx1, accepted.rx2)
        for listener in self.join_listeners:
            listener(accepted)
        if self.listeners:
            self._emit(
                accepted.request,
                "joined",
                dev_eui=str(accepted.dev_eui),
                dev_addr=str(accepted.session.dev_addr),
            )

    def _join_lost(self, accepted: JoinAccepted, reason: str, detail: str) -> None:
        """A join decided in memory that was never made durable: no join-accept, the device retries."""
        self._reject(FrameError(detail, reason=reason), accepted.request)

    def _transmit(self, first: TxRequest | None, second: TxRequest | None) -> None:
        if self.send is not None and (first is not None or second is not None):
            self.send(first, second)

    def _decode(self, up: UplinkData) -> tuple[dict[str, Any], dict[str, Any]]:
        """Decoded data, and extra record keys (warnings, decode_error). A failure keeps the raw bytes."""
        if up.fport is None or up.fport == 0:
            # No application payload (FPort absent) or MAC commands only (FPort 0).
            return {}, {}
        try:
            profile = self._profiles.get(up.profile)
        except KeyError:
            self.counters["rejected.unknown_profile"] += 1
            return {}, {"decode_error": f"unknown profile {up.profile}"}
        info = self.devices.get(str(up.dev_eui))
        try:
            decoded = profile.decode(
                up.fport, up.payload, info.params if info else None, recv_time_s=up.frame.received_at_s
            )
        except DecodeError as exc:
            self.counters[f"decode_failed.{exc.reason}"] += 1
            self._log_once(
                f"decode.{exc.reason}", "cannot decode %s payload from %s: %s", up.profile, up.dev_eui, exc
            )
            return {}, {"decode_error": str(exc)}
        self.counters["decoded"] += 1
        return decoded.data, ({"warnings": list(decoded.warnings)} if decoded.warnings else {})

    def _record(self, up: UplinkData, data: dict[str, Any], extra: dict[str, Any]) -> Record:
        frame = up.frame
        rx = frame.rx
        body: dict[str, Any] = {
            "id": record_id(up),
            "kind": "reading",
            "dev_eui": str(up.dev_eui),
            "profile": up.profile,
            "received_at": iso_utc(frame.received_at_s) if not rx.gps_time else rx.gps_time,
            "time_quality": self._clock.quality(rx.gps_time),
            "fcnt": up.fcnt,
            "fport": up.fport,
            "rx": {
                "rssi_dbm": rx.rssi_dbm,
                "snr_db": rx.snr_db,
                "freq_hz": rx.freq_hz,
                "sf": rx.sf,
                "bw_hz": rx.bw_hz,
                "backend": rx.backend,
                "gateway_eui": rx.gateway_eui,
            },
            "data": data,
            "raw": up.payload.hex(),
        }
        body.update(extra)
        return Record(record_id=body["id"], kind="reading", priority=PRIORITY_READING, body=body)

    def _answer(self, up: UplinkData, heard: HeardFrame) -> None:
        """The downlink owed after ``up`` (ACK, MAC answers, a queued command), in RX1 then RX2; none
        from a witness (the home answers)."""
        if self._downlinks is None:
            return
        if not self.is_home(str(up.dev_eui)):
            self.counters["witness.uplinks"] += 1
            return
        plan = self._downlinks.on_uplink(up, gw_count=heard.gateways)
        if plan is not None:
            # The downlink counter must be durable before the frame is on the air.
            if self._commit_now is not None:
                self._commit_now()
            self._transmit(plan.rx1, plan.rx2)

    def _retransmitted(self, session: Session, heard: HeardFrame) -> None:
        """A repeat of the last accepted frame (NbTrans): counted apart, not a rejection, not forwarded
        again (its record is in the outbox already), not logged above DEBUG: it is normal traffic.

        A confirmed uplink repeated is a device that did not get our ACK (or sends NbTrans copies of
        a confirmed frame): it is answered again, with a new downlink, as LoRaWAN 1.0.4 asks of a
        network server; its MAC requests (FOpts) are answered again too, the first answer was lost."""
        frame = heard.frame
        self.counters["retransmissions"] += 1
        log.debug("retransmission of %s FCnt %s", session.dev_eui, session.fcnt_up)
        if frame.phy_payload[0] >> 5 == MType.CONFIRMED_DATA_UP and session.fcnt_up is not None:
            self.counters["retransmissions.acked_again"] += 1
            repeat = UplinkData(
                dev_eui=session.dev_eui, dev_addr=session.dev_addr, session_tag=session.session_tag,
                profile=session.profile, fcnt=session.fcnt_up, fport=None, payload=b"", confirmed=True,
                frame=frame,
            )  # fmt: skip
            self._answer(repeat, heard)
        if self.listeners:
            self._emit(
                frame, "retransmission", dev_eui=str(session.dev_eui), dev_addr=str(session.dev_addr),
                fcnt=session.fcnt_up,
            )  # fmt: skip

    def _reject(self, exc: InputError, frame: RadioFrame) -> None:
        self.counters["rejected"] += 1
        self.counters[f"rejected.{exc.reason}"] += 1
        self._log_once(exc.reason, "frame rejected (%s): %s [%s]", exc.reason, exc, frame.phy_payload.hex())
        if self.listeners:
            self._emit(frame, "rejected", reason=exc.reason, detail=str(exc), dev_addr=_dev_addr_hint(frame))

    def _emit(self, frame: RadioFrame, verdict: str, **facts: Any) -> None:
        rx = frame.rx
        event = {
            "at_s": frame.received_at_s,
            "verdict": verdict,
            "rssi_dbm": rx.rssi_dbm,
            "snr_db": rx.snr_db,
            "freq_hz": rx.freq_hz,
            "sf": rx.sf,
            "gateway_eui": rx.gateway_eui,
            "phy_hex": frame.phy_payload.hex(),
            **facts,
        }
        for listener in self.listeners:
            listener(event)

    def _log_once(self, key: str, msg: str, *args: Any) -> None:
        # zeroconf's quiet logger, per interval: the first of each kind per minute at WARNING
        # (then a count of the rest), the others at DEBUG. A flood cannot flood the log.
        self._reject_log.warn(key, msg, *args)


def downlink_event(
    request: TxRequest, status: str, window: str, detail: str, at_s: float, *, group: str | None = None
) -> dict[str, Any]:
    """What `edgegw tail` shows of one downlink: verdict ``downlink``, to whom, FCnt and FPort as
    sent (the 16 bits on the air; None for a frame that does not parse), the window (``rx1``,
    ``rx2``, ``class_c``, ``multicast``), ``status`` (``sent`` or the reason it was not: ``too_late``,
    ``duty_cycle``, ``disk_full``, ...) and the RF parameters it was sent with or would have been.
    A multicast frame has no ``dev_eui``; ``group`` names its multicast group (absent otherwise)."""
    fcnt: int | None = None
    fport: int | None = None
    try:
        frame = parse_phy(request.phy_payload)
    except FrameError:
        frame = None
    if isinstance(frame, DataFrame):
        fcnt, fport = frame.fcnt16, frame.fport
    return {
        "at_s": at_s,
        "verdict": "downlink",
        "dev_eui": str(request.dev_eui) if request.dev_eui is not None else None,
        "fcnt_down": fcnt,
        "fport": fport,
        "window": window,
        "status": status,
        "detail": detail,
        "freq_hz": request.freq_hz,
        "sf": request.sf,
        "power_dbm": request.power_dbm,
        "gateway_eui": request.gateway_eui,
        "phy_hex": request.phy_payload.hex(),
        **({"group": group} if group is not None else {}),
    }


def outcome_event(
    ref: DownlinkRef | None, dev_eui: DevEui, state: str, detail: str, at_s: float
) -> dict[str, Any]:
    """What `edgegw tail` shows of a queued downlink's end: verdict ``downlink`` with ``outcome``
    true, ``status`` the state (``sent``, ``acknowledged``, ``unacknowledged``, ``expired``,
    ``refused``), ``detail`` (a refusal's reason), and who asked (``ref``: a platform command's
    seq, a rule's name; None when nobody said)."""
    return {
        "at_s": at_s,
        "verdict": "downlink",
        "outcome": True,
        "dev_eui": str(dev_eui),
        "status": state,
        "detail": detail,
        "ref": None if ref is None else {"source": ref.source, "name": ref.name, "seq": ref.seq},
    }


def _always(_name: str) -> bool:
    """Home of everything: a gateway alone, or one not told about roles (as before issue 21)."""
    return True


def _dev_addr_hint(frame: RadioFrame) -> str | None:
    """The DevAddr of a rejected data frame, for the technician's eyes only (not authenticated)."""
    phy = frame.phy_payload
    if len(phy) >= 5 and 2 <= phy[0] >> 5 <= 5:  # data up/down MTypes (LoRaWAN 1.0.4 §4.2.1)
        return phy[4:0:-1].hex()
    return None
