"""``edgegw fleet coordinator``: the platform-side process that decides each device's home gateway.

Stateless: everything it knows comes from the broker — the gateways' retained ``state`` and
``fcnt-reserve/<dev_eui>``, their ``inventory`` pages, and the retained assignments on
``<prefix>/fleet/home/<dev_eui>`` (its own output, read back: the current epoch of each device).
The decisions are ``gateway.fleet.coordinator``'s; this module connects, feeds it, and publishes
each new assignment retained (QoS 1), signed with the platform key as every platform message is
(``gateway.fleet.sign``; the gateways verify it with their pinned keys).

``--once`` listens for ``--listen-s`` (long enough for an inventory round), decides, publishes and
exits; ``--run`` does the same, then decides again every ``--interval-s`` until stopped. Before its
first decision it always listens ``--settle-s`` at least, so the retained assignments are read
before anything is decided (otherwise a restarted coordinator would start every device over at
epoch 1, and the gateways would ignore it).

Several coordinators may run against one broker (a cluster in production). They do not use
an MQTT 5 shared subscription: a shared subscription gets no retained messages (MQTT 5.0 §4.8.2),
and each coordinator needs all of them and every inventory. Fed the same messages they decide the
same (ties broken by gateway id) and publish the same assignment; the gateways take only a strictly
newer epoch, so a duplicate changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.cli.common import UsageError, setup_logging
from gateway.config import MqttSection
from gateway.errors import CommandRejected, UplinkError
from gateway.fleet import fcnt_reserve, sign
from gateway.fleet.coordinator import (
    ASSIGNMENT_TTL_S,
    DEFAULT_HOLD_S,
    DEFAULT_STALE_S,
    Assignment,
    Coordinator,
    Policy,
    assignment_target,
    verify_assignment,
)
from gateway.uplink.topics import FLEET_LEVEL, fleet_home

if TYPE_CHECKING:
    from gateway.uplink.mqtt import MqttUplink

log = logging.getLogger(__name__)

SettingsOf = Callable[[argparse.Namespace], MqttSection]
INBOUND_MAX_BYTES = 4 * 1024 * 1024
"""An inventory page is sized to the broker's message limit; allow a large one."""


def add_arguments(p: argparse.ArgumentParser, settings_of: SettingsOf) -> None:
    """The options of ``fleet coordinator``; ``settings_of`` turns the broker options (added by
    ``fleet_cmd``, shared with ``send`` and ``watch``) into an ``MqttSection``."""
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--once", action="store_true", help="listen, decide once, publish, exit")
    mode.add_argument("--run", action="store_true", help="decide again every --interval-s until stopped")
    p.add_argument("--key", required=True, metavar="PATH", help="platform Ed25519 private key (PEM)")
    p.add_argument(
        "--stale-s", type=float, default=DEFAULT_STALE_S,
        help="a gateway that has not heard a device this long does not hear it (default %(default)g)",
    )  # fmt: skip
    p.add_argument(
        "--hold-s", type=float, default=DEFAULT_HOLD_S,
        help="a device moved less than this long ago stays unless its home is offline (default %(default)g)",
    )  # fmt: skip
    p.add_argument("--settle-s", type=float, default=3.0, help="listen at least this long first (default 3)")
    p.add_argument(
        "--listen-s", type=float, default=0.0,
        help="--once: listen this long before deciding (an inventory round; default: --settle-s)",
    )  # fmt: skip
    p.add_argument("--interval-s", type=float, default=1.0, help="--run: decide this often (default 1)")
    p.add_argument("--log-level", default="INFO", help="stderr log level (default INFO)")
    p.set_defaults(handler=main, settings_of=settings_of)


def main(args: argparse.Namespace) -> int:
    try:
        key = sign.load_private_key(args.key)
        policy = Policy(stale_s=args.stale_s, hold_s=args.hold_s)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    if args.interval_s <= 0 or args.settle_s < 0 or args.listen_s < 0:
        raise UsageError("--interval-s must be positive, --settle-s and --listen-s not negative")
    setup_logging(args.log_level)
    settings: MqttSection = args.settings_of(args)
    runner = CoordinatorProcess(settings, key, policy)
    listen_s = max(args.settle_s, args.listen_s if args.once else 0.0)
    try:
        asyncio.run(runner.serve(listen_s=listen_s, interval_s=None if args.once else args.interval_s))
    except KeyboardInterrupt:
        pass
    return 0


class CoordinatorProcess:
    """One connection to the broker, the ``Coordinator`` it feeds, and the assignments it publishes."""

    def __init__(self, settings: MqttSection, key: Ed25519PrivateKey, policy: Policy) -> None:
        self.settings = settings
        self.key = key
        self.public_keys = [key.public_key()]
        self.coordinator = Coordinator(policy)
        self.refused = 0
        self.published: list[dict[str, Any]] = []

    # --- inbound: on the loop, from MqttUplink ---------------------------------------------------

    def on_message(self, topic: str, payload: bytes) -> None:
        prefix = self.settings.topic_prefix
        parts = topic[len(prefix) + 1 :].split("/")
        if parts[0] == FLEET_LEVEL:
            if len(parts) == 3 and parts[1] == "home":
                self._on_assignment(parts[2], payload)
            return
        gateway_id, leaf = parts[0], "/".join(parts[1:2])
        try:
            if leaf == "state" and len(parts) == 2:
                self.coordinator.on_state(gateway_id, json.loads(payload) if payload else None)
            elif leaf == "inventory" and len(parts) == 2:
                self.coordinator.on_inventory(gateway_id, json.loads(payload), time.time())
            elif leaf == "fcnt-reserve" and len(parts) == 3 and payload:
                self.coordinator.on_reserve(gateway_id, parts[2], fcnt_reserve.parse(payload))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # A gateway's message we cannot read changes nothing; the next one may.
            self.refused += 1
            log.warning("ignored %s: %s", topic, exc)

    def _on_assignment(self, dev_eui: str, payload: bytes) -> None:
        if not payload:
            self.coordinator.on_assignment(dev_eui, None)
            return
        try:
            assignment = verify_assignment(payload, dev_eui, self.public_keys, time.time())
        except CommandRejected as exc:
            self.refused += 1
            log.warning("ignored the assignment of %s: %s (%s)", dev_eui, exc, exc.reason)
            return
        self.coordinator.on_assignment(dev_eui, assignment)

    # --- the decisions ----------------------------------------------------------------------------

    async def decide_and_publish(self, uplink: MqttUplink) -> dict[str, Assignment]:
        """Decide now and publish each new assignment (retained, QoS 1); fed back at once, so a
        second decision before the broker echoes it does not move the device again."""
        now_s = time.time()
        decided = self.coordinator.decide(now_s)
        for eui, assignment in decided.items():
            current = self.coordinator.homes.get(eui)
            envelope = sign.sign_envelope(
                self.key, assignment.payload(), target=assignment_target(eui), ttl_s=ASSIGNMENT_TTL_S
            )
            await uplink.publish(
                fleet_home(self.settings.topic_prefix, eui), json.dumps(envelope).encode(), qos=1, retain=True
            )
            self.coordinator.on_assignment(eui, replace(assignment, at_s=float(envelope["issued_at"])))
            line = {
                "at": round(now_s, 3), "dev_eui": eui, "home": assignment.home, "epoch": assignment.epoch,
                "fcnt_floor": assignment.fcnt_floor, "from": current.home if current is not None else None,
            }  # fmt: skip
            self.published.append(line)
            print(json.dumps(line, separators=(",", ":")), flush=True)
            log.info("device %s: home %s (epoch %d, FCntDown above %d)", eui, *assignment.payload().values())
        return decided

    async def serve(self, *, listen_s: float, interval_s: float | None) -> None:
        # paho only for the commands that connect: the rest of `edgegw fleet` starts without it.
        from gateway.uplink.mqtt import MqttUplink

        client_id = f"edgegw-coordinator-{os.getpid()}-{int(time.time())}"
        uplink = MqttUplink(self.settings, client_id=client_id, will=None)
        prefix = self.settings.topic_prefix
        for leaf in ("state", "inventory", "fcnt-reserve/+"):
            topic_filter = f"{prefix}/+/{leaf}"
            uplink.subscribe(topic_filter, self.on_message, qos=1, max_payload_bytes=INBOUND_MAX_BYTES)
        uplink.subscribe(fleet_home(prefix, "+"), self.on_message, qos=1)
        await uplink.start()
        try:
            if not await uplink.wait_connected(15.0):
                raise UplinkError(f"broker {self.settings.host}:{self.settings.port} not reached")
            await asyncio.sleep(listen_s)
            while True:
                if uplink.connected:
                    try:
                        await self.decide_and_publish(uplink)
                    except UplinkError as exc:
                        log.warning("assignment not published (%s); deciding again", exc)
                if interval_s is None:
                    return
                await asyncio.sleep(interval_s)
        finally:
            await uplink.stop()
