"""Simulated lamps in a multicast group (simulator.multicast, simulator.city.apply_downlink): one frame
built by the gateway's MulticastScheduler dims every member; replays and other groups' frames do not."""

from __future__ import annotations

from gateway.lorawan.multicast import McGroup, MulticastScheduler
from gateway.messages import AesKey, DevAddr
from simulator.city import apply_downlink, build_fleet
from simulator.models import LampModel
from simulator.multicast import MulticastMember
from simulator.runner import Summary, _DownlinkPath
from simulator.scenario import parse_scenario

NWK, APP = bytes(range(16)), bytes(range(16, 32))
MC_ADDR = bytes.fromhex("01ab23cd")


def frame(payload: bytes, fport: int = 60, *, nwk: bytes = NWK, fcnt_down: int = 0) -> bytes:
    mc = MulticastScheduler(rx2_dr=0, rx2_freq_hz=869_525_000, power_dbm=27.0)
    mc.merge([McGroup("d", DevAddr(MC_ADDR), AesKey(nwk), AesKey(APP), fcnt_down=fcnt_down)])
    mc.enqueue("d", fport, payload)
    mc.ready()
    taken = mc.take()
    assert taken is not None
    mc.committed(taken)
    (request,) = mc.ready()
    return request.phy_payload


def test_one_multicast_frame_dims_every_member_lamp_and_no_one_else() -> None:
    scenario = parse_scenario(
        {
            "name": "t", "seed": 3, "duration": "2d",
            "fleet": {"lighting": {"communes": [{"name": "a", "cabinets": 2, "lamps_per_cabinet": 5}]}},
        }
    )  # fmt: skip
    fleet = build_fleet(scenario)
    lamps = [d for d in fleet if isinstance(d.model, LampModel)]
    members, others = lamps[:8], lamps[8:]
    for lamp in members:
        lamp.multicast.append(MulticastMember(MC_ADDR, NWK, APP))
    night = 23.5 * 3600  # 50 % by the controllers' own calendar
    down = frame(bytes([0x01, 0xFE, 30]))  # nasys/ul20xx set_dim: 01 fe level
    assert apply_downlink(fleet, night, down) == members[0].name
    assert [lamp.model.level_pct(night + 600) for lamp in members] == [30] * 8  # type: ignore[union-attr]
    assert [lamp.model.level_pct(night + 600) for lamp in others] == [50] * 2  # type: ignore[union-attr]
    # The same frame again (a replay) and a frame under other keys change nothing.
    assert apply_downlink(fleet, night + 700, down) is None
    assert apply_downlink(fleet, night + 700, frame(bytes([0x01, 0xFE, 80]), nwk=APP, fcnt_down=1)) is None
    assert [m.refused for lamp in members for m in lamp.multicast] == [2] * 8
    assert apply_downlink(fleet, night + 800, frame(bytes([0x01, 0xFE, 80]), fcnt_down=1)) == members[0].name
    assert {lamp.model.level_pct(night + 900) for lamp in members} == {80}  # type: ignore[union-attr]


class _Air:
    """A transport's downlink side: what the agent sent, taken once."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames

    def downlinks(self, _timeout_s: float) -> list[bytes]:
        taken, self.frames = self.frames, []
        return taken


def test_the_runner_gives_a_multicast_frame_to_the_members_and_loses_it_for_all_at_once() -> None:
    scenario = parse_scenario(
        {
            "name": "t", "seed": 3, "duration": "2d",
            "fleet": {"lighting": {"communes": [{"name": "a", "cabinets": 1, "lamps_per_cabinet": 4}]}},
        }
    )  # fmt: skip
    fleet = build_fleet(scenario)
    lamps = [d for d in fleet if isinstance(d.model, LampModel)]
    for lamp in lamps[:3]:
        lamp.multicast.append(MulticastMember(MC_ADDR, NWK, APP))
    night = 23.5 * 3600
    summary = Summary("t", 3, scenario.duration_s)
    dim = frame(bytes([0x01, 0xFE, 30]))
    path = _DownlinkPath(_Air([dim]), fleet, 0.0, 3, summary)  # type: ignore[arg-type]
    path.collect(night)
    assert summary.downlinks == 1
    assert [lamp.model.level_pct(night + 600) for lamp in lamps] == [30, 30, 30, 50]  # type: ignore[union-attr]
    # Another group's McAddr: nobody's frame, not counted.
    stranger = bytearray(frame(bytes([0x01, 0xFE, 80]), fcnt_down=1))
    stranger[1:5] = bytes(4)
    path.transport = _Air([bytes(stranger)])  # type: ignore[assignment]
    path.collect(night + 700)
    assert summary.downlinks == 1 and summary.downlinks_lost == 0
    # With downlink_loss, a lost frame is lost for every member.
    lossy = _DownlinkPath(_Air([frame(bytes([0x01, 0xFE, 80]), fcnt_down=1)]), fleet, 0.999, 3, summary)  # type: ignore[arg-type]
    lossy.collect(night + 800)
    assert summary.downlinks_lost == 1
    assert {lamp.model.level_pct(night + 900) for lamp in lamps[:3]} == {30}  # type: ignore[union-attr]
