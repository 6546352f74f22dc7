"""OTAA join server at the edge (LoRaWAN 1.0.x): join-request in, durable session and join-accept out.

Owns the decision on a join-request (LoRaWAN 1.0.4 §6.2.4-§6.2.6): the device
must be registered for OTAA with this JoinEUI, the MIC must verify with its
AppKey, and its DevNonce must never have been used before (kept in the
``lorawan_joins`` table, so a replayed join stays refused across restarts). A
device of LoRaWAN 1.0.4 (its profile's ``lorawan.mac_version``, or the registry's
``mac_version`` of the device) counts its DevNonces up from 0 (§6.2.5): its
DevNonce must also be greater than the highest it used, so an old join-request
replayed is refused even if that exact one was never heard; 1.0.2/1.0.3 devices
pick them at random and only reuse is refused. Only a join-request whose MIC
verifies moves the highest DevNonce (a forged 0xFFFF cannot lock a device out),
and it is the highest stored in ``lorawan_joins`` after a restart. It then
allocates a DevAddr unique among the current sessions, takes the next JoinNonce
of the device (a counter that never repeats, §6.2.6), derives NwkSKey and
AppSKey, and builds the encrypted join-accept with the configured
RX1DROffset, RX2 data rate, RxDelay and CFList, as ``TxRequest``s for RX1
(JOIN_ACCEPT_DELAY1 = 5 s after the uplink, on its channel and data rate) and
RX2 (6 s, 869.525 MHz DR0: the device still has the region's defaults).

``JoinServer.handle`` is pure (no I/O, no clock: time comes in the frame);
``store_join`` is the database write (one transaction: the DevNonce, the new
session); ``accept_join`` runs both in the right order: the join is durable
before its session is served and before its join-accept can be sent.

In the running agent a join must not cost the uplink path a transaction of its
own (a device looping through joins starved every data frame: issue 16). So
``JoinRateLimit`` refuses, before any crypto, a device whose last join was
accepted less than ``JOIN_MIN_INTERVAL_S`` ago, and ``JoinCommits`` (a
``CommitSink``) writes the accepted joins with the next group commit; only
after that COMMIT is the session installed and the join-accept handed on.

It does not send anything (the radio does), nor decide class A/C downlinks
(``downlink``), nor handle LoRaWAN 1.1 (rejoin-requests, JoinEUI-keyed MICs).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import sqlite3
import time
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.config import LorawanSection
from gateway.db import transaction
from gateway.db.commit import Database
from gateway.errors import FrameError, MicMismatch, UnknownDevice
from gateway.lorawan import phy, region
from gateway.lorawan.crypto import SessionKeys, derive_session_keys, join_request_mic
from gateway.lorawan.sessions import Session, SessionTable, plain, session_tag
from gateway.messages import AesKey, DevAddr, DevEui, JoinEui, RadioFrame, TxRequest

__all__ = [
    "COUNTING_MAC_VERSIONS",
    "JOIN_MIN_INTERVAL_S",
    "JoinAccepted",
    "JoinCommits",
    "JoinRateLimit",
    "JoinServer",
    "OtaaDevice",
    "accept_join",
    "counts_dev_nonce",
    "load_otaa_devices",
    "store_join",
]

logger = logging.getLogger(__name__)

_TMST_WRAP = 1 << 32
_US = 1_000_000
_MAX_JOIN_NONCE = 0xFFFFFF
_ADDR_PROBES = 4096
"""DevAddr candidates tried before a join is refused (bounded work per join-request)."""
JOIN_MIN_INTERVAL_S = 5.0
"""A device's join-requests are refused for this long after one of its joins was accepted.

No compliant class A device is refused: after a join-request it listens for the accept in RX1
and RX2 (JOIN_ACCEPT_DELAY1/2 = 5 s / 6 s, RP002 EU868) before it may send another, and the
retransmission back-off (LoRaWAN 1.0.4 §7, RP002) allows it at most 36 s of join airtime in its
first hour (one SF7 join-request every ~6 s). A device that asks faster is broken or hostile."""
MAX_PENDING_JOINS = 1024
"""Accepted joins waiting for the group commit, at most (a stalled disk must not grow memory)."""
_JOIN_REQUEST_BYTES = 23
COUNTING_MAC_VERSIONS = frozenset({"1.0.4", "1.1"})
"""MAC versions whose devices count DevNonces up (LoRaWAN 1.0.4 §6.2.5, 1.1 §6.2.5); the earlier
1.0.x pick them at random."""


def counts_dev_nonce(mac_version: str | None) -> bool:
    """True when a device of ``mac_version`` counts its DevNonces up (None: unknown, random rule)."""
    return mac_version in COUNTING_MAC_VERSIONS


@dataclass(slots=True)
class OtaaDevice:
    """A device registered for OTAA, with what its past joins have used."""

    dev_eui: DevEui
    join_eui: JoinEui
    app_key: bytes
    profile: str
    used_dev_nonces: set[int] = field(default_factory=set)
    last_join_nonce: int = -1
    mac_version: str | None = None
    """The registry's ``mac_version`` of the device; None: its profile's."""
    last_dev_nonce: int = -1
    """The highest DevNonce of its joins (what a counting device must go above)."""

    def __repr__(self) -> str:
        return f"OtaaDevice({self.dev_eui}, join_eui={self.join_eui}, app_key=<secret>)"


@dataclass(frozen=True, slots=True)
class JoinAccepted:
    """A join the server accepted: what to store, what to serve, what to send."""

    dev_eui: DevEui
    dev_nonce: int
    join_nonce: int
    session: Session
    nwk_s_key: AesKey
    app_s_key: AesKey
    phy_payload: bytes
    """The encrypted join-accept."""
    rx1: TxRequest | None
    """None when the uplink carried no concentrator timestamp (no class A timing is possible)."""
    rx2: TxRequest | None
    joined_at: str
    request: RadioFrame
    """The join-request it answers (its RX windows are timed from it)."""


_LOAD_DEVICES = (
    "SELECT dev_eui, join_eui, app_key, profile, mac_version FROM devices"
    " WHERE activation = 'otaa' AND join_eui IS NOT NULL AND app_key IS NOT NULL"
)


def load_otaa_devices(conn: sqlite3.Connection, decrypt: Callable[[str], str] = plain) -> list[OtaaDevice]:
    """Every OTAA device with its used DevNonces and last JoinNonce (on the database thread).

    ``decrypt`` turns the stored AppKey column into hex (keys may be encrypted at rest)."""
    devices: dict[str, OtaaDevice] = {}
    for dev_eui, join_eui, app_key, profile, mac_version in conn.execute(_LOAD_DEVICES):
        devices[dev_eui] = OtaaDevice(
            dev_eui=DevEui.from_hex(dev_eui),
            join_eui=JoinEui.from_hex(join_eui),
            app_key=bytes.fromhex(decrypt(app_key)),
            profile=profile,
            mac_version=mac_version,
        )
    for dev_eui, dev_nonce, join_nonce in conn.execute(
        "SELECT dev_eui, dev_nonce, join_nonce FROM lorawan_joins"
    ):
        device = devices.get(dev_eui)
        if device is not None:
            device.used_dev_nonces.add(dev_nonce)
            device.last_join_nonce = max(device.last_join_nonce, join_nonce)
            device.last_dev_nonce = max(device.last_dev_nonce, dev_nonce)
    return list(devices.values())


def store_join(
    conn: sqlite3.Connection, accepted: JoinAccepted, encrypt: Callable[[str], str] = plain
) -> None:
    """Make a join durable in one transaction: its DevNonce, and the device's new session.

    The (dev_eui, dev_nonce) primary key is the last word on reuse: a DevNonce
    that another path stored meanwhile raises ``FrameError(reason="reused_dev_nonce")``.
    """
    with transaction(conn):
        try:
            _insert_join(conn, accepted, encrypt)
        except sqlite3.IntegrityError as exc:
            raise FrameError(
                f"DevNonce {accepted.dev_nonce:04x} of {accepted.dev_eui} was already used",
                reason="reused_dev_nonce",
            ) from exc


def _insert_join(conn: sqlite3.Connection, accepted: JoinAccepted, encrypt: Callable[[str], str]) -> None:
    """The two rows of a join, inside the caller's transaction (``IntegrityError`` on a used DevNonce)."""
    session = accepted.session
    conn.execute(
        "INSERT INTO lorawan_joins (dev_eui, dev_nonce, join_nonce, dev_addr, joined_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (
            str(accepted.dev_eui),
            accepted.dev_nonce,
            accepted.join_nonce,
            str(session.dev_addr),
            accepted.joined_at,
        ),
    )
    conn.execute(
        "INSERT OR REPLACE INTO sessions"
        " (dev_eui, dev_addr, nwk_s_key, app_s_key, session_tag, fcnt_up, fcnt_down, created_at)"
        " VALUES (?, ?, ?, ?, ?, NULL, 0, ?)",
        (
            str(accepted.dev_eui),
            str(session.dev_addr),
            encrypt(accepted.nwk_s_key.reveal()),
            encrypt(accepted.app_s_key.reveal()),
            session.session_tag,
            accepted.joined_at,
        ),
    )


def join_request_dev_eui(phy_payload: bytes) -> bytes | None:
    """The DevEUI (MSB first) a join-request claims, read without parsing or crypto; None if malformed.

    Unauthenticated: good only for refusing cheaply what ``JoinRateLimit`` would refuse anyway.
    """
    if len(phy_payload) != _JOIN_REQUEST_BYTES:
        return None
    return phy_payload[16:8:-1]  # LoRaWAN 1.0.4 §6.2.4: MHDR | JoinEUI | DevEUI | DevNonce | MIC, LSB first


class JoinRateLimit:
    """At most one accepted join per device per ``min_interval_s``; the rest refused before any work.

    Only *accepted* joins start the interval: a forged request (bad MIC) or a replayed one
    (used DevNonce) claiming a device's DevEUI never does, so nobody without the device's
    AppKey can lock it out. Pure: times are the frames' receive times (``received_at_s``, the
    clock the rest of the join uses, simulated in the city simulations); a clock step in either
    direction only ends an interval early, never makes one longer. Memory: one entry per
    device joined within the interval (older entries are pruned).
    """

    def __init__(self, min_interval_s: float = JOIN_MIN_INTERVAL_S) -> None:
        self.min_interval_s = min_interval_s
        self._joined_at: dict[bytes, float] = {}
        self._prune_at = 1024

    def refuses(self, frame: RadioFrame) -> bool:
        """True when ``frame`` is a join-request of a device that joined less than the interval ago."""
        dev_eui = join_request_dev_eui(frame.phy_payload)
        if dev_eui is None:
            return False
        joined_at = self._joined_at.get(dev_eui)
        return joined_at is not None and 0.0 <= frame.received_at_s - joined_at < self.min_interval_s

    def joined(self, dev_eui: DevEui, received_at_s: float) -> None:
        """Start the interval of ``dev_eui``: its join-request received at ``received_at_s`` was accepted."""
        self._joined_at[dev_eui.value] = received_at_s
        if len(self._joined_at) >= self._prune_at:
            horizon = received_at_s - self.min_interval_s
            self._joined_at = {k: t for k, t in self._joined_at.items() if t > horizon}
            self._prune_at = max(1024, 2 * len(self._joined_at))


@dataclass(slots=True)
class _StagedJoin:
    accepted: JoinAccepted
    staged_mono_s: float
    stored: bool = False
    refusal: str | None = None


JoinDone = Callable[[JoinAccepted], None]
JoinLost = Callable[[JoinAccepted, str, str], None]


class JoinCommits:
    """``CommitSink`` of accepted joins: durable with the next group commit, then served.

    ``add`` takes a join ``JoinServer.handle`` accepted; its DevAddr stays reserved
    (``reserved``, to pass back to ``handle``) until it is decided. After the COMMIT
    that carries it, ``committed`` installs the session and calls ``on_durable`` (the
    join-accept may go on the air now: its DevNonce and session survive any crash).
    A join the database refuses (its DevNonce stored by another path, its device
    removed meanwhile) or that waited past its RX2 window for a writable disk is not
    served: ``on_lost(accepted, reason, detail)``. Refusals are per join (a savepoint
    each), so one bad join never fails the group that carries records.
    """

    def __init__(
        self,
        sessions: SessionTable,
        encrypt: Callable[[str], str] = plain,
        *,
        max_pending: int = MAX_PENDING_JOINS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._encrypt = encrypt
        self._max_pending = max_pending
        self._clock = clock
        self._pending: list[_StagedJoin] = []
        self.reserved: set[bytes] = set()
        """DevAddrs of joins accepted and not yet decided (pending or in a group being committed)."""
        self.on_durable: JoinDone | None = None
        self.on_lost: JoinLost | None = None
        self.committer_notify: Callable[[], None] | None = None
        """Set by the app: tells the group committer a join waits (not urgent: the interval is
        ≤ 50 ms, far inside JOIN_ACCEPT_DELAY1, and one fsync per join is what starved the uplink)."""

    @property
    def full(self) -> bool:
        """No room for another join until the disk has taken some (``join_backlog``)."""
        return len(self.reserved) >= self._max_pending

    def add(self, accepted: JoinAccepted) -> None:
        """Stage a join for the next group commit."""
        self.reserved.add(accepted.session.dev_addr.value)
        self._pending.append(_StagedJoin(accepted, accepted.request.received_mono_s))
        if self.committer_notify is not None:
            self.committer_notify()

    # CommitSink

    def take(self) -> list[_StagedJoin] | None:
        if not self._pending:
            return None
        taken, self._pending = self._pending, []
        return taken

    def write(self, conn: sqlite3.Connection, taken: list[_StagedJoin]) -> None:
        for staged in taken:
            # A savepoint per join: a refused join is rolled back alone, the group goes on.
            conn.execute("SAVEPOINT edgegw_join")
            try:
                _insert_join(conn, staged.accepted, self._encrypt)
            except sqlite3.IntegrityError as exc:
                conn.execute("ROLLBACK TO edgegw_join")
                staged.stored = False
                foreign = exc.sqlite_errorname == "SQLITE_CONSTRAINT_FOREIGNKEY"
                staged.refusal = "join_device_removed" if foreign else "reused_dev_nonce"
            else:
                staged.stored = True
                staged.refusal = None
            conn.execute("RELEASE edgegw_join")

    def committed(self, taken: list[_StagedJoin]) -> None:
        for staged in taken:
            accepted = staged.accepted
            self.reserved.discard(accepted.session.dev_addr.value)
            if staged.stored:
                self._sessions.install(accepted.session)
                if self.on_durable is not None:
                    self.on_durable(accepted)
            elif self.on_lost is not None:
                reason = staged.refusal or "reused_dev_nonce"
                detail = f"the database refused the join of {accepted.dev_eui} ({reason})"
                self.on_lost(accepted, reason, detail)

    def give_back(self, taken: list[_StagedJoin]) -> None:
        """The group failed (a full disk): retry the joins that can still be answered, drop the rest.

        A join-accept is useless after the device's RX2 window; a join made durable later
        would replace a session the device still uses. Its DevNonce stays refused in memory.
        """
        now_s = self._clock()
        keep: list[_StagedJoin] = []
        for staged in taken:
            if now_s - staged.staged_mono_s < region.JOIN_ACCEPT_DELAY2_S:
                keep.append(staged)
                continue
            accepted = staged.accepted
            self.reserved.discard(accepted.session.dev_addr.value)
            if self.on_lost is not None:
                detail = f"join of {accepted.dev_eui} not written before its RX2 window"
                self.on_lost(accepted, "join_not_durable", detail)
        self._pending[:0] = keep


class JoinServer:
    """Decides on join-requests; holds the OTAA devices (refreshed from the registry with ``merge``)."""

    def __init__(
        self,
        section: LorawanSection,
        devices: Iterable[OtaaDevice] = (),
        *,
        profile_mac_version: Callable[[str], str | None] = lambda _profile: None,
    ) -> None:
        """``profile_mac_version``: a profile's ``lorawan.mac_version`` (None: unknown profile), for
        the devices the registry gives no ``mac_version``."""
        self._section = section
        self._profile_mac_version = profile_mac_version
        self._net_id = bytes.fromhex(section.net_id)
        prefix, bits = section.dev_addr_block
        self._addr_prefix = prefix
        self._addr_mask = (1 << (32 - bits)) - 1
        self._cflist = section.cflist or None
        self._devices: dict[bytes, OtaaDevice] = {}
        self.merge(list(devices))

    def __len__(self) -> int:
        return len(self._devices)

    def merge(self, fresh: list[OtaaDevice]) -> None:
        """Adopt the registry's OTAA devices, keeping nonces used since they were read."""
        devices: dict[bytes, OtaaDevice] = {}
        for device in fresh:
            current = self._devices.get(device.dev_eui.value)
            if current is not None and current.app_key == device.app_key:
                device.used_dev_nonces |= current.used_dev_nonces
                device.last_join_nonce = max(device.last_join_nonce, current.last_join_nonce)
                device.last_dev_nonce = max(device.last_dev_nonce, current.last_dev_nonce)
            devices[device.dev_eui.value] = device
        self._devices = devices

    def handle(
        self, frame: RadioFrame, sessions: SessionTable, reserved: Container[bytes] = frozenset()
    ) -> JoinAccepted:
        """Accept one join-request, or raise a ``FrameError`` whose ``reason`` says why not.

        ``reserved``: DevAddrs of accepted joins not yet installed in ``sessions``
        (``JoinCommits.reserved``); the new DevAddr avoids them too.

        Reasons: ``unknown_join_device`` (DevEUI not registered for OTAA, or another
        JoinEUI), ``bad_join_mic``, ``reused_dev_nonce``, ``old_dev_nonce`` (a counting
        device's DevNonce not above its highest), ``dev_addr_exhausted``,
        ``join_nonce_exhausted``; parse errors as in ``phy.parse``. The DevNonce
        and JoinNonce are reserved here at once, so that a second copy of the same
        request (or a retry racing the database write) can never reuse them.
        """
        parsed = phy.parse(frame.phy_payload)
        if not isinstance(parsed, phy.JoinRequest):
            raise FrameError(f"{type(parsed).__name__} is not a join-request", reason="unsupported_mtype")
        device = self._devices.get(parsed.dev_eui)
        if device is None or device.join_eui.value != parsed.join_eui:
            raise UnknownDevice(
                f"join-request from DevEUI {parsed.dev_eui.hex()} JoinEUI {parsed.join_eui.hex()}:"
                " not registered for OTAA",
                reason="unknown_join_device",
            )
        if not hmac.compare_digest(join_request_mic(device.app_key, parsed.mic_input), parsed.mic):
            raise MicMismatch(f"join-request MIC mismatch for {device.dev_eui}", reason="bad_join_mic")
        dev_nonce = int.from_bytes(parsed.dev_nonce, "big")
        # LoRaWAN 1.0.4 §6.2.5: a DevNonce is never reused; 1.0.2/1.0.3 devices pick it at random,
        # 1.0.4 devices count up, and for those the network refuses any not above the last one.
        if dev_nonce in device.used_dev_nonces:
            raise FrameError(
                f"DevNonce {dev_nonce:04x} of {device.dev_eui} was already used", reason="reused_dev_nonce"
            )
        if dev_nonce <= device.last_dev_nonce and self.counts_dev_nonce(device):
            raise FrameError(
                f"DevNonce {dev_nonce:04x} of {device.dev_eui} is not above its last one"
                f" ({device.last_dev_nonce:04x}): a LoRaWAN 1.0.4 device counts them up",
                reason="old_dev_nonce",
            )
        if device.last_join_nonce >= _MAX_JOIN_NONCE:
            raise FrameError(f"JoinNonce of {device.dev_eui} is exhausted", reason="join_nonce_exhausted")
        dev_addr = self._allocate(device.dev_eui, dev_nonce, sessions, reserved)
        device.used_dev_nonces.add(dev_nonce)
        device.last_dev_nonce = max(device.last_dev_nonce, dev_nonce)
        device.last_join_nonce += 1
        join_nonce = device.last_join_nonce
        join_nonce_bytes = join_nonce.to_bytes(3, "big")
        nwk, app = derive_session_keys(device.app_key, join_nonce_bytes, self._net_id, parsed.dev_nonce)
        nwk_s_key, app_s_key = AesKey(nwk), AesKey(app)
        phy_payload = phy.build_join_accept(
            device.app_key,
            join_nonce=join_nonce_bytes,
            net_id=self._net_id,
            dev_addr=dev_addr.value,
            rx1_dr_offset=self._section.rx1_dr_offset,
            rx2_dr=self._section.rx2_dr,
            rx_delay=self._section.rx_delay_s,
            cflist=self._cflist,
        )
        session = Session(
            dev_eui=device.dev_eui,
            dev_addr=dev_addr,
            profile=device.profile,
            session_tag=session_tag(dev_addr, nwk_s_key),
            keys=SessionKeys(nwk, app),
            fcnt_up=None,
            fcnt_down=0,
        )
        rx1, rx2 = self._windows(frame, phy_payload, device.dev_eui)
        logger.info(
            "join accepted: %s DevNonce %04x -> DevAddr %s (JoinNonce %d)",
            device.dev_eui,
            dev_nonce,
            dev_addr,
            join_nonce,
        )
        return JoinAccepted(
            dev_eui=device.dev_eui,
            dev_nonce=dev_nonce,
            join_nonce=join_nonce,
            session=session,
            nwk_s_key=nwk_s_key,
            app_s_key=app_s_key,
            phy_payload=phy_payload,
            rx1=rx1,
            rx2=rx2,
            joined_at=datetime.fromtimestamp(frame.received_at_s, UTC).isoformat(timespec="seconds"),
            request=frame,
        )

    def counts_dev_nonce(self, device: OtaaDevice) -> bool:
        """Whether ``device`` counts its DevNonces up: the registry's MAC version, else its profile's."""
        version = device.mac_version or self._profile_mac_version(device.profile)
        return counts_dev_nonce(version)

    def _allocate(
        self, dev_eui: DevEui, dev_nonce: int, sessions: SessionTable, reserved: Container[bytes]
    ) -> DevAddr:
        """A DevAddr in the configured block, not used by any current session.

        Derived from (DevEUI, DevNonce) so a join is reproducible in tests, then probed
        linearly within the block; the device's own current address is avoided too, so
        frames of the old session cannot be mistaken for the new one.
        """
        seed = hashlib.sha256(b"edgegw-devaddr" + dev_eui.value + dev_nonce.to_bytes(2, "big")).digest()
        start = int.from_bytes(seed[:4], "big") & self._addr_mask
        for probe in range(min(_ADDR_PROBES, self._addr_mask + 1)):
            candidate = (self._addr_prefix | ((start + probe) & self._addr_mask)).to_bytes(4, "big")
            if not sessions.addr_in_use(candidate) and candidate not in reserved:
                return DevAddr(candidate)
        raise FrameError(
            f"no free DevAddr in {self._section.dev_addr_prefix} for {dev_eui}", reason="dev_addr_exhausted"
        )

    def _windows(
        self, frame: RadioFrame, phy_payload: bytes, dev_eui: DevEui
    ) -> tuple[TxRequest | None, TxRequest | None]:
        """RX1 and RX2 of the join-accept, with the region's defaults (the device has no other settings yet).

        RX1: the uplink's channel, its data rate (RX1DROffset 0), JOIN_ACCEPT_DELAY1 after the
        uplink; RX2: 869.525 MHz DR0, JOIN_ACCEPT_DELAY2 (RP002 EU868 defaults).
        """
        rx = frame.rx
        if rx.concentrator_tmst_us is None:
            return None, None
        power = self._section.downlink_power_dbm
        rx1: TxRequest | None = None
        try:
            rx1_rate = region.data_rate(region.rx1_dr(region.dr_of(rx.sf, rx.bw_hz), 0))
        except ValueError:
            rx1_rate = None  # an uplink modulation that is no EU868 data rate: RX2 only
        if rx1_rate is not None:
            rx1 = TxRequest(
                phy_payload=phy_payload,
                freq_hz=rx.freq_hz,
                sf=rx1_rate.sf,
                bw_hz=rx1_rate.bw_hz,
                power_dbm=power,
                send_at_tmst_us=(rx.concentrator_tmst_us + region.JOIN_ACCEPT_DELAY1_S * _US) % _TMST_WRAP,
                gateway_eui=rx.gateway_eui,
                dev_eui=dev_eui,
            )
        rx2_rate = region.data_rate(region.DEFAULT_RX2_DR)
        rx2 = TxRequest(
            phy_payload=phy_payload,
            freq_hz=region.DEFAULT_RX2_FREQ_HZ,
            sf=rx2_rate.sf,
            bw_hz=rx2_rate.bw_hz,
            power_dbm=power,
            send_at_tmst_us=(rx.concentrator_tmst_us + region.JOIN_ACCEPT_DELAY2_S * _US) % _TMST_WRAP,
            gateway_eui=rx.gateway_eui,
            dev_eui=dev_eui,
        )
        return rx1, rx2


async def accept_join(
    server: JoinServer,
    frame: RadioFrame,
    sessions: SessionTable,
    database: Database,
    encrypt: Callable[[str], str] = plain,
) -> JoinAccepted:
    """Decide, make durable, then serve: the one correct order for a join (raises ``FrameError``).

    After this returns, the new session accepts uplinks and ``rx1``/``rx2`` may be
    handed to the radio; if the write fails (``StorageError`` or a DevNonce stored
    meanwhile), nothing is served and nothing must be sent.
    """
    accepted = server.handle(frame, sessions)
    try:
        await database.run(store_join, accepted, encrypt)
    except sqlite3.Error as exc:
        from gateway.errors import StorageError

        raise StorageError(f"cannot store join of {accepted.dev_eui}: {exc}") from exc
    sessions.install(accepted.session)
    return accepted
