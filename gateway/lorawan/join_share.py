"""OTAA sessions shared between gateways by join announcements, without moving session keys.

Where several gateways hear a device, only its home answers its join-requests. The home then
announces each join it made durable on ``<prefix>/<gateway_id>/join`` (docs/mqtt.md)::

    {"v": 1, "dev_eui": "...", "join_eui": "...", "dev_nonce": 258,
     "join_accept": "<the join-accept PHYPayload, hex>", "at": "2026-12-07T23:50:00+00:00"}

Nothing secret travels: the join-accept is encrypted with the device's AppKey (it went on the air
so). A witness holding the same AppKey opens it as the device does (LoRaWAN 1.0.4 §6.2.6: the
network encrypts with an AES *decrypt*, so the device decrypts with an AES *encrypt*:
``phy.open_join_accept``), checks its MIC with the AppKey — only an AppKey holder can make one,
so a forged or damaged announcement is refused — and derives NwkSKey and AppSKey from the
JoinNonce, NetID and DevNonce (§6.2.6.1), the same keys the home derived. The session it builds
gives the same DevAddr and session tag, so its records carry the same ids as the home's.

Owns the announcement's format (``announcement``, ``parse_announcement``) and the decision on one
(``JoinShare.receive``): refused as ``malformed``, ``unknown_device`` (no OTAA device with that
DevEUI and JoinEUI here), ``bad_mic``, ``stale`` (its DevNonce already used here, or its JoinNonce
not above the device's last: a replay, or a session already newer) or ``addr_conflict`` (its
DevAddr serves another device here). An accepted one reserves its DevNonce and JoinNonce at once
in the device's ``OtaaDevice`` (the same objects the join server holds: a witness that becomes
home never reuses them). Sans-IO: no clock (times are passed in), no database, no MQTT. The
caller makes the join durable (``join.store_join``: the sessions row and the DevNonce, as a join
would), installs the session, and reports ``installed`` or ``lost``. Counters: ``join_share.*``
(``installed``, ``bad_mic``, ``unknown_device``, ``stale``, ``malformed``, ``addr_conflict``,
``own``: our own announcements heard back, ignored).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.errors import FrameError
from gateway.loglimit import RateLimitedLog
from gateway.lorawan import phy
from gateway.lorawan.crypto import SessionKeys, derive_session_keys
from gateway.lorawan.join import JoinAccepted, OtaaDevice
from gateway.lorawan.sessions import Session, SessionTable, session_tag
from gateway.messages import AesKey, DevAddr, DevEui, JoinEui, MType, RadioFrame, RxInfo

__all__ = [
    "ANNOUNCEMENT_VERSION",
    "MAX_ANNOUNCEMENT_BYTES",
    "Announcement",
    "JoinShare",
    "announcement",
    "parse_announcement",
]

log = logging.getLogger(__name__)

ANNOUNCEMENT_VERSION = 1
MAX_ANNOUNCEMENT_BYTES = 1024
"""An announcement is ~250 bytes; anything much larger is not one (refused before parsing)."""
_JOIN_ACCEPT_BYTES = (17, 33)
"""MHDR + 16 bytes, or + 32 with a CFList (LoRaWAN 1.0.4 §6.2.6)."""
SHARED_BACKEND = "join_share"
"""``RxInfo.backend`` of the stand-in frame a shared join carries (it was not heard here)."""


@dataclass(frozen=True, slots=True)
class Announcement:
    """One join announced by gateway ``sender`` (not yet verified)."""

    sender: str
    dev_eui: DevEui
    join_eui: JoinEui
    dev_nonce: int
    join_accept: bytes
    at: str


def announcement(accepted: JoinAccepted, at_s: float) -> bytes:
    """The announcement of a join this gateway made durable (published by the home)."""
    request = phy.parse(accepted.request.phy_payload)
    if not isinstance(request, phy.JoinRequest):  # JoinServer.handle accepted it as one
        raise ValueError("an accepted join whose request is not a join-request")
    body = {
        "v": ANNOUNCEMENT_VERSION,
        "dev_eui": str(accepted.dev_eui),
        "join_eui": request.join_eui.hex(),
        "dev_nonce": accepted.dev_nonce,
        "join_accept": accepted.phy_payload.hex(),
        "at": datetime.fromtimestamp(at_s, UTC).isoformat(timespec="seconds"),
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _malformed(why: str) -> FrameError:
    return FrameError(f"join announcement refused: {why}", reason="malformed")


def parse_announcement(sender: str, payload: bytes) -> Announcement:
    """Read an announcement from gateway ``sender``; ``FrameError(reason="malformed")`` if it is none."""
    if len(payload) > MAX_ANNOUNCEMENT_BYTES:
        raise _malformed(f"{len(payload)} bytes")
    try:
        doc: Any = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _malformed(f"not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("v") != ANNOUNCEMENT_VERSION:
        raise _malformed(f"not a version {ANNOUNCEMENT_VERSION} object")
    dev_nonce, at = doc.get("dev_nonce"), doc.get("at", "")
    if type(dev_nonce) is not int or not 0 <= dev_nonce <= 0xFFFF or not isinstance(at, str):
        raise _malformed("dev_nonce must be an integer 0..65535, at a string")
    try:
        dev_eui = DevEui.from_hex(str(doc.get("dev_eui")))
        join_eui = JoinEui.from_hex(str(doc.get("join_eui")))
        join_accept = bytes.fromhex(str(doc.get("join_accept")))
    except ValueError as exc:
        raise _malformed(str(exc)) from None
    if len(join_accept) not in _JOIN_ACCEPT_BYTES or join_accept[0] != MType.JOIN_ACCEPT << 5:
        raise _malformed("join_accept is not a LoRaWAN 1.0.x join-accept")
    return Announcement(sender, dev_eui, join_eui, dev_nonce, join_accept, at[:40])


class JoinShare:
    """Decides on the join announcements of other gateways; holds the OTAA devices it may open.

    ``merge`` takes the registry's OTAA devices (the same list, and so the same objects, the join
    server merged just before). ``counters``: a ``Counter`` to count into (the app passes the
    pipeline's, so ``join_share.*`` shows beside the joins).
    """

    def __init__(self, gateway_id: str, sessions: SessionTable, counters: Counter[str] | None = None) -> None:
        self.gateway_id = gateway_id
        self._sessions = sessions
        self._devices: dict[bytes, OtaaDevice] = {}
        self.counters: Counter[str] = counters if counters is not None else Counter()
        # A flood of forged announcements must not flood the log: one line per reason per minute.
        self._refusal_log = RateLimitedLog(log, interval_s=60.0)

    def merge(self, fresh: Iterable[OtaaDevice]) -> None:
        """Adopt the registry's OTAA devices (``registry.Stages`` adopter)."""
        self._devices = {device.dev_eui.value: device for device in fresh}

    def receive(self, sender: str, payload: bytes, received_at_s: float) -> JoinAccepted | None:
        """An announcement from gateway ``sender``: the join to make durable and install, or None
        (our own, ignored; or refused: counted and logged)."""
        if sender == self.gateway_id:
            self.counters["join_share.own"] += 1
            return None
        try:
            return self.open(parse_announcement(sender, payload), received_at_s)
        except FrameError as exc:
            self.counters[f"join_share.{exc.reason}"] += 1
            self._refusal_log.warn(
                exc.reason, "join announcement from %s refused (%s): %s", sender, exc.reason, exc
            )
            return None

    def open(self, ann: Announcement, received_at_s: float) -> JoinAccepted:
        """Verify an announcement with the device's AppKey and build its join (``FrameError`` with
        ``reason`` when refused). The DevNonce and JoinNonce are reserved in the device at once."""
        device = self._devices.get(ann.dev_eui.value)
        if device is None or device.join_eui != ann.join_eui:
            raise FrameError(f"{ann.dev_eui} is not an OTAA device of JoinEUI {ann.join_eui} here",
                             reason="unknown_device")  # fmt: skip
        try:
            opened = phy.open_join_accept(phy.JoinAccept(ann.join_accept[1:]), device.app_key)
        except FrameError as exc:  # MicMismatch: a wrong key or a changed byte look the same
            raise FrameError(
                f"join-accept for {ann.dev_eui} does not verify: {exc}", reason="bad_mic"
            ) from exc
        join_nonce = int.from_bytes(opened.join_nonce, "big")
        if ann.dev_nonce in device.used_dev_nonces or join_nonce <= device.last_join_nonce:
            raise FrameError(
                f"join of {ann.dev_eui} (DevNonce {ann.dev_nonce:04x}, JoinNonce {join_nonce}) is not newer"
                f" than what this gateway knows (last JoinNonce {device.last_join_nonce})",
                reason="stale",
            )
        dev_addr = DevAddr(opened.dev_addr)
        current = self._sessions.by_dev_eui(device.dev_eui)
        own_addr = current is not None and current.dev_addr == dev_addr
        if self._sessions.addr_in_use(dev_addr.value) and not own_addr:
            raise FrameError(f"DevAddr {dev_addr} of {ann.dev_eui} serves another device here",
                             reason="addr_conflict")  # fmt: skip
        nwk, app = derive_session_keys(
            device.app_key, opened.join_nonce, opened.net_id, ann.dev_nonce.to_bytes(2, "big")
        )
        device.used_dev_nonces.add(ann.dev_nonce)
        device.last_dev_nonce = max(device.last_dev_nonce, ann.dev_nonce)
        device.last_join_nonce = join_nonce
        nwk_s_key = AesKey(nwk)
        session = Session(
            dev_eui=device.dev_eui, dev_addr=dev_addr, profile=device.profile,
            session_tag=session_tag(dev_addr, nwk_s_key), keys=SessionKeys(nwk, app), fcnt_up=None,
        )  # fmt: skip
        # The join was not heard here: a stand-in frame (the join-accept, our receive time) fills
        # JoinAccepted.request, which store_join does not read; no RX window, nothing to send.
        stand_in = RadioFrame(
            ann.join_accept, RxInfo(0, 0.0, 0.0, 0, 0, "", True, SHARED_BACKEND), received_at_s, 0.0
        )
        return JoinAccepted(
            dev_eui=device.dev_eui, dev_nonce=ann.dev_nonce, join_nonce=join_nonce, session=session,
            nwk_s_key=nwk_s_key, app_s_key=AesKey(app), phy_payload=ann.join_accept, rx1=None, rx2=None,
            joined_at=datetime.fromtimestamp(received_at_s, UTC).isoformat(timespec="seconds"),
            request=stand_in,
        )  # fmt: skip

    def installed(self, accepted: JoinAccepted, sender: str) -> None:
        """The caller made the shared join durable and installed its session."""
        self.counters["join_share.installed"] += 1
        log.info(
            "device %s joined through %s: session %s installed here (DevNonce %04x)",
            accepted.dev_eui, sender, accepted.session.dev_addr, accepted.dev_nonce,
        )  # fmt: skip

    def lost(self, accepted: JoinAccepted, reason: str, detail: str) -> None:
        """The caller could not make it durable (``reused_dev_nonce``: stale after all; else storage)."""
        self.counters["join_share.stale" if reason == "reused_dev_nonce" else "join_share.not_stored"] += 1
        log.warning("shared join of %s not installed (%s): %s", accepted.dev_eui, reason, detail)
