"""The agent's side of failover (issue 21): the coordinator's assignments in, the FCntDown reserve out.

Owns the wiring between the broker and three stages that do not know each other:

- ``<prefix>/fleet/home/+`` (signed, retained, from ``edgegw fleet coordinator``): each message is
  verified with the platform keys this gateway trusts (``Trust.keys``; the envelope's target binds
  it to the device of its topic, ``gateway.fleet.coordinator.verify_assignment``), then handed to
  ``Roles.assign`` (a newer epoch only). A forged, altered or misfiled one changes nothing and is
  counted (``fleet_home.refused.<reason>``).
- becoming home: the device's FCntDown goes above the assignment's ``fcnt_floor``
  (``DownlinkScheduler.raise_fcnt_down``, durable with the next group commit), and the device is
  held to this gateway's reserve from then on (``FcntReserve.enforce``);
- ``<prefix>/<gateway_id>/fcnt-reserve/<dev_eui>`` (retained): each device's reserve, published
  whenever it must grow (``publish_reserves``); our own retained copies are read back at each
  connection so a restarted agent never announces less than it did (``FcntReserve.restore``).

It does not decide homes (the coordinator), keep them (``gateway.roles``), nor stop a witness from
transmitting (the roles' wiring does).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from gateway.errors import CommandRejected, UplinkError
from gateway.fleet import fcnt_reserve
from gateway.fleet.coordinator import verify_assignment
from gateway.fleet.fcnt_reserve import FcntReserve
from gateway.fleet.trust import Trust
from gateway.loglimit import RateLimitedLog
from gateway.lorawan.downlink import DownlinkScheduler
from gateway.messages import DevEui
from gateway.roles import Assignment, Roles
from gateway.uplink.mqtt import MqttUplink
from gateway.uplink.topics import Topics

log = logging.getLogger(__name__)
_refusals = RateLimitedLog(log)

PUBLISH_CHECK_S = 1.0
"""The reserve publisher looks at least this often (and at once when a block is asked for)."""


class FleetHomes:
    """Assignments from the coordinator applied to the roles and counters; the reserve published."""

    def __init__(
        self,
        roles: Roles,
        downlinks: DownlinkScheduler,
        trust: Trust,
        *,
        publish_reserve: Callable[[str, bytes], Awaitable[None]],
        connected: Callable[[], bool],
        reserve: FcntReserve | None = None,
    ) -> None:
        self.roles = roles
        self.downlinks = downlinks
        self.trust = trust
        self.reserve = reserve if reserve is not None else FcntReserve()
        self._publish_reserve = publish_reserve
        self._connected = connected
        self._wake = asyncio.Event()
        self.counters: Counter[str] = Counter()
        roles.listeners.append(self._role_changed)

    # --- inbound -------------------------------------------------------------------------------

    def on_assignment(self, topic: str, payload: bytes) -> None:
        """MQTT handler of ``<prefix>/fleet/home/<dev_eui>``."""
        dev_eui = topic.rsplit("/", 1)[-1].lower()
        if not payload:
            return  # a retained assignment removed: the last one stays in effect
        try:
            assignment = verify_assignment(payload, dev_eui, self.trust.keys, time.time())
        except CommandRejected as exc:
            self.counters[f"fleet_home.refused.{exc.reason}"] += 1
            _refusals.warn(f"fleet_home_{exc.reason}", "home assignment on %s refused: %s", topic, exc)
            return
        if not self.roles.assign(dev_eui, assignment.home, assignment.epoch, assignment.fcnt_floor):
            self.counters["fleet_home.not_newer"] += 1
            return
        self.counters["fleet_home.assigned"] += 1
        self.apply(dev_eui)

    def on_own_reserve(self, topic: str, payload: bytes) -> None:
        """One of our retained ``fcnt-reserve/<dev_eui>`` read back (after a restart: what we
        announced before)."""
        if not payload:
            return
        try:
            self.reserve.restore({topic.rsplit("/", 1)[-1].lower(): fcnt_reserve.parse(payload)})
            if self.reserve.growing:
                self._wake.set()
        except ValueError as exc:
            self.counters["fcnt_reserve.unreadable"] += 1
            log.warning("our retained %s is unreadable (%s): ignored", topic, exc)

    # --- roles → counters ------------------------------------------------------------------------

    def apply(self, dev_eui: str) -> None:
        """Bring the device's counter and reserve in line with its assignment (also at start)."""
        assignment = self.roles.assignment(dev_eui)
        home = self.roles.is_home(dev_eui)
        self.reserve.enforce(dev_eui, home and assignment is not None)
        if not home or assignment is None:
            return
        next_fcnt = self.downlinks.raise_fcnt_down(DevEui.from_hex(dev_eui), assignment.fcnt_floor)
        if next_fcnt is not None:
            self.reserve.start_at(dev_eui, next_fcnt)
            self._wake.set()

    def _role_changed(self, dev_eui: str, now_home: bool) -> None:
        # A registry change of home_gateway also lands here; an assignment's apply() runs after it.
        if not now_home:
            self.reserve.enforce(dev_eui, False)

    def fcnt_gate(self, dev_eui: DevEui, fcnt_down: int) -> bool:
        """``DownlinkScheduler.fcnt_gate``: within the reserve (asks for the next block at low water)."""
        allowed = self.reserve.allows(str(dev_eui), fcnt_down)
        if self.reserve.growing:
            self._wake.set()
        return allowed

    # --- outbound ------------------------------------------------------------------------------

    async def publish_reserves(self) -> None:
        """Task: publish each device's reserve (retained, QoS 1) whenever it must grow and the broker
        is there; a block counts only once the broker acknowledged it."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), PUBLISH_CHECK_S)
            except TimeoutError:
                pass
            self._wake.clear()
            for dev_eui, upto in self.reserve.wanted().items():
                if not self._connected():
                    break
                try:
                    await self._publish_reserve(dev_eui, fcnt_reserve.payload(upto))
                except UplinkError as exc:
                    log.debug("FCntDown reserve of %s not published: %s", dev_eui, exc)
                    break
                self.reserve.acknowledged({dev_eui: upto})


def wire(
    roles: Roles,
    downlinks: DownlinkScheduler,
    trust: Trust,
    uplink: MqttUplink,
    topics: Topics,
    restored: list[Assignment],
) -> FleetHomes:
    """Build ``FleetHomes``, gate the downlink counters on its reserve, subscribe the assignments and
    our own reserve, and apply the assignments kept in the database (``restored``, at start)."""
    homes = FleetHomes(
        roles,
        downlinks,
        trust,
        publish_reserve=lambda dev_eui, data: uplink.publish(
            topics.fcnt_reserve(dev_eui), data, qos=1, retain=True
        ),
        connected=lambda: uplink.connected,
    )
    downlinks.fcnt_gate = homes.fcnt_gate
    uplink.subscribe(topics.fcnt_reserve_filter, homes.on_own_reserve)
    uplink.subscribe(topics.fleet_home_filter, homes.on_assignment)
    for assignment in restored:
        homes.apply(assignment.dev_eui)
    return homes
