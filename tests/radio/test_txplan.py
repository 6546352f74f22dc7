"""Class A receive windows come before immediate (class C, multicast) sends: gateway.radio.txplan.

Timing rules from LoRaWAN 1.0.4 §3.3 and RP002-1.0.3 EU868 defaults: RX1 opens RECEIVE_DELAY1 = 1 s
after the end of the uplink, RX2 RECEIVE_DELAY2 = 2 s after it, a join-accept JOIN_ACCEPT_DELAY1/2 =
5 s / 6 s after it. The concentrator's ``tmst`` is a 32-bit microsecond counter (Semtech PROTOCOL.TXT
§4, §6). A concentrator has one TX path: an immediate frame on the air at a booked window's time
makes the timed frame fail (TX_ACK COLLISION_PACKET / TOO_LATE), so the immediate one must wait.

Airtimes come from gateway.radio.airtime; two are restated from the Semtech AN1200.13 formula
(T_sym = 2^SF/BW; n = 8 + max(ceil((8PL - 4SF + 28 + 16CRC - 20IH) / (4(SF - 2DE))), 0)(CR + 4);
T = (n_preamble + 4.25 + n) T_sym; downlinks carry no CRC):

* the RX1 answer, 12 bytes (an ACK) at SF10/125 kHz, 4/5, DE 0: ceil((96 - 40 + 28)/40) = 3 blocks,
  n = 8 + 3·5 = 23, T = (8 + 4.25 + 23) · 8.192 ms = 288.768 ms;
* the class C command, 20 bytes at SF12/125 kHz (RX2 DR0), DE 1: ceil((160 - 48 + 28)/40) = 4,
  n = 28, T = (12.25 + 28) · 32.768 ms = 1318.912 ms.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from gateway.messages import RadioFrame, RxInfo, TxRequest, TxResult, TxStatus
from gateway.radio.airtime import LoraParams, airtime_s
from gateway.radio.base import RadioBackend
from gateway.radio.semtech_udp.backend import SemtechUdpBackend
from gateway.radio.semtech_udp.packets import PullResp
from gateway.radio.txplan import DEFAULT_GUARD_S, DEFAULT_MAX_YIELD_S, TxPlan, all_uplinks, answer_expected
from simulator.forwarder import PacketForwarder, concentrator_tmst_us

RX1_S = 0.288768  # 12 B at SF10, restated above
CLASS_C_S = 1.318912  # 20 B at SF12, restated above
GUARD = DEFAULT_GUARD_S
US = 1_000_000
WRAP = 1 << 32

# MHDR MType (bits 7..5): 2 unconfirmed up, 4 confirmed up, 0 join-request (LoRaWAN 1.0.4 §4.2.1).
# Data frames: DevAddr 4, FCtrl 1, FCnt 2, FPort 1, payload, MIC 4 (FOptsLen 0).
UNCONFIRMED = bytes.fromhex("40 04030201 00 0100 01 aabb 11223344")
CONFIRMED = bytes.fromhex("80 04030201 00 0100 01 aabb 11223344")
ADR_ACK_REQ = bytes.fromhex("40 04030201 40 0100 01 aabb 11223344")
WITH_FOPTS = bytes.fromhex("40 04030201 01 0100 02 01 aabb 11223344")  # LinkCheckReq
FPORT_0 = bytes.fromhex("40 04030201 00 0100 00 02 11223344")
JOIN_REQUEST = bytes(1 + 8 + 8 + 2 + 4)
ACK = bytes(12)
COMMAND = bytes(20)


def test_airtimes_restated_from_the_formula() -> None:
    assert airtime_s(len(ACK), LoraParams(sf=10, crc=False)) == pytest.approx(RX1_S)
    assert airtime_s(len(COMMAND), LoraParams(sf=12, crc=False)) == pytest.approx(CLASS_C_S)


@pytest.mark.parametrize(
    ("phy", "expected"),
    [
        (UNCONFIRMED, False),
        (CONFIRMED, True),
        (ADR_ACK_REQ, True),
        (WITH_FOPTS, True),
        (FPORT_0, True),
        (JOIN_REQUEST, True),
        (bytes.fromhex("40 04030201 00 0100 11223344"), False),  # no FPort: an empty frame
        (b"", False),
    ],
)
def test_which_uplinks_may_be_answered(phy: bytes, expected: bool) -> None:
    assert answer_expected(phy) is expected


# --- the plan alone (sans-IO) -------------------------------------------------------------------

T0 = 100.0
TMST = 3_000_000_000


def plan_with_rx1_booked(tmst: int = TMST) -> TxPlan:
    plan = TxPlan()
    plan.heard("gw", UNCONFIRMED, tmst, T0)
    booking = plan.book("gw", (tmst + US) % WRAP, RX1_S)
    assert booking is not None and booking.start_s == pytest.approx(T0 + 1.0)
    return plan


def test_an_immediate_frame_overlapping_a_booked_rx1_waits_until_it_ended() -> None:
    plan = plan_with_rx1_booked()
    # Started 0.3 s before RX1, the SF12 command would still be on the air for the whole window.
    assert plan.wait_s("gw", T0 + 0.7, CLASS_C_S) == pytest.approx(1.0 + RX1_S + GUARD - 0.7)
    # Inside the window too.
    assert plan.wait_s("gw", T0 + 1.1, CLASS_C_S) == pytest.approx(1.0 + RX1_S + GUARD - 1.1)


def test_an_immediate_frame_that_does_not_touch_the_window_goes_at_once() -> None:
    plan = plan_with_rx1_booked()
    sf7_command = airtime_s(len(COMMAND), LoraParams(sf=7, crc=False))
    assert plan.wait_s("gw", T0 + 0.5, sf7_command) == 0.0  # ends 0.44 s before RX1
    assert plan.wait_s("gw", T0 + 1.0 + RX1_S + GUARD, CLASS_C_S) == 0.0  # after it
    assert plan.wait_s("other-gw", T0 + 0.7, CLASS_C_S) == 0.0  # another concentrator's TX path


def test_the_window_is_mapped_across_the_tmst_wrap() -> None:
    tmst = WRAP - 300_000  # RX1 is 0.7 s after the counter wrapped
    plan = plan_with_rx1_booked(tmst)
    assert plan.wait_s("gw", T0 + 0.7, CLASS_C_S) == pytest.approx(1.0 + RX1_S + GUARD - 0.7)
    # A later uplink moves the anchor; the booking keeps its place on the monotonic clock.
    plan.heard("gw", UNCONFIRMED, (tmst + 500_000) % WRAP, T0 + 0.5)
    assert plan.wait_s("gw", T0 + 0.7, CLASS_C_S) == pytest.approx(1.0 + RX1_S + GUARD - 0.7)


def test_a_confirmed_uplink_reserves_rx1_and_rx2_until_they_lapse() -> None:
    plan = TxPlan()
    plan.heard("gw", CONFIRMED, TMST, T0)
    # Nothing booked yet: the ACK may still come. The command would cover RX1's start (T0+1), and
    # from that lapse on it would cover RX2's (T0+2): the first start that touches neither is RX2's lapse.
    assert plan.wait_s("gw", T0 + 0.1, CLASS_C_S) == pytest.approx(2.0 - GUARD - 0.1)
    # Past the bound the caller asks without reservations: nothing booked, go.
    assert plan.wait_s("gw", T0 + 0.1, CLASS_C_S, reserved=False) == 0.0
    # Short enough to end before RX1: at once.
    assert plan.wait_s("gw", T0 + 0.1, 0.5) == 0.0
    # A join-request reserves JOIN_ACCEPT_DELAY1/2 (5 s / 6 s).
    plan.heard("gw", JOIN_REQUEST, TMST + 10 * US, T0 + 10.0)
    assert plan.wait_s("gw", T0 + 14.0, CLASS_C_S) == pytest.approx(6.0 - GUARD - 4.0)
    assert plan.wait_s("gw", T0 + 10.1, CLASS_C_S) == 0.0


def test_an_unconfirmed_uplink_reserves_nothing_unless_the_rule_says_so() -> None:
    plain = TxPlan()
    plain.heard("gw", UNCONFIRMED, TMST, T0)
    assert plain.wait_s("gw", T0 + 0.1, CLASS_C_S) == 0.0
    everything = TxPlan(expects_answer=all_uplinks)
    everything.heard("gw", UNCONFIRMED, TMST, T0)
    assert everything.wait_s("gw", T0 + 0.1, CLASS_C_S) > 0.0
    queued = TxPlan(extra_answer=lambda phy: phy[1:5] == bytes.fromhex("04030201"))
    queued.heard("gw", UNCONFIRMED, TMST, T0)
    assert queued.wait_s("gw", T0 + 0.1, CLASS_C_S) > 0.0


def test_rx1_sent_ends_the_rx2_reservation_and_rx1_refused_keeps_it() -> None:
    plan = TxPlan()
    plan.heard("gw", CONFIRMED, TMST, T0)
    rx1 = plan.book("gw", TMST + US, RX1_S)
    assert rx1 is not None
    plan.settle(rx1, sent=True)
    # The device got its frame in RX1: no RX2 to keep free, only RX1's airtime.
    assert plan.wait_s("gw", T0 + 0.1, CLASS_C_S) == pytest.approx(1.0 + RX1_S + GUARD - 0.1)

    plan = TxPlan()
    plan.heard("gw", CONFIRMED, TMST, T0)
    rx1 = plan.book("gw", TMST + US, RX1_S)
    assert rx1 is not None
    plan.settle(rx1, sent=False)  # e.g. TX_ACK TOO_LATE: the server will try RX2
    assert plan.wait_s("gw", T0 + 0.1, CLASS_C_S) == 0.0  # RX1's window is free, ends before RX2
    assert plan.wait_s("gw", T0 + 0.7, CLASS_C_S) == pytest.approx(2.0 - GUARD - 0.7)  # RX2 kept


def test_without_an_uplink_heard_a_timed_frame_cannot_be_placed() -> None:
    plan = TxPlan()
    assert plan.book("gw", TMST, RX1_S) is None
    assert plan.wait_s("gw", T0, CLASS_C_S) == 0.0


# --- through RadioBackend.transmit, on a fake clock ------------------------------------------------


class FakeTime:
    """A clock that moves only when the code under test sleeps, running what was due meanwhile."""

    def __init__(self) -> None:
        self.now_s = 1000.0
        self.slept_s: list[float] = []
        self._due: list[tuple[float, Callable[[], Awaitable[None]]]] = []

    def clock(self) -> float:
        return self.now_s

    def at(self, when_s: float, action: Callable[[], Awaitable[None]]) -> None:
        self._due.append((when_s, action))
        self._due.sort(key=lambda item: item[0])

    async def sleep(self, seconds: float) -> None:
        self.slept_s.append(seconds)
        until = self.now_s + seconds
        while self._due and self._due[0][0] <= until:
            when, action = self._due.pop(0)
            self.now_s = max(self.now_s, when)
            await action()
        self.now_s = until


class Radio(RadioBackend):
    """A transmitter that always works; an immediate frame keeps it busy for its airtime."""

    def __init__(self, fake: FakeTime) -> None:
        super().__init__("test", clock=fake.clock, sleep=fake.sleep)
        self.fake = fake
        self.sent: list[tuple[float, TxRequest]] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def _transmit(self, request: TxRequest, airtime_s: float) -> TxResult:
        self.sent.append((self.fake.now_s, request))
        return TxResult(TxStatus.SENT)

    def hear(self, phy: bytes) -> int:
        """Deliver an uplink heard now; its tmst."""
        tmst = round(self.fake.now_s * US) % WRAP
        rx = RxInfo(868_100_000, -90.0, 5.0, 10, 125_000, "4/5", True, "test", concentrator_tmst_us=tmst)
        self._deliver(RadioFrame(phy, rx, 0.0, self.fake.now_s))
        return tmst

    async def answer_rx1(self, tmst: int, sf: int = 10) -> TxResult:
        return await self.transmit(TxRequest(ACK, 868_100_000, sf, send_at_tmst_us=(tmst + US) % WRAP))


def class_c() -> TxRequest:
    return TxRequest(COMMAND, 869_525_000, 12)


async def test_class_c_yields_to_a_booked_rx1_and_goes_after_its_airtime() -> None:
    fake = FakeTime()
    radio = Radio(fake)
    tmst = radio.hear(UNCONFIRMED)
    assert (await radio.answer_rx1(tmst)).status is TxStatus.SENT
    fake.now_s += 0.2
    result = await radio.transmit(class_c())
    assert result.status is TxStatus.SENT
    sent_at = radio.sent[-1][0]
    assert sent_at == pytest.approx(1000.0 + 1.0 + RX1_S + GUARD)
    assert radio.counters["tx_yielded_to_class_a"] == 1
    assert radio.counters["tx_yielded_ms"] == round((sent_at - 1000.2) * 1000)
    # The RX1 frame itself never waited.
    assert fake.slept_s == [pytest.approx(sent_at - 1000.2)]


async def test_class_c_clear_of_the_windows_goes_at_once() -> None:
    fake = FakeTime()
    radio = Radio(fake)
    tmst = radio.hear(CONFIRMED)
    await radio.answer_rx1(tmst)
    fake.now_s += 1.0 + RX1_S + GUARD  # RX1 is over, and it ended the RX2 reservation
    assert (await radio.transmit(class_c())).status is TxStatus.SENT
    assert fake.slept_s == [] and radio.counters["tx_yielded_to_class_a"] == 0


async def test_a_reserved_window_holds_class_c_until_it_lapses_unanswered() -> None:
    fake = FakeTime()
    radio = Radio(fake)
    radio.hear(CONFIRMED)  # the pipeline never answers it (say the frame was a replay)
    fake.now_s += 0.1
    assert (await radio.transmit(class_c())).status is TxStatus.SENT
    assert radio.sent[-1][0] == pytest.approx(1000.0 + 2.0 - GUARD)  # RX2's start lapsed


async def test_a_reservation_booked_while_class_c_waits_holds_it_for_the_frame() -> None:
    fake = FakeTime()
    radio = Radio(fake)
    tmst = radio.hear(CONFIRMED)

    async def pipeline_answers() -> None:  # the ACK, decided 50 ms after the uplink
        await radio.answer_rx1(tmst)

    fake.at(1000.05, pipeline_answers)
    fake.now_s += 0.01
    assert (await radio.transmit(class_c())).status is TxStatus.SENT
    assert [round(t, 6) for t, _ in radio.sent] == [1000.05, round(1000.0 + 1.0 + RX1_S + GUARD, 6)]


async def test_timed_frames_never_wait_for_anything() -> None:
    fake = FakeTime()
    radio = Radio(fake)
    tmst = radio.hear(CONFIRMED)
    tmst_b = radio.hear(CONFIRMED)
    assert (await radio.answer_rx1(tmst)).status is TxStatus.SENT
    assert (await radio.answer_rx1(tmst_b)).status is TxStatus.SENT
    assert fake.slept_s == []


async def test_a_stream_of_booked_rx1_windows_refuses_class_c_within_the_bound() -> None:
    """SF12 answers to an uplink every second: RX1 windows of 991 ms, back to back, for 10 s."""
    fake = FakeTime()
    radio = Radio(fake)
    rx1_sf12_s = airtime_s(len(ACK), LoraParams(sf=12, crc=False))
    assert rx1_sf12_s == pytest.approx(0.991232)  # ceil((96-48+28)/40)=2 → n=18; 30.25 · 32.768 ms

    def uplink_answered() -> Callable[[], Awaitable[None]]:
        async def action() -> None:
            await radio.answer_rx1(radio.hear(UNCONFIRMED), sf=12)

        return action

    await uplink_answered()()
    for k in range(1, 11):
        fake.at(1000.0 + k, uplink_answered())
    fake.now_s += 0.5
    result = await radio.transmit(class_c())
    assert result.status is TxStatus.COLLISION_PACKET
    assert "booked" in result.detail
    assert fake.now_s - 1000.5 <= DEFAULT_MAX_YIELD_S
    assert [r for _, r in radio.sent if r.send_at_tmst_us is None] == []  # never on the air
    assert radio.counters["tx_yield_refused"] == 1 and radio.counters["tx.collision_packet"] == 1


async def test_a_stream_of_reservations_delays_class_c_at_most_the_bound() -> None:
    """Confirmed uplinks every 0.5 s that are never answered: no gap of 1.32 s between the window
    starts they reserve. Reservations are guesses: at the bound, only booked frames count."""
    fake = FakeTime()
    radio = Radio(fake)

    async def confirmed_uplink() -> None:
        radio.hear(CONFIRMED)

    await confirmed_uplink()
    for k in range(1, 40):
        fake.at(1000.0 + 0.5 * k, confirmed_uplink)
    fake.now_s += 0.2
    assert (await radio.transmit(class_c())).status is TxStatus.SENT
    waited = radio.sent[-1][0] - 1000.2
    assert 0.0 < waited <= DEFAULT_MAX_YIELD_S
    assert radio.counters["tx_yielded_to_class_a"] == 1


# --- through the real Semtech UDP backend ---------------------------------------------------------

EUI = bytes.fromhex("b827ebfffe000001")


@pytest.mark.parametrize(
    ("uplink", "class_c_first"),
    [
        (UNCONFIRMED, False),  # the RX1 answer is booked, then the class C command is due
        (CONFIRMED, True),  # the command is due before the ACK is decided: RX1 is reserved
    ],
    ids=["rx1-booked-first", "rx1-reserved-first"],
)
async def test_semtech_class_c_pull_resp_waits_for_the_rx1_frame_to_end(
    uplink: bytes, class_c_first: bool
) -> None:
    radio = SemtechUdpBackend("127.0.0.1", 0, tx_ack_timeout_s=1.0)
    await radio.start()
    ready = asyncio.Event()
    loop = asyncio.get_running_loop()

    def forwarder() -> list[tuple[float, PullResp]]:
        got: list[tuple[float, PullResp]] = []
        with PacketForwarder(EUI, ("127.0.0.1", radio.bound_port)) as fwd:
            assert fwd.pull(2.0)
            fwd.send_frames([(uplink, {"sf": 10, "tmst_us": concentrator_tmst_us()})])
            loop.call_soon_threadsafe(ready.set)
            for _ in range(2):
                resp = fwd.wait_downlink(4.0)
                if resp is None:
                    break
                got.append((time.monotonic(), resp))
        return got

    try:
        thread = asyncio.create_task(asyncio.to_thread(forwarder))
        await asyncio.wait_for(ready.wait(), 2.0)
        frame = await asyncio.wait_for(radio.receive(), 2.0)
        tmst = frame.rx.concentrator_tmst_us
        assert tmst is not None
        rx1 = TxRequest(ACK, 868_100_000, 10, send_at_tmst_us=(tmst + US) % WRAP, gateway_eui=EUI.hex())
        command = TxRequest(COMMAND, 869_525_000, 12, gateway_eui=EUI.hex())
        if class_c_first:
            command_task = asyncio.create_task(radio.transmit(command))
            await asyncio.sleep(0.05)  # the pipeline decides the ACK a little later
            rx1_result = await radio.transmit(rx1)
        else:
            rx1_result = await radio.transmit(rx1)
            command_task = asyncio.create_task(radio.transmit(command))
        command_result = await command_task
        downlinks = await thread
    finally:
        await radio.stop()
    assert rx1_result.status is TxStatus.SENT and command_result.status is TxStatus.SENT
    assert [("tmst" in resp.txpk, resp.txpk.get("imme", False)) for _, resp in downlinks] == [
        (True, False),
        (False, True),
    ]
    rx1_end = frame.received_mono_s + 1.0 + RX1_S
    command_arrived = downlinks[1][0]
    # Not before the RX1 frame left the antenna; no later than the guard and some scheduling.
    assert rx1_end <= command_arrived < rx1_end + GUARD + 0.5
    assert radio.counters["tx_yielded_to_class_a"] == 1
