"""Semtech SX1276/77/78/79 in LoRa mode over SPI: the radio behind ``lorawan.device.Device``.

Owns the chip: reset and version check, sleep/standby, LoRa modem configuration (frequency,
SF, bandwidth, coding rate, preamble, public LoRaWAN sync word 0x34, CRC on for uplinks and
off for downlinks, IQ inverted in receive windows), the PA_BOOST power setting, the FIFO, and
waiting for TxDone / RxDone / RxTimeout (DIO0 edge when wired, RegIrqFlags polled otherwise
and always for RxTimeout, which is on DIO1). Register addresses and bits follow the
SX1276/77/78/79 datasheet rev. 7 §6.4 ("LoRa Mode Register Map"); the IQ settings follow
Semtech's LoRaMac-node reference driver (RegInvertIQ / RegInvertIQ2 values).

It does not own LoRaWAN timing (``lorawan.device`` says when a window opens) nor the pins'
creation (``main`` builds ``machine.SPI`` and ``machine.Pin`` and hands them in), so it also
runs under CPython against a register emulator in the tests.

The interface ``Device`` uses:

* ``transmit(phy, freq_hz, sf, bw_hz, power_dbm) -> tx_end_ms``
* ``receive(freq_hz, sf, bw_hz, open_at_ms, timeout_ms) -> bytes or None`` (class A window:
  RX single with a symbol timeout)
* ``listen(freq_hz, sf, bw_hz, until_ms) -> bytes or None`` (class C: RX continuous until a
  frame arrives or ``until_ms``), ``sleep()`` and ``standby()``.
"""

from lorawan.clock import sleep_ms as _sleep_ms
from lorawan.clock import ticks_add as _ticks_add
from lorawan.clock import ticks_diff as _ticks_diff
from lorawan.clock import ticks_ms as _ticks_ms

REG_FIFO = 0x00
REG_OP_MODE = 0x01
REG_FRF_MSB = 0x06
REG_PA_CONFIG = 0x09
REG_OCP = 0x0B
REG_LNA = 0x0C
REG_FIFO_ADDR_PTR = 0x0D
REG_FIFO_TX_BASE_ADDR = 0x0E
REG_FIFO_RX_BASE_ADDR = 0x0F
REG_FIFO_RX_CURRENT_ADDR = 0x10
REG_IRQ_FLAGS = 0x12
REG_RX_NB_BYTES = 0x13
REG_PKT_SNR_VALUE = 0x19
REG_PKT_RSSI_VALUE = 0x1A
REG_MODEM_CONFIG_1 = 0x1D
REG_MODEM_CONFIG_2 = 0x1E
REG_SYMB_TIMEOUT_LSB = 0x1F
REG_PREAMBLE_MSB = 0x20
REG_PREAMBLE_LSB = 0x21
REG_PAYLOAD_LENGTH = 0x22
REG_MAX_PAYLOAD_LENGTH = 0x23
REG_MODEM_CONFIG_3 = 0x26
REG_INVERT_IQ = 0x33
REG_SYNC_WORD = 0x39
REG_INVERT_IQ_2 = 0x3B
REG_DIO_MAPPING_1 = 0x40
REG_VERSION = 0x42
REG_PA_DAC = 0x4D

LONG_RANGE_MODE = 0x80
MODE_SLEEP = 0x00
MODE_STDBY = 0x01
MODE_TX = 0x03
MODE_RX_CONTINUOUS = 0x05
MODE_RX_SINGLE = 0x06

IRQ_RX_TIMEOUT = 0x80
IRQ_RX_DONE = 0x40
IRQ_PAYLOAD_CRC_ERROR = 0x20
IRQ_VALID_HEADER = 0x10
IRQ_TX_DONE = 0x08

DIO0_RX_DONE = 0x00
DIO0_TX_DONE = 0x40  # RegDioMapping1 bits 7:6 = 01 (datasheet Table 18)

SX1276_VERSION = 0x12
LORAWAN_SYNC_WORD = 0x34  # public networks (LoRaWAN); 0x12 is private
PREAMBLE_SYMBOLS = 8  # LoRaWAN RP002 §2: 8 symbols for LoRa data rates
FXOSC_HZ = 32000000
_BW_CODES = {125000: 7, 250000: 8, 500000: 9}  # RegModemConfig1 Bw (Table 41)
CODING_RATE_4_5 = 1
MIN_SYMB_TIMEOUT = 6  # a LoRaWAN window must see at least ~5 preamble symbols to lock
MAX_SYMB_TIMEOUT = 1023  # 10 bits: RegModemConfig2[1:0] | RegSymbTimeoutLsb
WAKE_MARGIN_MS = 2
"""Open the receiver this much before the window: the crystal start-up and PLL lock (~0.25 ms)."""


class RadioError(OSError):
    """The chip does not answer as an SX1276 (wiring, power, another chip on the bus)."""


def frf(freq_hz):
    """RegFrf for a carrier: Frf = f·2^19 / 32 MHz (§4.1.4), rounded to the nearest 61 Hz step.

    32 MHz / 2^19 = 15625 / 256 Hz, so Frf = f·256 / 15625, split so no term exceeds 31 bits
    (small ints on every port).
    """
    q, r = divmod(freq_hz, 15625)
    return (q << 8) + (((r << 8) + 7812) // 15625)


def symbol_us(sf, bw_hz):
    return (1 << sf) * 1000000 // bw_hz


def symbol_timeout(sf, bw_hz, timeout_ms):
    """Symbols a single-receive waits for a preamble, for a window of ``timeout_ms``."""
    n = -(-timeout_ms * 1000 // symbol_us(sf, bw_hz))
    return max(MIN_SYMB_TIMEOUT, min(MAX_SYMB_TIMEOUT, n))


def max_frame_ms(sf, bw_hz):
    """Airtime of a 255-byte frame (upper bound once a header was detected), rounded up."""
    t = symbol_us(sf, bw_hz)
    de = 1 if t >= 16000 else 0
    n = -(-(8 * 255 - 4 * sf + 28 + 16) // (4 * (sf - 2 * de)))
    return ((4 * PREAMBLE_SYMBOLS + 17) * t // 4 + (8 + 5 * n) * t) // 1000 + 1


class SX127x:
    """One SX1276 on ``spi`` (a ``machine.SPI``) with chip select ``nss`` (a ``machine.Pin`` output).

    ``reset`` (Pin, output) pulses NRESET at start; ``dio0`` (Pin, input) is used through its
    rising-edge IRQ when given. ``ticks_ms``/``sleep_ms`` default to ``time``'s.
    """

    def __init__(self, spi, nss, reset=None, dio0=None, ticks_ms=None, sleep_ms=None):
        self._spi = spi
        self._nss = nss
        self._reset = reset
        self._dio0 = dio0
        self._ticks_ms = ticks_ms or _ticks_ms
        self._sleep_ms = sleep_ms or _sleep_ms
        self._edge = False
        self._listening = None
        self.last_rssi_dbm = None
        self.last_snr_db = None
        self.frames_dropped = 0
        """Frames received with a payload CRC error (not LoRaWAN downlinks, which carry no CRC)."""
        nss.value(1)
        self.init()

    # --- SPI ------------------------------------------------------------------------------

    def _xfer(self, tx):
        rx = bytearray(len(tx))
        self._nss.value(0)
        try:
            self._spi.write_readinto(tx, rx)
        finally:
            self._nss.value(1)
        return rx

    def read(self, address):
        return self._xfer(bytes((address & 0x7F, 0)))[1]

    def write(self, address, value):
        self._xfer(bytes((address | 0x80, value & 0xFF)))

    def read_burst(self, address, n):
        return bytes(self._xfer(bytes((address & 0x7F,)) + bytes(n))[1:])

    def write_burst(self, address, data):
        self._xfer(bytes((address | 0x80,)) + bytes(data))

    # --- modes ----------------------------------------------------------------------------

    def init(self):
        """Reset, check the silicon, enter LoRa mode (only settable in sleep, §6.4 RegOpMode)."""
        if self._reset is not None:
            self._reset.value(0)
            self._sleep_ms(1)  # NRESET low for > 100 µs (§7.2.2)
            self._reset.value(1)
            self._sleep_ms(6)  # then 5 ms before the chip is ready
        version = self.read(REG_VERSION)
        if version != SX1276_VERSION:
            raise RadioError("no SX1276 on the bus: RegVersion reads " + hex(version))
        self.write(REG_OP_MODE, MODE_SLEEP)
        self.write(REG_OP_MODE, LONG_RANGE_MODE | MODE_SLEEP)
        if not self.read(REG_OP_MODE) & LONG_RANGE_MODE:
            raise RadioError("SX1276 did not enter LoRa mode")
        self.standby()
        # One FIFO, used for one direction at a time: both bases at 0, the whole 256 bytes each.
        self.write(REG_FIFO_TX_BASE_ADDR, 0)
        self.write(REG_FIFO_RX_BASE_ADDR, 0)
        self.write(REG_MAX_PAYLOAD_LENGTH, 0xFF)
        self.write(REG_SYNC_WORD, LORAWAN_SYNC_WORD)
        self.write(REG_PREAMBLE_MSB, PREAMBLE_SYMBOLS >> 8)
        self.write(REG_PREAMBLE_LSB, PREAMBLE_SYMBOLS & 0xFF)
        self.write(REG_LNA, self.read(REG_LNA) | 0x03)  # LnaBoostHf: 150 % LNA current (HF port)
        if self._dio0 is not None:
            self._dio0.irq(handler=self._on_dio0, trigger=self._dio0.IRQ_RISING)

    def _on_dio0(self, pin):
        self._edge = True

    def _mode(self, mode):
        self._listening = None
        self.write(REG_OP_MODE, LONG_RANGE_MODE | mode)

    def sleep(self):
        """Sleep mode (0.2 µA typ., datasheet Table 6): registers kept, FIFO lost."""
        self._mode(MODE_SLEEP)

    def standby(self):
        self._mode(MODE_STDBY)

    # --- configuration --------------------------------------------------------------------

    def configure(self, freq_hz, sf, bw_hz, uplink):
        """Frequency, modem and IQ for an uplink (CRC on, normal IQ) or a downlink (no CRC, inverted IQ).

        LoRaWAN 1.0.4 §4 / RP002 §2: uplinks carry a payload CRC, downlinks do not; gateways
        send downlinks with inverted IQ so that devices do not hear each other.
        """
        if not 6 <= sf <= 12:
            raise ValueError("sf out of range")
        bw = _BW_CODES.get(bw_hz)
        if bw is None:
            raise ValueError("bandwidth must be 125, 250 or 500 kHz")
        f = frf(freq_hz)
        self.write_burst(REG_FRF_MSB, bytes(((f >> 16) & 0xFF, (f >> 8) & 0xFF, f & 0xFF)))
        self.write(REG_MODEM_CONFIG_1, (bw << 4) | (CODING_RATE_4_5 << 1))  # explicit header
        cfg2 = self.read(REG_MODEM_CONFIG_2) & 0x03  # keep SymbTimeout(9:8)
        self.write(REG_MODEM_CONFIG_2, (sf << 4) | (0x04 if uplink else 0) | cfg2)
        # LowDataRateOptimize is mandated for symbols >= 16 ms (§4.1.1.6); AgcAutoOn always.
        ldro = 0x08 if symbol_us(sf, bw_hz) >= 16000 else 0
        self.write(REG_MODEM_CONFIG_3, ldro | 0x04)
        inv = self.read(REG_INVERT_IQ) & 0xBE
        if uplink:
            self.write(REG_INVERT_IQ, inv | 0x01)
            self.write(REG_INVERT_IQ_2, 0x1D)
        else:
            self.write(REG_INVERT_IQ, inv | 0x40)
            self.write(REG_INVERT_IQ_2, 0x19)

    def set_power(self, power_dbm):
        """Output power on PA_BOOST (RFM95W wires only PA_BOOST): 2..17 dBm, or 20 dBm with PaDac.

        Pout = 17 - (15 - OutputPower) on PA_BOOST with MaxPower ignored (§5.4.2); +20 dBm needs
        RegPaDac = 0x87 and the over-current trip raised (RegOcp, 240 mA).
        """
        if power_dbm > 17:
            self.write(REG_PA_DAC, 0x87)
            self.write(REG_OCP, 0x20 | 0x1B)  # OcpOn, trim 27 -> Imax = -30 + 10·27 = 240 mA
            self.write(REG_PA_CONFIG, 0x80 | 15)
            return
        power_dbm = max(2, power_dbm)
        self.write(REG_PA_DAC, 0x84)  # default: +17 dBm max
        self.write(REG_OCP, 0x20 | 0x0B)  # OcpOn, trim 11 -> 100 mA (default)
        self.write(REG_PA_CONFIG, 0x80 | (power_dbm - 2))

    # --- waiting --------------------------------------------------------------------------

    def _wait_flags(self, mask, deadline_ms):
        """Wait for any of ``mask`` in RegIrqFlags until ``deadline_ms``; returns the flags (0 on timeout).

        With DIO0 wired the register is read when an edge came, and every 8 ms for flags DIO0
        does not carry (RxTimeout, ValidHeader); without it, every millisecond.
        """
        polls = 0
        while True:
            if self._dio0 is None or self._edge or polls % 8 == 0:
                self._edge = False
                flags = self.read(REG_IRQ_FLAGS)
                if flags & mask:
                    return flags
            if _ticks_diff(deadline_ms, self._ticks_ms()) <= 0:
                return 0
            self._sleep_ms(1)
            polls += 1

    def _clear_irqs(self):
        self.write(REG_IRQ_FLAGS, 0xFF)
        self._edge = False

    def _sleep_until(self, at_ms):
        wait = _ticks_diff(at_ms, self._ticks_ms())
        if wait > 0:
            self._sleep_ms(wait)

    # --- transmit -------------------------------------------------------------------------

    def transmit(self, phy, freq_hz, sf, bw_hz, power_dbm):
        """Send one frame; returns ``ticks_ms`` at TxDone (RX delays count from it, §3.3)."""
        if not 0 < len(phy) <= 255:
            raise ValueError("an SX127x frame holds 1..255 bytes")
        self.standby()
        self.configure(freq_hz, sf, bw_hz, True)
        self.set_power(power_dbm)
        self.write(REG_FIFO_ADDR_PTR, 0)
        self.write_burst(REG_FIFO, phy)
        self.write(REG_PAYLOAD_LENGTH, len(phy))
        self.write(REG_DIO_MAPPING_1, DIO0_TX_DONE)
        self._clear_irqs()
        self._mode(MODE_TX)
        deadline = _ticks_add(self._ticks_ms(), max_frame_ms(sf, bw_hz) + 100)
        flags = self._wait_flags(IRQ_TX_DONE, deadline)
        tx_end = self._ticks_ms()
        self._clear_irqs()
        self.standby()
        if not flags:
            raise RadioError("no TxDone from the SX1276")
        return tx_end

    # --- receive --------------------------------------------------------------------------

    def _read_frame(self, flags):
        self._clear_irqs()
        if flags & IRQ_PAYLOAD_CRC_ERROR:
            self.frames_dropped += 1
            return None
        n = self.read(REG_RX_NB_BYTES)
        self.write(REG_FIFO_ADDR_PTR, self.read(REG_FIFO_RX_CURRENT_ADDR))
        data = self.read_burst(REG_FIFO, n)
        snr = self.read(REG_PKT_SNR_VALUE)
        snr_db = (snr - 256 if snr > 127 else snr) / 4
        # HF port (§5.5.5): RSSI = -157 + PacketRssi, plus PacketSnr·0.25 below the noise floor.
        rssi_dbm = self.read(REG_PKT_RSSI_VALUE) - 157
        if snr_db < 0:
            rssi_dbm += snr_db / 4
        self.last_snr_db = snr_db
        self.last_rssi_dbm = rssi_dbm
        return data

    def receive(self, freq_hz, sf, bw_hz, open_at_ms, timeout_ms):
        """A class A receive window: RX single at ``open_at_ms``, inverted IQ, symbol timeout.

        The chip ends the window itself (RxTimeout after the symbol timeout without a
        preamble, §4.1.6); once a header was seen it stays until RxDone. A software deadline
        bounds both in case an interrupt is missed. Returns the frame or None.
        """
        self.standby()
        self.configure(freq_hz, sf, bw_hz, False)
        symbols = symbol_timeout(sf, bw_hz, timeout_ms)
        cfg2 = self.read(REG_MODEM_CONFIG_2) & 0xFC
        self.write(REG_MODEM_CONFIG_2, cfg2 | (symbols >> 8))
        self.write(REG_SYMB_TIMEOUT_LSB, symbols & 0xFF)
        self.write(REG_FIFO_ADDR_PTR, 0)
        self.write(REG_DIO_MAPPING_1, DIO0_RX_DONE)
        self._clear_irqs()
        self._sleep_until(_ticks_add(open_at_ms, -WAKE_MARGIN_MS))
        self._mode(MODE_RX_SINGLE)
        window_ms = symbols * symbol_us(sf, bw_hz) // 1000 + 2 * WAKE_MARGIN_MS + 10
        deadline = _ticks_add(self._ticks_ms(), window_ms)
        done = IRQ_RX_DONE | IRQ_RX_TIMEOUT
        flags = self._wait_flags(done | IRQ_VALID_HEADER, deadline)
        if flags & IRQ_VALID_HEADER and not flags & done:
            flags = self._wait_flags(done, _ticks_add(self._ticks_ms(), max_frame_ms(sf, bw_hz)))
        frame = self._read_frame(flags) if flags & IRQ_RX_DONE else None
        self._clear_irqs()
        self.standby()
        return frame

    def listen(self, freq_hz, sf, bw_hz, until_ms):
        """Class C: RX continuous (inverted IQ) until a frame arrives or ``until_ms``; the frame or None.

        The receiver stays open between frames in the chip; each call returns at most one.
        """
        settings = (freq_hz, sf, bw_hz)
        if self._listening != settings or self.read(REG_OP_MODE) & 0x07 != MODE_RX_CONTINUOUS:
            self.standby()
            self.configure(freq_hz, sf, bw_hz, False)
            self.write(REG_DIO_MAPPING_1, DIO0_RX_DONE)
            self._clear_irqs()
            self._mode(MODE_RX_CONTINUOUS)
            self._listening = settings
        flags = self._wait_flags(IRQ_RX_DONE, until_ms)
        if not flags & IRQ_RX_DONE:
            return None
        return self._read_frame(flags)
