"""One contract, every radio backend (python-can's back-to-back tests, STYLE.md).

Each harness starts a real backend over its real medium: Semtech UDP over 127.0.0.1 sockets,
the SX127x backend running pyLoRa's own code over the register-level emulator, the serial
backend talking to the simulated RUI3 modem over a pty. The contract is gateway/radio/base.py's.
"""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.messages import TxRequest, TxStatus
from gateway.radio.base import RadioBackend
from gateway.radio.semtech_udp.backend import SemtechUdpBackend
from gateway.radio.semtech_udp.packets import PullData, PullResp, TxAck, parse
from gateway.radio.serial_modem.backend import SerialModemBackend
from gateway.radio.sx127x import Sx127xBackend
from simulator.forwarder import AsyncPacketForwarder
from simulator.serial_modem import Rui3ModemSimulator
from simulator.sx127x_emulator import Sx127xEmulator, install_fake_rpi

TIMEOUT_S = 3.0
EUI = bytes.fromhex("b827ebfffe0000aa")
UPLINK = bytes.fromhex("40ac9d0b2600430301ee2bb9403eac1f9bb50be621")
DOWNLINK = bytes.fromhex("60ac9d0b2600010001aabbccdd")


@dataclass
class Harness:
    backend: RadioBackend
    make: Callable[[], RadioBackend]
    hear: Callable[[bytes], Awaitable[None]]
    """Put one uplink on the backend's medium (RSSI -80 dBm, SNR 7 dB)."""
    transmit: Callable[[TxRequest], Awaitable[tuple[object, bytes | None]]]
    """Transmit through the backend; (TxResult, the payload seen on the medium)."""


async def _semtech() -> AsyncIterator[Harness]:
    backend = SemtechUdpBackend("127.0.0.1", 0)
    await backend.start()
    server = ("127.0.0.1", backend.bound_port)
    fwd = await AsyncPacketForwarder.open(EUI, server)
    down = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    down.setblocking(False)
    down.connect(server)
    loop = asyncio.get_running_loop()

    async def hear(payload: bytes) -> None:
        token = fwd.send_frames([(payload, {"rssi_dbm": -80, "snr_db": 7.0})])
        assert await fwd.wait_ack(token, TIMEOUT_S)

    async def transmit(request: TxRequest) -> tuple[object, bytes | None]:
        down.send(PullData(1, EUI).to_bytes())
        await asyncio.wait_for(loop.sock_recv(down, 100), TIMEOUT_S)  # PULL_ACK

        async def answer() -> bytes:
            resp = parse(await asyncio.wait_for(loop.sock_recv(down, 65535), TIMEOUT_S))
            assert isinstance(resp, PullResp)
            down.send(TxAck(resp.token, EUI).to_bytes())
            return base64.b64decode(resp.txpk["data"])

        answered = asyncio.create_task(answer())
        result = await backend.transmit(request)
        if result.status is not TxStatus.SENT:
            answered.cancel()
            return result, None
        return result, await answered

    try:
        yield Harness(backend, lambda: SemtechUdpBackend("127.0.0.1", 0), hear, transmit)
    finally:
        down.close()
        await fwd.close()
        await backend.stop()


async def _sx127x() -> AsyncIterator[Harness]:
    emulator = Sx127xEmulator()
    with install_fake_rpi(emulator):
        backend = Sx127xBackend(freq_hz=868_100_000, sf=7)
        await backend.start()

        async def hear(payload: bytes) -> None:
            # On air a packet lasts tens of ms; wait for the driver to take it before the next.
            before = backend.counters["irq"]
            assert emulator.receive(payload, rssi_dbm=-80, snr_db=7.0)
            for _ in range(300):
                if backend.counters["irq"] > before:
                    return
                await asyncio.sleep(0.01)
            raise AssertionError("the backend never handled the RxDone interrupt")

        async def transmit(request: TxRequest) -> tuple[object, bytes | None]:
            before = len(emulator.transmitted)
            result = await backend.transmit(request)
            sent = emulator.transmitted[before:]
            return result, sent[0].payload if sent else None

        try:
            yield Harness(backend, lambda: Sx127xBackend(), hear, transmit)
        finally:
            await backend.stop()


async def _serial(tmp_path: Path) -> AsyncIterator[Harness]:
    modem = Rui3ModemSimulator(tmp_path / "ttyUSB0")
    backend = SerialModemBackend(str(tmp_path / "ttyUSB0"), reconnect_max_s=0.2)
    await backend.start()
    assert backend.connected

    async def hear(payload: bytes) -> None:
        assert modem.hear(payload, rssi_dbm=-80, snr_db=7)

    async def transmit(request: TxRequest) -> tuple[object, bytes | None]:
        before = len(modem.state.transmitted)
        result = await backend.transmit(request)
        sent = modem.state.transmitted[before:]
        return result, sent[0][0] if sent else None

    try:
        yield Harness(backend, lambda: SerialModemBackend(str(tmp_path / "nothing")), hear, transmit)
    finally:
        await backend.stop()
        modem.close()


@pytest.fixture(params=["semtech-udp", "sx127x", "serial"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    factory = {"semtech-udp": _semtech, "sx127x": _sx127x, "serial": lambda: _serial(tmp_path)}[request.param]
    async for h in factory():  # type: ignore[operator]
        yield h


class TestRadioBackendContract:
    async def test_receives_a_frame_with_its_metadata(self, harness: Harness) -> None:
        await harness.hear(UPLINK)
        frame = await asyncio.wait_for(harness.backend.receive(), TIMEOUT_S)
        assert frame.phy_payload == UPLINK
        rx = frame.rx
        assert rx.backend == harness.backend.name and rx.crc_ok
        assert (rx.freq_hz // 100_000, rx.sf, rx.bw_hz) == (8681, 7, 125_000)
        assert rx.rssi_dbm == pytest.approx(-80, abs=1) and rx.snr_db == pytest.approx(7.0, abs=0.25)
        assert rx.concentrator_tmst_us is not None and 0 <= rx.concentrator_tmst_us < 1 << 32
        assert harness.backend.counters["frames"] == 1
        assert [r.phy_payload_hex for r in harness.backend.recent] == [UPLINK.hex()]

    async def test_frames_come_out_in_order(self, harness: Harness) -> None:
        for i in range(5):
            await harness.hear(UPLINK[:-1] + bytes([i]))
        got = [await asyncio.wait_for(harness.backend.receive(), TIMEOUT_S) for _ in range(5)]
        assert [f.phy_payload[-1] for f in got] == list(range(5))

    async def test_transmit_reports_sent_with_airtime_and_counts_it(self, harness: Harness) -> None:
        request = TxRequest(DOWNLINK, 869_525_000, 9, gateway_eui=EUI.hex())
        result, seen = await harness.transmit(request)
        assert result.status is TxStatus.SENT, result  # type: ignore[attr-defined]
        # SF9, 13 bytes, no CRC: ceil((104-36+28)/36)=3 → 23 symbols; (12.25+23)·4.096 ms.
        assert result.airtime_ms == pytest.approx(144.384)  # type: ignore[attr-defined]
        assert seen == DOWNLINK
        counters = harness.backend.counters
        assert (counters["tx_requests"], counters["tx_ok"], counters["tx.sent"]) == (1, 1, 1)
        assert harness.backend.health()["duty_cycle"]["P"]["used_s"] == pytest.approx(0.144, abs=0.001)

    async def test_receives_again_after_transmitting(self, harness: Harness) -> None:
        result, _ = await harness.transmit(TxRequest(DOWNLINK, 868_100_000, 7, gateway_eui=EUI.hex()))
        assert result.status is TxStatus.SENT  # type: ignore[attr-defined]
        await harness.hear(UPLINK)
        assert (await asyncio.wait_for(harness.backend.receive(), TIMEOUT_S)).phy_payload == UPLINK

    async def test_transmit_outside_eu868_sub_bands_never_reaches_the_medium(self, harness: Harness) -> None:
        result, seen = await harness.transmit(TxRequest(DOWNLINK, 869_300_000, 9, gateway_eui=EUI.hex()))
        assert result.status is TxStatus.TX_FREQ and seen is None  # type: ignore[attr-defined]
        assert harness.backend.counters["tx_failed"] == 1

    async def test_stop_is_idempotent_and_allowed_before_start(self, harness: Harness) -> None:
        fresh = harness.make()
        await fresh.stop()
        await harness.backend.stop()
        await harness.backend.stop()

    async def test_health_names_backend_counters_and_budget(self, harness: Harness) -> None:
        health = harness.backend.health()
        assert health["backend"] == harness.backend.name
        assert set(health["duty_cycle"]) == {"K", "L", "M", "N", "P", "R"}
        assert health["duty_cycle"]["M"]["left_s"] == 36.0
