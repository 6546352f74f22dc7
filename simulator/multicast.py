"""A simulated class C device's multicast group context: what it accepts of a multicast frame.

Owns the device side of LoRaWAN 1.0.4 §18 / TS005 McGroupSetup (installed by hand here, as the
project's lamp firmware does): the group's McAddr, McNwkSKey, McAppSKey and the last McFCntDown
accepted. A frame is taken when it is an Unconfirmed Data Down to the McAddr with FPort > 0, its MIC
verifies under McNwkSKey (Dir = 1) for a counter above the last one taken (never the same twice),
and then its FRMPayload is decrypted with McAppSKey. Frames of other groups, replays and forgeries
are refused (``None``), counted in ``refused``.

Pure: no clock, no sockets.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from gateway.errors import FrameError
from gateway.lorawan import phy
from gateway.lorawan.crypto import SessionKeys
from gateway.lorawan.fcnt import full_fcnt
from gateway.messages import MType


@dataclass
class MulticastMember:
    """One group context of a device: ``receive`` gives (FPort, plaintext) of each new frame."""

    mc_addr: bytes
    """4 bytes, MSB first."""
    mc_nwk_s_key: bytes
    mc_app_s_key: bytes
    last_fcnt: int | None = None
    refused: int = 0
    _keys: SessionKeys | None = field(default=None, repr=False)

    def receive(self, phy_payload: bytes) -> tuple[int, bytes] | None:
        try:
            frame = phy.parse(phy_payload)
        except FrameError:
            return None
        if not isinstance(frame, phy.DataFrame) or frame.dev_addr != self.mc_addr:
            return None  # not this group's: nothing to count
        if (
            frame.mtype != MType.UNCONFIRMED_DATA_DOWN
            or not frame.fport
            or frame.fopts
            or frame.fctrl.ack
            or frame.fctrl.adr
        ):
            self.refused += 1  # §18: a multicast frame is unconfirmed, FPort > 0, no MAC commands
            return None
        if self._keys is None:
            self._keys = SessionKeys(self.mc_nwk_s_key, self.mc_app_s_key)
        try:
            fcnt32 = full_fcnt(frame.fcnt16, self.last_fcnt)
        except FrameError:
            self.refused += 1
            return None
        mic = self._keys.data_mic(frame.mic_input, frame.dev_addr, fcnt32, False)
        if not hmac.compare_digest(mic, frame.mic) or (
            self.last_fcnt is not None and fcnt32 <= self.last_fcnt
        ):
            self.refused += 1
            return None
        self.last_fcnt = fcnt32
        plain = self._keys.crypt_frm_payload(frame.frm_payload, frame.dev_addr, fcnt32, False, frame.fport)
        return frame.fport, plain
