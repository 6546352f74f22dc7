"""The device registry as the running agent sees it: read on the database thread, applied on the loop.

Owns one snapshot of the registry (``read`` — sessions, OTAA devices, sites, installation
parameters and profiles, in one database job) and its adoption by the stages (``apply``: the
session table and the join server merge it, the pipeline takes the device table, the rule engine
learns each device and forgets the removed ones, and so do the views of what was heard; the
downlink scheduler learns which devices are class C, ADR which devices opted out, the roles each
device's and multicast group's home gateway, the join announcements the OTAA devices). The
split is the rule of docs/architecture.md: the database thread only reads; everything the event
loop iterates (the engine's changed-state set, the pipeline's device table) is changed on the loop.
``RegistryWatcher.refresh`` re-reads only when another process (the CLI, an import) committed to
the file.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.errors import StorageError
from gateway.lorawan.join import OtaaDevice, load_otaa_devices
from gateway.lorawan.multicast import McGroup
from gateway.lorawan.sessions import Session, load_sessions
from gateway.messages import DevEui
from gateway.pipeline import DeviceInfo
from gateway.provisioning import groups as multicast_groups
from gateway.provisioning import registry
from gateway.roles import load_group_homes

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the registry held at ``version`` (``PRAGMA data_version`` read before the rows)."""

    version: int
    sessions: list[Session]
    otaa: list[OtaaDevice]
    devices: dict[str, DeviceInfo]
    profiles: dict[str, tuple[str, str]]
    """DevEUI hex -> (profile, site), for the rule engine."""
    class_c: frozenset[str] = frozenset()
    """DevEUI hex of the class C devices (the others are class A)."""
    groups: tuple[McGroup, ...] = ()
    """The class C multicast groups, keys in clear, with their members."""
    adr_off: frozenset[str] = frozenset()
    """DevEUI hex of the devices opted out of network-side ADR."""
    homes: dict[str, str | None] = field(default_factory=dict)
    """DevEUI hex -> the registry's home gateway (None: none named), for ``gateway.roles``."""
    group_homes: dict[str, str | None] = field(default_factory=dict)
    """Multicast group name -> its home gateway (None: none named)."""


def data_version(conn: sqlite3.Connection) -> int:
    # Changes only when another connection (the CLI, an import) committed to the file:
    # the agent's own group commits every 50 ms do not move it.
    version: int = conn.execute("PRAGMA data_version").fetchone()[0]
    return version


def read(conn: sqlite3.Connection, decrypt: Callable[[str], str]) -> Snapshot:
    """The whole registry, on the database thread (it only reads; ``apply`` adopts it)."""
    version = data_version(conn)  # before the rows: a change meanwhile is seen at the next refresh
    params = registry.device_params(conn)
    devices: dict[str, DeviceInfo] = {}
    profiles: dict[str, tuple[str, str]] = {}
    class_c: set[str] = set()
    adr_off: set[str] = set()
    homes: dict[str, str | None] = {}
    for device in registry.list_devices(conn):
        eui = str(device.dev_eui)
        numeric = {k: float(v) for k, v in params.get(eui, {}).items() if isinstance(v, (int, float))}
        devices[eui] = DeviceInfo(site=device.site, params=numeric)
        profiles[eui] = (device.profile, device.site)
        if device.lorawan_class == "C":
            class_c.add(eui)
        if not device.adr:
            adr_off.add(eui)
        homes[eui] = device.home_gateway
    return Snapshot(
        version,
        load_sessions(conn, decrypt),
        load_otaa_devices(conn, decrypt),
        devices,
        profiles,
        frozenset(class_c),
        groups=tuple(multicast_groups.load_groups(conn, decrypt)),
        adr_off=frozenset(adr_off),
        homes=homes,
        group_homes=load_group_homes(conn),
    )


class Adopter(Protocol):
    """A stage that adopts part of a snapshot (``SessionTable``, ``JoinServer``)."""

    def merge(self, fresh: Any, /) -> None: ...


class DeviceRegistrar(Protocol):
    def register_device(self, dev_eui: str, profile: str, site: str = "") -> None: ...

    def keep_devices(self, registered: Collection[str]) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Stages:
    """Where a snapshot goes; ``set_devices`` replaces the pipeline's device table."""

    sessions: Adopter
    joins: Adopter
    set_devices: Callable[[dict[str, DeviceInfo]], None]
    rules: DeviceRegistrar | None
    forget_heard: Callable[[str], None] | None = None
    """Drop what was heard from a device that left the registry (inventory, readings, their rows)."""
    set_class_c: Callable[[DevEui, bool], None] | None = None
    """Tell the downlink scheduler a device is class C (True) or no longer (False)."""
    set_groups: Callable[[tuple[McGroup, ...]], None] | None = None
    """Give the multicast scheduler the registry's groups (``MulticastScheduler.merge``)."""
    set_adr_off: Callable[[frozenset[str]], None] | None = None
    """Tell ADR (``AdrPeer.set_opted_out``) which devices it must not drive."""
    share_joins: Callable[[list[OtaaDevice]], None] | None = None
    """Give the join announcements the OTAA devices the join server just adopted (``JoinShare.merge``:
    the same objects, so a shared join's nonces are the join server's too)."""
    set_homes: Callable[[dict[str, str | None]], None] | None = None
    """Give the roles the registry's home gateways (``Roles.set_registry_homes``)."""
    set_group_homes: Callable[[dict[str, str | None]], None] | None = None
    """Give the roles the multicast groups' home gateways (``Roles.set_group_homes``)."""


def apply(snapshot: Snapshot, stages: Stages, previous: Snapshot | None = None) -> None:
    """Adopt ``snapshot`` (on the event loop: the stages are the loop's); ``previous`` is the one it
    replaces (None at start), whose devices missing now are forgotten."""
    stages.sessions.merge(snapshot.sessions)
    stages.joins.merge(snapshot.otaa)
    if stages.share_joins is not None:
        stages.share_joins(snapshot.otaa)
    stages.set_devices(snapshot.devices)
    if stages.rules is not None:
        stages.rules.keep_devices(snapshot.profiles.keys())
        for eui, (profile, site) in snapshot.profiles.items():
            stages.rules.register_device(eui, profile, site)
    if stages.set_class_c is not None:
        was_c = previous.class_c if previous is not None else frozenset()
        # Every class C device, each time: the scheduler's set is a set (idempotent), and a device
        # re-registered under the same DevEUI must not be missed.
        for eui in sorted(snapshot.class_c):
            stages.set_class_c(DevEui.from_hex(eui), True)
        for eui in sorted(was_c - snapshot.class_c):
            stages.set_class_c(DevEui.from_hex(eui), False)
    if stages.set_adr_off is not None:
        stages.set_adr_off(snapshot.adr_off)
    if stages.set_groups is not None:
        stages.set_groups(snapshot.groups)
    if stages.set_homes is not None:
        stages.set_homes(snapshot.homes)
    if stages.set_group_homes is not None:
        stages.set_group_homes(snapshot.group_homes)
    if stages.forget_heard is not None and previous is not None:
        for eui in sorted(previous.devices.keys() - snapshot.devices.keys()):
            stages.forget_heard(eui)


class RegistryWatcher:
    """Re-reads the registry when another process changed the file, then applies it on the loop.

    Re-reading rebuilds every session's cipher contexts and re-registers every device with the
    rules: 10,000 devices every 10 s would be wasted work on a Pi, hence the version check.
    """

    def __init__(
        self,
        run_db: Callable[..., Awaitable[Any]],
        decrypt: Callable[[str], str],
        stages: Stages,
        *,
        snapshot: Snapshot,
        count_sessions: Callable[[], int],
    ) -> None:
        self._run_db, self._decrypt, self._stages = run_db, decrypt, stages
        self.snapshot = snapshot
        """The registry as last applied (its ``devices``: every device registered, joined or not)."""
        self.version = snapshot.version
        self._count_sessions = count_sessions

    def registered(self) -> int:
        """Devices in the registry, ABP and OTAA, joined or not (`edgegw status`)."""
        return len(self.snapshot.devices)

    async def refresh(self, *, force: bool = False) -> None:
        """Re-read and apply the registry if another process changed it; ``force``: even if not (the
        agent's own connection wrote it: a pushed registry, which ``data_version`` does not show)."""
        try:
            version = await self._run_db(data_version)
            if version == self.version and not force:
                return
            snapshot: Snapshot = await self._run_db(read, self._decrypt)
        except (StorageError, sqlite3.Error) as exc:
            log.warning("cannot reload the device registry: %s", exc)
            return
        before = self._count_sessions()
        apply(snapshot, self._stages, self.snapshot)
        self.snapshot, self.version = snapshot, snapshot.version
        if self._count_sessions() != before:
            log.info("device registry changed: %d sessions (was %d)", self._count_sessions(), before)
