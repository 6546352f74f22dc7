"""Sx127xBackend: pyLoRa's own code (package SX127x from PyPI pyLoRa 0.3.1) over the SX1276 emulator.

Register behaviour from the Semtech SX1276/77/78/79 datasheet rev. 7: RegIrqFlags write-1-to-clear
and RxDone/PayloadCrcError/TxDone bits (§6.4), DIO0 mapping 00 = RxDone, 01 = TxDone (table 18),
RegPktSnrValue two's complement /4 and packet RSSI -157 + RegPktRssiValue on the HF port (§5.5.5).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator

import pytest

from gateway.errors import ConfigError
from gateway.messages import TxRequest, TxStatus
from gateway.radio import open_backend
from gateway.radio.sx127x import Sx127xBackend, rssi_from_register, snr_from_register, tmst_us
from simulator.sx127x_emulator import FakeBoard, Sx127xEmulator, install_fake_rpi

TIMEOUT_S = 3.0


@pytest.fixture
def board() -> Iterator[FakeBoard]:
    with install_fake_rpi(Sx127xEmulator()) as fake:
        yield fake


@pytest.fixture
async def radio(board: FakeBoard) -> AsyncIterator[Sx127xBackend]:
    backend = Sx127xBackend(freq_hz=868_300_000, sf=9)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.stop()
        assert board.gpio.errors == []  # no callback blew up on the GPIO thread


async def settle(radio: Sx127xBackend, irqs: int) -> None:
    for _ in range(300):
        if radio.counters["irq"] >= irqs:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{irqs} interrupts expected, saw {radio.counters['irq']}")


async def test_pylora_itself_drives_the_emulated_chip(radio: Sx127xBackend, board: FakeBoard) -> None:
    module = sys.modules["SX127x.LoRa"]
    assert module.__file__ is not None and "site-packages" in module.__file__
    chip = board.emulator
    assert chip.listening and chip.sf == 9 and abs(chip.freq_hz - 868_300_000) < 62
    assert chip.crc_on and not chip.invert_iq
    assert chip.register(0x39) == 0x34  # LoRaWAN public sync word
    assert chip.resets >= 2  # power-on plus the NRESET pulse the backend gave


async def test_crc_error_is_dropped_and_counted_then_good_frames_flow(
    radio: Sx127xBackend, board: FakeBoard
) -> None:
    assert board.emulator.receive(b"\x40bad", crc_ok=False)
    await settle(radio, 1)
    assert board.emulator.receive(b"\x40good", rssi_dbm=-101, snr_db=3.5)
    frame = await asyncio.wait_for(radio.receive(), TIMEOUT_S)
    assert frame.phy_payload == b"\x40good"
    assert (frame.rx.rssi_dbm, frame.rx.snr_db, frame.rx.sf) == (-101.0, 3.5, 9)
    assert radio.counters["crc_error"] == 1 and radio.counters["frames"] == 1
    assert [(r.phy_payload_hex, r.rx.crc_ok) for r in radio.recent] == [
        ("40626164", False),
        ("40676f6f64", True),
    ]


async def test_corrupted_fifo_and_glitches_are_counted_not_fatal(
    radio: Sx127xBackend, board: FakeBoard
) -> None:
    assert board.emulator.receive(b"\x40xyz", rx_nb_bytes=0)
    board.emulator.spurious_dio0()
    await settle(radio, 2)
    assert radio.counters["bad_datagram.empty_fifo"] == 1
    assert radio.counters["spurious_irq"] == 1
    assert board.emulator.receive(b"\x40ok")
    assert (await asyncio.wait_for(radio.receive(), TIMEOUT_S)).phy_payload == b"\x40ok"


async def test_transmit_uses_downlink_settings_then_listens_again(
    radio: Sx127xBackend, board: FakeBoard
) -> None:
    request = TxRequest(b"\x60\x01\x02", 869_525_000, 12, power_dbm=27.0)
    result = await radio.transmit(request)
    assert result.status is TxStatus.SENT and "17 dBm" in result.detail  # clamped to PA_BOOST max
    sent = board.emulator.transmitted[-1]
    assert sent.payload == b"\x60\x01\x02" and sent.sf == 12 and abs(sent.freq_hz - 869_525_000) < 62
    assert sent.invert_iq and not sent.crc_on  # LoRaWAN downlink: inverted IQ, no CRC
    assert sent.pa_config == 0xF0 | 15  # PA_BOOST, OutputPower 15 → 17 dBm
    chip = board.emulator
    assert chip.listening and chip.sf == 9 and not chip.invert_iq and chip.crc_on
    assert chip.receive(b"\x40after")
    assert (await asyncio.wait_for(radio.receive(), TIMEOUT_S)).phy_payload == b"\x40after"


async def test_timed_downlinks(radio: Sx127xBackend, board: FakeBoard) -> None:
    late = TxRequest(b"\x60", 868_300_000, 9, send_at_tmst_us=tmst_us() - 1000)
    assert (await radio.transmit(late)).status is TxStatus.TOO_LATE
    early = TxRequest(b"\x60", 868_300_000, 9, send_at_tmst_us=tmst_us() + 60_000_000)
    assert (await radio.transmit(early)).status is TxStatus.TOO_EARLY
    gps = TxRequest(b"\x60", 868_300_000, 9, send_at_gps_ms=1)
    assert (await radio.transmit(gps)).status is TxStatus.GPS_UNLOCKED
    target = tmst_us() + 100_000
    on_time = TxRequest(b"\x60ok", 868_300_000, 9, send_at_tmst_us=target)
    assert (await radio.transmit(on_time)).status is TxStatus.SENT
    assert tmst_us() - target >= 0  # not sent before its time
    assert board.emulator.transmitted[-1].payload == b"\x60ok" and len(board.emulator.transmitted) == 1


async def test_no_txdone_is_a_failed_transmission(radio: Sx127xBackend, board: FakeBoard) -> None:
    board.emulator.tx_time_s = 30.0  # the chip never finishes within the backend's patience
    result = await radio.transmit(TxRequest(b"\x60", 868_300_000, 7))
    assert result.status is TxStatus.FAILED and radio.counters["tx_timeout"] == 1
    assert board.emulator.listening  # back to RX all the same


async def test_url_with_pins_and_another_chip_select() -> None:
    chip = Sx127xEmulator()
    with install_fake_rpi(chip, cs=1, dio0_pin=25, reset_pin=17) as board:
        backend = open_backend("sx127x://spi0.1?freq_hz=867500000&sf=12&bw_hz=125000&cr=4/5&dio0=25&reset=17")
        assert isinstance(backend, Sx127xBackend)
        await backend.start()
        try:
            assert board.emulator.listening and board.emulator.sf == 12
            assert board.emulator.register(0x26) & 0x08  # LDRO on at SF12/125 kHz
            assert board.emulator.receive(b"\x40cs1")
            assert (await asyncio.wait_for(backend.receive(), TIMEOUT_S)).phy_payload == b"\x40cs1"
        finally:
            await backend.stop()


async def test_nothing_on_the_bus_is_a_clear_config_error() -> None:
    with install_fake_rpi(Sx127xEmulator(), cs=1):  # the chip is on CE1, the URL says CE0
        backend = open_backend("sx127x://spi0.0")
        with pytest.raises(ConfigError, match=r"no SX1276 answers on spi0\.0"):
            await backend.start()
        await backend.stop()


async def test_missing_pylora_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "SX127x", None)  # import SX127x → ImportError
    monkeypatch.setitem(sys.modules, "SX127x.LoRa", None)
    monkeypatch.setitem(sys.modules, "RPi", None)
    backend = open_backend("sx127x://spi0.0")  # building it needs nothing
    with pytest.raises(ConfigError, match=r"pip install edgegw\[sx127x\]"):
        await backend.start()


@pytest.mark.parametrize(
    "url",
    [
        "sx127x://spi0",
        "sx127x://spi0.0/x",
        "sx127x://spi0.0?sf=6",
        "sx127x://spi0.0?bw_hz=62500",
        "sx127x://spi0.0?cr=4/9",
        "sx127x://spi0.0?freq=868.1",
        "sx127x://spi0.0?sf=seven",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        open_backend(url)


def test_register_conversions() -> None:
    # §5.5.5 / §6.4: SNR register two's complement / 4; RSSI -157 + value (+ SNR/4 below 0 dB).
    assert snr_from_register(0x1E) == 7.5
    assert snr_from_register(0xEC) == -5.0
    assert rssi_from_register(60, 7.5) == -97.0
    assert rssi_from_register(60, -5.0) == -98.25
    assert rssi_from_register(60, 0.0, high_band=False) == -104.0
