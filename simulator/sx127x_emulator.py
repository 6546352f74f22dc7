"""A register-level Semtech SX1276 (LoRa mode) emulator, and fake ``RPi.GPIO`` / ``spidev`` modules.

Owns what a driver sees over SPI and on the DIO0 pin of an SX1276 wired to a
Raspberry Pi: the register file with burst access (auto-incremented address,
datasheet §4.3 "SPI Interface"), the 256-byte FIFO behind RegFifo (0x00) and
RegFifoAddrPtr (0x0D), RegOpMode (0x01) with continuous RX and TX, RegIrqFlags
(0x12, write 1 to clear), RegRxNbBytes (0x13), RegFifoRxCurrentAddr (0x10), the
packet SNR/RSSI registers (0x19, 0x1A, §5.5.5) and the DIO0 rising edge (RxDone
with RegDioMapping1 DIO0=00, TxDone with 01; datasheet table 18). Register
addresses follow the SX1276/77/78/79 datasheet (rev. 7) §6.4.

``install_fake_rpi`` puts fake ``RPi.GPIO`` and ``spidev`` modules in
``sys.modules`` backed by an emulator, so that pyLoRa (which imports both at import
time and opens the SPI device while defining its class) runs its own code against
the emulator. The fake GPIO calls edge callbacks from one background thread, as
RPi.GPIO does. It owns no LoRaWAN and no asyncio: tests and the simulator drive it
with ``receive()`` and read ``transmitted``.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

REG_FIFO: Final = 0x00
REG_OP_MODE: Final = 0x01
REG_FRF_MSB: Final = 0x06
REG_PA_CONFIG: Final = 0x09
REG_FIFO_ADDR_PTR: Final = 0x0D
REG_FIFO_TX_BASE_ADDR: Final = 0x0E
REG_FIFO_RX_BASE_ADDR: Final = 0x0F
REG_FIFO_RX_CURRENT_ADDR: Final = 0x10
REG_IRQ_FLAGS_MASK: Final = 0x11
REG_IRQ_FLAGS: Final = 0x12
REG_RX_NB_BYTES: Final = 0x13
REG_PKT_SNR_VALUE: Final = 0x19
REG_PKT_RSSI_VALUE: Final = 0x1A
REG_HOP_CHANNEL: Final = 0x1C
REG_MODEM_CONFIG_1: Final = 0x1D
REG_MODEM_CONFIG_2: Final = 0x1E
REG_PAYLOAD_LENGTH: Final = 0x22
REG_FIFO_RX_BYTE_ADDR: Final = 0x25
REG_MODEM_CONFIG_3: Final = 0x26
REG_INVERT_IQ: Final = 0x33
REG_SYNC_WORD: Final = 0x39
REG_DIO_MAPPING_1: Final = 0x40
REG_VERSION: Final = 0x42

IRQ_RX_TIMEOUT: Final = 0x80
IRQ_RX_DONE: Final = 0x40
IRQ_PAYLOAD_CRC_ERROR: Final = 0x20
IRQ_VALID_HEADER: Final = 0x10
IRQ_TX_DONE: Final = 0x08

LONG_RANGE_MODE: Final = 0x80
MODE_MASK: Final = 0x07
MODE_SLEEP: Final = 0x00
MODE_STDBY: Final = 0x01
MODE_TX: Final = 0x03
MODE_RXCONT: Final = 0x05

FXOSC_HZ: Final = 32_000_000
# Table 41 (RegModemConfig1 Bw): 7 = 125 kHz, 8 = 250 kHz, 9 = 500 kHz.
BW_HZ: Final[dict[int, int]] = {7: 125_000, 8: 250_000, 9: 500_000}

# Reset values that matter here (datasheet §6.4, "Default" column in LoRa mode).
_DEFAULTS: Final[dict[int, int]] = {
    REG_OP_MODE: 0x09,  # FSK standby until the driver sets LongRangeMode in sleep
    REG_FRF_MSB: 0x6C,
    REG_FRF_MSB + 1: 0x80,
    REG_FRF_MSB + 2: 0x00,
    REG_PA_CONFIG: 0x4F,
    REG_FIFO_TX_BASE_ADDR: 0x80,
    REG_FIFO_RX_BASE_ADDR: 0x00,
    REG_MODEM_CONFIG_1: 0x72,  # 125 kHz, 4/5, explicit header
    REG_MODEM_CONFIG_2: 0x70,  # SF7, CRC off
    REG_PAYLOAD_LENGTH: 0x01,
    REG_INVERT_IQ: 0x27,
    REG_SYNC_WORD: 0x12,
    REG_VERSION: 0x12,  # SX1276 silicon revision
}


@dataclass(frozen=True, slots=True)
class Transmission:
    """One packet the emulated radio sent, with the settings it was sent with."""

    payload: bytes
    freq_hz: int
    sf: int
    bw_hz: int
    coding_rate: str
    crc_on: bool
    invert_iq: bool
    pa_config: int


@dataclass(slots=True)
class _Wiring:
    dio0: Callable[[], None] = lambda: None


class Sx127xEmulator:
    """The chip. Thread-safe: SPI transfers, ``receive()`` and the TX timer share one lock."""

    def __init__(self, *, tx_time_s: float = 0.002) -> None:
        self.tx_time_s = tx_time_s
        self.transmitted: list[Transmission] = []
        self.wiring = _Wiring()
        self._lock = threading.RLock()
        self._regs = bytearray(0x80)
        self._fifo = bytearray(256)
        self._rx_write = 0
        self._tx_timer: threading.Timer | None = None
        self.resets = 0
        self.reset()

    # ------------------------------------------------------------------ pins and state

    def reset(self) -> None:
        """The NRESET pin pulsed: every register back to its default (§7.2)."""
        with self._lock:
            if self._tx_timer is not None:
                self._tx_timer.cancel()
                self._tx_timer = None
            self._regs[:] = bytes(0x80)
            for address, value in _DEFAULTS.items():
                self._regs[address] = value
            self._fifo[:] = bytes(256)
            self._rx_write = 0
            self.resets += 1

    @property
    def mode(self) -> int:
        return self._regs[REG_OP_MODE] & MODE_MASK

    @property
    def lora(self) -> bool:
        return bool(self._regs[REG_OP_MODE] & LONG_RANGE_MODE)

    @property
    def freq_hz(self) -> int:
        frf = int.from_bytes(self._regs[REG_FRF_MSB : REG_FRF_MSB + 3], "big")
        return round(frf * FXOSC_HZ / (1 << 19))

    @property
    def sf(self) -> int:
        return self._regs[REG_MODEM_CONFIG_2] >> 4

    @property
    def bw_hz(self) -> int:
        return BW_HZ.get(self._regs[REG_MODEM_CONFIG_1] >> 4, 0)

    @property
    def coding_rate(self) -> str:
        return f"4/{((self._regs[REG_MODEM_CONFIG_1] >> 1) & 0x07) + 4}"

    @property
    def crc_on(self) -> bool:
        return bool(self._regs[REG_MODEM_CONFIG_2] & 0x04)

    @property
    def invert_iq(self) -> bool:
        return bool(self._regs[REG_INVERT_IQ] & 0x40)

    @property
    def listening(self) -> bool:
        return self.lora and self.mode == MODE_RXCONT

    def register(self, address: int) -> int:
        with self._lock:
            return self._regs[address & 0x7F]

    # ------------------------------------------------------------------ SPI

    def xfer(self, data: list[int]) -> list[int]:
        """One SPI transaction: address byte (bit 7 = write) then data bytes, burst mode."""
        if not data:
            return []
        with self._lock:
            address = data[0] & 0x7F
            write = bool(data[0] & 0x80)
            out = [0]
            for value in data[1:]:
                if address == REG_FIFO:
                    out.append(self._fifo_access(write, value))
                else:
                    out.append(self._regs[address])
                    if write:
                        self._write(address, value & 0xFF)
                    address = (address + 1) & 0x7F
            return out

    def _fifo_access(self, write: bool, value: int) -> int:
        pointer = self._regs[REG_FIFO_ADDR_PTR]
        old = self._fifo[pointer]
        if write:
            self._fifo[pointer] = value & 0xFF
        self._regs[REG_FIFO_ADDR_PTR] = (pointer + 1) & 0xFF
        return old

    def _write(self, address: int, value: int) -> None:
        if address == REG_IRQ_FLAGS:
            self._regs[REG_IRQ_FLAGS] &= ~value & 0xFF  # write 1 to clear (§6.4, RegIrqFlags)
            return
        if address in (REG_VERSION, REG_RX_NB_BYTES, REG_FIFO_RX_CURRENT_ADDR, REG_PKT_SNR_VALUE):
            return  # read-only
        if address == REG_OP_MODE:
            self._set_op_mode(value)
            return
        self._regs[address] = value

    def _set_op_mode(self, value: int) -> None:
        previous = self.mode
        # LongRangeMode can only change in sleep (§6.4 RegOpMode bit 7).
        if (value ^ self._regs[REG_OP_MODE]) & LONG_RANGE_MODE and previous != MODE_SLEEP:
            value = (value & ~LONG_RANGE_MODE) | (self._regs[REG_OP_MODE] & LONG_RANGE_MODE)
        self._regs[REG_OP_MODE] = value
        mode = value & MODE_MASK
        if previous == MODE_TX and mode != MODE_TX and self._tx_timer is not None:
            self._tx_timer.cancel()  # leaving TX aborts the transmission: no TxDone follows
            self._tx_timer = None
        if mode == MODE_RXCONT and previous != MODE_RXCONT:
            self._rx_write = self._regs[REG_FIFO_RX_BASE_ADDR]
        if mode == MODE_TX and previous != MODE_TX and self.lora:
            self._start_tx()

    def _start_tx(self) -> None:
        base = self._regs[REG_FIFO_TX_BASE_ADDR]
        length = self._regs[REG_PAYLOAD_LENGTH]
        payload = bytes(self._fifo[(base + i) & 0xFF] for i in range(length))
        self.transmitted.append(
            Transmission(
                payload,
                self.freq_hz,
                self.sf,
                self.bw_hz,
                self.coding_rate,
                self.crc_on,
                self.invert_iq,
                self._regs[REG_PA_CONFIG],
            )
        )
        timer = threading.Timer(self.tx_time_s, self._tx_done)
        timer.daemon = True
        self._tx_timer = timer
        timer.start()

    def _tx_done(self) -> None:
        with self._lock:
            self._tx_timer = None
            if self.mode != MODE_TX:
                return
            # After TxDone the chip returns to standby by itself (§4.1.6, "Data Transmission Sequence").
            self._regs[REG_OP_MODE] = (self._regs[REG_OP_MODE] & ~MODE_MASK) | MODE_STDBY
            fire = self._raise_irq(IRQ_TX_DONE, dio0_mapping=0b01)
        if fire:
            self.wiring.dio0()

    def _raise_irq(self, flags: int, *, dio0_mapping: int) -> bool:
        self._regs[REG_IRQ_FLAGS] |= flags
        masked = self._regs[REG_IRQ_FLAGS_MASK] & flags
        return (self._regs[REG_DIO_MAPPING_1] >> 6) == dio0_mapping and not masked

    # ------------------------------------------------------------------ the air

    def receive(
        self,
        payload: bytes,
        *,
        rssi_dbm: float = -80.0,
        snr_db: float = 8.0,
        crc_ok: bool = True,
        freq_hz: int | None = None,
        sf: int | None = None,
        rx_nb_bytes: int | None = None,
    ) -> bool:
        """A LoRa packet arrives; False when the radio is not listening on those settings.

        The packet lands in the FIFO after the previous one (continuous RX keeps writing,
        §4.1.6), RegFifoRxCurrentAddr points at its start, the SNR register holds
        SNR·4 in two's complement and the RSSI register ``rssi + 157`` (HF port, §5.5.5,
        with the SNR·0.25 term when the SNR is negative). ``rx_nb_bytes`` overrides the
        length register, to play a corrupted FIFO.
        """
        if len(payload) > 255:
            raise ValueError("an SX127x packet holds at most 255 bytes")
        with self._lock:
            if not self.listening:
                return False
            if (freq_hz is not None and freq_hz != self.freq_hz) or (sf is not None and sf != self.sf):
                return False
            start = self._rx_write
            for i, byte in enumerate(payload):
                self._fifo[(start + i) & 0xFF] = byte
            self._rx_write = (start + len(payload)) & 0xFF
            self._regs[REG_FIFO_RX_CURRENT_ADDR] = start
            self._regs[REG_FIFO_RX_BYTE_ADDR] = self._rx_write
            self._regs[REG_RX_NB_BYTES] = len(payload) if rx_nb_bytes is None else rx_nb_bytes
            self._regs[REG_PKT_SNR_VALUE] = round(snr_db * 4) & 0xFF
            rssi_reg = rssi_dbm + 157 - (snr_db * 0.25 if snr_db < 0 else 0.0)
            self._regs[REG_PKT_RSSI_VALUE] = max(0, min(255, round(rssi_reg)))
            # RegHopChannel bit 6: CRC information from the received header.
            self._regs[REG_HOP_CHANNEL] = 0x40 if self.crc_on else 0x00
            flags = IRQ_RX_DONE | IRQ_VALID_HEADER | (0 if crc_ok else IRQ_PAYLOAD_CRC_ERROR)
            fire = self._raise_irq(flags, dio0_mapping=0b00)
        if fire:
            self.wiring.dio0()
        return True

    def spurious_dio0(self) -> None:
        """An edge on DIO0 with no flag set (a glitch on the wire)."""
        self.wiring.dio0()


# ---------------------------------------------------------------------- fake RPi.GPIO / spidev


@dataclass
class FakeGpio:
    """The state behind the fake ``RPi.GPIO`` module: pin levels and edge callbacks."""

    levels: dict[int, int] = field(default_factory=dict)
    callbacks: dict[int, Callable[[int], None]] = field(default_factory=dict)
    on_output: Callable[[int, int], None] = lambda pin, value: None
    _events: queue.SimpleQueue[int | None] = field(default_factory=queue.SimpleQueue)
    _thread: threading.Thread | None = None
    errors: list[BaseException] = field(default_factory=list)

    def rising(self, pin: int) -> None:
        """Queue a rising edge; its callback runs on the GPIO event thread, like RPi.GPIO's."""
        self._events.put(pin)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fake-gpio-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._events.put(None)
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while True:
            pin = self._events.get()
            if pin is None:
                return
            callback = self.callbacks.get(pin)
            if callback is None:
                continue
            try:
                callback(pin)
            except BaseException as exc:  # RPi.GPIO prints and carries on; keep it for the test
                self.errors.append(exc)

    def module(self) -> types.ModuleType:
        gpio = types.ModuleType("RPi.GPIO")
        constants = {"BCM": 11, "BOARD": 10, "IN": 1, "OUT": 0, "HIGH": 1, "LOW": 0}
        constants |= {"PUD_OFF": 20, "PUD_DOWN": 21, "PUD_UP": 22, "RISING": 31, "FALLING": 32, "BOTH": 33}
        for name, value in constants.items():
            setattr(gpio, name, value)

        def setmode(mode: int) -> None:
            pass

        def setwarnings(flag: bool) -> None:
            pass

        def setup(pin: int, direction: int, pull_up_down: int = 20, initial: int = -1) -> None:
            self.levels.setdefault(pin, 0)

        def output(pin: int, value: int) -> None:
            self.levels[pin] = int(bool(value))
            self.on_output(pin, int(bool(value)))

        def input(pin: int) -> int:
            return self.levels.get(pin, 0)

        def add_event_detect(
            pin: int, edge: int, callback: Callable[[int], None] | None = None, bouncetime: int = 0
        ) -> None:
            if pin in self.callbacks:
                raise RuntimeError("Conflicting edge detection already enabled for this GPIO channel")
            if callback is not None:
                self.callbacks[pin] = callback

        def remove_event_detect(pin: int) -> None:
            self.callbacks.pop(pin, None)

        def cleanup(pins: Any = None) -> None:
            self.callbacks.clear()

        for fn in (
            setmode,
            setwarnings,
            setup,
            output,
            input,
            add_event_detect,
            remove_event_detect,
            cleanup,
        ):
            setattr(gpio, fn.__name__, fn)
        return gpio


class _NoDevice:
    """What an SPI chip select with nothing wired reads: zeros."""

    def xfer(self, data: list[int]) -> list[int]:
        return [0] * len(data)


def _spidev_module(devices: dict[tuple[int, int], Sx127xEmulator]) -> types.ModuleType:
    spidev = types.ModuleType("spidev")

    class SpiDev:
        def __init__(self) -> None:
            self.max_speed_hz = 500_000
            self.mode = 0
            self._device: Sx127xEmulator | _NoDevice | None = None

        def open(self, bus: int, device: int) -> None:
            self._device = devices.get((bus, device), _NoDevice())

        def xfer(self, data: list[int], *args: Any) -> list[int]:
            if self._device is None:
                raise OSError(9, "Bad file descriptor")
            return self._device.xfer(list(data))

        xfer2 = xfer

        def close(self) -> None:
            self._device = None

    spidev.SpiDev = SpiDev  # type: ignore[attr-defined]
    return spidev


@dataclass
class FakeBoard:
    """What ``install_fake_rpi`` wired: the chip, the GPIO state, and the pins used."""

    emulator: Sx127xEmulator
    gpio: FakeGpio
    dio0_pin: int
    reset_pin: int


_REPLACED: Final = ("RPi", "RPi.GPIO", "spidev")


@contextlib.contextmanager
def install_fake_rpi(
    emulator: Sx127xEmulator, *, bus: int = 0, cs: int = 0, dio0_pin: int = 4, reset_pin: int = 22
) -> Iterator[FakeBoard]:
    """Put fake ``RPi.GPIO`` and ``spidev`` in ``sys.modules`` with ``emulator`` on ``spi<bus>.<cs>``.

    pyLoRa (package ``SX127x``) is dropped from ``sys.modules`` on entry and exit, so it
    is imported afresh against these fakes (it opens the SPI device at import time).
    """
    gpio = FakeGpio()
    level = {"reset": 1}

    def on_output(pin: int, value: int) -> None:
        if pin == reset_pin:
            if level["reset"] == 0 and value == 1:
                emulator.reset()
            level["reset"] = value

    gpio.on_output = on_output
    emulator.wiring.dio0 = lambda: gpio.rising(dio0_pin)
    rpi = types.ModuleType("RPi")
    gpio_module = gpio.module()
    rpi.GPIO = gpio_module  # type: ignore[attr-defined]
    saved = {name: sys.modules.get(name) for name in _REPLACED}
    _forget_pylora()
    sys.modules.update({"RPi": rpi, "RPi.GPIO": gpio_module, "spidev": _spidev_module({(bus, cs): emulator})})
    gpio.start()
    try:
        yield FakeBoard(emulator, gpio, dio0_pin, reset_pin)
    finally:
        gpio.stop()
        emulator.wiring.dio0 = lambda: None
        _forget_pylora()
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _forget_pylora() -> None:
    for name in [n for n in sys.modules if n == "SX127x" or n.startswith("SX127x.")]:
        del sys.modules[name]
