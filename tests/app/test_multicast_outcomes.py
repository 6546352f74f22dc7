"""A district's dimming step is never lost silently (issue 20 review): every multicast group downlink
ends in a reported state, and a frame the radio refused goes again as a new frame.

Written from LoRaWAN 1.0.4 §4.3.1.3 (a downlink frame is never sent again with the same counter: a
second try is a new frame with the next McFCntDown) and from what docs/lorawan.md promises: a frame
whose counter is durable waits for nothing else; a refused frame goes again within
1 + ``lorawan.confirmed_retries`` transmissions, then ends ``refused`` with the radio's reason; a
platform ``group_downlink`` gets its end state on ``cmd-result`` with its seq. Frames are read back
the way a member reads them (``tests.lorawan.test_multicast.device_reads``: MIC and decryption
recomputed with ``cryptography``).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from gateway.app import loops
from gateway.app.agent import Agent
from gateway.app.commands import Actions, CommandOutcomes, build_dispatcher
from gateway.cli.views_cmd import _tail_line
from gateway.clock import SystemClock
from gateway.codec import load_profiles
from gateway.config import LorawanSection
from gateway.fleet import reports
from gateway.fleet.trust import Trust
from gateway.lorawan.downlink import DownlinkRef
from gateway.lorawan.multicast import McGroup, MulticastScheduler
from gateway.lorawan.sessions import SessionTable
from gateway.messages import DevAddr, Record, TxRequest, TxResult, TxStatus
from gateway.pipeline import UplinkPipeline
from gateway.rules import GroupDownlinkRequest
from tests.app.test_commands import Calls
from tests.fleet.conftest import GATEWAY_ID, NOW_S, Signer
from tests.lorawan.test_multicast import APP, NWK, commit, device_reads, group, scheduler

REF = DownlinkRef("platform", "group_downlink", 7)
Outcome = tuple[DownlinkRef | None, str, str, str]


def _listening(mc: MulticastScheduler) -> list[Outcome]:
    outcomes: list[Outcome] = []
    mc.on_outcome = lambda ref, name, state, detail: outcomes.append((ref, name, state, detail))
    return outcomes


def _durable_frame(mc: MulticastScheduler) -> TxRequest:
    """The next frame of the class C poll: built, its McFCntDown committed, released."""
    assert mc.ready() == []
    commit(mc)
    (request,) = mc.ready()
    return request


# --- the scheduler: a refused frame goes again as a new frame, then ends refused ------------------


def test_a_refused_frame_goes_again_with_the_next_counter_then_ends_refused_with_the_radio_reason() -> None:
    mc = scheduler()
    outcomes = _listening(mc)
    mc.enqueue("district-1", 20, b"\x32", ref=REF)
    counters = []
    for _ in range(3):  # 1 + retries transmissions
        request = _durable_frame(mc)
        counters.append(device_reads(request.phy_payload, NWK, APP)[0])
        mc.transmitted(request, "duty_cycle", retries=2)
    assert counters == [0, 1, 2]  # each try a new frame: never the same McFCntDown twice
    assert outcomes == [(REF, "district-1", "refused", "duty_cycle")]
    assert mc.queued("district-1") == 0 and mc.counters["retried"] == 2


def test_a_frame_sent_at_its_second_try_ends_sent() -> None:
    mc = scheduler()
    outcomes = _listening(mc)
    mc.enqueue("district-1", 20, b"\x32", ref=REF)
    mc.transmitted(_durable_frame(mc), "collision_packet", retries=3)
    assert outcomes == [] and mc.queued("district-1") == 1  # waits for the next poll
    second = _durable_frame(mc)
    mc.transmitted(second, "sent", retries=3)
    assert device_reads(second.phy_payload, NWK, APP) == (1, 20, b"\x32")
    assert outcomes == [(REF, "district-1", "sent", "McFCntDown 1")]


def test_a_group_removed_meanwhile_ends_its_downlinks_expired_and_still_names_their_frames() -> None:
    mc = scheduler()
    outcomes = _listening(mc)
    mc.enqueue("district-1", 20, b"\x01", ref=REF)
    request = _durable_frame(mc)
    mc.enqueue("district-1", 20, b"\x02", ref=DownlinkRef("rule", "lighting"))
    mc.merge([])  # `edgegw group remove district-1`: the queued one goes with it
    assert mc.group_of(request) == "district-1"  # the frame on its way is still the group's
    mc.transmitted(request, "duty_cycle", retries=3)  # cannot go again: its group is gone
    assert [(o[0], o[2]) for o in outcomes] == [
        (DownlinkRef("rule", "lighting"), "expired"),
        (REF, "expired"),
    ]


def test_a_group_created_again_with_other_keys_does_not_take_the_old_groups_retry() -> None:
    mc = scheduler()
    outcomes = _listening(mc)
    mc.enqueue("district-1", 20, b"\x01", ref=REF)
    request = _durable_frame(mc)
    mc.merge([group(nwk_s_key=APP)])
    mc.transmitted(request, "duty_cycle", retries=3)
    assert mc.queued("district-1") == 0 and [o[2] for o in outcomes] == ["expired"]


# --- the agent's transmit: a durable frame goes; every frame counted as multicast -------------------


class _Radio:
    def __init__(self, *statuses: TxStatus) -> None:
        self.statuses = list(statuses)
        self.on_air: list[bytes] = []

    async def transmit(self, request: TxRequest) -> TxResult:
        self.on_air.append(request.phy_payload)
        return TxResult(self.statuses.pop(0) if self.statuses else TxStatus.SENT)


def _agent(mc: MulticastScheduler, radio: _Radio, *, failing: bool = False, retries: int = 3) -> Agent:
    events: list[dict[str, Any]] = []
    pipeline = SimpleNamespace(multicast=mc, downlink_listeners=[events.append], events=events)
    downlinks = SimpleNamespace(counters=Counter[str]())
    config = SimpleNamespace(lorawan=LorawanSection(confirmed_retries=retries))
    committer = SimpleNamespace(failing=failing)
    return cast(
        Agent,
        SimpleNamespace(
            pipeline=pipeline, downlinks=downlinks, radio=radio, committer=committer, config=config
        ),
    )


async def _poll_once(agent: Agent) -> None:
    """One class C poll's multicast part, its transmissions awaited, then the group commit."""
    transmissions: set[asyncio.Task[None]] = set()
    cast(Any, agent).transmissions = transmissions
    loops.multicast(agent)
    await asyncio.gather(*transmissions)
    mc = cast(MulticastScheduler, agent.pipeline.multicast)
    taken = mc.take()
    if taken is not None:
        mc.committed(taken)


def _poll(agent: Agent) -> None:
    asyncio.run(_poll_once(agent))


def test_a_frame_whose_counter_is_durable_goes_even_while_a_later_group_commit_fails() -> None:
    mc = scheduler()
    outcomes = _listening(mc)
    mc.enqueue("district-1", 20, b"\x32", ref=REF)
    mc.ready()
    commit(mc)  # its McFCntDown is durable...
    radio = _Radio()
    agent = _agent(mc, radio, failing=True)  # ...then another group commit fails (a full disk)
    _poll(agent)
    assert [device_reads(p, NWK, APP) for p in radio.on_air] == [(0, 20, b"\x32")]
    assert agent.downlinks.counters == {"multicast_sent": 1}
    assert outcomes == [(REF, "district-1", "sent", "McFCntDown 0")]


def test_a_refused_frame_goes_again_at_the_next_polls_then_ends_refused() -> None:
    mc = scheduler()
    outcomes = _listening(mc)
    mc.enqueue("district-1", 20, b"\x32", ref=REF)
    radio = _Radio(*[TxStatus.COLLISION_PACKET] * 5)
    agent = _agent(mc, radio, retries=1)
    for _ in range(6):
        _poll(agent)
    assert [device_reads(p, NWK, APP)[0] for p in radio.on_air] == [0, 1]  # two frames, two counters
    assert agent.downlinks.counters == {"multicast_not_sent.collision_packet": 2}
    assert outcomes == [(REF, "district-1", "refused", "collision_packet")]
    events = cast(Any, agent.pipeline).events
    assert [(e["window"], e["group"], e["status"]) for e in events] == [
        ("multicast", "district-1", "collision_packet")
    ] * 2


def test_a_frame_of_a_group_removed_meanwhile_is_still_counted_as_multicast() -> None:
    mc = scheduler()
    mc.enqueue("district-1", 20, b"\x32")
    mc.ready()
    commit(mc)
    mc.merge([])  # removed after its counter was committed: its frame still goes (docs/lorawan.md)
    radio = _Radio()
    agent = _agent(mc, radio)
    _poll(agent)
    assert len(radio.on_air) == 1
    assert agent.downlinks.counters == {"multicast_sent": 1}  # not tx_sent
    assert cast(Any, agent.pipeline).events[0]["group"] == "district-1"


# --- where the end state goes: cmd-result with the seq, rule counters, tail ------------------------


class _Records:
    def __init__(self) -> None:
        self.records: list[Record] = []

    def put(self, record: Record) -> None:
        self.records.append(record)


LAMPS = McGroup(
    "district-north", DevAddr.from_hex("01ab23cd"), NWK, APP,
    profile="edgegw/lamp-controller", members=("0004a30b00f00001",),
)  # fmt: skip


def test_a_group_downlink_command_gets_its_end_state_on_cmd_result_with_its_seq(
    data_dir: Path, signed: Signer
) -> None:
    pipeline = UplinkPipeline(SessionTable(), load_profiles(None), _Records(), SystemClock())
    mc = pipeline.multicast = MulticastScheduler(rx2_dr=0, rx2_freq_hz=869_525_000, power_dbm=27.0)
    mc.merge([LAMPS])
    published: list[bytes] = []

    async def publish(data: bytes) -> None:
        published.append(data)

    events: list[dict[str, Any]] = []
    pipeline.downlink_listeners.append(events.append)
    calls = Calls().actions()
    actions = Actions(
        flush=calls.flush, downlinks=calls.downlinks, request_restart=calls.request_restart,
        announce_update=calls.announce_update, configured_log_level="INFO",
        group_downlink=pipeline.queue_group_command,
    )  # fmt: skip
    dispatcher = build_dispatcher(Trust(data_dir, gateway_id=GATEWAY_ID), actions, clock=lambda: float(NOW_S))
    params = {"group": "district-north", "command": "set_dim_level", "params": {"level_pct": 40}}

    async def scenario() -> None:
        mc.on_outcome = loops.group_outcomes(pipeline, CommandOutcomes(publish))
        answer = await dispatcher.handle("group_downlink", signed("group_downlink", params, seq=12))
        assert answer.ok and answer.result == {"group": "district-north", "queued": 1}
        agent = _agent(mc, _Radio(TxStatus.DUTY_CYCLE), retries=0)
        cast(Any, agent).pipeline = pipeline
        for _ in range(2):
            await _poll_once(agent)
        for _ in range(5):  # the cmd-result publication's task
            await asyncio.sleep(0)

    asyncio.run(scenario())
    (doc,) = [json.loads(p) for p in published]
    assert doc == {
        "v": 1, "cmd": "group_downlink", "seq": 12, "ok": False, "reason": "refused", "state": "refused",
        "result": {"group": "district-north", "state": "refused", "detail": "duty_cycle"},
    }  # fmt: skip
    assert reports.describe("cmd-result", doc) == (
        "group_downlink (seq 12): REFUSED for group district-north: duty_cycle"
    )  # `edgegw fleet watch`
    outcome = [e for e in events if e.get("outcome")]
    assert [(e["group"], e["status"], e["ref"]["seq"]) for e in outcome] == [
        ("district-north", "refused", 12)
    ]
    line = _tail_line(outcome[0], raw=False)
    assert "REFUSED" in line and "group:district-north platform group_downlink seq 12" in line


def test_a_lighting_step_refused_by_the_radio_is_counted_for_the_rules() -> None:
    pipeline = UplinkPipeline(SessionTable(), load_profiles(None), _Records(), SystemClock())
    mc = pipeline.multicast = MulticastScheduler(rx2_dr=0, rx2_freq_hz=869_525_000, power_dbm=27.0)
    mc.merge([LAMPS])
    mc.on_outcome = loops.group_outcomes(pipeline, CommandOutcomes(_never_published))
    events: list[dict[str, Any]] = []
    pipeline.downlink_listeners.append(events.append)
    pipeline.route(
        [GroupDownlinkRequest("district-north", "set_dim_level", {"level_pct": 50}, 0.0, "lighting")]
    )
    agent = _agent(mc, _Radio(TxStatus.DUTY_CYCLE, TxStatus.DUTY_CYCLE), retries=1)
    cast(Any, agent).pipeline = pipeline
    for _ in range(4):
        _poll(agent)
    assert pipeline.counters["rules.group_command_queued"] == 1
    assert pipeline.counters["rules.downlink.refused"] == 1
    (end,) = [e for e in events if e.get("outcome")]
    assert (end["group"], end["status"], end["detail"], end["ref"]["source"]) == (
        "district-north",
        "refused",
        "duty_cycle",
        "rule",
    )
    assert "[red]REFUSED[/] group:district-north rule lighting (duty_cycle)" in _tail_line(end, raw=False)


def test_a_rules_group_command_outcome_is_counted_like_a_unicast_one() -> None:
    pipeline = UplinkPipeline(SessionTable(), load_profiles(None), _Records(), SystemClock())
    on_outcome = loops.group_outcomes(pipeline, CommandOutcomes(_never_published))
    on_outcome(DownlinkRef("rule", "lighting"), "district-north", "sent", "McFCntDown 3")
    on_outcome(None, "district-north", "refused", "duty_cycle")
    assert pipeline.counters["rules.downlink.sent"] == 1 and pipeline.counters["rules.downlink.refused"] == 0


async def _never_published(_data: bytes) -> None:
    raise AssertionError("a rule's outcome is not the platform's")
