"""Class C multicast groups of the edge network server: one downlink for many devices.

Owns the group table as the running agent sees it (``McGroup``: McAddr, McNwkSKey, McAppSKey, data
rate, frequency, the next McFCntDown), each group's queue of application downlinks, the frames
built from them and the group downlink counter as a ``CommitSink``.

A multicast downlink (LoRaWAN 1.0.4 §4, §18; TS005 for the group context) is an Unconfirmed Data
Down frame whose DevAddr is the group's McAddr and whose FCnt is the group's McFCntDown: FPort > 0,
no FOpts, ACK = ADR = FPending = 0 (§18: a device must not answer a multicast frame, and nothing may
ask it to), the MIC computed with McNwkSKey (B0 with Dir = 1) and the FRMPayload encrypted with
McAppSKey. It goes class C style: at once, on the group's frequency and data rate (by default the
gateway's RX2 parameters), through the radio layer, which enforces the duty cycle.

A counter value is never used twice under the same keys (the keystream would repeat): a frame
is handed to the radio only after the group commit that moved its group's counter past it has
returned (``ready()`` returns the frames of committed counters). A frame whose counter could not be
committed (a full disk) waits with it; once its counter is durable it goes even while a later group
fails (nothing about it needs the disk any more).

Outcomes (issue 20): each queued group downlink ends in one state reported through ``on_outcome``
(``OnGroupOutcome``): ``sent`` (on the air), ``refused`` with the radio's last reason (``duty_cycle``,
``collision_packet``, ``too_late``...) once its transmissions are spent, or ``fcnt_exhausted``, or
``expired`` (its group removed, or created again with other keys, before it went). A frame the radio
refused was never heard: the radio's verdict (``transmitted``) queues its downlink again at the head
of the group's queue, to go as a NEW frame with the next McFCntDown (never the same counter twice),
within 1 + ``lorawan.confirmed_retries`` transmissions like a unicast downlink. A frame built after
it (a burst of commands to one group) may go before its retry.

Roles (issue 21): only a group's home gateway sends its frames (``is_home``, set by the app from
``gateway.roles``); elsewhere a command to it is refused (``ValueError``) and its queue waits.

Sans-IO: fed commands and commits, it returns ``TxRequest`` values; it never sends, sleeps or reads a
clock. It does not own the groups' rows (``gateway.provisioning.groups``) nor the encoding of a
command (the members' profile).
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gateway.errors import DownlinkQueueFull
from gateway.lorawan import phy, region
from gateway.lorawan.crypto import SessionKeys
from gateway.lorawan.downlink import DownlinkRef
from gateway.messages import AesKey, DevAddr, MType, TxRequest

__all__ = [
    "GROUP_PREFIX",
    "MAX_QUEUE",
    "GroupFcnt",
    "McGroup",
    "MulticastScheduler",
    "OnGroupOutcome",
    "group_tag",
    "max_payload_bytes",
]

log = logging.getLogger(__name__)

MAX_QUEUE = 16
"""Queued downlinks per group, at most (a lighting step is one; a burst of commands is a mistake)."""
GROUP_PREFIX = "group:"
"""How a group is named where a device is expected (`tail`, the rules' commanded state): ``group:<name>``."""
_MAX_MAC_PAYLOAD = (59, 59, 59, 123, 230, 230, 230)
"""EU868 maximum MACPayload size M per data rate DR0..DR6 (RP002-1.0.3 EU868 table, repeater-compatible;
the same table as ``gateway.lorawan.downlink``)."""
_FHDR_FPORT_BYTES = 8
"""DevAddr 4 + FCtrl 1 + FCnt 2 + FPort 1 (no FOpts in a multicast frame)."""
_MAX_FCNT = 0xFFFFFFFF
_MAX_FLIGHTS = 256
"""Frames remembered until the radio's verdict, at most (a verdict that never came: its task was
cancelled at a stop); the oldest is forgotten beyond."""

OnGroupOutcome = Callable[[DownlinkRef | None, str, str, str], None]
"""``on_outcome(ref, group, state, detail)``: ``state`` ``sent``, ``refused`` or ``expired``; ``detail``
the reason code for ``refused`` (``duty_cycle``, ``fcnt_exhausted``...), else a sentence for people.
Called on the event loop; must be quick and must not raise."""


def max_payload_bytes(dr: int) -> int:
    """The largest FRMPayload a multicast frame carries at EU868 data rate ``dr``."""
    return _MAX_MAC_PAYLOAD[dr] - _FHDR_FPORT_BYTES


def group_tag(mc_addr: DevAddr, nwk_s_key: AesKey) -> str:
    """A short one-way tag of a group's McAddr and McNwkSKey: a group removed and created again under
    the same name with other keys is another group, whose counter must not land on the new row."""
    return hashlib.sha256(b"edgegw-mcgroup" + mc_addr.value + nwk_s_key.value).digest()[:4].hex()


@dataclass(frozen=True, slots=True)
class McGroup:
    """A multicast group as the registry holds it (keys in clear: the registry read decrypted them)."""

    name: str
    mc_addr: DevAddr
    nwk_s_key: AesKey
    app_s_key: AesKey
    fcnt_down: int = 0
    """The next McFCntDown to use (durable)."""
    dr: int | None = None
    """EU868 data rate; None: the gateway's RX2 data rate (``lorawan.rx2_dr``)."""
    freq_hz: int | None = None
    """None: the gateway's RX2 frequency (``lorawan.rx2_freq_hz``)."""
    profile: str | None = None
    """The members' profile (all members share one); None while the group has no member."""
    members: tuple[str, ...] = ()
    """DevEUI hex of the member devices (for the views; the frame does not name them)."""

    @property
    def tag(self) -> str:
        return group_tag(self.mc_addr, self.nwk_s_key)


@dataclass(frozen=True, slots=True)
class GroupFcnt:
    name: str
    tag: str
    fcnt_down: int
    """The next McFCntDown to use."""


@dataclass(frozen=True, slots=True)
class _Queued:
    """A group downlink, until its outcome is known."""

    fport: int
    payload: bytes
    ref: DownlinkRef | None = None
    attempts: int = 0
    """Frames built for it so far (each with its own McFCntDown)."""


@dataclass(frozen=True, slots=True)
class _Built:
    """A frame built for a queued downlink (``item.attempts`` counts it), until the radio's verdict."""

    group: str
    request: TxRequest
    item: _Queued
    tag: str = ""
    """The group's ``McGroup.tag`` when it was built: a retry goes to that group only."""
    fcnt_down: int = 0
    """Its McFCntDown (32 bits)."""


@dataclass(slots=True)
class _State:
    group: McGroup
    fcnt_down: int
    keys: SessionKeys
    queue: deque[_Queued] = field(default_factory=deque)


class MulticastScheduler:
    """Queues and builds multicast downlinks; a ``CommitSink`` for the groups' McFCntDown."""

    def __init__(self, *, rx2_dr: int, rx2_freq_hz: int, power_dbm: float) -> None:
        self._rx2_dr, self._rx2_freq_hz, self._power_dbm = rx2_dr, rx2_freq_hz, power_dbm
        self._groups: dict[str, _State] = {}
        self._pending: dict[str, GroupFcnt] = {}
        self._built: list[_Built] = []
        """Frames built since the last ``take``: released when the group that carries their counter
        commits."""
        self._released: list[_Built] = []
        self._flights: dict[bytes, _Built] = {}
        """PHYPayload → the frame built for it, until the radio's verdict (``transmitted``)."""
        self.counters: Counter[str] = Counter()
        self.on_outcome: OnGroupOutcome | None = None
        """Told the end state of each queued group downlink (set by the app)."""
        self.committer_notify: Callable[..., None] | None = None
        """``GroupCommitter.notify``: a built frame asks for a commit at once (set by the builder)."""
        self.is_home: Callable[[str], bool] = lambda _name: True
        """Whether this gateway sends the group's frames (issue 21: only the group's home gateway does;
        set by the app from ``gateway.roles``)."""

    # --- the registry ----------------------------------------------------------------------------

    def merge(self, groups: Iterable[McGroup]) -> None:
        """Adopt the registry's groups. A group still known under the same keys keeps the higher of its
        two counters (the registry's may be behind a commit in flight); a removed group's queue is
        dropped; a group created again with other keys starts from the registry's counter."""
        fresh: dict[str, _State] = {}
        for group in groups:
            known = self._groups.get(group.name)
            if known is not None and known.group.tag == group.tag:
                if known.group.app_s_key != group.app_s_key:
                    # Created again with a new McAppSKey only (the tag does not cover it): the counter
                    # goes on, the payload is encrypted with the key the lamps now hold.
                    known.keys = SessionKeys(group.nwk_s_key.value, group.app_s_key.value)
                known.group = group
                known.fcnt_down = max(known.fcnt_down, group.fcnt_down)
                fresh[group.name] = known
            else:
                fresh[group.name] = _State(
                    group, group.fcnt_down, SessionKeys(group.nwk_s_key.value, group.app_s_key.value)
                )
        for name, old in self._groups.items():
            if fresh.get(name) is old:
                continue
            # Removed, or created again under its name with other keys: its queue goes with it.
            dropped = len(old.queue)
            if dropped:
                self.counters["dropped_group_removed"] += dropped
                log.warning("multicast group %s removed: %d queued downlinks dropped", name, dropped)
                for item in old.queue:
                    self._report(item, name, "expired", f"group {name} removed before it was sent")
        self._groups = fresh

    def group(self, name: str) -> McGroup | None:
        state = self._groups.get(name)
        return None if state is None else state.group

    def groups(self) -> list[McGroup]:
        return [state.group for _, state in sorted(self._groups.items())]

    def fcnt_down(self, name: str) -> int | None:
        """The next McFCntDown of a group (ahead of the registry's while a commit is in flight)."""
        state = self._groups.get(name)
        return None if state is None else state.fcnt_down

    # --- what the application asks for -----------------------------------------------------------

    def enqueue(self, name: str, fport: int, payload: bytes, *, ref: DownlinkRef | None = None) -> None:
        """Queue an application downlink for every member of group ``name``; ``ref``: who asked,
        told its outcome (``on_outcome``).

        ``ValueError`` for an unknown group, an FPort outside 1..223 or a payload too large for the
        group's data rate (a multicast frame cannot wait for a faster one); ``DownlinkQueueFull``
        when ``MAX_QUEUE`` downlinks wait already.
        """
        state = self._groups.get(name)
        if state is None:
            raise ValueError(f"no multicast group named {name!r}")
        if not self.is_home(name):
            self.counters["refused.not_home"] += 1
            raise ValueError(f"multicast group {name} is sent by its home gateway, not this one")
        if not 1 <= fport <= 223:
            raise ValueError(f"application FPort must be 1..223, got {fport}")
        room = max_payload_bytes(self._dr(state.group))
        if len(payload) > room:
            raise ValueError(
                f"{len(payload)}-byte payload does not fit a multicast frame of group {name} "
                f"(at most {room} bytes at DR{self._dr(state.group)})"
            )
        if len(state.queue) >= MAX_QUEUE:
            raise DownlinkQueueFull(f"downlink queue of group {name} is full ({MAX_QUEUE})", limit=MAX_QUEUE)
        state.queue.append(_Queued(fport, payload, ref))
        self.counters["queued"] += 1

    def queued(self, name: str) -> int:
        state = self._groups.get(name)
        return 0 if state is None else len(state.queue)

    # --- class C: any time -----------------------------------------------------------------------

    def ready(self, gateway_eui: str | None = None) -> list[TxRequest]:
        """The frames to send now: those whose counter is durable. The queued downlinks of each group
        become frames here (one per group per call, in queue order), sent at a later call once the
        group commit they asked for has returned."""
        for name, state in sorted(self._groups.items()):
            if not state.queue or not self.is_home(name):
                continue  # another gateway became its home since: its queue waits here
            if state.fcnt_down > _MAX_FCNT:
                # 2^32 frames: the group needs new keys (TS005 would rotate them); never wrap.
                self.counters["fcnt_exhausted"] += len(state.queue)
                for item in state.queue:
                    self._report(item, name, "refused", "fcnt_exhausted")
                state.queue.clear()
                log.error("multicast group %s has used every McFCntDown: give it new keys", name)
                continue
            item = state.queue.popleft()
            item = _Queued(item.fport, item.payload, item.ref, item.attempts + 1)
            request = self._request(state, item.fport, item.payload, gateway_eui)
            built = _Built(name, request, item, state.group.tag, state.fcnt_down)
            self._built.append(built)
            self._remember(built)
            state.fcnt_down += 1
            self._pending[name] = GroupFcnt(name, state.group.tag, state.fcnt_down)
            if self.committer_notify is not None:
                self.committer_notify(1, urgent=True)
        released, self._released = self._released, []
        self.counters["sent_to_radio"] += len(released)
        return [built.request for built in released]

    def _dr(self, group: McGroup) -> int:
        return self._rx2_dr if group.dr is None else group.dr

    def _request(self, state: _State, fport: int, payload: bytes, gateway_eui: str | None) -> TxRequest:
        group = state.group
        phy_payload = phy.build_data_frame(
            state.keys,
            mtype=MType.UNCONFIRMED_DATA_DOWN,
            dev_addr=group.mc_addr.value,
            fcnt32=state.fcnt_down,
            fport=fport,
            payload=payload,
        )  # no FOpts, ACK, ADR, FPending: LoRaWAN 1.0.4 §18
        rate = region.data_rate(self._dr(group))
        return TxRequest(
            phy_payload=phy_payload,
            freq_hz=self._rx2_freq_hz if group.freq_hz is None else group.freq_hz,
            sf=rate.sf,
            bw_hz=rate.bw_hz,
            power_dbm=self._power_dbm,
            send_at_tmst_us=None,
            gateway_eui=gateway_eui,
            dev_eui=None,
        )

    def group_of(self, request: TxRequest) -> str:
        """The group a request of ``ready()`` goes to (for `tail` and the counters): the one it was
        built for, even if that group was removed since; else the group its McAddr names; else
        ``mcaddr:<hex>`` (never None: a multicast frame must not be taken for a unicast one)."""
        built = self._flights.get(request.phy_payload)
        if built is not None:
            return built.group
        mc_addr = request.phy_payload[4:0:-1]
        for name, state in self._groups.items():
            if state.group.mc_addr.value == mc_addr:
                return name
        return f"mcaddr:{mc_addr.hex()}"

    # --- outcomes: the radio's verdicts ------------------------------------------------------------

    def transmitted(self, request: TxRequest, status: str, *, retries: int) -> None:
        """The radio's last word on a frame of ``ready()``: ``sent``, or why it was not. A refused
        frame was never heard: its downlink is queued again at the head of its group's queue (a new
        frame, the next McFCntDown) while it has had at most ``retries`` + 1 transmissions, else it
        ends ``refused`` with the radio's reason; ``expired`` if its group is gone meanwhile."""
        built = self._flights.pop(request.phy_payload, None)
        if built is None:
            return  # forgotten (``_MAX_FLIGHTS``) or not ours
        item, name = built.item, built.group
        if status == "sent":
            self._report(item, name, "sent", f"McFCntDown {built.fcnt_down}")
            return
        state = self._groups.get(name)
        if state is None or state.group.tag != built.tag:  # removed, or created again with other keys
            self._report(item, name, "expired", f"group {name} removed before it could go again ({status})")
            return
        if item.attempts <= retries:
            self.counters["retried"] += 1
            self.counters[f"not_sent_again.{status}"] += 1
            log.debug("multicast downlink of group %s sent again (%s), transmission %d", name, status,
                      item.attempts + 1)  # fmt: skip
            state.queue.appendleft(item)
            return
        self._report(item, name, "refused", status)

    def _remember(self, built: _Built) -> None:
        if len(self._flights) >= _MAX_FLIGHTS:
            del self._flights[next(iter(self._flights))]
            self.counters["verdicts_forgotten"] += 1
        self._flights[built.request.phy_payload] = built

    def _report(self, item: _Queued, group: str, state: str, detail: str) -> None:
        self.counters[f"outcome.{state}"] += 1
        if self.on_outcome is None:
            return
        try:
            self.on_outcome(item.ref, group, state, detail)
        except Exception:  # a listener's bug must not stop the multicast downlinks
            log.exception("multicast outcome listener failed")

    # --- CommitSink: the groups' McFCntDown --------------------------------------------------------

    def take(self) -> tuple[list[GroupFcnt], list[_Built]] | None:
        if not self._pending and not self._built:
            return None
        taken = (list(self._pending.values()), self._built)
        self._pending, self._built = {}, []
        return taken

    def write(self, conn: sqlite3.Connection, taken: tuple[list[GroupFcnt], list[_Built]]) -> None:
        # The tag guard: the counter of a removed group must not land on one created again under
        # its name with other keys; fcnt_down only moves forward.
        conn.executemany(
            "UPDATE multicast_groups SET fcnt_down = ? WHERE name = ? AND tag = ? AND fcnt_down < ?",
            [(c.fcnt_down, c.name, c.tag, c.fcnt_down) for c in taken[0]],
        )
        # A group removed (``group remove``) while this frame's counter was on its way: its frame still
        # goes on the air, so a group created again with the same keys must start above it too.
        conn.executemany(
            "UPDATE multicast_retired SET fcnt_down = ? WHERE tag = ? AND fcnt_down < ?",
            [(c.fcnt_down, c.tag, c.fcnt_down) for c in taken[0]],
        )

    def committed(self, taken: tuple[list[GroupFcnt], list[_Built]]) -> None:
        """The counters are durable: their frames may go on the air."""
        self._released.extend(taken[1])

    def give_back(self, taken: tuple[list[GroupFcnt], list[_Built]]) -> None:
        """The group failed (a full disk): the counters go with the next one (unless a later frame
        queued a higher one), and their frames wait for it."""
        counters, built = taken
        for counter in counters:
            self._pending.setdefault(counter.name, counter)
        self._built[:0] = built
