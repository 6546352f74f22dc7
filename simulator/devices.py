"""Simulated end devices: real LoRaWAN frames from plausible sensors.

Owns the device side of a session (DevAddr, keys, uplink counter) and the sensor
models that produce application payloads in each vendor's format. Frames are
built with the gateway's pure PHYPayload builder, whose MIC and encryption are
checked against published vectors in tests/lorawan/.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from gateway.lorawan import phy
from gateway.lorawan.crypto import SessionKeys
from gateway.messages import MType


@dataclass
class AbpDevice:
    """An ABP end device: builds uplinks with its session keys and counter."""

    dev_eui: bytes
    dev_addr: bytes
    nwk_s_key: bytes
    app_s_key: bytes
    profile: str
    fcnt_up: int = 0
    _keys: SessionKeys | None = field(default=None, repr=False)

    def uplink(
        self, payload: bytes, fport: int, *, confirmed: bool = False, fopts: bytes = b"", adr: bool = False
    ) -> bytes:
        """The next uplink's PHYPayload; advances the counter like a real device.

        ``fopts``: MAC answers owed to the network (``simulator.device_mac``); ``adr``: the FCtrl ADR
        bit of a device that follows the network's LinkADRReq (LoRaWAN 1.0.4 §4.3.1.1).
        """
        if self._keys is None:
            self._keys = SessionKeys(self.nwk_s_key, self.app_s_key)
        frame = phy.build_data_frame(
            self._keys,
            mtype=MType.CONFIRMED_DATA_UP if confirmed else MType.UNCONFIRMED_DATA_UP,
            dev_addr=self.dev_addr,
            fcnt32=self.fcnt_up,
            fport=fport,
            payload=payload,
            fopts=fopts,
            adr=adr,
        )
        self.fcnt_up += 1
        return frame


@dataclass
class Em310Container:
    """A waste container under a Milesight EM310-UDL ultrasonic sensor.

    The bin fills (distance from sensor to waste shrinks) and is emptied by a
    crane lift, seen as a tilt then a jump back to the empty distance
    (research/domain.md §1.3). Payload: Milesight TLV, channels 01 75 battery,
    03 82 distance (uint16 LE, mm), 04 00 position (vendor README).
    """

    rng: random.Random
    empty_mm: int = 2200
    full_mm: int = 300
    distance_mm: float = 2200.0
    battery_pct: int = 100
    fport: int = 85

    def next_payload(self) -> bytes:
        tilt = False
        if self.distance_mm <= self.full_mm + 150 or self.rng.random() < 0.03:
            tilt, self.distance_mm = True, float(self.empty_mm)
        else:
            self.distance_mm -= self.rng.uniform(20, 120)
        if self.rng.random() < 0.02:
            self.battery_pct = max(0, self.battery_pct - 1)
        distance = max(0, min(0xFFFF, int(self.distance_mm)))
        return (
            bytes([0x01, 0x75, self.battery_pct, 0x03, 0x82])
            + distance.to_bytes(2, "little")
            + bytes([0x04, 0x00, 1 if tilt else 0])
        )


@dataclass
class OtaaIdentity:
    """What an OTAA device holds before it has a session: its root key, JoinEUI and DevNonce counter.

    LoRaWAN 1.0.4 §6.2.5: DevNonce is a counter that only goes up (the gateway refuses a 1.0.4
    device's DevNonce not above its last). ``random_nonces`` given: a 1.0.2/1.0.3 device, whose
    DevNonces are drawn at random, never one it used before (the gateway refuses only reuse). The
    session (DevAddr, keys) lives in the ``AbpDevice`` that sends the uplinks once the join-accept
    arrived.
    """

    app_key: bytes
    join_eui: bytes
    dev_nonce: int = 0
    joined: bool = False
    pending_nonce: bytes | None = None
    random_nonces: random.Random | None = None
    _used: set[int] = field(default_factory=set, repr=False)

    def join_request(self, dev_eui: bytes) -> bytes:
        self.dev_nonce = self._next_nonce()
        self.pending_nonce = self.dev_nonce.to_bytes(2, "big")
        return phy.build_join_request(
            self.app_key, join_eui=self.join_eui, dev_eui=dev_eui, dev_nonce=self.pending_nonce
        )

    def _next_nonce(self) -> int:
        if self.random_nonces is None:
            return (self.dev_nonce + 1) & 0xFFFF
        while True:  # a few draws at most: a device joins far fewer than 65,536 times
            nonce = self.random_nonces.randrange(0x10000)
            if nonce not in self._used:
                self._used.add(nonce)
                return nonce

    def accept(self, frame: phy.JoinAccept, session: AbpDevice) -> bool:
        """Open a join-accept for the pending request and start the session in ``session``."""
        from gateway.errors import MicMismatch
        from gateway.lorawan.crypto import derive_session_keys

        if self.pending_nonce is None:
            return False
        try:
            payload = phy.open_join_accept(frame, self.app_key)
        except MicMismatch:
            return False  # for another device
        nwk, app = derive_session_keys(self.app_key, payload.join_nonce, payload.net_id, self.pending_nonce)
        session.dev_addr, session.nwk_s_key, session.app_s_key = payload.dev_addr, nwk, app
        session.fcnt_up, session._keys = 0, None
        self.joined, self.pending_nonce = True, None
        return True
