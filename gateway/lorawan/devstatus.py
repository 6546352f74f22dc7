"""DevStatusReq at a period: each device's battery and demodulation margin (LoRaWAN 1.0.4 §5.5).

Owns, per device, when it last answered a DevStatusReq and whether a request is outstanding. As a
``MacPeer`` of the downlink scheduler it puts a DevStatusReq (CID 0x06, no payload) in the downlink
that follows an uplink of a device whose last answer is older than the period, and reads the
DevStatusAns (Battery, Margin) the device puts in a later uplink; each answer goes to
``on_status`` (the inventory, which keeps it across restarts).

Why a period and not every downlink: each request costs the device a downlink to listen to and an
answer to send, and a class A device only hears one after an uplink. One request at a time per device;
a request not answered within ``RETRY_AFTER_UPLINKS`` uplinks (the downlink or the answer was lost) is
sent again, ``MAX_ASKS`` times in all: a device that never answers is then left alone for a period
(not given a downlink every few uplinks). A device never answered (a fresh start, or the first start
after an update) is first asked at a phase of its DevEUI within ``min(period, MAX_SPREAD_S)`` of the
first uplink this peer saw, so a restart does not make every device's next downlink carry a request
at once; a device that answered before the restart is asked again a period after that answer.

Sans-IO: times are the uplinks' receive times (``RadioFrame.received_at_s``, simulated in the city
simulations). It does not send anything, nor decide whether a downlink goes (``downlink``).
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from gateway.lorawan import mac
from gateway.messages import DevEui, UplinkData

__all__ = [
    "BATTERY_EXTERNAL",
    "BATTERY_UNKNOWN",
    "DEV_STATUS",
    "MAX_ASKS",
    "MAX_SPREAD_S",
    "RETRY_AFTER_UPLINKS",
    "DevStatus",
    "DevStatusPeer",
    "battery_pct",
    "parse_dev_status_ans",
]

logger = logging.getLogger(__name__)

DEV_STATUS = 0x06
"""CID of DevStatusReq (network → device, no payload) and DevStatusAns (device → network, 2 bytes)."""
BATTERY_EXTERNAL = 0
"""DevStatusAns Battery: the device is connected to an external power source."""
BATTERY_UNKNOWN = 255
"""DevStatusAns Battery: the device cannot measure its battery level."""
_BATTERY_FULL = 254
RETRY_AFTER_UPLINKS = 3
"""Uplinks without a DevStatusAns after which the request is sent again (lost downlink or answer)."""
MAX_ASKS = 3
"""Requests left unanswered in a row after which the device is asked again only a period later."""
MAX_SPREAD_S = 6 * 3600
"""Devices never answered are first asked within this (or the period, if shorter) of the start."""


@dataclass(frozen=True, slots=True)
class DevStatus:
    """One DevStatusAns, as the device sent it."""

    dev_eui: DevEui
    battery: int
    """0 external power, 1..254 battery level (254 full), 255 cannot measure."""
    margin_db: int
    """SNR in dB (-32..31) at which the device received the DevStatusReq."""
    at_s: float
    """Receive time of the uplink that carried the answer (Unix seconds)."""


def parse_dev_status_ans(payload: bytes) -> tuple[int, int]:
    """DevStatusAns payload (§5.5) → (Battery, Margin in dB); ValueError if not 2 bytes.

    Margin is the low 6 bits of the second byte, a signed two's complement integer (-32..31); the
    top two bits are RFU and ignored.
    """
    if len(payload) != 2:
        raise ValueError(f"DevStatusAns payload is 2 bytes, got {len(payload)}")
    margin = payload[1] & 0x3F
    if margin & 0x20:
        margin -= 0x40
    return payload[0], margin


def battery_pct(battery: int) -> float | None:
    """Battery level in percent (1..254 → 0.4..100), None for external power (0) or unknown (255)."""
    if battery in (BATTERY_EXTERNAL, BATTERY_UNKNOWN):
        return None
    return round(battery / _BATTERY_FULL * 100, 1)


def _phase_s(dev_eui: DevEui, spread_s: float) -> float:
    # CRC-32 rather than hash(): the same device gets the same phase after a restart.
    return zlib.crc32(dev_eui.value) % 100_000 / 100_000 * spread_s


class DevStatusPeer:
    """The DevStatusReq/Ans peer of the downlink scheduler (``MacPeer``); ``period_s`` 0 never asks.

    ``counters`` (``dev_status.asked``, ``.asked_again``, ``.answered``, ``.unanswered``) may be
    replaced by the scheduler's, to show next to the other MAC counts."""

    def __init__(
        self,
        period_s: float,
        *,
        on_status: Callable[[DevStatus], None] | None = None,
        retry_after_uplinks: int = RETRY_AFTER_UPLINKS,
    ) -> None:
        self._period_s = period_s
        self._spread_s = min(period_s, MAX_SPREAD_S)
        self._retry_after = retry_after_uplinks
        self.on_status = on_status
        self._round_s: dict[bytes, float] = {}
        """Device → when its last round ended: its answer, or its last request left unanswered."""
        self._outstanding: dict[bytes, int] = {}
        """Device → uplinks heard since its request was sent."""
        self._asks: dict[bytes, int] = {}
        """Device → requests sent in the current round (1..MAX_ASKS)."""
        self._first_uplink_s: float | None = None
        self.counters: Counter[str] = Counter()

    def known(self, dev_eui: DevEui, answered_at_s: float) -> None:
        """A device's last answer as restored at start (from the inventory's state)."""
        self._round_s[dev_eui.value] = answered_at_s

    def forget(self, dev_eui: DevEui) -> None:
        """The device left the registry."""
        for state in (self._round_s, self._outstanding, self._asks):
            state.pop(dev_eui.value, None)

    # MacPeer

    def answer(self, up: UplinkData, command: mac.MacCommand) -> None:
        if command.cid != DEV_STATUS:
            return
        try:
            battery, margin_db = parse_dev_status_ans(command.payload)
        except ValueError:
            return  # parse_commands cuts commands to their size: cannot happen, and must not raise
        at_s = up.frame.received_at_s
        eui = up.dev_eui.value
        self._round_s[eui] = at_s
        self._outstanding.pop(eui, None)
        self._asks.pop(eui, None)
        self.counters["dev_status.answered"] += 1
        logger.debug("DevStatusAns from %s: battery %d, margin %d dB", up.dev_eui, battery, margin_db)
        if self.on_status is not None:
            self.on_status(DevStatus(up.dev_eui, battery, margin_db, at_s))

    def requests(self, up: UplinkData, room_bytes: int) -> bytes:
        if self._period_s <= 0 or room_bytes < 1:
            return b""
        eui = up.dev_eui.value
        now_s = up.frame.received_at_s
        if self._first_uplink_s is None:
            self._first_uplink_s = now_s
        waited = self._outstanding.get(eui)
        if waited is not None:
            if waited + 1 < self._retry_after:
                self._outstanding[eui] = waited + 1
                return b""
            asks = self._asks.get(eui, 1)
            if asks >= MAX_ASKS:  # it does not answer: leave it alone for a period
                self._round_s[eui] = now_s
                del self._outstanding[eui]
                self._asks.pop(eui, None)
                self.counters["dev_status.unanswered"] += 1
                return b""
            self._asks[eui] = asks + 1
            self.counters["dev_status.asked_again"] += 1
        elif not self._due(up.dev_eui, now_s):
            return b""
        else:
            self._asks[eui] = 1
        self._outstanding[eui] = 0
        self.counters["dev_status.asked"] += 1
        return bytes((DEV_STATUS,))

    def _due(self, dev_eui: DevEui, now_s: float) -> bool:
        round_s = self._round_s.get(dev_eui.value)
        if round_s is None:
            started_s = now_s if self._first_uplink_s is None else self._first_uplink_s
            return now_s - started_s >= _phase_s(dev_eui, self._spread_s)
        # A round more than a period "in the future" (the clock was stepped back) must not silence
        # the device until the clock catches up.
        return abs(now_s - round_s) >= self._period_s
