"""The use-case models: their bytes decode with the shipped profiles, and their physics is plausible.

Payload layouts: device_profiles/milesight/ws302.yaml, imbuildings/people-counter.yaml,
nasys/ul20xx.yaml, milesight/ws558.yaml (each cites its vendor decoder). Physics ranges:
/work/shared/research/domain.md §2.5 (noise), §4.3 (counters), §5.5 (lighting). Lden: the END
(2002/49/EC, Annex I) formula; for a constant level L it gives L + 10·log10((12 + 4·10^0.5 + 8·10)/24)
= L + 6.4 dB, the usual rule of thumb.
"""

from __future__ import annotations

import random
import statistics
from typing import Any

import pytest

from gateway.codec import ProfileStore, default_profiles_dir
from gateway.lorawan import phy
from gateway.lorawan.crypto import SessionKeys
from gateway.messages import MType
from simulator import radio
from simulator.city import ScheduledFrame, apply_downlink, build_fleet, schedule
from simulator.models import (
    CabinetModel,
    CircuitLoss,
    CounterModel,
    LampModel,
    NoiseModel,
    SunDay,
)
from simulator.models.counter import hourly_share
from simulator.models.noise import base_level_db
from simulator.scenario import parse_scenario
from simulator.truth import fill_percent, french_period, lden_db

PROFILES = ProfileStore.load_dir(default_profiles_dir())
SUN = [SunDay(6 * 3600.0, 21 * 3600.0)] * 8
DAY = 86_400.0


def decoded(profile: str, fport: int, payload: bytes) -> dict[str, Any]:
    data: dict[str, Any] = PROFILES.get(profile).decode(fport, payload).data
    return data


def city(**fleet: Any) -> Any:
    return parse_scenario({"name": "t", "seed": 3, "duration": "2d", "fleet": fleet})


# --- bytes -------------------------------------------------------------------------------------


def test_every_use_case_payload_decodes_to_the_values_the_model_reports() -> None:
    scenario = city(
        noise={"sites": {"road": 1, "residential": 1, "nightlife": 1}},
        counters={"bikes": {"count": 1}, "pedestrians": {"count": 1}},
        lighting={"communes": [{"name": "a", "cabinets": 1, "lamps_per_cabinet": 2}]},
    )
    fleet = build_fleet(scenario)
    by_eui = {d.device.dev_eui: d for d in fleet}
    checked: dict[str, int] = {}
    for frame in schedule(scenario, fleet):
        assert isinstance(frame, ScheduledFrame)
        d = by_eui[frame.dev_eui]
        parsed = phy.parse(frame.phy_payload)
        assert isinstance(parsed, phy.DataFrame) and parsed.fport == frame.fport and frame.fcnt is not None
        keys = SessionKeys(d.device.nwk_s_key, d.device.app_s_key)
        plain = keys.crypt_frm_payload(parsed.frm_payload, parsed.dev_addr, frame.fcnt, True, parsed.fport)
        data = decoded(d.device.profile, parsed.fport, plain)
        assert {k: data.get(k) for k in frame.values} == frame.values, (d.name, frame.values, data)
        checked[d.device.profile] = checked.get(d.device.profile, 0) + 1
    assert set(checked) == {
        "milesight/ws302",
        "imbuildings/people-counter",
        "nasys/ul20xx",
        "milesight/ws558",
    }
    assert min(checked.values()) >= 48  # two days of hourly reports at least


def test_a_lamp_answers_a_dim_downlink_and_follows_it() -> None:
    scenario = city(lighting={"communes": [{"name": "a", "cabinets": 1, "lamps_per_cabinet": 1}]})
    fleet = build_fleet(scenario)
    lamp = next(d for d in fleet if d.kind == "lamp")
    assert isinstance(lamp.model, LampModel)
    night = 23.5 * 3600  # 50 % by the controller's own calendar ("reduced")
    assert lamp.model.level_pct(night) == 50
    # The gateway's set_dim command bytes (nasys/ul20xx.yaml downlink: 01 fe level), 30 %.
    down = phy.build_data_frame(
        SessionKeys(lamp.device.nwk_s_key, lamp.device.app_s_key),
        mtype=MType.UNCONFIRMED_DATA_DOWN,
        dev_addr=lamp.device.dev_addr,
        fcnt32=0,
        fport=60,
        payload=bytes([0x01, 0xFE, 30]),
    )
    assert apply_downlink(fleet, night, down) == lamp.name
    assert lamp.model.level_pct(night + 600) == 30
    answer = lamp.model.measure(night + 700)
    assert answer.fport == 60 and decoded("nasys/ul20xx", 60, answer.payload) == {
        "packet_type": "manual_dimming",
        "destination": [{"address": "dali_broadcast", "dimming_level__percent": 30}],
    }
    # A frame for nobody in the fleet is not applied.
    assert apply_downlink(fleet, night, b"\x60" + bytes(4) + b"\x00\x00\x00" + bytes(4)) is None


# --- physics -----------------------------------------------------------------------------------


def test_noise_levels_follow_the_site_type_and_the_time_of_day() -> None:
    # domain.md §2.5: arterial roads 65-72 dB by day, residential streets 55-62; nights lower.
    for hour in (9, 11, 15):
        assert 65 <= base_level_db("road", hour * 3600) <= 72
        assert 55 <= base_level_db("residential", hour * 3600) <= 62
    assert base_level_db("residential", 3.5 * 3600) < base_level_db("residential", 10 * 3600) - 8
    friday_night, tuesday_night = 4 * DAY + 23 * 3600, 1 * DAY + 23 * 3600
    assert base_level_db("nightlife", friday_night) - base_level_db("nightlife", tuesday_night) == 8
    model = NoiseModel(random.Random(1), "road", interval_s=900)
    reports = [model.measure(t).values for t in range(900, int(DAY), 900)]
    assert all(r["LAFmax"] > r["LAeq"] for r in reports)
    day = [
        r["LAeq"]
        for r, t in zip(reports, range(900, int(DAY), 900), strict=True)
        if 9 * 3600 <= t < 18 * 3600
    ]
    assert 64 <= statistics.mean(day) <= 74


def test_lden_formula_and_periods() -> None:
    assert lden_db(60.0, 60.0, 60.0) == pytest.approx(66.4, abs=0.05)
    assert lden_db(70.0, 20.0, 20.0) == pytest.approx(70 + 10 * 0.0 - 3.0103, abs=0.01)  # 12/24 of the day
    assert [french_period(h) for h in (5, 6, 17, 18, 21, 22)] == [
        "night",
        "day",
        "day",
        "evening",
        "evening",
        "night",
    ]
    assert fill_percent(300, 2000, 300) == 100.0 and fill_percent(1150, 2000, 300) == 50.0


def test_bike_counts_peak_on_weekday_commutes_and_on_weekend_afternoons() -> None:
    # domain.md §4.3: AM peak at 08 h, PM peak 17-18 h, 9-12 % of the day each; weekend 13-17 h.
    monday = [hourly_share("bike", h * 3600 + 1) for h in range(24)]
    assert max(range(24), key=lambda h: monday[h]) == 8
    assert 0.09 <= monday[8] <= 0.12 and 0.09 <= monday[17] <= 0.12
    assert sum(monday) == pytest.approx(1.0, abs=0.01)
    sunday = [hourly_share("bike", 6 * DAY + h * 3600 + 1) for h in range(24)]
    assert 13 <= max(range(24), key=lambda h: sunday[h]) <= 16
    assert 0.6 <= sum(sunday) <= 0.8

    def day_total(rain: frozenset[int]) -> int:
        model = CounterModel(random.Random(4), "bike", 2000.0, rain_days=rain)
        counts = [model.measure(t).values for t in range(900, int(DAY) + 1, 900)]
        return sum(c["counter_a"] + c["counter_b"] for c in counts)

    dry, wet = day_total(frozenset()), day_total(frozenset({0}))
    assert 1800 <= dry <= 2200 and 0.4 <= wet / dry <= 0.6  # rain roughly halves counts


def test_lamp_power_follows_the_dim_level_and_fails_to_standby() -> None:
    lamp = LampModel(random.Random(2), 60.0, "reduced", SUN)
    full, half, day = 22 * 3600.0, 23.5 * 3600.0, 12 * 3600.0
    assert lamp.level_pct(full) == 100 and lamp.level_pct(half) == 50 and lamp.level_pct(day) == 0
    assert 60 < lamp.power_w(full) < 66  # rated power + driver losses (domain.md §5.5)
    assert lamp.power_w(half) == pytest.approx(lamp.power_w(full) / 2 + 0.75, abs=0.1)
    assert lamp.power_w(day) < 2  # controller + driver standby
    lamp.failure_s = half
    report = lamp.measure(half + 60).values
    assert report["lamp_error_alert"] is True and report["power__W"] <= 1
    assert lamp.measure(day + DAY).values["lamp_error_alert"] is False  # off by day: nothing to report

    cabinet = CabinetModel(
        random.Random(3), [LampModel(random.Random(k), 50.0, "reduced", SUN) for k in range(4)]
    )
    cabinet.losses.append(CircuitLoss(full + 1800, 3600))
    lit = cabinet.measure(full).values
    assert lit["active_power"] == round(sum(lamp.power_w(full) for lamp in cabinet.lamps))
    cut = cabinet.measure(full + 2400).values
    assert cut["active_power"] == 0 and cut["switch_1"] == "on"
    assert cut["power_consumption"] >= 100  # energy kept counting while the lamps were lit


def test_radio_links_weaken_with_distance() -> None:
    near, far = radio.path_loss_db(200, 3.0), radio.path_loss_db(6000, 3.0)
    assert far - near == pytest.approx(30 * 1.4771, abs=0.01)  # 10·n·log10(30)
    assert radio.settle_sf(radio.mean_snr_db(near)) == 7
    assert radio.settle_sf(radio.mean_snr_db(far + 10)) >= 10
    rng = random.Random(5)
    weak = radio.Link(radio.path_loss_db(20_000, 3.5))
    heard = [radio.hear(rng, [weak], 12, 0.0, 0.0) for _ in range(200)]
    assert sum(1 for h in heard if not h) > 100  # beyond the SF12 floor most frames are lost
    strong = radio.Link(near)
    copies = [radio.hear(rng, [strong, strong], 7, 0.0, 0.5) for _ in range(200)]
    assert all(sum(r.crc_ok for r in c) == 2 for c in copies)
    assert 120 <= sum(1 for c in copies if any(not r.crc_ok for r in c)) <= 180  # 1 - 0.5² = 75 %
    assert all(-130 < r.rssi_dbm < 0 for c in copies for r in c)


def test_plot_day_collects_every_use_case_without_matplotlib() -> None:
    from simulator.plot_day import collect

    scenario = parse_scenario(
        {
            "name": "t",
            "duration": "2d",
            "otaa": ["noise", "lamp"],
            "fleet": {
                "containers": {"count": 2},
                "rivers": {"count": 1},
                "noise": {"sites": {"road": 1}},
                "counters": {"bikes": {"count": 1}},
                "lighting": {"communes": [{"name": "a", "cabinets": 1, "lamps_per_cabinet": 1}]},
            },
        }
    )
    data = collect(scenario, 1)
    assert set(data) == {"waste", "river", "noise", "counting", "lamps", "dim", "cabinets"}
    assert all(0 <= h < 24 for series in data.values() for points in series.values() for h, _ in points)
    assert len(data["noise"]["noise-1 (road)"]) == 96  # a day of 15-min reports
