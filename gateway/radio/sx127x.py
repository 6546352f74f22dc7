"""Radio backend for one Semtech SX1276/77/78/79 on the Pi's SPI bus, driven by pyLoRa.

Owns a single-channel LoRa receiver/transmitter: the chip's set-up for one
frequency and spreading factor, continuous RX with the DIO0 interrupt, reading each
packet (payload, RSSI, SNR, CRC status) out of the FIFO, and downlinks (TX, then
back to continuous RX). ``sx127x://spi0.0?freq_hz=868100000&sf=7&bw_hz=125000``.

It does not own the register map (pyLoRa, package ``SX127x``, does; its own code runs
in the tests against ``simulator.sx127x_emulator``) and never parses LoRaWAN.

Threads: pyLoRa is blocking and calls us back from RPi.GPIO's event thread. Every SPI
access holds ``_spi_lock``; a received packet crosses to the event loop only through
``loop.call_soon_threadsafe``; a transmission runs in ``asyncio.to_thread``.

Limits of a single-channel gateway, said plainly: it hears one frequency and one SF
(a LoRaWAN device hopping over 3-8 channels is heard on a fraction of its uplinks);
it is deaf while it transmits; ``concentrator_tmst_us`` is this process's monotonic
microsecond clock taken at the RxDone interrupt (the end of the packet, like a
concentrator's ``tmst`` in PROTOCOL.TXT §4 counts), so class A timing is as good as
Linux scheduling (a few ms), fine for RX windows at SF7-SF12 in practice.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import SplitResult

from gateway.errors import ConfigError
from gateway.messages import RadioFrame, RxInfo, TxRequest, TxResult, TxStatus
from gateway.radio.airtime import LoraParams, coding_rate_index
from gateway.radio.base import COMMON_URL_OPTIONS, RadioBackend, non_negative_float, url_options

_log = logging.getLogger(__name__)

BACKEND_NAME: Final = "sx127x"
INSTALL_HINT: Final = "pip install edgegw[sx127x]"
_KEY_PATH: Final = "radio.url"
_SPI = re.compile(r"spi(\d)\.(\d)")

# RegModemConfig1 Bw field (datasheet table 41 / pyLoRa constants.BW).
_BW_CODE: Final[dict[int, int]] = {125_000: 7, 250_000: 8, 500_000: 9}
SX1276_VERSION: Final = 0x12  # RegVersion (0x42) of SX1276/77/78/79
REG_PKT_SNR_VALUE: Final = 0x19
REG_PKT_RSSI_VALUE: Final = 0x1A
REG_INVERT_IQ2: Final = 0x3B
# LoRaWAN public-network sync word (LoRaWAN Regional Parameters; 0x12 is for private networks).
LORAWAN_SYNC_WORD: Final = 0x34
# PA_BOOST output (RFM95, Ra-02, Dragino HATs): Pout = 17 - (15 - OutputPower) dBm, 2..17 dBm
# without the +20 dBm PA_DAC mode (datasheet §5.4.3, RegPaConfig).
PA_BOOST_MIN_DBM: Final = 2
PA_BOOST_MAX_DBM: Final = 17
# A scheduled downlink must leave time to load the FIFO; and nothing is scheduled further
# ahead than a join-accept's RX2 (6 s) plus margin.
MIN_LEAD_S: Final = 0.003
MAX_LEAD_S: Final = 10.0


def tmst_us() -> int:
    """This backend's 32-bit microsecond counter (what ``concentrator_tmst_us`` means here)."""
    return (time.monotonic_ns() // 1000) & 0xFFFFFFFF


def snr_from_register(value: int) -> float:
    """RegPktSnrValue: SNR·4 in two's complement (datasheet §6.4, 0x19).

    pyLoRa's ``get_pkt_snr_value`` returns (256 - v)/4, which is wrong for positive SNR,
    so we read the register ourselves.
    """
    return (value - 256 if value >= 128 else value) / 4.0


def rssi_from_register(value: int, snr_db: float, *, high_band: bool = True) -> float:
    """Packet RSSI in dBm from RegPktRssiValue (datasheet §5.5.5).

    -157 + PacketRssi on the HF port (862-1020 MHz; -164 on the LF port), plus SNR·0.25
    when the SNR is negative (the packet is below the noise floor).
    """
    rssi = (-157.0 if high_band else -164.0) + value
    return rssi + snr_db * 0.25 if snr_db < 0 else rssi


def _import_pylora() -> tuple[Any, Any, Any]:
    """(GPIO module, SX127x.LoRa module, SX127x.constants) or a ConfigError naming the extra."""
    try:
        gpio = importlib.import_module("RPi.GPIO")
        importlib.import_module("spidev")
        lora = importlib.import_module("SX127x.LoRa")
        constants = importlib.import_module("SX127x.constants")
    except ImportError as exc:
        raise ConfigError(
            f"the sx127x radio backend needs pyLoRa, RPi.GPIO and spidev ({INSTALL_HINT}): {exc}",
            key_path=_KEY_PATH,
        ) from exc
    except RuntimeError as exc:  # RPi.GPIO on something that is not a Raspberry Pi
        raise ConfigError(
            f"the sx127x radio backend cannot use the GPIOs: {exc}", key_path=_KEY_PATH
        ) from exc
    except OSError as exc:  # pyLoRa opens /dev/spidev0.0 while being imported
        raise ConfigError(
            f"cannot open the SPI device ({exc}); enable SPI with 'raspi-config nonint do_spi 0'",
            key_path=_KEY_PATH,
        ) from exc
    return gpio, lora, constants


class Sx127xBackend(RadioBackend):
    """One SX127x on ``spi<bus>.<cs>`` listening on ``freq_hz`` at ``sf``/``bw_hz``.

    Extra counters: ``irq`` (DIO0 edges), ``spurious_irq`` (edge without a flag),
    ``tx_timeout`` (no TxDone). Bad reads of the FIFO are ``bad_datagram.<reason>``.
    """

    def __init__(
        self,
        *,
        spi_bus: int = 0,
        spi_cs: int = 0,
        freq_hz: int = 868_100_000,
        sf: int = 7,
        bw_hz: int = 125_000,
        coding_rate: str = "4/5",
        sync_word: int = LORAWAN_SYNC_WORD,
        dio0_pin: int = 4,
        reset_pin: int = 22,
        power_dbm: float = 14.0,
        queue_size: int = 10000,
        ring_size: int = 64,
        **options: Any,
    ) -> None:
        super().__init__(BACKEND_NAME, queue_size=queue_size, ring_size=ring_size, **options)
        if bw_hz not in _BW_CODE:
            raise ConfigError(f"bw_hz must be one of {sorted(_BW_CODE)}, got {bw_hz}", key_path=_KEY_PATH)
        if sf not in range(7, 13):
            raise ConfigError(f"sf must be 7..12 for LoRaWAN, got {sf}", key_path=_KEY_PATH)
        try:
            coding_rate_index(coding_rate)
        except ValueError as exc:
            raise ConfigError(str(exc), key_path=_KEY_PATH) from exc
        self.spi_bus, self.spi_cs = spi_bus, spi_cs
        self.freq_hz, self.sf, self.bw_hz, self.coding_rate = freq_hz, sf, bw_hz, coding_rate
        self.sync_word, self.dio0_pin, self.reset_pin, self.power_dbm = (
            sync_word,
            dio0_pin,
            reset_pin,
            power_dbm,
        )
        self._spi_lock = threading.Lock()
        self._tx_finished = threading.Event()
        self._tx_lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._radio: Any = None
        self._gpio: Any = None
        self._mode: Any = None

    @classmethod
    def from_url(cls, url: SplitResult) -> Sx127xBackend:
        """``sx127x://spi0.0?freq_hz=868100000&sf=7&bw_hz=125000&cr=4/5&dio0=4&reset=22&...``."""
        match = _SPI.fullmatch(url.netloc)
        if match is None or url.path not in ("", "/"):
            raise ConfigError(f"{url.geturl()!r}: expected sx127x://spi<bus>.<cs>?...", key_path=_KEY_PATH)
        spec: dict[str, Callable[[str], Any]] = {
            **COMMON_URL_OPTIONS,
            "freq_hz": int,
            "sf": int,
            "bw_hz": int,
            "cr": str,
            "sync_word": lambda text: int(text, 0),
            "dio0": int,
            "reset": int,
            "power_dbm": non_negative_float,
        }
        options = url_options(url, spec)
        renames = {"cr": "coding_rate", "dio0": "dio0_pin", "reset": "reset_pin"}
        kwargs = {renames.get(key, key): value for key, value in options.items()}
        return cls(spi_bus=int(match[1]), spi_cs=int(match[2]), **kwargs)

    # ---------------------------------------------------------------- life cycle

    async def start(self) -> None:
        if self._radio is not None:
            raise RuntimeError(f"{self.name} backend already started")
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._open)
        _log.info(
            "%s: listening on spi%d.%d, %d Hz SF%d BW%d",
            self.name,
            self.spi_bus,
            self.spi_cs,
            self.freq_hz,
            self.sf,
            self.bw_hz // 1000,
        )

    async def stop(self) -> None:
        if self._radio is None:
            return
        await asyncio.to_thread(self._close)
        _log.info("%s: stopped", self.name)

    def _open(self) -> None:
        gpio, lora_module, constants = _import_pylora()
        board = lora_module.BOARD
        backend = self

        class _Radio(lora_module.LoRa):  # type: ignore[misc,name-defined]  # pyLoRa is untyped
            """pyLoRa's LoRa with its callbacks pointed at this backend (GPIO event thread)."""

            def on_rx_done(self) -> None:
                backend._irq_rx_done()

            def on_tx_done(self) -> None:
                backend._irq_tx_done()

        # Pins per board: pyLoRa reads them from BOARD when it registers the edge callbacks.
        board.DIO0, board.RST = self.dio0_pin, self.reset_pin
        gpio.setwarnings(False)
        gpio.setmode(gpio.BCM)
        gpio.setup(self.reset_pin, gpio.OUT)
        gpio.output(self.reset_pin, 1)
        for pin in (board.DIO0, board.DIO1, board.DIO2, board.DIO3):
            gpio.setup(pin, gpio.IN, pull_up_down=gpio.PUD_DOWN)
        board.reset()  # NRESET low 10 ms, then 10 ms to wake (datasheet §7.2.2)
        # pyLoRa opened spi0.0 at import; talk to the chip select the URL names.
        spi = importlib.import_module("spidev").SpiDev()
        spi.open(self.spi_bus, self.spi_cs)
        spi.max_speed_hz = 5_000_000
        _Radio.spi = spi
        self._gpio, self._mode = gpio, constants.MODE
        try:
            with self._spi_lock:
                radio = _Radio(verbose=False)
                version = radio.get_version()
                if version != SX1276_VERSION:
                    raise ConfigError(
                        f"no SX1276 answers on spi{self.spi_bus}.{self.spi_cs} (RegVersion 0x{version:02x}, "
                        f"expected 0x{SX1276_VERSION:02x}): check wiring and the spiN.M in radio.url",
                        key_path=_KEY_PATH,
                    )
                self._radio = radio
                self._enter_rx()
        except BaseException:
            for pin in (board.DIO0, board.DIO1, board.DIO2, board.DIO3):
                gpio.remove_event_detect(pin)
            spi.close()
            self._radio = None
            raise

    def _close(self) -> None:
        radio, mode = self._radio, self._mode
        with self._spi_lock:
            radio.set_mode(mode.SLEEP)
            # pyLoRa's __del__ puts the chip to sleep through the SPI we are about to close;
            # with its cached mode already SLEEP it returns without touching it.
            radio.mode = mode.SLEEP
            board = importlib.import_module("SX127x.board_config").BOARD
            for pin in (board.DIO0, board.DIO1, board.DIO2, board.DIO3):
                self._gpio.remove_event_detect(pin)
            radio.spi.close()
            self._radio = None

    # ---------------------------------------------------------------- chip set-up (hold _spi_lock)

    def _configure(self, *, freq_hz: int, sf: int, bw_hz: int, coding_rate: str, downlink: bool) -> None:
        radio, mode = self._radio, self._mode
        radio.set_mode(mode.SLEEP)
        radio.set_mode(mode.STDBY)
        radio.set_freq(freq_hz / 1_000_000)
        radio.set_spreading_factor(sf)
        radio.set_bw(_BW_CODE[bw_hz])
        radio.set_coding_rate(coding_rate_index(coding_rate))
        radio.set_implicit_header_mode(0)
        radio.set_preamble(8)
        radio.set_sync_word(self.sync_word)
        ldro = LoraParams(sf=sf, bw_hz=bw_hz, coding_rate=coding_rate).low_data_rate_optimize
        radio.set_low_data_rate_optim(1 if ldro else 0)
        # Uplinks: normal IQ, CRC on. Downlinks: inverted IQ, no CRC (LoRaWAN 1.0.4 §4.1).
        # RegInvertIQ2 (0x3B) must follow RegInvertIQ: 0x19 inverted, 0x1D normal (SX1276
        # datasheet rev. 7, table of LoRa registers; Semtech's LoRaMac-node sx1276.c does the same).
        radio.set_invert_iq(1 if downlink else 0)
        radio.set_register(REG_INVERT_IQ2, 0x19 if downlink else 0x1D)
        radio.set_rx_crc(0 if downlink else 1)

    def _enter_rx(self) -> None:
        radio, mode = self._radio, self._mode
        self._configure(
            freq_hz=self.freq_hz, sf=self.sf, bw_hz=self.bw_hz, coding_rate=self.coding_rate, downlink=False
        )
        radio.set_max_payload_length(255)
        radio.set_dio_mapping([0, 0, 0, 0, 0, 0])  # DIO0 = RxDone
        radio.clear_irq_flags(RxDone=1, PayloadCrcError=1, ValidHeader=1, TxDone=1, RxTimeout=1)
        radio.reset_ptr_rx()
        radio.set_mode(mode.RXCONT)

    # ---------------------------------------------------------------- receive (GPIO event thread)

    def _irq_rx_done(self) -> None:
        stamp_us = tmst_us()
        received_at_s, received_mono_s = time.time(), time.monotonic()
        with self._spi_lock:
            radio = self._radio
            if radio is None:
                return
            flags = radio.get_irq_flags()
            radio.clear_irq_flags(RxDone=1, PayloadCrcError=1, ValidHeader=1)
            if not flags["rx_done"]:
                self._to_loop(self._count, "spurious_irq")
                return
            nb_bytes = radio.get_rx_nb_bytes()
            payload = bytes(radio.read_payload(nocheck=True))
            snr_db = snr_from_register(radio.get_register(REG_PKT_SNR_VALUE))
            rssi_dbm = rssi_from_register(radio.get_register(REG_PKT_RSSI_VALUE), snr_db)
            crc_in_header = bool(radio.get_hop_channel()["crc_on_payload"])
        rx = RxInfo(
            freq_hz=self.freq_hz,
            rssi_dbm=rssi_dbm,
            snr_db=snr_db,
            sf=self.sf,
            bw_hz=self.bw_hz,
            coding_rate=self.coding_rate,
            crc_ok=bool(crc_in_header and not flags["crc_error"]),
            backend=self.name,
            concentrator_tmst_us=stamp_us,
        )
        frame = RadioFrame(payload, rx, received_at_s, received_mono_s)
        if nb_bytes == 0 or len(payload) != nb_bytes:
            self._to_loop(self._reject, "empty_fifo", f"RxDone with RegRxNbBytes={nb_bytes}")
        elif flags["crc_error"]:
            self._to_loop(self._drop, frame, "crc_error")
        elif not crc_in_header:
            self._to_loop(self._drop, frame, "no_crc")  # LoRaWAN uplinks always carry a CRC
        else:
            self._to_loop(self._deliver, frame)

    def _count(self, key: str) -> None:
        self.counters[key] += 1

    def _to_loop(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._count, "irq")
        loop.call_soon_threadsafe(fn, *args)

    def _irq_tx_done(self) -> None:
        with self._spi_lock:
            radio = self._radio
            if radio is None:
                return
            flags = radio.get_irq_flags()
            if not flags["tx_done"]:
                # An RxDone edge that raced with the switch to TX: not ours to take.
                self._to_loop(self._count, "spurious_irq")
                return
            radio.clear_irq_flags(TxDone=1)
        self._tx_finished.set()

    # ---------------------------------------------------------------- transmit

    async def _transmit(self, request: TxRequest, airtime_s: float) -> TxResult:
        if self._radio is None:
            return TxResult(TxStatus.FAILED, "the backend is not started")
        if request.send_at_tmst_us is None and request.send_at_gps_ms is not None:
            return TxResult(TxStatus.GPS_UNLOCKED, "a single-channel SX127x has no GPS time")
        if request.bw_hz not in _BW_CODE:
            return TxResult(TxStatus.FAILED, f"bandwidth {request.bw_hz} Hz not supported")
        async with self._tx_lock:
            if request.send_at_tmst_us is not None:
                # Signed distance on the wrapping 32-bit counter.
                delta_us = (request.send_at_tmst_us - tmst_us() + (1 << 31)) % (1 << 32) - (1 << 31)
                if delta_us < MIN_LEAD_S * 1e6:
                    return TxResult(TxStatus.TOO_LATE, f"{-delta_us / 1000:.1f} ms past the send time")
                if delta_us > MAX_LEAD_S * 1e6:
                    return TxResult(TxStatus.TOO_EARLY, f"{delta_us / 1e6:.1f} s ahead")
                await asyncio.sleep(max(delta_us / 1e6 - MIN_LEAD_S, 0.0))
            return await asyncio.to_thread(self._tx_blocking, request, airtime_s)

    def _tx_blocking(self, request: TxRequest, airtime_s: float) -> TxResult:
        """Configure the chip (woken MIN_LEAD_S early for that), then start TX at the send time."""
        power = min(max(round(request.power_dbm), PA_BOOST_MIN_DBM), PA_BOOST_MAX_DBM)
        with self._spi_lock:
            radio, mode = self._radio, self._mode
            if radio is None:
                return TxResult(TxStatus.FAILED, "the backend stopped")
            self._configure(
                freq_hz=request.freq_hz,
                sf=request.sf,
                bw_hz=request.bw_hz,
                coding_rate=request.coding_rate,
                downlink=request.invert_polarity,
            )
            radio.set_pa_config(pa_select=1, max_power=7, output_power=power - 2)
            radio.set_dio_mapping([1, 0, 0, 0, 0, 0])  # DIO0 = TxDone
            radio.clear_irq_flags(TxDone=1)
            radio.write_payload(list(request.phy_payload))
            self._tx_finished.clear()
            if request.send_at_tmst_us is not None:
                # The device opens its window at that microsecond: not before it (the lead above
                # was for the SPI work), at most a scheduling slice after.
                left_us = (request.send_at_tmst_us - tmst_us() + (1 << 31)) % (1 << 32) - (1 << 31)
                if left_us > 0:
                    time.sleep(left_us / 1e6)
            radio.set_mode(mode.TX)
        done = self._tx_finished.wait(timeout=airtime_s * 2 + 1.0)
        with self._spi_lock:
            if self._radio is None:
                return TxResult(TxStatus.FAILED, "the backend stopped")
            self._enter_rx()
        if not done:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._count, "tx_timeout")
            return TxResult(TxStatus.FAILED, "no TxDone interrupt from the SX127x")
        detail = "sent" if power == round(request.power_dbm) else f"sent at {power} dBm (module maximum)"
        return TxResult(TxStatus.SENT, detail)
