"""One identity per event, fleet-wide (issue 21): an alert's id is named after the record that
caused it, never after a gateway's receive or tick time, so copies from two gateways that heard the
same frames, or from one gateway before and after a restart, are one alert for the platform.

Two gateways are two separate pipelines and rule engines, each with its own session table, fed the
same LoRaWAN frames (built and MIC-signed with the session keys, decoded by the shipped water-level
profile) received a few milliseconds apart, and ticked at different times.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from gateway.app.build import _republish_open_alerts
from gateway.clock import SystemClock, WallTime
from gateway.codec import load_profiles
from gateway.lorawan import phy
from gateway.lorawan.crypto import SessionKeys
from gateway.lorawan.dedup import HeardFrame
from gateway.lorawan.sessions import Session, SessionTable, session_tag
from gateway.messages import AesKey, Alert, DevAddr, DevEui, MType, RadioFrame, Record, RxInfo
from gateway.pipeline import UplinkPipeline
from gateway.roles import Roles
from gateway.rules import AggregateRecord, ReadingFacts, RuleEngine, conditions
from gateway.rules.engine import LIGHTING_HOLD_S

from .helpers import DEV, T0, alerts, ruleset

NWK = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
APP = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
ADDR = bytes.fromhex("26011001")
EUI = "70b3d57ed0001234"
KEYS = SessionKeys(NWK, APP)
TAG = session_tag(DevAddr(ADDR), AesKey(NWK))  # what every gateway holding this session derives
PROFILE = "edgegw/water-level"

RULES = f"""
rules:
  - id: flood
    devices: {{profiles: [{PROFILE}]}}
    when: {{threshold: {{value: water_depth, above: 1500, clear_below: 1000}}}}
    for_s: 600
  - id: quiet
    devices: {{profiles: [{PROFILE}]}}
    silence: {{interval_s: 900}}
aggregates:
  - id: depth
    devices: {{profiles: [{PROFILE}]}}
    fill: {{value: {{field: water_depth, fill_empty: 0, fill_full: 3000}}, full_pct: 90}}
"""
DEPTHS_MM = [800, 800, 800, 1600, 1600, 1600, 1600, 900, 900]
"""One report every 300 s: calm, above the flood level for 20 min (the 600 s debounce passes), calm."""


class Outbox:
    def __init__(self) -> None:
        self.records: list[Record] = []

    def put(self, record: Record) -> None:
        self.records.append(record)


class Gateway:
    """One gateway's uplink path: its own sessions, rule engine and outbox."""

    def __init__(self, engine: RuleEngine | None = None) -> None:
        session = Session(DevEui.from_hex(EUI), DevAddr(ADDR), PROFILE, TAG, KEYS, 0)
        self.outbox = Outbox()
        self.rules = engine or RuleEngine(ruleset(RULES))
        self.pipeline = UplinkPipeline(
            SessionTable([session]), load_profiles(None), self.outbox, SystemClock(), rules=self.rules
        )

    def hear(self, fcnt: int, depth_mm: int, received_at_s: float) -> None:
        payload = (
            bytes([0]) + depth_mm.to_bytes(2, "big") + (1250).to_bytes(2, "big") + (3600).to_bytes(2, "big")
        )
        raw = phy.build_data_frame(
            KEYS, mtype=MType.UNCONFIRMED_DATA_UP, dev_addr=ADDR, fcnt32=fcnt, fport=10, payload=payload
        )
        rx = RxInfo(868_100_000, -100.0, 5.0, 9, 125_000, "4/5", True, "test", "aa555a0000000001", 0)
        frame = RadioFrame(raw, rx, received_at_s, time.monotonic())
        assert asyncio.run(self.pipeline.handle(HeardFrame(frame, 1, 1))) is not None

    def tick(self, now_s: float) -> None:
        self.pipeline.route(self.rules.tick(now_s))

    def alerts(self) -> list[dict[str, Any]]:
        return [r.body for r in self.outbox.records if r.kind == "alert"]

    def ids(self, kind: str) -> list[str]:
        return [r.record_id for r in self.outbox.records if r.kind == kind]


def hear_all(gw: Gateway, offsets_s: list[float], frames: range | None = None) -> None:
    for i in frames or range(len(DEPTHS_MM)):
        gw.hear(i + 1, DEPTHS_MM[i], T0 + 300 * i + offsets_s[i])


# Gateway A hears the first flood report late in its second and the third one early: its debounce
# lasts 599.002 s there and completes one report later than on B, which hears every frame at +0.5 s.
A_OFFSETS_S = [0.2, 0.2, 0.2, 0.999, 0.4, 0.001, 0.3, 0.2, 0.2]
B_OFFSETS_S = [0.5] * len(DEPTHS_MM)


def test_the_same_frames_on_two_gateways_give_the_same_alert_ids_raised_and_cleared() -> None:
    a, b = Gateway(), Gateway()
    hear_all(a, A_OFFSETS_S)
    hear_all(b, B_OFFSETS_S)
    a.tick(T0 + 300 * 8 + 3000)  # the silence watchdogs, at different times on each gateway
    b.tick(T0 + 300 * 8 + 3600)
    assert a.ids("reading") == b.ids("reading")  # the readings' ids already were the same
    flood_a = [x for x in a.alerts() if x["data"]["rule"] == "flood"]
    flood_b = [x for x in b.alerts() if x["data"]["rule"] == "flood"]
    assert [x["data"]["state"] for x in flood_a] == ["raised", "cleared"]
    # The raise completed on different reports (different times) on each gateway ...
    assert flood_a[0]["received_at"] != flood_b[0]["received_at"]
    # ... and is still one alert: named after the report that started it (FCnt 4), as is its clear.
    assert [x["id"] for x in flood_a] == [x["id"] for x in flood_b]
    assert flood_a[0]["data"]["alert_id"] == f"{EUI}-flood-{TAG}-4"
    # The silence after the last report: named after that report, not after either tick.
    quiet = [x["data"]["alert_id"] for x in a.alerts() + b.alerts() if x["data"]["rule"] == "quiet"]
    assert quiet == [f"{EUI}-quiet-after-{TAG}-9"] * 2
    assert a.ids("alert") == b.ids("alert")
    # A value as of one reading (a fill level) is named after that reading too, not its receive second.
    fills = [i for i in a.ids("reading") if "-agg-depth-fill-" in i]
    assert fills == [i for i in b.ids("reading") if "-agg-depth-fill-" in i]
    assert fills[5] == f"{EUI}-agg-depth-fill-{TAG}-6"


def test_the_frames_processed_again_after_a_restart_give_the_same_ids() -> None:
    first = Gateway()
    hear_all(first, A_OFFSETS_S)
    # A restart where nothing of that run was kept (its frame counters rolled back with its records):
    # the same frames, heard again later, give the same ids.
    again = Gateway()
    hear_all(again, [s + 3.7 for s in A_OFFSETS_S])
    assert again.ids("alert") == first.ids("alert") and len(first.ids("alert")) == 2
    assert again.ids("reading") == first.ids("reading")


def test_a_restart_in_the_middle_of_a_debounce_raises_under_the_same_id() -> None:
    whole = Gateway()
    hear_all(whole, B_OFFSETS_S)
    before = Gateway()
    hear_all(before, B_OFFSETS_S, range(5))  # the flood is pending since FCnt 4
    saved = json.loads(json.dumps(before.rules.snapshot()))  # what rules_state keeps
    engine = RuleEngine(ruleset(RULES))
    engine.restore(saved)
    after = Gateway(engine)
    hear_all(after, B_OFFSETS_S, range(5, len(DEPTHS_MM)))
    assert after.ids("alert") == whole.ids("alert")


def older_snapshot(items: int) -> tuple[dict[str, Any], str]:
    """rules_state as the previous release wrote it with one episode open: no cause, a time-based id,
    in the layout of ``items`` items per episode (8: the first; 11: since raised_value)."""
    eng = RuleEngine(ruleset(FULL))
    eng.evaluate(ReadingFacts(DEV, "test/dev", T0, {"v": 90}))  # no record id: the id of old
    saved = json.loads(json.dumps(eng.snapshot()))
    [episode] = saved["episodes"]
    old_id = episode[3]
    assert old_id == f"{DEV}-full-{round(T0 * 1000)}" and episode[2] is True
    saved["episodes"] = [episode[:items]]
    return saved, old_id


def test_an_episode_persisted_by_an_older_agent_is_cleared_under_its_old_id() -> None:
    for items in (11, 8):
        saved, old_id = older_snapshot(items)
        eng = RuleEngine(ruleset(FULL))
        eng.restore(saved)
        out = eng.evaluate(ReadingFacts(DEV, "test/dev", T0 + 60, {"v": 10}, record_id=f"{DEV}-ab-7"))
        out += eng.evaluate(ReadingFacts(DEV, "test/dev", T0 + 120, {"v": 95}, record_id=f"{DEV}-ab-8"))
        # The episode it raised is cleared under its id; the next one is named after its record.
        edges = [(a.state, a.alert_id) for a in alerts(out)]
        assert edges == [("cleared", old_id), ("raised", f"{DEV}-full-ab-8")], items


FULL = """
rules:
  - id: full
    devices: {profiles: [test/dev]}
    when: {threshold: {value: v, above: 80, clear_below: 30}}
"""


def test_a_dry_run_without_record_ids_keeps_time_based_ids() -> None:
    eng = RuleEngine(ruleset(FULL))
    [raised] = alerts(eng.evaluate(ReadingFacts(DEV, "test/dev", T0, {"v": 90})))
    assert raised.alert_id == f"{DEV}-full-{round(T0 * 1000)}"


def test_a_rule_disabled_by_a_reading_is_named_after_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(conditions, "evaluate", broken)
    eng = RuleEngine(ruleset(FULL))
    out = eng.evaluate(ReadingFacts(DEV, "test/dev", T0, {"v": 90}, record_id=f"{DEV}-ab-3"))
    assert [a.alert_id for a in alerts(out)] == [f"{DEV}-rule_disabled-full-ab-3"]
    eng.swap(ruleset(FULL), T0 + 1)  # a new rules file: enabled again, and disabled again by FCnt 4
    out = eng.evaluate(ReadingFacts(DEV, "test/dev", T0 + 2, {"v": 90}, record_id=f"{DEV}-ab-4"))
    assert [a.alert_id for a in alerts(out)] == [f"{DEV}-rule_disabled-full-ab-4"]


LAMP = "0004a30b00f00001"
LIGHTING = f"""
lighting:
  - {{id: a, devices: {{dev_euis: ["{LAMP}"]}}, command: dim, preset: abaissement-22h-05h}}
"""


def test_a_lighting_clock_alert_is_named_after_the_untrusted_period_not_the_tick() -> None:
    def raised_on(tick_s: float, since_s: float) -> list[Alert]:
        eng = RuleEngine(ruleset(LIGHTING))
        when = WallTime(tick_s, "unsynced", tick_s - since_s)
        return alerts(eng.tick(tick_s, lighting_time=when))

    start_s = 1_000_000.0  # the time stopped being trusted then
    first = raised_on(start_s + LIGHTING_HOLD_S + 5, start_s)
    later = raised_on(start_s + LIGHTING_HOLD_S + 400, start_s)  # another gateway, a later tick
    assert [a.alert_id for a in first] == [a.alert_id for a in later] == [f"{LAMP}-lighting_clock-a-1000000"]
    # Another untrusted period is another alert (the same id would be dropped as a duplicate).
    other = raised_on(start_s + 86400 + LIGHTING_HOLD_S, start_s + 86400)
    assert [a.alert_id for a in other] == [f"{LAMP}-lighting_clock-a-1086400"]


def test_the_clear_of_a_lighting_clock_alert_repeats_its_raise_id() -> None:
    eng = RuleEngine(ruleset(LIGHTING))
    wall_s = 1_000_000.0
    [raised] = alerts(eng.tick(wall_s, lighting_time=WallTime(wall_s, "unsynced", LIGHTING_HOLD_S)))
    [cleared] = alerts(eng.tick(wall_s + 60, lighting_time=WallTime(1_765_000_000.0, "ntp")))
    assert (raised.state, cleared.state) == ("raised", "cleared") and raised.alert_id == cleared.alert_id
    [removed] = alerts(RuleEngine(ruleset(LIGHTING)).swap(ruleset("rules: []"), wall_s)) or [None]
    assert removed is None  # nothing open: nothing to clear


NOISE_AND_COUNTS = """
location: {timezone: Europe/Paris}
aggregates:
  - id: noise
    devices: {profiles: [test/dev]}
    leq: {field: laeq, intervals_s: [900], percentiles: true}
    lden: {field: laeq}
    period_s: 60
  - id: bikes
    devices: {profiles: [test/dev]}
    count: {fields: [ltr_sum], mode: cumulative, intervals_s: [3600]}
"""


def test_aggregates_of_the_same_frames_on_two_gateways_have_the_same_ids_and_values() -> None:
    day0 = 1_717_970_400.0  # Monday 10 June 2024 00:00 CEST
    engines = [RuleEngine(ruleset(NOISE_AND_COUNTS)), RuleEngine(ruleset(NOISE_AND_COUNTS))]
    out: list[list[AggregateRecord]] = [[], []]
    for n in range(1, 26 * 60 // 5):  # a report every 5 min for 26 h: hours, a day, its Lden
        for k, eng in enumerate(engines):
            at_s = day0 + n * 300 + (0.013 if k == 0 else 0.871)  # heard a little apart
            facts = ReadingFacts(
                DEV, "test/dev", at_s, {"laeq": 55.0 + n % 7, "ltr_sum": n * 3}, record_id=f"{DEV}-ab-{n}"
            )
            out[k] += [o for o in eng.evaluate(facts) if isinstance(o, AggregateRecord)]
    for k, eng in enumerate(engines):
        out[k] += [o for o in eng.tick(day0 + 30 * 3600 + k * 17) if isinstance(o, AggregateRecord)]
    kinds = {r.kind for r in out[0]}
    assert {"leq_900", "count_3600", "count_day", "lden"} <= kinds
    assert [r.record_id for r in out[0]] == [r.record_id for r in out[1]]
    counts = [[dict(r.values) for r in o if r.kind.startswith("count")] for o in out]
    assert counts[0] == counts[1]
    # The noise levels weigh each report by the time it covers, measured with each gateway's receive
    # times: the same ids, values a little apart (why only the home evaluates them, docs/fleet.md).
    covered = [[r.values["covered_s"] for r in o if r.kind == "leq_900"] for o in out]
    assert covered[0] != covered[1] and max(abs(x - y) for x, y in zip(*covered, strict=True)) < 1.0


def test_a_witness_that_becomes_home_has_the_open_episodes_under_the_homes_ids() -> None:
    """A witness evaluates the same readings and sends nothing of them (``UplinkPipeline.is_home``);
    once home, it clears the old home's alert under its id, and can send again the raise the old
    home may never have sent (the failover window)."""
    home, witness = Gateway(), Gateway()
    witness_is_home = False
    witness.pipeline.is_home = lambda _dev: witness_is_home
    hear_all(home, B_OFFSETS_S, range(7))  # the flood is open
    hear_all(witness, A_OFFSETS_S, range(7))
    [raised] = [a for a in home.alerts() if a["data"]["rule"] == "flood"]
    assert witness.alerts() == [] and len(witness.ids("reading")) == 7  # the readings only
    [again] = witness.rules.open_alerts(EUI)
    assert (again.record_id, again.state, again.value) == (raised["id"], "raised", raised["data"]["value"])
    assert witness.rules.open_alerts(DEV) == []
    witness_is_home = True  # the home moved to the witness
    hear_all(witness, A_OFFSETS_S, range(7, len(DEPTHS_MM)))
    [cleared] = [a for a in witness.alerts() if a["data"]["rule"] == "flood"]
    assert cleared["data"]["state"] == "cleared" and cleared["data"]["alert_id"] == raised["data"]["alert_id"]


def test_the_agent_publishes_the_open_raise_when_a_device_becomes_its_own() -> None:
    """The wiring of the agent (``gateway.app.build``): ``Roles`` tells the pipeline when this gateway
    becomes a device's home, and the raise of the episode it holds open goes out then, under the
    home's id (a copy of what the old home sent, or the one it never sent in the failover window)."""
    home, witness = Gateway(), Gateway()
    roles = Roles("gw-witness")
    roles.assign(EUI, "gw-home", 1, 0)  # the coordinator's first word: the other gateway is home
    witness.pipeline.is_home = roles.is_home
    roles.listeners.append(_republish_open_alerts(witness.rules, witness.pipeline.route))
    hear_all(home, B_OFFSETS_S, range(7))
    hear_all(witness, A_OFFSETS_S, range(7))
    assert witness.alerts() == []
    [raised] = [a for a in home.alerts() if a["data"]["rule"] == "flood"]
    assert roles.assign(EUI, "gw-witness", 2, 0)  # the home failed: the witness takes the device
    [again] = [a for a in witness.alerts() if a["data"]["rule"] == "flood"]
    assert (again["id"], again["data"]["state"]) == (raised["id"], "raised")
