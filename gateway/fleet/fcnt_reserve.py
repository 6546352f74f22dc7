"""The home gateway's FCntDown reserve: blocks of downlink counters announced before they are used.

Owns the rule of issue 21 (docs/fleet.md, "The coordinator"), a database sequence cache applied to
LoRaWAN downlink counters: a home publishes, retained, the highest FCntDown it may use for each
device (``reserved_upto``), a block ahead (``BLOCK``, 256 counters) of what it uses. When the
coordinator moves a device, the new home starts above the highest reserve ever published for it
(``fcnt_floor``), so it never repeats a counter the old home used — even when the old home was cut
off from the broker and went on sending: cut off, a home may use counters only up to its last
*acknowledged* reserve, then its downlinks to that device end ``refused`` ``no_fcnt_reserve``
(``allows``).

Which devices are held to their reserve (``enforce``): those the coordinator assigned to this
gateway. A device nobody assigned (a single-gateway city, a device before the coordinator's first
decision) is never refused: it keeps today's behaviour, and its reserve is still published when the
broker is there, so the coordinator's first move starts above it.

Sans-IO: the caller says which counter a frame is about to use (``allows``), publishes
``wanted()`` and reports the broker's acknowledgement (``acknowledged``). No MQTT, no clock.

Wire format: one retained message (QoS 1) per device, ``<prefix>/<gateway_id>/fcnt-reserve/<dev_eui>``:
``{"v": 1, "reserved_upto": <int>}``. One message per device, not one map per gateway: a map of a
city gateway's devices would outgrow the broker's message limit (AWS IoT Core: 128 KiB, about 4,500
devices), and a home that cannot publish its reserve must refuse its coordinated devices' downlinks.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

__all__ = ["BLOCK", "LOW_WATER", "FcntReserve", "parse", "payload"]

BLOCK = 256
"""Counters reserved at a time: one retained message per 128..256 downlinks of a device at most, and
the gap a device sees after a failover stays far below the 16384 of LoRaWAN 1.0.2's MAX_FCNT_GAP."""
LOW_WATER = BLOCK // 2
"""The next block is asked for when fewer than this many reserved counters are left: published long
before it is needed, so a class A answer (RX1 one second after the uplink) never waits for the broker."""
VERSION = 1


def parse(payload: bytes) -> int:
    """The ``reserved_upto`` of an ``fcnt-reserve`` message; ``ValueError`` when it is not one."""
    doc: Any = json.loads(payload)
    upto = doc.get("reserved_upto") if isinstance(doc, dict) and doc.get("v") == VERSION else None
    if type(upto) is not int or upto < 0:
        raise ValueError('not an fcnt-reserve message ({"v": 1, "reserved_upto": <int >= 0>})')
    return upto


def payload(reserved_upto: int) -> bytes:
    """The ``fcnt-reserve`` message of one device."""
    return json.dumps({"v": VERSION, "reserved_upto": reserved_upto}, separators=(",", ":")).encode()


class FcntReserve:
    """The reserve of one gateway: what the broker acknowledged, and what it should publish next."""

    def __init__(self, block: int = BLOCK, low_water: int = LOW_WATER) -> None:
        if not 0 < low_water <= block:
            raise ValueError("need 0 < low_water <= block")
        self.block = block
        self.low_water = low_water
        self.published: dict[str, int] = {}
        """dev_eui → the reserve the broker acknowledged (retained): the counters usable cut off."""
        self._wanted: dict[str, int] = {}
        self._enforced: set[str] = set()
        self.counters: Counter[str] = Counter()

    def enforce(self, dev_eui: str, on: bool = True) -> None:
        """Hold the device to its acknowledged reserve (it was assigned to this gateway) or not."""
        if on:
            self._enforced.add(dev_eui.lower())
        else:
            self._enforced.discard(dev_eui.lower())

    def enforced(self, dev_eui: str) -> bool:
        return dev_eui.lower() in self._enforced

    def start_at(self, dev_eui: str, next_fcnt_down: int) -> None:
        """Ask for a block from ``next_fcnt_down`` (a new home, before its first downlink)."""
        self._want(dev_eui.lower(), next_fcnt_down + self.block - 1)

    def allows(self, dev_eui: str, fcnt_down: int) -> bool:
        """May a frame with FCntDown ``fcnt_down`` go out now? Asks for the next block when the
        acknowledged reserve runs low; False only for an enforced device beyond its reserve."""
        key = dev_eui.lower()
        upto = self.published.get(key, -1)
        if fcnt_down + self.low_water > upto:
            self._want(key, fcnt_down + self.block - 1)
        if key in self._enforced and fcnt_down > upto:
            self.counters["no_fcnt_reserve"] += 1
            return False
        return True

    def _want(self, key: str, upto: int) -> None:
        if upto > max(self._wanted.get(key, -1), self.published.get(key, -1)):
            self._wanted[key] = upto

    @property
    def growing(self) -> bool:
        """True when a block was asked for and not acknowledged yet (cheap: no map built)."""
        return bool(self._wanted)

    def wanted(self) -> dict[str, int]:
        """The devices whose reserve must grow, and to what (publish each, then ``acknowledged``)."""
        return dict(self._wanted)

    def acknowledged(self, reserve: Mapping[str, int]) -> None:
        """The broker acknowledged these reserves (from ``wanted``): their counters are usable."""
        for key, upto in reserve.items():
            if upto > self.published.get(key, -1):
                self.published[key] = upto
            if self._wanted.get(key, -1) <= upto:
                self._wanted.pop(key, None)
        self.counters["published"] += 1

    def restore(self, reserve: Mapping[str, int]) -> None:
        """Our own retained messages read back (after a restart: what we announced before). A
        reserve only grows, since the coordinator may have taken a floor from it: a higher one is
        announced again (wanted), not taken as acknowledged — our own first publication after the
        restart may have replaced it on the broker with a lower one in the meantime, and only what
        the broker holds may be used. Our echo of what we just published changes nothing."""
        for key, upto in reserve.items():
            self._want(key.lower(), upto)
