"""The firmware's SX1276 driver (firmware/drivers/sx127x.py) against the register emulator, under CPython.

``machine`` is stood in for by ``FakePin``/``FakeSpi`` below: every SPI transaction goes to
``simulator/sx127x_emulator.py`` (the emulator already used for the gateway's pyLoRa backend)
while NSS is low, and the emulator's DIO0 edge calls the pin's IRQ handler. The emulator
models RX continuous only; ``SingleRxEmulator`` adds RX single with its symbol timeout
(datasheet §4.1.6: RxTimeout after SymbTimeout symbols without a preamble, then standby).

Expected register values: SX1276/77/78/79 datasheet rev. 7 §6.4 and §4.1.4 (Frf = f·2^19/32 MHz),
sync word 0x34 for public LoRaWAN networks (Semtech LoRaMac-node, ``LORA_MAC_PUBLIC_SYNCWORD``).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator import sx127x_emulator as emu

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "firmware"))

from drivers import sx127x  # type: ignore[import-not-found]
from lorawan import region  # type: ignore[import-not-found]

MODE_RX_SINGLE = 0x06
WAIT_S = 5.0


class SingleRxEmulator(emu.Sx127xEmulator):
    """The emulator plus RX single mode and its symbol timeout."""

    def __init__(self) -> None:
        super().__init__(tx_time_s=0.005)
        self._rx_timer: threading.Timer | None = None
        self.single_rx_opened = 0

    @property
    def listening(self) -> bool:
        return self.lora and self.mode in (emu.MODE_RXCONT, MODE_RX_SINGLE)

    def _set_op_mode(self, value: int) -> None:
        previous = self.mode
        super()._set_op_mode(value)
        if self.mode == MODE_RX_SINGLE and previous != MODE_RX_SINGLE:
            self.single_rx_opened += 1
            self._rx_write = self._regs[emu.REG_FIFO_RX_BASE_ADDR]
            symbols = ((self._regs[emu.REG_MODEM_CONFIG_2] & 0x03) << 8) | self._regs[0x1F]
            timeout_s = symbols * (1 << self.sf) / self.bw_hz
            self._rx_timer = threading.Timer(timeout_s, self._rx_timeout)
            self._rx_timer.daemon = True
            self._rx_timer.start()

    def _rx_timeout(self) -> None:
        with self._lock:
            if self.mode == MODE_RX_SINGLE:
                self._regs[emu.REG_OP_MODE] = (self._regs[emu.REG_OP_MODE] & ~emu.MODE_MASK) | emu.MODE_STDBY
                self._regs[emu.REG_IRQ_FLAGS] |= 0x80

    def receive(self, payload: bytes, **kwargs: Any) -> bool:
        with self._lock:
            single = self.mode == MODE_RX_SINGLE
            if single and self._rx_timer is not None:
                self._rx_timer.cancel()
            ok = super().receive(payload, **kwargs)
            if ok and single:  # RX single returns to standby after RxDone (§4.1.6)
                self._regs[emu.REG_OP_MODE] = (self._regs[emu.REG_OP_MODE] & ~emu.MODE_MASK) | emu.MODE_STDBY
        return ok


class FakePin:
    """``machine.Pin`` stand-in: a level, and an IRQ handler the emulator's DIO0 edge calls."""

    IRQ_RISING = 1

    def __init__(self, on_change: Callable[[int], None] | None = None) -> None:
        self.level = 0
        self.handler: Callable[[FakePin], None] | None = None
        self._on_change = on_change

    def value(self, level: int | None = None) -> int | None:
        if level is None:
            return self.level
        if self._on_change is not None:
            self._on_change(level)
        self.level = level
        return None

    def irq(self, handler: Callable[[FakePin], None], trigger: int) -> None:
        assert trigger == self.IRQ_RISING
        self.handler = handler


class FakeSpi:
    """``machine.SPI`` stand-in: ``write_readinto`` is one emulator transaction, only while NSS is low."""

    def __init__(self, chip: emu.Sx127xEmulator, nss: FakePin) -> None:
        self.chip = chip
        self.nss = nss
        self.transactions = 0

    def write_readinto(self, tx: bytes, rx: bytearray) -> None:
        assert self.nss.level == 0, "SPI transfer with NSS high"
        rx[:] = bytes(self.chip.xfer(list(tx)))
        self.transactions += 1


class Board:
    def __init__(self, use_dio0: bool = True) -> None:
        self.chip = SingleRxEmulator()
        self.nss = FakePin()
        self.nss.level = 1
        self.resets = self.chip.resets

        def on_reset(level: int) -> None:
            if self.reset_pin.level == 0 and level == 1:
                self.chip.reset()

        self.reset_pin = FakePin(on_reset)
        self.reset_pin.level = 1
        self.dio0 = FakePin() if use_dio0 else None
        if self.dio0 is not None:
            dio0 = self.dio0
            self.chip.wiring.dio0 = lambda: dio0.handler(dio0) if dio0.handler else None
        self.spi = FakeSpi(self.chip, self.nss)
        self.radio = sx127x.SX127x(self.spi, self.nss, reset=self.reset_pin, dio0=self.dio0)


@pytest.fixture(params=[True, False], ids=["dio0", "polling"])
def board(request: pytest.FixtureRequest) -> Iterator[Board]:
    yield Board(use_dio0=request.param)


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


def _inject_when_listening(chip: emu.Sx127xEmulator, payload: bytes, **kwargs: Any) -> threading.Thread:
    """Put a frame on the air as soon as the radio listens (bounded in time)."""

    def run() -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if chip.listening and chip.receive(payload, **kwargs):
                return
            time.sleep(0.001)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_frf_formula() -> None:
    # §4.1.4: Frf = Fcarrier·2^19 / 32 MHz; 868.1 MHz -> 14222950.4 -> 0xD90666 (nearest step).
    assert sx127x.frf(868_100_000) == 0xD90666
    for f in (863_000_000, 868_300_000, 868_500_000, 869_525_000, 870_000_000, 867_100_000):
        assert sx127x.frf(f) == round(f * 2**19 / 32_000_000)


def test_reset_checks_version_and_enters_lora_mode(board: Board) -> None:
    chip = board.chip
    assert chip.resets == 2  # constructor's reset, then the driver's NRESET pulse
    assert chip.lora and chip.mode == emu.MODE_STDBY
    assert chip.register(emu.REG_SYNC_WORD) == 0x34
    assert (chip.register(0x20), chip.register(0x21)) == (0, 8)  # preamble 8 symbols


def test_wrong_version_is_refused() -> None:
    chip = SingleRxEmulator()
    chip._regs[emu.REG_VERSION] = 0x22  # an SX1272 or nothing sensible
    nss = FakePin()
    with pytest.raises(sx127x.RadioError):
        sx127x.SX127x(FakeSpi(chip, nss), nss)


@pytest.mark.parametrize(
    ("freq_hz", "dr", "power_dbm", "pa_config"),
    [
        (868_100_000, 5, 14, 0x80 | 12),  # PA_BOOST, OutputPower = 14 - 2
        (868_500_000, 0, 14, 0x80 | 12),
        (868_300_000, 6, 20, 0x80 | 15),  # +20 dBm: PaDac 0x87 and OutputPower 15
    ],
)
def test_transmit_sends_the_frame_with_uplink_settings(
    board: Board, freq_hz: int, dr: int, power_dbm: int, pa_config: int
) -> None:
    sf, bw_hz = region.DATA_RATES[dr]
    phy = bytes(range(23))
    before = _now_ms()
    tx_end = board.radio.transmit(phy, freq_hz, sf, bw_hz, power_dbm)
    assert tx_end >= before + 5  # the emulator's TxDone comes after 5 ms
    [sent] = board.chip.transmitted
    assert sent.payload == phy
    assert (sent.sf, sent.bw_hz, sent.coding_rate) == (sf, bw_hz, "4/5")
    assert abs(sent.freq_hz - freq_hz) <= 31  # within half a synthesizer step (61 Hz)
    # Uplinks: payload CRC on, IQ not inverted (LoRaWAN 1.0.4 §4; RP002 §2).
    assert sent.crc_on and not sent.invert_iq
    assert sent.pa_config == pa_config
    assert board.chip.register(sx127x.REG_PA_DAC) == (0x87 if power_dbm > 17 else 0x84)
    # LowDataRateOptimize for symbols >= 16 ms (SF11/SF12 at 125 kHz), AGC auto on.
    assert board.chip.register(sx127x.REG_MODEM_CONFIG_3) == (0x0C if sf >= 11 and bw_hz == 125_000 else 0x04)
    assert board.chip.mode == emu.MODE_STDBY
    assert board.chip.register(emu.REG_IRQ_FLAGS) == 0


def test_receive_window_gets_an_injected_frame(board: Board) -> None:
    down = bytes.fromhex("60f17dbe0120000000cafe0123")
    thread = _inject_when_listening(board.chip, down, rssi_dbm=-97.0, snr_db=-3.0)
    open_at = _now_ms() + 20
    got = board.radio.receive(region.RX2_FREQ_HZ, 12, 125_000, open_at, 2000)
    thread.join(WAIT_S)
    assert got == down
    assert _now_ms() >= open_at - sx127x.WAKE_MARGIN_MS  # not opened early
    chip = board.chip
    assert chip.single_rx_opened == 1
    # Downlink settings: 869.525 MHz, SF12/125 kHz, IQ inverted, CRC off.
    assert (chip.sf, chip.bw_hz) == (12, 125_000) and abs(chip.freq_hz - 869_525_000) <= 31
    assert chip.invert_iq and not chip.crc_on
    assert chip.register(sx127x.REG_INVERT_IQ_2) == 0x19
    assert board.radio.last_snr_db == -3.0
    assert board.radio.last_rssi_dbm == pytest.approx(-97.0, abs=1)
    assert chip.mode == emu.MODE_STDBY


def test_receive_window_times_out_by_symbols(board: Board) -> None:
    # SF7/125 kHz: 1.024 ms per symbol; a 30 ms window is 30 symbols of SymbTimeout.
    started = _now_ms()
    got = board.radio.receive(868_100_000, 7, 125_000, started, 30)
    assert got is None
    symbols = ((board.chip.register(emu.REG_MODEM_CONFIG_2) & 3) << 8) | board.chip.register(0x1F)
    assert symbols == 30
    assert board.chip.register(emu.REG_IRQ_FLAGS) == 0 and board.chip.mode == emu.MODE_STDBY
    assert _now_ms() - started < 1000


def test_crc_error_frames_are_dropped(board: Board) -> None:
    thread = _inject_when_listening(board.chip, b"\x60garbage-frame", crc_ok=False)
    got = board.radio.receive(868_100_000, 7, 125_000, _now_ms(), 2000)
    thread.join(WAIT_S)
    assert got is None and board.radio.frames_dropped == 1


def test_class_c_listen_stays_in_rx_continuous(board: Board) -> None:
    radio = board.radio
    assert radio.listen(region.RX2_FREQ_HZ, 12, 125_000, _now_ms() + 20) is None
    assert board.chip.mode == emu.MODE_RXCONT and board.chip.invert_iq
    frames = [b"\xa0first-frame", b"\xa0second"]
    got = []
    for frame in frames:
        thread = _inject_when_listening(board.chip, frame)
        got.append(radio.listen(region.RX2_FREQ_HZ, 12, 125_000, _now_ms() + 5000))
        thread.join(WAIT_S)
    assert got == frames
    assert board.chip.mode == emu.MODE_RXCONT
    radio.sleep()
    assert board.chip.mode == emu.MODE_SLEEP and board.chip.lora


def test_transmit_then_receive_round_trip_through_device_timing(board: Board) -> None:
    # The Device's class A contract: RX1 opens RECEIVE_DELAY1 after tx_end (shortened here to 50 ms).
    # Windows are generous (2 s): the frame ends them at once, and a loaded CI machine needs the slack.
    radio = board.radio
    tx_end = radio.transmit(b"\x40uplink", 868_300_000, 7, 125_000, 14)
    down = b"\x60downlink-frame"
    thread = _inject_when_listening(board.chip, down)
    got = radio.receive(868_300_000, 7, 125_000, tx_end + 50, 2000)
    thread.join(WAIT_S)
    assert got == down
    assert board.chip.transmitted[0].payload == b"\x40uplink"
