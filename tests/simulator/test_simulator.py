"""The simulator's frames are what the gateway expects: good ones decode, misbehaving ones are refused."""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter

from gateway.codec import ProfileStore, default_profiles_dir
from gateway.errors import FrameError
from gateway.lorawan.crypto import SessionKeys
from gateway.lorawan.sessions import Session, SessionTable
from gateway.messages import DevAddr, DevEui, RadioFrame, RxInfo
from simulator import cli
from simulator.fleet import make_fleet, traffic

RX = RxInfo(868_100_000, -80.0, 7.5, 7, 125_000, "4/5", True, "test")


def test_fleet_traffic_decodes_at_the_gateway_and_rejects_what_it_should() -> None:
    members = make_fleet(4, seed=7)
    table = SessionTable(
        Session(
            DevEui(m.device.dev_eui),
            DevAddr(m.device.dev_addr),
            m.device.profile,
            "t",
            SessionKeys(m.device.nwk_s_key, m.device.app_s_key),
            None,
        )
        for m in members
    )
    profile = ProfileStore.load_dir(default_profiles_dir()).get("milesight/em310-udl")
    outcomes: Counter[str] = Counter()
    for frame in itertools.islice(traffic(members, seed=3), 200):
        try:
            up = table.accept(RadioFrame(frame.phy_payload, RX, time.time(), time.monotonic()))
        except FrameError as exc:
            outcomes[f"{frame.kind}->{exc.reason}"] += 1
            continue
        assert frame.kind == "good" and up.payload == frame.payload and up.fcnt == frame.fcnt
        data = profile.decode(up.fport or 0, up.payload).data
        assert set(data) == {"battery", "distance", "position"}
        assert data["position"] in ("normal", "tilt") and 0 <= data["battery"] <= 100
        outcomes["good"] += 1
    assert outcomes["good"] == 180
    assert set(outcomes) == {
        "good",
        "bad_mic->bad_mic",
        "replay->replayed_fcnt",
        "unknown_device->unknown_device",
    }


def test_fleet_is_deterministic_from_its_seed() -> None:
    a = [(m.device.dev_eui, m.device.nwk_s_key) for m in make_fleet(3, seed=5)]
    b = [(m.device.dev_eui, m.device.nwk_s_key) for m in make_fleet(3, seed=5)]
    c = [(m.device.dev_eui, m.device.nwk_s_key) for m in make_fleet(3, seed=6)]
    assert a == b and a != c and len({eui for eui, _ in a}) == 3


def test_sim_cli_fleet_prints_registration_commands(capsys: object) -> None:
    assert cli.main(["fleet", "--count", "2", "--json"]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    devices = json.loads(out)["devices"]
    assert [d["dev_eui"] for d in devices] == [m.device.dev_eui.hex() for m in make_fleet(2)]
    assert cli.main(["fleet", "--count", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 2 and all(line.startswith("edgegw device add --dev-eui ") for line in lines)


async def test_sim_send_reaches_a_real_udp_backend_and_keeps_counters(tmp_path: object) -> None:
    import asyncio
    from pathlib import Path

    from gateway.radio.semtech_udp.backend import SemtechUdpBackend

    backend = SemtechUdpBackend("127.0.0.1", 0)
    await backend.start()
    state = Path(str(tmp_path)) / "state.json"
    argv = [
        "send",
        "--server",
        f"127.0.0.1:{backend.bound_port}",
        "--count",
        "2",
        "--duration-s",
        "0.5",
        "--rate-hz",
        "20",
        "--no-misbehave",
        "--state",
        str(state),
    ]
    try:
        assert await asyncio.to_thread(cli.main, argv) == 0
        first = json.loads(state.read_text())
        assert await asyncio.to_thread(cli.main, argv) == 0
        second = json.loads(state.read_text())
    finally:
        await backend.stop()
    sent = sum(second.values())
    assert backend.counters["frames"] == sent > 4
    # The second run continued the counters instead of replaying them.
    assert all(second[eui] > first[eui] for eui in first)
