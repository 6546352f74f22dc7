"""Commands to a multicast group in process: the platform's signed ``group_downlink`` and the rules'
``GroupDownlinkRequest`` reach the group's queue once, encoded with the members' profile, through a
real dispatcher, a real pipeline and the shipped profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.app.commands import Actions, build_dispatcher
from gateway.clock import SystemClock
from gateway.codec import load_profiles
from gateway.fleet.commands import CommandDispatcher
from gateway.fleet.trust import Trust
from gateway.lorawan.multicast import McGroup, MulticastScheduler
from gateway.lorawan.sessions import SessionTable
from gateway.messages import AesKey, DevAddr, Record
from gateway.pipeline import UplinkPipeline
from gateway.rules import GroupDownlinkRequest
from tests.app.test_commands import Calls
from tests.fleet.conftest import GATEWAY_ID, NOW_S, Signer

GROUP = McGroup(
    "district-north", DevAddr.from_hex("01ab23cd"), AesKey(bytes(16)), AesKey(bytes(range(16))),
    profile="edgegw/lamp-controller", members=("0004a30b00f00001", "0004a30b00f00002"),
)  # fmt: skip
EMPTY = McGroup("empty", DevAddr.from_hex("01ab23ce"), AesKey(bytes(16)), AesKey(bytes(16)))


class Records:
    def __init__(self) -> None:
        self.records: list[Record] = []

    def put(self, record: Record) -> None:
        self.records.append(record)


@pytest.fixture
def pipeline() -> UplinkPipeline:
    built = UplinkPipeline(SessionTable(), load_profiles(None), Records(), SystemClock())
    built.multicast = MulticastScheduler(rx2_dr=0, rx2_freq_hz=869_525_000, power_dbm=27.0)
    built.multicast.merge([GROUP, EMPTY])
    return built


@pytest.fixture
def dispatcher(data_dir: Path, pipeline: UplinkPipeline) -> CommandDispatcher:
    actions = Calls().actions()
    with_groups = Actions(
        flush=actions.flush, downlinks=actions.downlinks, request_restart=actions.request_restart,
        announce_update=actions.announce_update, configured_log_level="INFO",
        group_downlink=pipeline.queue_group_command,
    )  # fmt: skip
    return build_dispatcher(Trust(data_dir, gateway_id=GATEWAY_ID), with_groups, clock=lambda: float(NOW_S))


def _payloads(pipeline: UplinkPipeline) -> list[bytes]:
    assert pipeline.multicast is not None
    pipeline.multicast.ready()
    taken = pipeline.multicast.take()
    if taken is None:
        return []
    pipeline.multicast.committed(taken)
    return [r.phy_payload for r in pipeline.multicast.ready()]


async def test_group_downlink_queues_one_frame_encoded_with_the_members_profile(
    dispatcher: CommandDispatcher, signed: Signer, pipeline: UplinkPipeline
) -> None:
    assert "group_downlink" in dispatcher.names
    params: dict[str, Any] = {
        "group": "district-north",
        "command": "set_dim_level",
        "params": {"level_pct": 50},
    }
    result = await dispatcher.handle("group_downlink", signed("group_downlink", params, seq=1))
    assert result.ok and result.result == {"group": "district-north", "queued": 1}
    (frame,) = _payloads(pipeline)
    assert frame[1:5] == bytes.fromhex("cd23ab01") and frame[8] == 20  # McAddr LSB first, the profile's FPort


@pytest.mark.parametrize(
    ("params", "why"),
    [
        ({"group": "nope", "command": "set_dim_level", "params": {"level_pct": 5}}, "no multicast group"),
        ({"group": "empty", "command": "set_dim_level", "params": {"level_pct": 5}}, "no member"),
        ({"group": "district-north", "command": "self_destruct"}, "no downlink command"),
        ({"group": "district-north", "command": "set_dim_level", "params": {"level_pct": 500}}, "level_pct"),
    ],
)
async def test_a_group_downlink_that_cannot_be_sent_fails_and_queues_nothing(
    dispatcher: CommandDispatcher, signed: Signer, pipeline: UplinkPipeline, params: dict[str, Any], why: str
) -> None:
    result = await dispatcher.handle("group_downlink", signed("group_downlink", params, seq=1))
    assert not result.ok and why in result.result["error"], result
    assert _payloads(pipeline) == []


def test_a_rule_command_to_a_group_is_queued_once_and_a_bad_one_counted(pipeline: UplinkPipeline) -> None:
    pipeline.route(
        [GroupDownlinkRequest("district-north", "set_dim_level", {"level_pct": 100}, 0.0, "lighting")]
    )
    pipeline.route([GroupDownlinkRequest("nope", "set_dim_level", {"level_pct": 100}, 0.0, "lighting")])
    assert pipeline.counters["rules.group_command_queued"] == 1
    assert pipeline.counters["rules.group_command_failed"] == 1
    assert len(_payloads(pipeline)) == 1
