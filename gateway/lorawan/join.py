"""OTAA join server at the edge (LoRaWAN 1.0.x): join-request in, durable session and join-accept out.

Owns the decision on a join-request (LoRaWAN 1.0.4 §6.2.4-§6.2.6): the device
must be registered for OTAA with this JoinEUI, the MIC must verify with its
AppKey, and its DevNonce must never have been used before (kept in the
``lorawan_joins`` table, so a replayed join stays refused across restarts). It
then allocates a DevAddr unique among the current sessions, takes the next
JoinNonce of the device (a counter that never repeats, §6.2.6), derives NwkSKey
and AppSKey, and builds the encrypted join-accept with the configured
RX1DROffset, RX2 data rate, RxDelay and CFList, as ``TxRequest``s for RX1
(JOIN_ACCEPT_DELAY1 = 5 s after the uplink, on its channel and data rate) and
RX2 (6 s, 869.525 MHz DR0: the device still has the region's defaults).

``JoinServer.handle`` is pure (no I/O, no clock: time comes in the frame);
``store_join`` is the database write (one transaction: the DevNonce, the new
session); ``accept_join`` runs both in the right order: the join is durable
before its session is served and before its join-accept can be sent.

It does not send anything (the radio does), nor decide class A/C downlinks
(``downlink``), nor handle LoRaWAN 1.1 (rejoin-requests, JoinEUI-keyed MICs).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import sqlite3
from collections.abc import Callable, Iterable
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
    "JoinAccepted",
    "JoinServer",
    "OtaaDevice",
    "accept_join",
    "load_otaa_devices",
    "store_join",
]

logger = logging.getLogger(__name__)

_TMST_WRAP = 1 << 32
_US = 1_000_000
_MAX_JOIN_NONCE = 0xFFFFFF
_ADDR_PROBES = 4096
"""DevAddr candidates tried before a join is refused (bounded work per join-request)."""


@dataclass(slots=True)
class OtaaDevice:
    """A device registered for OTAA, with what its past joins have used."""

    dev_eui: DevEui
    join_eui: JoinEui
    app_key: bytes
    profile: str
    used_dev_nonces: set[int] = field(default_factory=set)
    last_join_nonce: int = -1

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


_LOAD_DEVICES = (
    "SELECT dev_eui, join_eui, app_key, profile FROM devices"
    " WHERE activation = 'otaa' AND join_eui IS NOT NULL AND app_key IS NOT NULL"
)


def load_otaa_devices(conn: sqlite3.Connection, decrypt: Callable[[str], str] = plain) -> list[OtaaDevice]:
    """Every OTAA device with its used DevNonces and last JoinNonce (on the database thread).

    ``decrypt`` turns the stored AppKey column into hex (keys may be encrypted at rest)."""
    devices: dict[str, OtaaDevice] = {}
    for dev_eui, join_eui, app_key, profile in conn.execute(_LOAD_DEVICES):
        devices[dev_eui] = OtaaDevice(
            dev_eui=DevEui.from_hex(dev_eui),
            join_eui=JoinEui.from_hex(join_eui),
            app_key=bytes.fromhex(decrypt(app_key)),
            profile=profile,
        )
    for dev_eui, dev_nonce, join_nonce in conn.execute(
        "SELECT dev_eui, dev_nonce, join_nonce FROM lorawan_joins"
    ):
        device = devices.get(dev_eui)
        if device is not None:
            device.used_dev_nonces.add(dev_nonce)
            device.last_join_nonce = max(device.last_join_nonce, join_nonce)
    return list(devices.values())


def store_join(
    conn: sqlite3.Connection, accepted: JoinAccepted, encrypt: Callable[[str], str] = plain
) -> None:
    """Make a join durable in one transaction: its DevNonce, and the device's new session.

    The (dev_eui, dev_nonce) primary key is the last word on reuse: a DevNonce
    that another path stored meanwhile raises ``FrameError(reason="reused_dev_nonce")``.
    """
    session = accepted.session
    with transaction(conn):
        try:
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
        except sqlite3.IntegrityError as exc:
            raise FrameError(
                f"DevNonce {accepted.dev_nonce:04x} of {accepted.dev_eui} was already used",
                reason="reused_dev_nonce",
            ) from exc
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


class JoinServer:
    """Decides on join-requests; holds the OTAA devices (refreshed from the registry with ``merge``)."""

    def __init__(self, section: LorawanSection, devices: Iterable[OtaaDevice] = ()) -> None:
        self._section = section
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
            devices[device.dev_eui.value] = device
        self._devices = devices

    def handle(self, frame: RadioFrame, sessions: SessionTable) -> JoinAccepted:
        """Accept one join-request, or raise a ``FrameError`` whose ``reason`` says why not.

        Reasons: ``unknown_join_device`` (DevEUI not registered for OTAA, or another
        JoinEUI), ``bad_join_mic``, ``reused_dev_nonce``, ``dev_addr_exhausted``,
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
        # LoRaWAN 1.0.4 §6.2.5: a DevNonce is never reused; 1.0.2 devices pick it at random, 1.0.4
        # devices count up, and refusing any DevNonce seen before is right for both.
        if dev_nonce in device.used_dev_nonces:
            raise FrameError(
                f"DevNonce {dev_nonce:04x} of {device.dev_eui} was already used", reason="reused_dev_nonce"
            )
        if device.last_join_nonce >= _MAX_JOIN_NONCE:
            raise FrameError(f"JoinNonce of {device.dev_eui} is exhausted", reason="join_nonce_exhausted")
        dev_addr = self._allocate(device.dev_eui, dev_nonce, sessions)
        device.used_dev_nonces.add(dev_nonce)
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
        )

    def _allocate(self, dev_eui: DevEui, dev_nonce: int, sessions: SessionTable) -> DevAddr:
        """A DevAddr in the configured block, not used by any current session.

        Derived from (DevEUI, DevNonce) so a join is reproducible in tests, then probed
        linearly within the block; the device's own current address is avoided too, so
        frames of the old session cannot be mistaken for the new one.
        """
        seed = hashlib.sha256(b"edgegw-devaddr" + dev_eui.value + dev_nonce.to_bytes(2, "big")).digest()
        start = int.from_bytes(seed[:4], "big") & self._addr_mask
        for probe in range(min(_ADDR_PROBES, self._addr_mask + 1)):
            candidate = (self._addr_prefix | ((start + probe) & self._addr_mask)).to_bytes(4, "big")
            if not sessions.addr_in_use(candidate):
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
