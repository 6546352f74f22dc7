"""What the rules engine asks the rest of the gateway to do: its output values.

Owns the output types of ``RuleEngine.evaluate`` and ``RuleEngine.tick`` — alert edges
(``gateway.messages.Alert``), downlink command requests by name for a profile's
encoder (to a device, or once to a multicast group), display updates for bike totems,
aggregate records — and their record bodies for the outbox (``to_record``).

It does not encode downlinks (the device profile's encoder does), schedule them
(the downlink scheduler does) or store records (the outbox does).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.clock import iso_utc
from gateway.messages import Alert, Priority, Record


@dataclass(frozen=True, slots=True)
class DownlinkRequest:
    """Send ``command`` with ``params`` to ``dev_eui`` through its profile's encoder."""

    dev_eui: str
    command: str
    params: Mapping[str, object]
    at_s: float
    reason: str
    """Which rule, lighting group or display asked for it (for logs and `edgegw rules`)."""


@dataclass(frozen=True, slots=True)
class GroupDownlinkRequest:
    """Send ``command`` with ``params`` once to multicast group ``group`` (all its members), encoded
    with the members' profile: a lighting group whose target is ``group: <name>``."""

    group: str
    command: str
    params: Mapping[str, object]
    at_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class DisplayUpdate:
    """Show today's and the year-to-date passages on a class C display totem."""

    dev_eui: str
    command: str
    today: int
    year: int
    at_s: float
    today_param: str = "today"
    year_param: str = "year"

    def as_downlink(self) -> DownlinkRequest:
        params = {self.today_param: self.today, self.year_param: self.year}
        return DownlinkRequest(self.dev_eui, self.command, params, self.at_s, reason="display")


@dataclass(frozen=True, slots=True)
class AggregateRecord:
    """One aggregate over ``[start_s, end_s)`` for one device: an LAeq, a day's Lden, counts.

    ``kind`` names the series (``leq_900``, ``lden``, ``count_3600``, ``count_day``, ``fill``);
    a ``fill`` record is a value as of one reading (``start_s == end_s``). ``revision`` > 0: a later
    version of a record published before (a late noise report, ``gateway.rules.noise``), under its
    own id so that neither the outbox nor the platform's de-duplication drops it.
    """

    aggregate_id: str
    kind: str
    dev_eui: str
    profile: str
    start_s: float
    end_s: float
    values: Mapping[str, float | int | str | None] = field(default_factory=dict)
    revision: int = 0
    source_record_id: str = ""
    """For a value as of one reading (``fill``): that reading's record id (empty in a dry run)."""

    @property
    def record_id(self) -> str:
        # Stable: the same device, aggregate, series, period and revision always give the same id.
        # A value as of one reading is named by that reading's record, not by its receive time:
        # two gateways hear one frame a few milliseconds apart, on either side of a second.
        when = caused_by(self.dev_eui, self.source_record_id) if self.source_record_id else int(self.start_s)
        base = f"{self.dev_eui}-agg-{self.aggregate_id}-{self.kind}-{when}"
        return base if self.revision == 0 else f"{base}-r{self.revision}"


Output = Alert | DownlinkRequest | GroupDownlinkRequest | DisplayUpdate | AggregateRecord


def caused_by(dev_eui: str, record_id: str) -> str:
    """The part of a reading's record id (``gateway.pipeline.record_id``: ``<dev>-<session>-<fcnt>``)
    that names an event it caused, after the device that the event's id already starts with."""
    prefix = f"{dev_eui}-"
    return record_id[len(prefix) :] if record_id.startswith(prefix) else record_id


GROUP_TARGET_PREFIX = "group:"
"""How the rules name a multicast group where a DevEUI is otherwise (``engine.MULTICAST_TARGET_PREFIX``)."""


def to_record(out: Alert | AggregateRecord, *, time_quality: str = "ntp") -> Record:
    """The outbox record of an alert edge (priority ALERT) or of an aggregate (priority READING).
    An alert about a multicast group (``group:<name>``, a lighting group's ``lighting_clock``) names
    it with ``group`` and has no ``dev_eui`` (gateway/schemas/up-v1.json: a dev_eui is 16 hex digits)."""
    body: dict[str, Any]
    if isinstance(out, Alert):
        subject = (
            {"group": out.dev_eui.removeprefix(GROUP_TARGET_PREFIX)}
            if out.dev_eui.startswith(GROUP_TARGET_PREFIX)
            else {"dev_eui": out.dev_eui}
        )
        body = {
            "id": out.record_id,
            "kind": "alert",
            **subject,
            "received_at": iso_utc(out.at_s),
            "time_quality": time_quality,
            "data": {
                "alert_id": out.alert_id,
                "state": out.state,
                "rule": out.rule_id,
                "severity": out.severity,
                "value": out.value,
                "message": out.message,
            },
        }
        return Record(record_id=out.record_id, kind="alert", priority=Priority.ALERT, body=body)
    body = {
        "id": out.record_id,
        "kind": "reading",
        "dev_eui": out.dev_eui,
        "profile": out.profile,
        "received_at": iso_utc(out.end_s),
        "time_quality": time_quality,
        "data": {
            "aggregate": out.aggregate_id,
            "series": out.kind,
            "from": iso_utc(out.start_s),
            "to": iso_utc(out.end_s),
            **out.values,
        },
    }
    return Record(record_id=out.record_id, kind="reading", priority=Priority.READING, body=body)
