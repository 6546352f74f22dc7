"""One small scenario through each transport to the real agent, checked against the ground truth.

The same scenario (containers, a river, one noise site that joins by OTAA, bad MICs and garbage,
two forwarders with losses and CRC errors) reaches the agent as Semtech UDP packet forwarders,
as a RAK RUI3 modem on a pty (``serial://``), and as an SX1276 register emulator inside the
agent's process (``simulator.sx127x_bridge``); what reaches the broker must equal the truth,
and the join-accept and the ACKs of confirmed uplinks must come back down to the devices each
time. Then ``radio.downlink_loss``: lost join-accepts make devices join again until all joined.

In-process checks of each transport's ``sync``: the SX127x backend (pyLoRa's own code) and the
serial backend (pyserial over the pty) have stamped a frame once it returns.
Facts: RUI3 ``+EVT:RXP2P:<rssi>:<snr>:<hex>`` (RAK "RUI3 AT Command Manual", P2P section);
SX1276 RxDone / PayloadCrcError (datasheet rev. 7 §6.4); JOIN_ACCEPT_DELAY1 5 s (RP002 EU868).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.radio.serial_modem.backend import SerialModemBackend
from gateway.radio.sx127x import Sx127xBackend
from simulator.city import ScheduledFrame
from simulator.citylab import run_city
from simulator.radio import Reception
from simulator.scenario import parse_scenario
from simulator.sx127x_bridge import Bridge, WatchedChip, serve
from simulator.sx127x_emulator import install_fake_rpi
from simulator.transports import SerialModemTransport, Sx127xTransport, parse_target
from tests.conftest import Broker

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "simulator" / "scenarios" / "first-deployment-rules.yaml"

SMALL_TOWN: dict[str, Any] = {
    "name": "small-town",
    "seed": 5,
    "duration": "4h",
    "otaa": ["noise"],
    "confirmed": {"kinds": ["river"], "share": 0.2},
    "radio": {"forwarders": 2, "loss": 0.3, "crc_errors": 0.1},
    "fleet": {
        "containers": {"count": 3, "report_interval": "30m"},
        "rivers": {"count": 1, "report_interval": "15m"},
        "noise": {"sites": {"road": 1}, "report_interval": "15m"},
    },
    "faults": [
        {"at": "1h", "kind": "bad_mic", "count": 2},
        {"at": "2h", "kind": "garbage", "count": 3},
    ],
}
_TRUTHS: dict[str, str] = {}
"""Truth file per transport: the same seed must give the same frames whichever way they go."""


@pytest.mark.e2e
@pytest.mark.timeout(40)
@pytest.mark.parametrize("transport", ["semtech-udp", "serial", "sx127x"])
def test_the_same_scenario_through_each_transport_matches_the_truth(
    tmp_path: Path, mosquitto: Broker, transport: str
) -> None:
    started = time.monotonic()
    result = run_city(
        parse_scenario(SMALL_TOWN, "small-town.yaml"),
        tmp_path / "c",
        (mosquitto.host, mosquitto.port),
        rules_file=RULES,
        speed=1e9,
        transport=transport,
    )
    wall_s = time.monotonic() - started
    summary, check = result.summary, result.comparison
    assert check.ok, (check.as_json(), "\n".join(result.agent_log[-15:]))
    assert summary.transport == transport and summary.no_push_acks == 0
    # The join-accept came back down through this transport and the device opened it.
    assert summary.joins == 1 and summary.frames["join"] >= 1
    assert summary.expect["refused"] >= 2 + 3 and summary.expect["lost"] >= 1
    assert check.frames_received == sum(summary.expected.counts.values()) > 40  # type: ignore[union-attr]
    if transport == "serial":
        assert summary.crc_error_copies == 0 and summary.datagrams < sum(summary.expect.values())
    else:
        assert summary.crc_error_copies > 0
    truth = (tmp_path / "c" / "truth.jsonl").read_text()
    # Each confirmed river reading got its ACK back down at the first try: no retransmission.
    confirmed = sum(json.loads(line).get("confirmed", False) for line in truth.splitlines())
    assert confirmed >= 1 and summary.downlinks == confirmed and summary.frames["retransmission"] == 0
    reference = next(iter(_TRUTHS.values()), truth)
    _TRUTHS[transport] = truth
    assert truth == reference
    assert wall_s < 15, wall_s  # single-channel backends hold a join-accept 5 s (JOIN_ACCEPT_DELAY1)


@pytest.mark.e2e
@pytest.mark.timeout(40)
def test_lost_join_accepts_make_devices_join_again_until_all_have_joined(
    tmp_path: Path, mosquitto: Broker
) -> None:
    doc = {
        "name": "lossy-downlinks",
        "seed": 3,
        "duration": "3h",
        "otaa": ["noise"],
        "radio": {"downlink_loss": 0.5},
        "fleet": {"noise": {"sites": {"road": 3, "residential": 3}, "report_interval": "15m"}},
    }
    result = run_city(
        parse_scenario(doc, "lossy.yaml"), tmp_path / "c", (mosquitto.host, mosquitto.port), speed=1e9
    )
    summary, check = result.summary, result.comparison
    assert check.ok, check.as_json()
    assert summary.downlinks_lost >= 2 and summary.joins == 6
    assert summary.frames["join"] == summary.joins + summary.downlinks_lost  # each lost accept: one more join


def test_downlink_loss_is_a_probability_and_defaults_to_none() -> None:
    assert parse_scenario({"duration": "1h", "fleet": {}}).radio.downlink_loss == 0.0
    with pytest.raises(Exception, match="downlink_loss: must be a probability below 1"):
        parse_scenario({"duration": "1h", "radio": {"downlink_loss": 1}, "fleet": {}})


def test_targets_name_their_transport() -> None:
    assert parse_target("127.0.0.1:1700") == ("semtech-udp", "127.0.0.1:1700")
    assert parse_target("semtech-udp://[::1]:1700") == ("semtech-udp", "[::1]:1700")
    assert parse_target("serial:///tmp/ttySIM0") == ("serial", "/tmp/ttySIM0")
    assert parse_target("sx127x-bridge://b.sock") == ("sx127x-bridge", "b.sock")
    for bad in ("lora://x", "127.0.0.1", "serial://"):
        with pytest.raises(ValueError):
            parse_target(bad)


def _frame(payload: bytes, *receptions: Reception) -> ScheduledFrame:
    return ScheduledFrame(
        0.0, "d", b"\0" * 8, "reading", payload, True, receptions=receptions, corrupted=b"\x40bad"
    )


class _Clock:
    """``time.time`` of the backends under test: moved by the test the moment ``sync`` returns."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now_s = 1_000.0
        monkeypatch.setattr(time, "time", lambda: self.now_s)


async def test_sx127x_bridge_sync_returns_after_the_backend_stamped_the_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _Clock(monkeypatch)
    handle = Sx127xBackend._irq_rx_done

    def late(self: Sx127xBackend) -> None:  # a busy GPIO thread: the interrupt is served 20 ms late
        time.sleep(0.02)
        handle(self)

    monkeypatch.setattr(Sx127xBackend, "_irq_rx_done", late)
    chip = WatchedChip()
    with install_fake_rpi(chip):
        server = serve(tmp_path / "b.sock", Bridge(chip))
        backend = Sx127xBackend(freq_hz=868_100_000, sf=7)
        link = Sx127xTransport(tmp_path / "b.sock", agent_wait_s=5)
        try:
            await backend.start()
            await asyncio.to_thread(link.open, 1)
            # Two forwarders heard it, one with a bad CRC: the chip gets the bad copy, then the frame once.
            frame = _frame(
                b"\x40good", Reception(0, -101.0, 3.5, 9), Reception(1, -90.0, 2.0, 9, crc_ok=False)
            )
            for k in range(20):
                clock.now_s = 1_000.0 + k
                delivery = await asyncio.to_thread(link.deliver, frame)
                assert (delivery.sent, delivery.acked, delivery.crc_error_copies) == (2, 2, 1)
                assert await asyncio.to_thread(link.sync)
                clock.now_s = 0.0  # a stamp taken after sync() returned would read this
                got = await asyncio.wait_for(backend.receive(), 2)
                assert got.received_at_s == 1_000.0 + k
                assert got.phy_payload == b"\x40good" and (got.rx.rssi_dbm, got.rx.snr_db) == (-101.0, 3.5)
            assert backend.counters["crc_error"] == 20
        finally:
            link.close()
            await backend.stop()
            server.shutdown()
            server.server_close()


async def test_serial_sync_returns_after_the_backend_read_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _Clock(monkeypatch)
    link = SerialModemTransport(tmp_path / "ttySIM0", agent_wait_s=5)
    backend = SerialModemBackend(str(tmp_path / "ttySIM0"))
    try:
        await backend.start()
        await asyncio.to_thread(link.open, 1)
        # The modem drops the CRC-error copy and reports the frame once (integer RSSI and SNR, as RUI3).
        frame = _frame(b"\x40good", Reception(0, -101.0, 3.5, 9, crc_ok=False), Reception(1, -95.4, 6.6, 9))
        for k in range(20):
            clock.now_s = 1_000.0 + k
            delivery = await asyncio.to_thread(link.deliver, frame)
            assert (delivery.sent, delivery.acked, delivery.crc_error_copies) == (1, 1, 0)
            assert await asyncio.to_thread(link.sync)
            clock.now_s = 0.0
            assert link.modem.unread_bytes() == 0
            got = await asyncio.wait_for(backend.receive(), 2)
            assert got.received_at_s == 1_000.0 + k
            assert got.phy_payload == b"\x40good" and (got.rx.rssi_dbm, got.rx.snr_db) == (-95.0, 7.0)
        assert await asyncio.to_thread(link.downlinks, 0.05) == []
    finally:
        await backend.stop()
        link.close()
