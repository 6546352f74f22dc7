"""Who is home for each device: the failover decisions of ``edgegw fleet coordinator``, sans-IO.

Owns the rule that picks each device's home gateway (docs/fleet.md, issue 21) from what the
gateways publish, retained or not: their ``state`` (online, or offline by a clean stop or the
broker's last will), their ``inventory`` (who heard which device, how well, when), their
``fcnt-reserve/<dev_eui>`` (the highest FCntDown each home may have used) and the current assignments
(``fleet/home/<dev_eui>``, the coordinator's own retained output read back). It does not own MQTT,
signatures or clocks: the caller feeds parsed messages with ``now_s`` and publishes what
``decide`` returns (``gateway.cli.fleet_coordinator_cmd``).

The rule, per device:

- the current home stays while it is online and heard the device within ``stale_s`` — or while
  nobody else heard it within ``stale_s`` either (moving to a gateway that does not hear the device
  would not help it);
- otherwise the device moves to the online gateway that heard it best within ``stale_s``: the
  strongest RSSI, then the best SNR, then the most recent, then the smallest gateway id (so every
  coordinator fed the same messages decides the same);
- a device with no assignment yet gets one the same way (until then every gateway that has it is
  home, as a single gateway is);
- a move sets ``epoch`` one above the current one and ``fcnt_floor`` to the highest reserve any
  other gateway published for the device: the new home's first FCntDown goes above anything the old home
  (or an earlier one) can have used, even if it was cut off and kept sending up to its reserve;
- no flapping: a home is never taken away because another gateway hears the device better, only
  because the home is offline or deaf; and a device moved less than ``hold_s`` ago stays where it
  is unless its home went offline (an inventory that arrives late cannot bounce it back and forth).

Clocks: a gateway's ``last_seen`` and its inventory's ``at`` are on that gateway's clock; only their
difference is used (how long before the page was made the device was heard), added to when the
coordinator received the page. A gateway's clock may be wrong; the delay of the broker is ignored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.fleet import signed_envelope
from gateway.fleet.signed_envelope import Rejection, reject

__all__ = [
    "ASSIGNMENT_TTL_S",
    "DEFAULT_HOLD_S",
    "DEFAULT_STALE_S",
    "Assignment",
    "Coordinator",
    "Hearing",
    "Policy",
    "assignment_target",
    "parse_iso_s",
    "verify_assignment",
]

ASSIGNMENT_TTL_S = 10 * 366 * 86400
"""An assignment is retained until the next one: its envelope must not expire before a gateway
added years later reads it. Replays are refused by the epoch (only a newer one is taken), not by
the envelope's expiry or sequence number."""


DEFAULT_STALE_S = 1800.0
DEFAULT_HOLD_S = 300.0


@dataclass(frozen=True, slots=True)
class Policy:
    """The coordinator's settings (``edgegw fleet coordinator`` options)."""

    stale_s: float = DEFAULT_STALE_S
    """A gateway that has not heard a device for this long does not hear it (its home may move)."""
    hold_s: float = DEFAULT_HOLD_S
    """A device moved less than this long ago stays unless its home went offline."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.stale_s) and self.stale_s > 0):
            raise ValueError("stale_s must be a positive number of seconds")
        if not (math.isfinite(self.hold_s) and self.hold_s >= 0):
            raise ValueError("hold_s must be a non-negative number of seconds")


@dataclass(frozen=True, slots=True)
class Assignment:
    """The payload of ``<prefix>/fleet/home/<dev_eui>`` (signed, retained)."""

    home: str
    epoch: int
    fcnt_floor: int
    """The highest FCntDown an earlier home may have used: the new home goes above it."""
    at_s: float = 0.0
    """When it was decided (the envelope's ``issued_at``), for ``Policy.hold_s``."""

    def payload(self) -> dict[str, Any]:
        return {"home": self.home, "epoch": self.epoch, "fcnt_floor": self.fcnt_floor}

    @classmethod
    def from_payload(cls, doc: Mapping[str, Any], at_s: float = 0.0) -> Assignment:
        """``ValueError`` unless ``doc`` is ``{"home": str, "epoch": int >= 1, "fcnt_floor": int >= 0}``."""
        home, epoch, floor = doc.get("home"), doc.get("epoch"), doc.get("fcnt_floor")
        if not isinstance(home, str) or not home:
            raise ValueError("home must be a gateway id")
        if type(epoch) is not int or epoch < 1:
            raise ValueError("epoch must be an integer >= 1")
        if type(floor) is not int or floor < 0:
            raise ValueError("fcnt_floor must be an integer >= 0")
        return cls(home, epoch, floor, at_s)


@dataclass(frozen=True, slots=True)
class Hearing:
    """One gateway's last hearing of one device, on the coordinator's clock."""

    gateway_id: str
    heard_at_s: float
    rssi_dbm: float
    snr_db: float


def assignment_target(dev_eui: str) -> str:
    """The envelope ``target`` of a device's assignment: ``home:<dev_eui>``. It binds the signature
    to the device, so a signed assignment re-published on another device's topic is refused."""
    return f"home:{dev_eui.lower()}"


def verify_assignment(
    data: bytes, dev_eui: str, keys: Sequence[Ed25519PublicKey], now_s: float
) -> Assignment:
    """The assignment in a signed envelope from ``fleet/home/<dev_eui>``; ``CommandRejected`` when it
    is not signed by one of ``keys``, is for another device, or its payload is not an assignment."""
    env = signed_envelope.parse(data)
    target = assignment_target(dev_eui)
    # last_seq -1: the sequence number is not what orders assignments, the epoch is.
    signed_envelope.check(env, keys, gateway_id=target, groups=frozenset(), now_s=now_s, last_seq=-1)
    try:
        return Assignment.from_payload(env.payload, at_s=float(env.issued_at))
    except ValueError as exc:
        raise reject(Rejection.BAD_PARAMS, f"not a home assignment: {exc}") from exc


def parse_iso_s(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 UTC time as the gateways write it (``...Z``)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _number(value: Any, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return default
    return float(value)


@dataclass
class Coordinator:
    """The fleet as the retained messages and inventories describe it, and the decisions it implies.

    Stateless in the sense that matters: everything here is rebuilt from the broker's retained
    messages and the next inventories after a restart; nothing is written anywhere else.
    """

    policy: Policy = field(default_factory=Policy)
    online: dict[str, bool] = field(default_factory=dict)
    hearings: dict[str, dict[str, Hearing]] = field(default_factory=dict)
    """dev_eui → gateway id → its last hearing."""
    reserves: dict[str, dict[str, int]] = field(default_factory=dict)
    """gateway id → dev_eui → the highest FCntDown it may use (its retained ``fcnt-reserve``)."""
    homes: dict[str, Assignment] = field(default_factory=dict)

    # --- inputs ---------------------------------------------------------------------------------

    def on_state(self, gateway_id: str, doc: Mapping[str, Any] | None) -> None:
        """A retained ``state``; None for an empty retained message (the gateway was removed)."""
        self.online[gateway_id] = doc is not None and doc.get("state") == "online"

    def on_inventory(self, gateway_id: str, doc: Mapping[str, Any], received_at_s: float) -> int:
        """One ``inventory`` page; returns how many devices it updated. ``ValueError`` if malformed."""
        page_at_s = parse_iso_s(str(doc["at"]))
        devices = doc.get("devices")
        if not isinstance(devices, list):
            raise ValueError("inventory without a device list")
        updated = 0
        for device in devices:
            if not isinstance(device, dict):
                continue
            eui, last_seen = device.get("dev_eui"), device.get("last_seen")
            if not isinstance(eui, str) or not isinstance(last_seen, str):
                continue
            # How long before the page the device was heard, on the gateway's own clock.
            ago_s = max(0.0, page_at_s - parse_iso_s(last_seen))
            hearing = Hearing(
                gateway_id,
                received_at_s - ago_s,
                _number(device.get("rssi_dbm"), -math.inf),
                _number(device.get("snr_db"), -math.inf),
            )
            known = self.hearings.setdefault(eui.lower(), {})
            previous = known.get(gateway_id)
            if previous is None or hearing.heard_at_s >= previous.heard_at_s:
                known[gateway_id] = hearing
                updated += 1
        return updated

    def on_reserve(self, gateway_id: str, dev_eui: str, reserved_upto: int) -> None:
        """A retained ``fcnt-reserve/<dev_eui>`` of a gateway. A reserve only grows: a smaller value
        than one seen before (an older retained message re-read, a gateway restored from a backup)
        never lowers a floor."""
        mine = self.reserves.setdefault(gateway_id, {})
        key = dev_eui.lower()
        mine[key] = max(reserved_upto, mine.get(key, 0))

    def on_assignment(self, dev_eui: str, assignment: Assignment | None) -> None:
        """A verified retained ``fleet/home/<dev_eui>`` (ours or another coordinator's); the newest
        epoch wins."""
        key = dev_eui.lower()
        if assignment is None:
            self.homes.pop(key, None)
            return
        current = self.homes.get(key)
        if current is None or assignment.epoch > current.epoch:
            self.homes[key] = assignment

    # --- the decision ---------------------------------------------------------------------------

    def fcnt_floor(self, dev_eui: str, new_home: str | None = None) -> int:
        """The highest FCntDown any gateway but ``new_home`` published a reserve for (0 when none
        did). The new home's own reserve does not count: its own counter is durable in its database
        before any frame goes out, and it only grows."""
        key = dev_eui.lower()
        return max((mine.get(key, 0) for gw, mine in self.reserves.items() if gw != new_home), default=0)

    def _fresh(self, dev_eui: str, now_s: float) -> list[Hearing]:
        """The online gateways that heard the device within ``stale_s``, best first."""
        fresh = [
            h
            for h in self.hearings.get(dev_eui, {}).values()
            if self.online.get(h.gateway_id, False) and now_s - h.heard_at_s <= self.policy.stale_s
        ]
        # Strongest RSSI, best SNR, most recent; the id last so that equal inputs decide equally.
        fresh.sort(key=lambda h: (-h.rssi_dbm, -h.snr_db, -h.heard_at_s, h.gateway_id))
        return fresh

    def decide_one(self, dev_eui: str, now_s: float) -> Assignment | None:
        """The new assignment of one device, or None when it stays as it is."""
        key = dev_eui.lower()
        fresh = self._fresh(key, now_s)
        if not fresh:
            return None  # nobody online hears it: moving it helps nobody
        current = self.homes.get(key)
        if current is not None:
            home_online = self.online.get(current.home, False)
            if home_online and any(h.gateway_id == current.home for h in fresh):
                return None  # online and hearing it: it stays, however well others hear it
            if home_online and now_s - current.at_s < self.policy.hold_s:
                return None  # just moved; a late inventory must not bounce it
        best = fresh[0]
        epoch = current.epoch + 1 if current is not None else 1
        floor = self.fcnt_floor(key, best.gateway_id)
        if current is not None:
            floor = max(floor, current.fcnt_floor)  # never below what an earlier move promised
        return Assignment(best.gateway_id, epoch, floor, now_s)

    def decide(self, now_s: float, devices: Iterable[str] | None = None) -> dict[str, Assignment]:
        """New assignments for every device heard (or those named), sorted by DevEUI.

        The caller publishes them and feeds each back through ``on_assignment`` (reading its own
        retained output back does that too)."""
        names = sorted(self.hearings if devices is None else {d.lower() for d in devices})
        decided = {}
        for eui in names:
            assignment = self.decide_one(eui, now_s)
            if assignment is not None:
                decided[eui] = assignment
        return decided
