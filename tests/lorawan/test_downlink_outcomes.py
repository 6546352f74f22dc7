"""Downlink outcomes (issue 20): confirmed downlinks sent again, and every queued downlink's end state.

Written from LoRaWAN 1.0.4 (TS001):
- §4.3.1.2: an end-device that receives a confirmed frame in its class A windows acknowledges it
  (FCtrl ACK) with its NEXT uplink; so an uplink without ACK says the confirmed downlink was missed.
- §4.3.1.3: a downlink frame SHALL NOT be retransmitted with the same frame counter: a confirmed
  downlink not acknowledged may be sent again only as a new frame (a new FCntDown).
- §18 (class C): a class C device answers a confirmed downlink within CLASS_C_RESP_TIMEOUT; until that
  timeout or an uplink, the network server SHALL NOT send it another confirmed downlink.

The device side is simulated with ``phy`` and the session keys only: every downlink is parsed,
MIC-checked with the downlink B0 (Dir = 1, §4.4) and decrypted, as a device would.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest

from gateway.app import loops
from gateway.app.agent import Agent
from gateway.app.commands import CommandOutcomes
from gateway.cli.views_cmd import _tail_line
from gateway.clock import SystemClock
from gateway.codec import load_profiles
from gateway.config import LorawanSection
from gateway.errors import DownlinkQueueFull, UplinkError
from gateway.fleet import reports
from gateway.lorawan import phy
from gateway.lorawan.crypto import SessionKeys
from gateway.lorawan.downlink import MAX_QUEUE, DownlinkPlan, DownlinkRef, DownlinkScheduler
from gateway.lorawan.sessions import Session, SessionTable
from gateway.messages import (
    DevAddr,
    DevEui,
    MType,
    RadioFrame,
    Record,
    RxInfo,
    TxRequest,
    TxResult,
    TxStatus,
    UplinkData,
)
from gateway.pipeline import UplinkPipeline, outcome_event
from gateway.rules.actions import DownlinkRequest

NWK = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
APP = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
ADDR = bytes.fromhex("26011001")
EUI = DevEui.from_hex("70b3d57ed0001234")
KEYS = SessionKeys(NWK, APP)
RX = RxInfo(868_500_000, -101.0, 2.5, 9, 125_000, "4/5", True, "test", "aa555a0000000001", 1_000_000)
REF = DownlinkRef("platform", "downlink", 101)
TTL_S = 600
RETRIES = 3

Outcome = tuple[DownlinkRef | None, str, str, str]


def make(*, retries: int = RETRIES, fcnt_down: int = 0) -> tuple[DownlinkScheduler, list[Outcome]]:
    session = Session(EUI, DevAddr(ADDR), "p/m", "abcd0123", KEYS, 10, fcnt_down)
    outcomes: list[Outcome] = []
    section = LorawanSection(confirmed_retries=retries, downlink_ttl_s=TTL_S, class_c_ack_timeout_s=10.0)
    scheduler = DownlinkScheduler(
        section,
        SessionTable([session]),
        on_outcome=lambda ref, dev_eui, state, detail: outcomes.append((ref, str(dev_eui), state, detail)),
    )
    return scheduler, outcomes


def up(fcnt: int, *, ack: bool = False) -> UplinkData:
    raw = phy.build_data_frame(
        KEYS, mtype=MType.UNCONFIRMED_DATA_UP, dev_addr=ADDR, fcnt32=fcnt, fport=85, payload=b"\x01", ack=ack
    )
    frame = RadioFrame(raw, RX, 1_700_000_000.5, time.monotonic())
    return UplinkData(EUI, DevAddr(ADDR), "abcd0123", "p/m", fcnt, 85, b"\x01", False, frame)


def device_reads(frame: bytes) -> tuple[phy.DataFrame, int, bytes]:
    """(frame, its 16-bit FCntDown, decrypted FRMPayload), after the device's MIC check."""
    parsed = phy.parse(frame)
    assert isinstance(parsed, phy.DataFrame) and not parsed.uplink
    fcnt = parsed.fcnt16  # the session starts at 0: no roll-over in these tests
    assert KEYS.data_mic(parsed.mic_input, ADDR, fcnt, False) == parsed.mic
    plain = b""
    if parsed.fport is not None:
        plain = KEYS.crypt_frm_payload(parsed.frm_payload, ADDR, fcnt, False, parsed.fport)
    return parsed, fcnt, plain


def sent(
    scheduler: DownlinkScheduler, plan: DownlinkPlan | None, now_s: float = 0.0
) -> tuple[int, bytes, bool]:
    """The radio sends the plan's RX1 frame; what the device reads: (FCntDown, payload, confirmed)."""
    assert plan is not None and plan.rx1 is not None
    scheduler.transmitted(plan.rx1, "sent", now_s)
    parsed, fcnt, plain = device_reads(plan.phy_payload)
    return fcnt, plain, parsed.mtype is MType.CONFIRMED_DATA_DOWN


# --- class A: retries, ACK, unacknowledged --------------------------------------------------------


def test_a_confirmed_downlink_missed_is_sent_again_as_new_frames_then_ends_unacknowledged() -> None:
    scheduler, outcomes = make()
    scheduler.enqueue(EUI, 10, b"\x2a", confirmed=True, ref=REF, now_s=0.0)
    seen = [sent(scheduler, scheduler.on_uplink(up(20)))]
    # Each following uplink without ACK (§4.3.1.2: the device acknowledges with its next uplink) says
    # the device missed it: sent again in this uplink's windows, as a new frame (§4.3.1.3).
    for fcnt_up in (21, 22, 23):
        seen.append(sent(scheduler, scheduler.on_uplink(up(fcnt_up))))
        assert outcomes == []
    assert [s[0] for s in seen] == [0, 1, 2, 3]  # never the same FCntDown twice
    assert all(payload == b"\x2a" and confirmed for _, payload, confirmed in seen)
    # 1 + confirmed_retries transmissions, no ACK after the last: the end.
    assert scheduler.on_uplink(up(24)) is None
    assert outcomes == [
        (REF, str(EUI), "unacknowledged", "no ACK after 4 transmissions (uplink FCnt 24 without ACK)")
    ]
    assert scheduler.queued(EUI) == 0
    assert scheduler.counters["confirmed_unacked"] == 1 and scheduler.counters["retried"] == 3
    assert scheduler.on_uplink(up(25, ack=True)) is None  # a late ACK changes nothing
    assert len(outcomes) == 1


def test_the_ack_of_a_retry_ends_it_acknowledged_and_the_queue_moves_on() -> None:
    scheduler, outcomes = make()
    scheduler.enqueue(EUI, 10, b"\x01", confirmed=True, ref=REF)
    scheduler.enqueue(EUI, 11, b"\x02")
    first = sent(scheduler, scheduler.on_uplink(up(20)))
    retry = sent(scheduler, scheduler.on_uplink(up(21)))  # no ACK: the same downlink again, first in line
    assert (first[0], retry[0]) == (0, 1) and first[1:] == retry[1:] == (b"\x01", True)
    after_ack = scheduler.on_uplink(up(22, ack=True))
    assert outcomes[0][:3] == (REF, str(EUI), "acknowledged")
    assert "uplink FCnt 22" in outcomes[0][3] and "transmission 2" in outcomes[0][3]
    # The queue goes on with the next downlink, unconfirmed: "sent" once the radio says so.
    assert sent(scheduler, after_ack) == (2, b"\x02", False)
    assert outcomes[1] == (None, str(EUI), "sent", "FCntDown 2")
    assert scheduler.counters["confirmed_acked"] == 1


def test_an_unconfirmed_downlink_ends_sent_only_when_the_radio_sent_it() -> None:
    scheduler, outcomes = make()
    scheduler.enqueue(EUI, 10, b"\x01", ref=REF)
    plan = scheduler.on_uplink(up(20))
    assert plan is not None and outcomes == []  # built is not sent
    assert plan.rx1 is not None
    scheduler.transmitted(plan.rx1, "sent", 1.0)
    assert outcomes == [(REF, str(EUI), "sent", "FCntDown 0")]
    scheduler.transmitted(plan.rx1, "sent", 1.0)  # a verdict is taken once
    assert len(outcomes) == 1


def test_zero_retries_means_one_transmission() -> None:
    scheduler, outcomes = make(retries=0)
    scheduler.enqueue(EUI, 10, b"\x01", confirmed=True, ref=REF)
    sent(scheduler, scheduler.on_uplink(up(20)))
    assert scheduler.on_uplink(up(21)) is None
    assert [o[2] for o in outcomes] == ["unacknowledged"]


# --- radio refusals --------------------------------------------------------------------------------


def test_a_frame_the_radio_refused_goes_again_as_a_new_frame_then_ends_refused_with_the_reason() -> None:
    scheduler, outcomes = make(retries=1)
    scheduler.enqueue(EUI, 10, b"\x01", ref=REF)
    plan = scheduler.on_uplink(up(20))
    assert plan is not None and plan.rx2 is not None
    scheduler.transmitted(plan.rx2, "duty_cycle", 0.0)  # RX1 and RX2 refused: never heard
    assert outcomes == [] and scheduler.queued(EUI) == 1
    again = scheduler.on_uplink(up(21))
    assert again is not None and again.rx2 is not None
    assert device_reads(again.phy_payload)[1:] == (1, b"\x01")  # a new FCntDown
    scheduler.transmitted(again.rx2, "too_late", 0.0)
    assert outcomes == [(REF, str(EUI), "refused", "too_late")]
    assert scheduler.queued(EUI) == 0


def test_a_refused_confirmed_frame_is_not_awaiting_an_ack() -> None:
    scheduler, outcomes = make()
    scheduler.enqueue(EUI, 10, b"\x01", confirmed=True, ref=REF)
    plan = scheduler.on_uplink(up(20))
    assert plan is not None and plan.rx2 is not None
    scheduler.transmitted(plan.rx2, "disk_full", 0.0)
    # The next uplink carries the downlink (again, first transmission the device can hear) and its
    # missing ACK bit is not held against the refused frame.
    retry = sent(scheduler, scheduler.on_uplink(up(21)))
    assert retry == (1, b"\x01", True)
    scheduler.on_uplink(up(22, ack=True))
    assert [o[2] for o in outcomes] == ["acknowledged"]


def test_too_large_and_queue_full_are_refusals_with_their_reason() -> None:
    scheduler, outcomes = make()
    scheduler.enqueue(EUI, 10, bytes(230), ref=REF)  # beyond any EU868 data rate's N
    scheduler.on_uplink(up(20))
    assert outcomes == [(REF, str(EUI), "refused", "too_large")]
    for n in range(MAX_QUEUE):
        scheduler.enqueue(EUI, 10, bytes([n]))
    with pytest.raises(DownlinkQueueFull):
        scheduler.enqueue(EUI, 10, b"\xff", ref=DownlinkRef("rule", "night"))
    assert outcomes[-1] == (DownlinkRef("rule", "night"), str(EUI), "refused", "queue_full")


# --- time: expiry and the class C timeout --------------------------------------------------------


def test_a_downlink_for_a_silent_class_a_device_expires_after_the_ttl() -> None:
    scheduler, outcomes = make()
    scheduler.enqueue(EUI, 10, b"\x01", ref=REF, now_s=100.0)
    scheduler.enqueue(EUI, 11, b"\x02")  # no time given: the next tick stamps it
    scheduler.tick(101.0)
    scheduler.tick(100.0 + TTL_S - 1)
    assert outcomes == [] and scheduler.queued(EUI) == 2
    scheduler.tick(100.0 + TTL_S)
    assert outcomes == [(REF, str(EUI), "expired", f"still queued after {TTL_S} s")]
    scheduler.tick(101.0 + TTL_S)
    assert [o[2] for o in outcomes] == ["expired", "expired"] and scheduler.queued(EUI) == 0


def test_a_confirmed_downlink_whose_device_falls_silent_expires() -> None:
    scheduler, outcomes = make()
    scheduler.enqueue(EUI, 10, b"\x01", confirmed=True, ref=REF, now_s=0.0)
    sent(scheduler, scheduler.on_uplink(up(20)), now_s=1.0)
    scheduler.tick(TTL_S - 1.0)  # class A: no timeout, it waits for the next uplink
    assert outcomes == []
    scheduler.tick(float(TTL_S))
    assert [o[2] for o in outcomes] == ["expired"] and "FCntDown 0" in outcomes[0][3]


def test_class_c_confirmed_waits_for_its_ack_then_goes_again_after_the_timeout() -> None:
    scheduler, outcomes = make(retries=1)
    scheduler.set_class_c(EUI)
    scheduler.enqueue(EUI, 10, b"\x01", confirmed=True, ref=REF, now_s=0.0)
    scheduler.enqueue(EUI, 11, b"\x02", now_s=0.0)
    (first,) = scheduler.class_c_ready()
    scheduler.transmitted(first, "sent", 0.0)
    # §18: no other downlink to it until its ACK (an uplink) or the timeout.
    scheduler.tick(9.0)
    assert scheduler.class_c_ready() == []
    scheduler.tick(10.0)
    (second,) = scheduler.class_c_ready()
    assert device_reads(first.phy_payload)[1:] == (0, b"\x01")
    assert device_reads(second.phy_payload)[1:] == (1, b"\x01")  # the same downlink, a new frame
    scheduler.transmitted(second, "sent", 10.5)
    scheduler.tick(20.5)
    assert outcomes == [
        (REF, str(EUI), "unacknowledged", "no ACK after 2 transmissions (no ACK within 10 s)")
    ]
    (third,) = scheduler.class_c_ready()  # the queue moves on
    assert device_reads(third.phy_payload)[1:] == (2, b"\x02")


def test_class_c_confirmed_acknowledged_by_an_uplink() -> None:
    scheduler, outcomes = make()
    scheduler.set_class_c(EUI)
    scheduler.enqueue(EUI, 10, b"\x01", confirmed=True, ref=REF)
    (frame,) = scheduler.class_c_ready()
    scheduler.transmitted(frame, "sent", 0.0)
    assert scheduler.on_uplink(up(30, ack=True)) is None
    assert [o[2] for o in outcomes] == ["acknowledged"]


# --- the downlink counter is durable before a frame goes out --------------------------------------


def test_the_counter_of_a_built_frame_is_durable_only_once_committed() -> None:
    scheduler, _ = make()
    scheduler.set_class_c(EUI)
    assert scheduler.counter_durable(EUI)
    scheduler.enqueue(EUI, 10, b"\x01")
    scheduler.class_c_ready()
    assert not scheduler.counter_durable(EUI)
    taken = scheduler.take()
    assert taken is not None and not scheduler.counter_durable(EUI)  # being written
    scheduler.give_back(taken)  # the group failed
    assert not scheduler.counter_durable(EUI)
    taken = scheduler.take()
    assert taken is not None
    scheduler.committed(taken)
    assert scheduler.counter_durable(EUI)


# --- the platform's later answer -----------------------------------------------------------------


def test_a_platform_downlink_outcome_is_a_second_cmd_result_with_its_seq_and_state() -> None:
    published: list[bytes] = []
    connected = [False]

    async def publish(data: bytes) -> None:
        if not connected[0]:
            raise UplinkError("not connected")
        published.append(data)

    async def scenario(outcomes: CommandOutcomes, settle: Callable[[], Awaitable[None]]) -> None:
        outcomes(REF, EUI, "unacknowledged", "no ACK after 4 transmissions")
        outcomes(DownlinkRef("rule", "night"), EUI, "sent", "FCntDown 3")  # not the platform's
        await settle()
        assert published == []  # the broker is away: kept
        connected[0] = True
        outcomes.on_connect()
        await settle()

    async def settle() -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    asyncio.run(scenario(CommandOutcomes(publish), settle))
    (doc,) = [json.loads(p) for p in published]
    assert doc == {
        "v": 1, "cmd": "downlink", "seq": 101, "ok": False, "reason": "unacknowledged",
        "state": "unacknowledged",
        "result": {"dev_eui": str(EUI), "state": "unacknowledged", "detail": "no ACK after 4 transmissions"},
    }  # fmt: skip
    assert reports.describe("cmd-result", doc) == (
        f"downlink (seq 101): NOT ACKNOWLEDGED by {EUI} (no ACK after 4 transmissions)"
    )
    refused = {**doc, "state": "refused", "result": {"dev_eui": str(EUI), "detail": "duty_cycle"}}
    assert reports.describe("cmd-result", refused) == f"downlink (seq 101): REFUSED for {EUI}: duty_cycle"


def test_a_request_that_is_not_a_queued_downlink_is_ignored() -> None:
    scheduler, outcomes = make()
    join_accept = TxRequest(b"\x20" + bytes(16), 868_100_000, 7, send_at_tmst_us=1_000, dev_eui=EUI)
    scheduler.transmitted(join_accept, "too_late", 0.0)
    assert outcomes == []


# --- the agent's transmit: durable counter first, the verdict back to the scheduler --------------


class _Radio:
    """The radio as ``loops.transmit`` sees it: notes what went on the air, and whether the frame's
    downlink counter was durable at that moment."""

    def __init__(self, scheduler: DownlinkScheduler, status: TxStatus = TxStatus.SENT) -> None:
        self.scheduler, self.status = scheduler, status
        self.on_air: list[tuple[bytes, bool]] = []

    async def transmit(self, request: TxRequest) -> TxResult:
        assert request.dev_eui is not None
        self.on_air.append((request.phy_payload, self.scheduler.counter_durable(request.dev_eui)))
        return TxResult(self.status)


class _Committer:
    def __init__(self) -> None:
        self.failing = False
        self.urgent = 0

    def notify(self, count: int = 1, *, urgent: bool = False) -> None:
        self.urgent += urgent


def _agent(scheduler: DownlinkScheduler, radio: _Radio, committer: _Committer) -> Agent:
    events: list[dict[str, Any]] = []
    pipeline = SimpleNamespace(downlink_listeners=[events.append], events=events)
    return cast(
        Agent, SimpleNamespace(downlinks=scheduler, radio=radio, committer=committer, pipeline=pipeline)
    )


def test_a_class_c_frame_goes_on_the_air_only_once_its_downlink_counter_is_committed() -> None:
    scheduler, outcomes = make()
    scheduler.set_class_c(EUI)
    scheduler.enqueue(EUI, 10, b"\x01", ref=REF)
    (request,) = scheduler.class_c_ready()
    radio, committer = _Radio(scheduler), _Committer()
    agent = _agent(scheduler, radio, committer)

    async def scenario() -> None:
        task = asyncio.create_task(loops.transmit(agent, request, None))
        await asyncio.sleep(0.05)
        assert radio.on_air == [] and committer.urgent == 1  # waiting for the group commit it asked for
        taken = scheduler.take()  # the group commit: written, then committed
        await asyncio.sleep(0.05)
        assert radio.on_air == []
        assert taken is not None
        scheduler.committed(taken)
        await asyncio.wait_for(task, 1.0)

    asyncio.run(scenario())
    assert radio.on_air == [(request.phy_payload, True)]
    assert outcomes == [(REF, str(EUI), "sent", "FCntDown 0")]  # the radio's verdict reached the scheduler


def test_a_frame_whose_counter_cannot_be_committed_stays_off_the_air_and_goes_again() -> None:
    scheduler, outcomes = make(retries=0)
    scheduler.set_class_c(EUI)
    scheduler.enqueue(EUI, 10, b"\x01", ref=REF)
    (request,) = scheduler.class_c_ready()
    radio, committer = _Radio(scheduler), _Committer()
    agent = _agent(scheduler, radio, committer)

    async def scenario() -> None:
        task = asyncio.create_task(loops.transmit(agent, request, None))
        await asyncio.sleep(0.05)
        taken = scheduler.take()
        assert taken is not None
        committer.failing = True  # the disk is full: the group fails
        scheduler.give_back(taken)
        await asyncio.wait_for(task, 1.0)

    asyncio.run(scenario())
    assert radio.on_air == []
    assert outcomes == [(REF, str(EUI), "refused", "disk_full")]
    assert scheduler.counters["not_sent_disk_full"] == 1


def test_a_radio_refusal_reaches_the_scheduler_and_the_downlink_goes_again() -> None:
    scheduler, outcomes = make()
    scheduler.enqueue(EUI, 10, b"\x01", ref=REF)
    plan = scheduler.on_uplink(up(20))
    assert plan is not None
    taken = scheduler.take()
    assert taken is not None
    scheduler.committed(taken)
    radio = _Radio(scheduler, TxStatus.DUTY_CYCLE)
    asyncio.run(loops.transmit(_agent(scheduler, radio, _Committer()), plan.rx1, plan.rx2))
    assert len(radio.on_air) == 2 and outcomes == []  # RX1 and RX2 refused
    assert scheduler.queued(EUI) == 1 and scheduler.counters["not_sent_again.duty_cycle"] == 1


def test_tail_shows_an_outcome_in_words() -> None:
    event = outcome_event(REF, EUI, "unacknowledged", "no ACK after 4 transmissions", 1_700_000_000.0)
    line = _tail_line(event, raw=True)
    assert "UNACKNOWLEDGED" in line and f"{EUI} platform downlink seq 101" in line
    assert "(no ACK after 4 transmissions)" in line
    rule = outcome_event(DownlinkRef("rule", "night"), EUI, "acknowledged", "", 1_700_000_000.0)
    assert "ACKNOWLEDGED" in _tail_line(rule, raw=False) and "rule night" in _tail_line(rule, raw=False)


# --- the rules' commands: counted per state --------------------------------------------------------


def test_a_rule_commands_outcomes_are_counted_per_state_and_each_is_a_tail_event() -> None:
    lamp = Session(EUI, DevAddr(ADDR), "edgegw/lamp-controller", "abcd0123", KEYS, 10, 0)
    scheduler = DownlinkScheduler(LorawanSection(), SessionTable([lamp]))
    records: list[Record] = []
    pipeline = UplinkPipeline(
        SessionTable([lamp]), load_profiles(None), SimpleNamespace(put=records.append), SystemClock(),
        downlinks=scheduler,
    )  # fmt: skip
    scheduler.on_outcome = pipeline.downlink_outcome
    events: list[dict[str, Any]] = []
    pipeline.downlink_listeners.append(events.append)
    pipeline.route([
        DownlinkRequest(str(EUI), "set_dim", {"percent": 40}, 0.0, reason="night"),
        DownlinkRequest("70b3d57ed000ffff", "set_dim", {"percent": 40}, 0.0, reason="night"),  # unknown
    ])  # fmt: skip
    sent(scheduler, scheduler.on_uplink(up(20)))
    assert pipeline.counters["rules.downlink.sent"] == 1
    assert (
        pipeline.counters["rules.downlink.refused"] == 1
        and pipeline.counters["rules.command_no_session"] == 1
    )
    assert [(e["verdict"], e["outcome"], e["status"], e["ref"], e["dev_eui"]) for e in events] == [
        ("downlink", True, "refused", {"source": "rule", "name": "night", "seq": None}, "70b3d57ed000ffff"),
        ("downlink", True, "sent", {"source": "rule", "name": "night", "seq": None}, str(EUI)),
    ]
