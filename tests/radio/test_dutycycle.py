"""EU868 duty cycle: sub-bands, the sliding hour, refusal and deferral through RadioBackend.transmit.

Sub-band edges and limits: ETSI EN 300 220-2 V3.1.1 as encoded in TheThingsNetwork/lorawan-stack
pkg/band/eu_863_870.go (research/domain.md §0.1): M 868.0-868.6 MHz 1 % (36 s/h), P 869.4-869.65 MHz
10 % (360 s/h), nothing in 869.2-869.4 MHz. Airtimes from gateway.radio.airtime (tests/radio/test_airtime.py).
"""

from __future__ import annotations

import math

import pytest

from gateway.messages import TxRequest, TxResult, TxStatus
from gateway.radio.base import RadioBackend
from gateway.radio.dutycycle import EU868_SUB_BANDS, DutyCycle, pick_rx_window, sub_band_for


@pytest.mark.parametrize(
    ("freq_hz", "bw_hz", "band"),
    [
        (868_100_000, 125_000, "M"),
        (868_500_000, 125_000, "M"),
        (867_100_000, 125_000, "L"),
        (867_900_000, 125_000, "L"),
        (869_525_000, 125_000, "P"),
        (868_300_000, 250_000, "M"),
        (863_500_000, 125_000, "K"),
        (869_850_000, 125_000, "R"),
        (869_300_000, 125_000, None),  # 869.2-869.4 is left out on purpose
        (868_580_000, 125_000, None),  # channel edge pokes out of M
        (870_100_000, 125_000, None),
        (433_175_000, 125_000, None),
    ],
)
def test_sub_band_of_a_channel(freq_hz: int, bw_hz: int, band: str | None) -> None:
    found = sub_band_for(freq_hz, bw_hz)
    assert (found.name if found else None) == band


def test_limits_per_hour() -> None:
    limits = {b.name: b.limit_s() for b in EU868_SUB_BANDS}
    assert limits == pytest.approx({"K": 3.6, "L": 36.0, "M": 36.0, "N": 3.6, "P": 360.0, "R": 36.0})


def test_the_window_slides_one_hour_after_each_transmission() -> None:
    duty = DutyCycle()
    for i in range(36):  # 36 x 1 s at t = 0..35 s fills band M
        assert duty.check(868_100_000, 1.0, float(i)).allowed
        duty.record(868_100_000, 1.0, float(i))
    refused = duty.check(868_100_000, 1.0, 100.0)
    assert not refused.allowed and refused.band is not None and refused.band.name == "M"
    assert refused.wait_s == pytest.approx(3500.0)  # the t=0 spend leaves at t=3600
    assert "sub-band M" in refused.reason
    assert duty.health(100.0)["M"] == {"used_s": 36.0, "limit_s": 36.0, "left_s": 0.0, "left_pct": 0.0}
    assert duty.check(868_100_000, 1.0, 3600.0).allowed
    # A 2.5 s packet needs three old spends gone: the one of t=2 leaves at 3602.
    assert duty.check(868_100_000, 2.5, 3600.0).wait_s == pytest.approx(2.0)
    # Other sub-bands are untouched.
    assert duty.check(869_525_000, 300.0, 100.0).allowed
    assert duty.health(7200.0)["M"]["left_s"] == 36.0


def test_too_long_for_any_budget_and_out_of_band() -> None:
    duty = DutyCycle()
    assert math.isinf(duty.check(863_500_000, 4.0, 0.0).wait_s)  # K: 3.6 s/h
    outside = duty.check(869_300_000, 0.1, 0.0)
    assert not outside.allowed and outside.band is None and math.isinf(outside.wait_s)
    assert duty.record(869_300_000, 0.1, 0.0) is None


def test_cancel_gives_the_airtime_back() -> None:
    duty = DutyCycle()
    spend = duty.record(869_525_000, 10.0, 0.0)
    assert spend is not None
    assert duty.health(1.0)["P"]["used_s"] == 10.0
    duty.cancel(spend)
    duty.cancel(spend)  # twice is harmless
    assert duty.health(1.0)["P"]["used_s"] == 0.0


def test_pick_rx_window_prefers_the_cheaper_share_of_its_band() -> None:
    duty = DutyCycle()
    # SF7 RX1 (41 ms of 36 s) beats SF12 RX2 (991 ms of 360 s).
    assert pick_rx_window(duty, 0.0, (868_100_000, 125_000, 0.041), (869_525_000, 125_000, 0.991)) == "rx1"
    # SF12 in both: 2.8 % of M versus 0.28 % of P → RX2.
    assert pick_rx_window(duty, 0.0, (868_100_000, 125_000, 0.991), (869_525_000, 125_000, 0.991)) == "rx2"
    # M exhausted → RX2 even when RX1 would be cheaper; both exhausted → None.
    duty.record(868_100_000, 36.0, 0.0)
    assert pick_rx_window(duty, 1.0, (868_100_000, 125_000, 0.041), (869_525_000, 125_000, 0.991)) == "rx2"
    duty.record(869_525_000, 360.0, 0.0)
    assert pick_rx_window(duty, 1.0, (868_100_000, 125_000, 0.041), (869_525_000, 125_000, 0.991)) is None
    assert pick_rx_window(duty, 1.0, None, None) is None


class FakeTime:
    def __init__(self) -> None:
        self.now_s = 1000.0
        self.slept_s: list[float] = []

    def clock(self) -> float:
        return self.now_s

    async def sleep(self, seconds: float) -> None:
        self.slept_s.append(seconds)
        self.now_s += seconds


class AlwaysSends(RadioBackend):
    """A radio whose transmitter always works: the duty cycle is the only thing under test here."""

    def __init__(self, fake: FakeTime, max_defer_s: float) -> None:
        super().__init__("test", max_defer_s=max_defer_s, clock=fake.clock, sleep=fake.sleep)
        self.sent: list[float] = []
        self._fake = fake

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def _transmit(self, request: TxRequest, airtime_s: float) -> TxResult:
        self.sent.append(self._fake.now_s)
        self._fake.now_s += airtime_s  # the radio is busy while it sends
        return TxResult(TxStatus.SENT)


# A class C command to a lamp controller: RX2 parameters 869.525 MHz SF12, 20-byte PHYPayload.
# No CRC, LDRO on: ceil((160-48+28)/40)=4 → 28 symbols; (12.25+28)·32.768 ms = 1318.912 ms.
CLASS_C = TxRequest(phy_payload=bytes(20), freq_hz=869_525_000, sf=12)
CLASS_C_S = 1.318912
FIT = int(360.0 // CLASS_C_S)  # 272 fit in band P's 360 s


async def test_class_c_burst_is_cut_off_at_the_budget_and_the_rest_refused() -> None:
    fake = FakeTime()
    radio = AlwaysSends(fake, max_defer_s=0.0)
    results = [await radio.transmit(CLASS_C) for _ in range(FIT + 20)]
    statuses = [r.status for r in results]
    assert statuses == [TxStatus.SENT] * FIT + [TxStatus.DUTY_CYCLE] * 20
    assert radio.counters["tx_ok"] == FIT and radio.counters["tx.duty_cycle"] == 20
    assert radio.counters["tx_failed"] == 20 and radio.counters["tx_requests"] == FIT + 20
    assert radio.counters["tx_airtime_ms"] == pytest.approx(FIT * 1318.912, abs=FIT)
    band_p = radio.health()["duty_cycle"]["P"]
    assert band_p["left_s"] < CLASS_C_S and band_p["used_s"] == pytest.approx(FIT * CLASS_C_S, abs=0.01)
    assert "sub-band P" in results[-1].detail and results[-1].airtime_ms == pytest.approx(1318.912)


async def test_class_c_burst_beyond_the_budget_is_deferred_until_it_frees() -> None:
    fake = FakeTime()
    radio = AlwaysSends(fake, max_defer_s=3600.0)
    results = [await radio.transmit(CLASS_C) for _ in range(FIT + 5)]
    assert all(r.status is TxStatus.SENT for r in results)
    assert radio.counters["tx_ok"] == FIT + 5
    # The first send past the budget waited until the burst's first transmission left the hour;
    # the next ones found the budget freed at the pace the burst had used it (back to back).
    assert radio.counters["tx_deferred"] == 1 and len(fake.slept_s) == 1 and fake.slept_s[0] > 3000.0
    assert radio.sent[FIT] == pytest.approx(radio.sent[0] + 3600.0)
    # Never more than the budget inside any one-hour window.
    for i, start in enumerate(radio.sent):
        in_window = [s for s in radio.sent[: i + 1] if s > start - 3600.0 + 1e-6]
        assert len(in_window) * CLASS_C_S <= 360.0 + 1e-6


async def test_deferral_is_only_for_immediate_sends_and_within_max_defer() -> None:
    fake = FakeTime()
    radio = AlwaysSends(fake, max_defer_s=10.0)  # far less than the hour the budget needs
    for _ in range(FIT):
        await radio.transmit(CLASS_C)
    assert (await radio.transmit(CLASS_C)).status is TxStatus.DUTY_CYCLE
    timed = TxRequest(phy_payload=bytes(20), freq_hz=869_525_000, sf=12, send_at_tmst_us=1_000_000)
    assert (await radio.transmit(timed)).status is TxStatus.DUTY_CYCLE
    assert radio.counters["tx_deferred"] == 0 and fake.slept_s == []


async def test_bad_requests_fail_before_the_radio() -> None:
    radio = AlwaysSends(FakeTime(), 0.0)
    assert (await radio.transmit(TxRequest(b"\x60", 869_300_000, 9))).status is TxStatus.TX_FREQ
    assert (await radio.transmit(TxRequest(b"\x60", 869_525_000, 13))).status is TxStatus.FAILED
    assert (await radio.transmit(TxRequest(bytes(300), 869_525_000, 9))).status is TxStatus.FAILED
    assert radio.sent == [] and radio.counters["tx.tx_freq"] == 1 and radio.counters["tx.failed"] == 2
