"""Roles per device: is this gateway the device's *home* (it answers it) or a *witness*?

Where several gateways hear a device, exactly one answers it: its home sends its downlinks (ACKs,
MAC answers, join-accepts, commands, class C and multicast frames) and runs its rules' actions;
every other gateway that hears it is a witness, which still verifies, decodes and forwards its
readings under the same record ids but never transmits to it (docs/fleet.md, issue 21).

Owns the decision ``is_home(dev_eui)``, from two sources in this order:

1. the coordinator's assignment (``assign``: home, epoch, FCntDown floor), kept in the
   ``device_homes`` table; a newer epoch replaces an older one, an equal or older one is ignored
   (assignments may arrive twice or out of order: retained messages after a reconnect);
2. the registry's ``devices.home_gateway`` column (``set_registry_homes``).

No home named (None), or a home equal to this gateway's id: this gateway is home. A gateway
configured as before (no column set, no coordinator) is therefore home of every device it has,
as it always was. Multicast groups follow the same rule with their own column
(``set_group_homes``, ``group_is_home``).

``Roles`` lives on the event loop; the stages never import it: they receive a narrow callable
(``is_home``) from the composition root. It is a ``CommitSink`` (``take``/``write``/``committed``/
``give_back``) so an assignment is durable with the next group commit; ``load_assignments`` reads
them back at start on the database thread. Listeners hear every change of this gateway's role for
a device (``listeners``: (dev_eui hex, now_home)).

It does not decide homes (the platform's coordinator does, ``edgegw fleet coordinator``), nor
carry the FCntDown floor into the downlink counter (the agent's fleet wiring does, with the floor
``assignment(dev).fcnt_floor``).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["Assignment", "Roles", "load_assignments", "load_group_homes"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Assignment:
    """The coordinator's word on one device: who answers it since ``epoch``."""

    dev_eui: str
    """16 lowercase hex digits."""
    home: str
    """A gateway id."""
    epoch: int
    fcnt_floor: int
    """The new home's FCntDown starts above this (no counter the old home may have used)."""


def load_assignments(conn: sqlite3.Connection) -> list[Assignment]:
    """Every assignment kept in the database (on the database thread, at start)."""
    return [
        Assignment(dev_eui, home, epoch, fcnt_floor)
        for dev_eui, home, epoch, fcnt_floor in conn.execute(
            "SELECT dev_eui, home, epoch, fcnt_floor FROM device_homes"
        )
    ]


def load_group_homes(conn: sqlite3.Connection) -> dict[str, str | None]:
    """Multicast group name -> its home gateway (None: no home named), on the database thread."""
    return dict(conn.execute("SELECT name, home_gateway FROM multicast_groups"))


def _eui(dev_eui_hex: str) -> str:
    return dev_eui_hex.lower()


class Roles:
    """This gateway's role for each device and multicast group (see the module docstring)."""

    def __init__(self, gateway_id: str) -> None:
        self.gateway_id = gateway_id
        self._registry: dict[str, str] = {}
        """DevEUI hex -> the registry's home (devices without one are absent)."""
        self._assigned: dict[str, Assignment] = {}
        self._group_homes: dict[str, str] = {}
        self._pending: dict[str, Assignment] = {}
        """Assignments accepted and not yet taken by a group commit."""
        self.listeners: list[Callable[[str, bool], None]] = []
        """Called with (dev_eui hex, now_home) when this gateway's role for a device changes."""

    def is_home_gateway(self, home: str | None) -> bool:
        """The rule: no home named, or this gateway named."""
        return home is None or home == self.gateway_id

    def home_of(self, dev_eui_hex: str) -> str | None:
        """The device's home gateway id: the coordinator's, else the registry's; None if neither names one."""
        eui = _eui(dev_eui_hex)
        assigned = self._assigned.get(eui)
        if assigned is not None:
            return assigned.home
        return self._registry.get(eui)

    def is_home(self, dev_eui_hex: str) -> bool:
        """True when this gateway answers the device (the narrow callable the stages receive)."""
        return self.is_home_gateway(self.home_of(dev_eui_hex))

    def assignment(self, dev_eui_hex: str) -> Assignment | None:
        """The coordinator's last assignment of the device, if any (its ``fcnt_floor``)."""
        return self._assigned.get(_eui(dev_eui_hex))

    def witnessed(self) -> list[str]:
        """DevEUI hex of the devices another gateway answers (sorted), for the views."""
        names = self._registry.keys() | self._assigned.keys()
        return sorted(eui for eui in names if not self.is_home(eui))

    # --- the sources --------------------------------------------------------------------------

    def set_registry_homes(self, homes: Mapping[str, str | None]) -> None:
        """Adopt the registry's ``home_gateway`` column (DevEUI hex -> gateway id or None), all of it."""
        fresh = {_eui(eui): home for eui, home in homes.items() if home}
        changed = {
            eui for eui in self._registry.keys() | fresh.keys() if self._registry.get(eui) != fresh.get(eui)
        }
        before = {eui: self.is_home(eui) for eui in changed}
        self._registry = fresh
        for eui in sorted(changed):
            self._tell(eui, before[eui])

    def set_group_homes(self, homes: Mapping[str, str | None]) -> None:
        """Adopt the multicast groups' ``home_gateway`` column (group name -> gateway id or None)."""
        self._group_homes = {name: home for name, home in homes.items() if home}

    def group_is_home(self, name: str) -> bool:
        """True when this gateway sends the multicast frames of group ``name``."""
        return self.is_home_gateway(self._group_homes.get(name))

    def assign(self, dev_eui_hex: str, home: str, epoch: int, fcnt_floor: int) -> bool:
        """Adopt the coordinator's assignment if its epoch is newer than the device's last one;
        True when adopted (then durable with the next group commit)."""
        eui = _eui(dev_eui_hex)
        known = self._assigned.get(eui)
        if known is not None and epoch <= known.epoch:
            return False
        was_home = self.is_home(eui)
        assignment = Assignment(eui, home, epoch, fcnt_floor)
        self._assigned[eui] = assignment
        self._pending[eui] = assignment
        log.info("device %s: home %s (epoch %d, FCntDown floor %d)", eui, home, epoch, fcnt_floor)
        self._tell(eui, was_home)
        return True

    def restore(self, assignments: list[Assignment]) -> None:
        """Take the assignments ``load_assignments`` read (at start, before any frame)."""
        for assignment in assignments:
            known = self._assigned.get(assignment.dev_eui)
            if known is None or assignment.epoch > known.epoch:
                self._assigned[assignment.dev_eui] = assignment

    def _tell(self, eui: str, was_home: bool) -> None:
        now_home = self.is_home(eui)
        if now_home == was_home:
            return
        log.info("device %s: this gateway is now its %s", eui, "home" if now_home else "witness")
        for listener in self.listeners:
            listener(eui, now_home)

    # --- CommitSink: the assignments, durable with the group commit --------------------------

    def take(self) -> list[Assignment] | None:
        if not self._pending:
            return None
        taken = list(self._pending.values())
        self._pending = {}
        return taken

    def write(self, conn: sqlite3.Connection, taken: list[Assignment]) -> None:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        # The epoch guard again in SQL: a row written by another process with a newer epoch stays.
        conn.executemany(
            "INSERT INTO device_homes (dev_eui, home, epoch, fcnt_floor, assigned_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (dev_eui) DO UPDATE SET home = excluded.home, epoch = excluded.epoch,"
            " fcnt_floor = excluded.fcnt_floor, assigned_at = excluded.assigned_at"
            " WHERE excluded.epoch > device_homes.epoch",
            [(a.dev_eui, a.home, a.epoch, a.fcnt_floor, now) for a in taken],
        )

    def committed(self, taken: list[Assignment]) -> None:
        """Nothing to do: the assignments were in effect from ``assign`` on."""

    def give_back(self, taken: list[Assignment]) -> None:
        """The group failed: write them with the next one (unless a newer one came meanwhile)."""
        for assignment in taken:
            self._pending.setdefault(assignment.dev_eui, assignment)
