"""The devices' side of downlinks: display totems, confirmed uplinks and their ACKs, replayed joins.

Sources of the protocol facts checked here:
* LoRaWAN L2 1.0.4 (TS001-1.0.4) §4.3.1.2: a confirmed uplink is answered with the ACK bit;
  §4.3.1.3: without an ACK the device sends the same frame (same FCnt) again after
  RECEIVE_DELAY2 + RETRANSMIT_TIMEOUT (2 ± 1 s, research/domain.md "Retransmit timeout");
  §6.2.5: a join-request with a DevNonce already used is ignored (no join-accept).
* The totem's commands and heartbeat: firmware/nodes/display.py and
  device_profiles/edgegw/display.yaml (example ``11000004d20006f855`` = show_counts 1234, 456789).
* What a totem is sent: the rules' ``display`` of a count aggregate (gateway/rules/engine.py
  ``_tick_display``: today's and the year's passages, only when they changed).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from gateway.codec.profile import load_profiles
from gateway.errors import ConfigError
from gateway.lorawan import phy
from gateway.lorawan.crypto import SessionKeys
from gateway.messages import MType
from gateway.rules.actions import DisplayUpdate
from gateway.rules.engine import ReadingFacts, RuleEngine
from gateway.rules.loader import load_rules
from simulator.city import ScheduledFrame, SimDevice, apply_downlink, build_fleet, epoch_s, schedule
from simulator.models.display import NOTHING, DisplayModel
from simulator.scenario import parse_scenario
from simulator.totems import TotemBook, check, load_feeds
from tests.conftest import Broker

PROFILES = load_profiles(None)
DISPLAY = PROFILES.get("edgegw/display")
EPOCH_S = 1_780_264_800.0  # 2026-06-01 00:00 Europe/Paris (a Monday), the scenarios' default start


def _feed_rules(pairs: list[tuple[str, str]], every_s: int = 60) -> str:
    """One count aggregate per counter site, shown on its totem (rules/examples/bikes.yaml)."""
    lines = ["schema_version: 1", "location: {timezone: Europe/Paris}", "aggregates:"]
    for k, (site, totem_eui) in enumerate(pairs):
        lines += [
            f"  - id: totem-{k + 1}",
            f'    devices: {{sites: ["{site}"]}}',
            "    count: {fields: [counter_a, counter_b], mode: increment, intervals_s: [3600]}",
            f'    display: {{to: "{totem_eui}", command: show_counts, every_s: {every_s}}}',
        ]
    return "\n".join(lines) + "\n"


# --- the totem ---------------------------------------------------------------------------------------


def test_the_totem_obeys_show_counts_as_its_firmware_and_reports_it_in_its_heartbeat() -> None:
    totem = DisplayModel(battery_mv=4100)
    first = totem.measure(0.0)
    assert first.fport == 10 and first.payload.hex() == "01ffffffffffffffff1004"
    assert DISPLAY.decode(10, first.payload).data == first.values
    assert first.values["shown_line_0"] == NOTHING

    command = DISPLAY.encode("show_counts", {"today": 1234, "year": 456789})
    assert command.payload.hex() == "11000004d20006f855"  # the profile's own example
    assert totem.command(60.0, command.fport, command.payload)
    assert totem.shown == (1234, 456789) and [(h.t_s, h.today, h.year) for h in totem.history] == [
        (60.0, 1234, 456789)
    ]
    beat = totem.measure(3600.0)
    assert DISPLAY.decode(10, beat.payload).data == beat.values
    assert (beat.values["shown_line_0"], beat.values["shown_line_1"]) == (1234, 456789)

    # What the firmware refuses the model refuses: a short command, a value beyond 8 digits.
    assert not totem.command(61.0, 20, bytes.fromhex("11000004d2"))
    assert not totem.command(62.0, 20, bytes.fromhex("11") + (10**8).to_bytes(4, "big") + bytes(4))
    assert totem.refused == 2 and totem.shown == (1234, 456789) and len(totem.history) == 1


def test_a_show_counts_downlink_reaches_the_totem_through_apply_downlink() -> None:
    scenario = parse_scenario(
        {"duration": "1h", "fleet": {"counters": {"bikes": {"count": 1}, "totems": True}}}
    )
    fleet = build_fleet(scenario)
    totem = fleet[-1]
    assert totem.name == "display-1" and totem.device.profile == "edgegw/display"
    assert totem.site == "counting/display-1" and isinstance(totem.model, DisplayModel)
    command = DISPLAY.encode("show_counts", {"today": 17, "year": 420})
    keys = SessionKeys(totem.device.nwk_s_key, totem.device.app_s_key)
    down = phy.build_data_frame(
        keys,
        mtype=MType.UNCONFIRMED_DATA_DOWN,
        dev_addr=totem.device.dev_addr,
        fcnt32=0,
        fport=command.fport,
        payload=command.payload,
    )
    assert apply_downlink(fleet, 100.0, down) == "display-1"
    assert totem.model.shown == (17, 420)


def _engine_run(
    tmp_path: Path, rng: random.Random, days: int = 3
) -> tuple[TotemBook, DisplayModel, list[tuple[float, int, int]], float]:
    """Readings of one counter through the agent's own rule engine; its totem gets what the engine sends."""
    counter_eui, totem_eui = "70b3d5e75f000000", "70b3d5e75f000001"
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(_feed_rules([("counting/bike-1", totem_eui)], every_s=300))
    engine = RuleEngine(load_rules(rules_file))
    engine.register_device(totem_eui, "edgegw/display", "counting/display-1")
    book = TotemBook(
        load_feeds(rules_file), {counter_eui: "bike-1", totem_eui: "display-1"}, EPOCH_S, "Europe/Paris"
    )
    totem = DisplayModel()
    sent: list[tuple[float, int, int]] = []

    def tick(t_s: float) -> None:
        for out in engine.tick(EPOCH_S + t_s):
            if isinstance(out, DisplayUpdate):
                request = out.as_downlink()
                down = DISPLAY.encode(request.command, request.params)
                sent.append((t_s, out.today, out.year))
                totem.command(t_s, down.fport, down.payload)

    t_s = 450.0 - 900.0
    tick(0.0)
    for _ in range(days * 96):
        t_s += 900.0
        if t_s % 86_400 < 900.0 and t_s > 86_400:
            tick(t_s - t_s % 86_400 + 30.0)  # just after midnight, before the day's first reading
        data = {"counter_a": rng.randint(0, 40), "counter_b": rng.randint(0, 40)}
        engine.evaluate(
            ReadingFacts(counter_eui, "imbuildings/people-counter", EPOCH_S + t_s, data, "counting/bike-1")
        )
        book.add(counter_eui, "imbuildings/people-counter", "counting/bike-1", t_s, data)
        if rng.random() < 0.3:  # the agent's rules loop ticks when it ticks (wall time)
            tick(t_s + rng.uniform(0.0, 899.0))
    tick(t_s + 600.0)  # after the last reading: the final state
    return book, totem, sent, t_s


def test_what_the_agents_engine_shows_is_always_a_state_the_truth_knows(tmp_path: Path) -> None:
    book, totem, sent, last_t_s = _engine_run(tmp_path, random.Random(42))
    history = [(h.t_s, h.today, h.year) for h in totem.history]
    (truth,) = book.finish({"70b3d5e75f000001": history}, until_s=last_t_s + 600.0)
    assert len(sent) > 50 and len(truth.received) == len(sent)
    assert check([truth]) == []
    # Midnights: the engine showed "0 today" after a day ended and before the next reading,
    # and the truth knows that state too.
    assert any(today == 0 and year > 0 for _, today, year in sent)
    # A tick after the last reading shows the feed's final state.
    assert totem.shown == (truth.final.today, truth.final.year) and truth.final.year > 5000


def test_the_totem_check_flags_numbers_the_counters_never_made_and_going_back(tmp_path: Path) -> None:
    book, totem, _sent, last_t_s = _engine_run(tmp_path, random.Random(7), days=1)
    history = [(h.t_s, h.today, h.year) for h in totem.history]
    assert len(history) >= 3
    assert history[0][1:] == (0, 0) and (history[-1][2] or 0) > 1000
    wrong = [*history, (history[-1][0] + 1, 3, 7)]  # the first day's reports make today == year > 7
    back = [*history, (history[-1][0] + 1, 0, 0)]  # the start-up display again
    (truth,) = book.finish({"70b3d5e75f000001": history}, until_s=last_t_s + 600.0)
    assert check([truth]) == []
    (truth,) = book.finish({"70b3d5e75f000001": wrong})
    assert [p["problem"] for p in check([truth])] == ["never a state of its counters"]
    (truth,) = book.finish({"70b3d5e75f000001": back})
    assert [p["problem"] for p in check([truth])] == ["went back to an older state"]


# --- confirmed uplinks ----------------------------------------------------------------------------------


def _ack(d: SimDevice, fcnt_down: int = 0) -> bytes:
    keys = SessionKeys(d.device.nwk_s_key, d.device.app_s_key)
    return phy.build_data_frame(
        keys,
        mtype=MType.UNCONFIRMED_DATA_DOWN,
        dev_addr=d.device.dev_addr,
        fcnt32=fcnt_down,
        fport=None,
        payload=b"",
        ack=True,
    )


CONFIRMED: dict[str, Any] = {
    "name": "confirmed",
    "seed": 3,
    "duration": "6h",
    "confirmed": {"kinds": ["container"], "retries": 2},
    "fleet": {"containers": {"count": 2, "report_interval": "1h"}, "rivers": {"count": 1}},
}


def test_confirmed_frames_are_retransmitted_with_the_same_counter_until_an_ack_comes() -> None:
    scenario = parse_scenario(CONFIRMED)
    fleet = build_fleet(scenario)
    by_name = {d.name: d for d in fleet}
    frames: list[ScheduledFrame] = []
    acked_fcnt: set[tuple[str, int]] = set()
    for event in schedule(scenario, fleet):
        assert isinstance(event, ScheduledFrame)
        frames.append(event)
        # container-1 gets its ACKs (the gateway answered); container-2 never does.
        if event.device == "container-1" and event.confirmed and event.kind == "reading":
            assert event.fcnt is not None
            apply_downlink(fleet, event.t_s, _ack(by_name["container-1"], len(acked_fcnt)))
            acked_fcnt.add(("container-1", event.fcnt))
    river = [f for f in frames if f.device == "river-1"]
    assert river and not any(f.confirmed for f in river)
    assert all(phy.parse(f.phy_payload).mtype is MType.UNCONFIRMED_DATA_UP for f in river)  # type: ignore[union-attr]
    one = [f for f in frames if f.device == "container-1"]
    assert all(f.kind == "reading" and f.confirmed for f in one) and by_name["container-1"].acks == len(one)
    assert all(phy.parse(f.phy_payload).mtype is MType.CONFIRMED_DATA_UP for f in one)  # type: ignore[union-attr]
    two = [f for f in frames if f.device == "container-2"]
    readings = [f for f in two if f.kind == "reading"]
    for reading in readings:
        copies = [f for f in two if f.kind == "retransmission" and f.fcnt == reading.fcnt]
        assert len(copies) == 2  # retries: 2, then the device gives up
        assert all(c.phy_payload == reading.phy_payload and c.confirmed for c in copies)
        gaps = [b.t_s - a.t_s for a, b in zip([reading, *copies], copies, strict=False)]
        assert all(3.0 <= g <= 5.0 for g in gaps), gaps  # RX2 (2 s) + RETRANSMIT_TIMEOUT 2 ± 1 s
        assert all(c.expect == "refused" for c in copies)  # the gateway has that counter already
    assert by_name["container-2"].awaiting_ack is None


def test_a_retransmission_of_a_lost_confirmed_frame_is_accepted() -> None:
    doc = {**CONFIRMED, "radio": {"loss": 0.3}, "duration": "2d"}
    scenario = parse_scenario(doc)
    frames = [e for e in schedule(scenario, build_fleet(scenario)) if isinstance(e, ScheduledFrame)]
    seen: Counter[str] = Counter()
    heard: dict[tuple[str, int | None], bool] = {}
    for f in frames:
        key = (f.device, f.fcnt)
        if f.kind == "retransmission" and f.device.startswith("container"):
            if not f.lost:
                seen["accepted" if not heard.get(key) else "refused"] += 1
                assert f.expect == ("refused" if heard.get(key) else "accepted")
        if not f.lost:
            heard[key] = True
    assert seen["accepted"] > 0 and seen["refused"] > 0, seen


def test_scenarios_without_the_new_keys_send_the_same_frames() -> None:
    plain = parse_scenario({**CONFIRMED, "confirmed": {"kinds": []}})
    old = dict(CONFIRMED)
    del old["confirmed"]
    base = parse_scenario(old)
    a = [e.phy_payload for e in schedule(plain, build_fleet(plain)) if isinstance(e, ScheduledFrame)]
    b = [e for e in schedule(base, build_fleet(base)) if isinstance(e, ScheduledFrame)]
    assert a == [e.phy_payload for e in b] and not any(e.confirmed for e in b)
    assert "confirmed" not in b[0].truth() and not any(n.startswith("display") for n in base.device_names())


# --- replayed joins -------------------------------------------------------------------------------------


def test_a_join_replay_copies_a_join_request_the_gateway_heard() -> None:
    scenario = parse_scenario(
        {
            "duration": "3h",
            "otaa": ["noise"],
            "fleet": {"noise": {"sites": {"road": 1}}, "rivers": {"count": 1}},
            "faults": [{"at": "2h", "kind": "join_replay", "device": "noise-1", "count": 2}],
        }
    )
    fleet = build_fleet(scenario)
    noise = fleet[1]
    frames: list[ScheduledFrame] = []
    for event in schedule(scenario, fleet):
        assert isinstance(event, ScheduledFrame)
        frames.append(event)
        if event.kind == "join":  # the gateway's join-accept, as the runner hands it over
            assert noise.otaa is not None
            noise.otaa.joined, noise.otaa.pending_nonce = True, None
    (join,) = [f for f in frames if f.kind == "join"]
    replays = [f for f in frames if f.kind == "join_replay"]
    assert len(replays) == 2 and all(r.phy_payload == join.phy_payload for r in replays)
    assert all(r.expect == "refused" and r.t_s == 7200.0 for r in replays)
    assert noise.join_replays == 2


def test_a_join_replay_needs_an_otaa_device() -> None:
    doc: dict[str, Any] = {
        "duration": "3h",
        "fleet": {"rivers": {"count": 1}},
        "faults": [{"at": "2h", "kind": "join_replay", "device": "river-1"}],
    }
    with pytest.raises(ConfigError) as err:
        parse_scenario(doc, "x.yaml")
    assert err.value.key_path == "faults[0].device"


# --- through the agent --------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_totems_confirmed_uplinks_and_a_join_replay_through_the_agent(
    tmp_path: Path, mosquitto: Broker
) -> None:
    from simulator.citylab import run_city

    doc: dict[str, Any] = {
        "name": "totems",
        "seed": 12,
        "duration": "1d1h",
        "otaa": ["pedestrian"],
        "confirmed": {"kinds": ["bike"], "share": 0.3},
        "radio": {"loss": 0.05},
        "fleet": {
            "counters": {
                "bikes": {"count": 2},
                "pedestrians": {"count": 1},
                "totems": True,
                "totem_report_interval": "20m",
            },
        },
        "faults": [{"at": "6h", "kind": "join_replay", "device": "pedestrian-3", "count": 2}],
    }
    scenario = parse_scenario(doc, "totems.yaml")
    fleet = build_fleet(scenario)
    totems = {d.name: d.device.dev_eui.hex() for d in fleet if d.kind == "display"}
    counters = [d for d in fleet if d.kind in ("bike", "pedestrian")]
    rules = tmp_path / "rules.yaml"
    rules.write_text(_feed_rules([(c.site, totems[f"display-{k + 1}"]) for k, c in enumerate(counters)]))
    result = run_city(
        scenario, tmp_path / "city", (mosquitto.host, mosquitto.port), rules_file=rules, speed=1e9
    )
    check_, summary = result.comparison, result.summary
    assert check_.ok, (check_.as_json(), "\n".join(result.agent_log[-15:]))
    assert summary.frames["join_replay"] == 2 and summary.expect["refused"] >= 2
    assert summary.frames["retransmission"] >= 1  # a confirmed frame lost on the air was sent again
    assert check_.totems_checked == 3 and check_.displays_received >= 3
    # The start-up display reached each totem (a class A downlink after its heartbeat) and its next
    # heartbeats carry it to the broker.
    expected = summary.expected
    assert expected is not None and epoch_s(scenario) == EPOCH_S
    for totem in expected.totems:
        assert totem.received and totem.received[0][1:] == (0, 0)
    beats = [
        doc
        for doc in map(json.loads, (tmp_path / "city" / "truth.jsonl").read_text().splitlines())
        if doc["type"] == "frame" and doc["device"].startswith("display-") and doc["expect"] == "accepted"
    ]
    assert {b["device"] for b in beats if b["values"]["shown_line_0"] == 0} == set(totems)


def test_a_totem_feed_selects_its_counters_as_the_agent_does_every_key_must_match() -> None:
    """docs/rules.md: every key of ``devices:`` given must match (gateway/rules/model.py Selector)."""
    from simulator.totems import DisplayFeed

    feed = DisplayFeed(
        "totem-1",
        "70b3d5e75f00009e",
        profiles=("imbuildings/people-counter",),
        sites=("counting/bike-1",),
        dev_euis=(),
        fields=("counter_a",),
    )
    assert feed.selects("70b3d5e75f000001", "imbuildings/people-counter", "counting/bike-1")
    assert not feed.selects("70b3d5e75f000002", "imbuildings/people-counter", "counting/bike-2")
    assert not feed.selects("70b3d5e75f000003", "edgegw/counter", "counting/bike-1")
