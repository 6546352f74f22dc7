"""Radio backend for a RAK RUI3 modem in LoRa P2P mode on a serial port (pyserial).

``serial:///dev/ttyUSB0?baud=115200&freq_hz=868100000&sf=7&bw_hz=125000``.

Owns the port: opening it, a reader thread that hands bytes to the event loop with
``call_soon_threadsafe``, configuring the modem for continuous receive, one AT command
at a time with its status line, reconnecting with exponential backoff when the port
disappears (USB unplug) and configuring again after a modem reset (boot banner). It
does not own the line format (``protocol.py``, pure) and never parses LoRaWAN.

Like any one-channel receiver it hears one frequency/SF and is deaf while sending.
``concentrator_tmst_us`` is this process's monotonic microsecond clock when the
``+EVT:RXP2P`` line arrived (a few ms after the packet's end at 115200 baud), and a
timed downlink is sent when that clock says so: the AT round trips make class A
timing approximate (tens of ms); RX2 at SF9-SF12 tolerates it better than RX1 at SF7.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import SplitResult

import serial

from gateway.errors import ConfigError, RadioError
from gateway.messages import RadioFrame, RxInfo, TxRequest, TxResult, TxStatus
from gateway.radio.airtime import coding_rate_index
from gateway.radio.base import COMMON_URL_OPTIONS, RadioBackend, non_negative_float, url_options
from gateway.radio.serial_modem import protocol
from gateway.radio.serial_modem.protocol import Boot, Garbage, Info, LineParser, RxPacket, Status, TxDone

_log = logging.getLogger(__name__)

BACKEND_NAME: Final = "serial"
_KEY_PATH: Final = "radio.url"
COMMAND_TIMEOUT_S: Final = 2.0
FIRST_CONNECT_WAIT_S: Final = 5.0
RECONNECT_MIN_S: Final = 0.1
MODEM_MAX_POWER_DBM: Final = 22
"""The most a RAK RUI3 module (STM32WL) transmits; a higher request is sent at this."""
# RUI3 SX126x sync word for public LoRaWAN networks (0x34 on SX127x = 0x3444 on SX126x).
LORAWAN_SYNC_WORD: Final = "3444"


def tmst_us() -> int:
    return (time.monotonic_ns() // 1000) & 0xFFFFFFFF


class ModemError(RadioError):
    """A command got no OK (status line in ``code``, or ``timeout`` / ``disconnected``).

    Never leaves the backend: the supervisor reconnects, a transmit answers ``TxStatus.FAILED``.
    """

    def __init__(self, command: bytes, code: str) -> None:
        super().__init__(f"{command.decode('ascii', 'replace').strip()} -> {code}")
        self.code = code


class SerialModemBackend(RadioBackend):
    """A RUI3 P2P modem on ``port`` (a device path or any pyserial URL such as ``loop://``).

    Extra counters: ``connects``, ``disconnects``, ``modem_reset``, ``command_error``,
    ``lines`` and ``bad_datagram.<reason>`` for lines that do not parse.
    """

    def __init__(
        self,
        port: str,
        *,
        baud: int = 115200,
        freq_hz: int = 868_100_000,
        sf: int = 7,
        bw_hz: int = 125_000,
        coding_rate: str = "4/5",
        power_dbm: int = 14,
        sync_word: str = LORAWAN_SYNC_WORD,
        reconnect_max_s: float = 30.0,
        queue_size: int = 10000,
        ring_size: int = 64,
        **options: Any,
    ) -> None:
        super().__init__(BACKEND_NAME, queue_size=queue_size, ring_size=ring_size, **options)
        try:
            self._rx_config = protocol.p2p_config(
                freq_hz=freq_hz,
                sf=sf,
                bw_hz=bw_hz,
                cr_index=coding_rate_index(coding_rate),
                preamble=8,
                power_dbm=power_dbm,
            )
        except ValueError as exc:
            raise ConfigError(str(exc), key_path=_KEY_PATH) from exc
        self.port, self.baud = port, baud
        self.freq_hz, self.sf, self.bw_hz, self.coding_rate = freq_hz, sf, bw_hz, coding_rate
        self.power_dbm, self.sync_word, self.reconnect_max_s = power_dbm, sync_word, reconnect_max_s
        self._parser = LineParser()
        self._serial: Any = None
        self._reader: threading.Thread | None = None
        self._stop_reader = threading.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._command_lock = asyncio.Lock()
        self._status: asyncio.Future[str] | None = None
        self._tx_done: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reconfigure: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: SplitResult) -> SerialModemBackend:
        """``serial:///dev/ttyUSB0?baud=115200&freq_hz=...&sf=...&bw_hz=...&cr=4/5&power_dbm=14``.

        ``serial://loop`` opens pyserial's ``loop://`` (for tests).
        """
        if url.netloc == "loop":
            port = "loop://"
        elif url.netloc or not url.path.startswith("/"):
            raise ConfigError(f"{url.geturl()!r}: expected serial:///dev/<tty>?...", key_path=_KEY_PATH)
        else:
            port = url.path
        spec: dict[str, Callable[[str], Any]] = {
            **COMMON_URL_OPTIONS,
            "baud": int,
            "freq_hz": int,
            "sf": int,
            "bw_hz": int,
            "cr": str,
            "power_dbm": int,
            "sync_word": str,
            "reconnect_max_s": non_negative_float,
        }
        options = url_options(url, spec)
        if "cr" in options:
            options["coding_rate"] = options.pop("cr")
        return cls(port, **options)

    # ---------------------------------------------------------------- life cycle

    async def start(self) -> None:
        if self._supervisor is not None:
            raise RuntimeError(f"{self.name} backend already started")
        self._loop = asyncio.get_running_loop()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"{self.name}-supervisor")
        try:
            await asyncio.wait_for(self._connected.wait(), FIRST_CONNECT_WAIT_S)
        except TimeoutError:
            # A USB modem may enumerate after the agent starts: keep trying in the background.
            _log.warning("%s: %s not ready yet, retrying in the background", self.name, self.port)

    async def stop(self) -> None:
        task, self._supervisor = self._supervisor, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self._reconfigure is not None:
            self._reconfigure.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconfigure
        await asyncio.to_thread(self._close_port)
        _log.info("%s: stopped", self.name)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def _supervise(self) -> None:
        backoff_s = RECONNECT_MIN_S
        while True:
            try:
                await asyncio.to_thread(self._open_port)
                self.counters["connects"] += 1
                await self._configure()
            except (OSError, serial.SerialException, ModemError) as exc:
                self._log_once("connect", "%s: cannot use modem on %s: %s", self.name, self.port, exc)
                await asyncio.to_thread(self._close_port)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, max(self.reconnect_max_s, RECONNECT_MIN_S))
                continue
            _log.info("%s: modem on %s receiving on %d Hz SF%d", self.name, self.port, self.freq_hz, self.sf)
            backoff_s = RECONNECT_MIN_S
            self._connected.set()
            await self._lost.wait()
            self._connected.clear()
            self.counters["disconnects"] += 1
            _log.warning("%s: modem on %s disconnected, reconnecting", self.name, self.port)
            await asyncio.to_thread(self._close_port)

    def _open_port(self) -> None:
        self._lost.clear()
        self._parser = LineParser()
        port = serial.serial_for_url(
            self.port, baudrate=self.baud, timeout=0.05, write_timeout=COMMAND_TIMEOUT_S
        )
        self._serial = port
        self._stop_reader.clear()
        self._reader = threading.Thread(
            target=self._read_loop, args=(port,), name="serial-modem", daemon=True
        )
        self._reader.start()

    def _close_port(self) -> None:
        self._stop_reader.set()
        reader, self._reader = self._reader, None
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=2)
        port, self._serial = self._serial, None
        if port is not None:
            with contextlib.suppress(OSError, serial.SerialException):
                port.close()

    def _read_loop(self, port: Any) -> None:
        """Reader thread: bytes → loop; any error of the port means it is gone."""
        loop = self._loop
        assert loop is not None
        while not self._stop_reader.is_set():
            try:
                data = port.read(max(1, port.in_waiting))
            except (OSError, serial.SerialException, TypeError, AttributeError) as exc:
                # pyserial raises SerialException on an unplugged tty ("returned no data"),
                # TypeError/AttributeError when the port object was closed under it.
                if not self._stop_reader.is_set():
                    loop.call_soon_threadsafe(self._on_lost, exc)
                return
            if data:
                loop.call_soon_threadsafe(self._on_bytes, data, tmst_us(), time.time(), time.monotonic())

    # ---------------------------------------------------------------- events (loop)

    def _on_lost(self, exc: BaseException) -> None:
        _log.debug("%s: port error: %s", self.name, exc)
        for future in (self._status, self._tx_done):
            if future is not None and not future.done():
                future.set_exception(ModemError(b"", "disconnected"))
        self._lost.set()

    def _on_bytes(self, data: bytes, stamp_us: int, at_s: float, mono_s: float) -> None:
        for event in self._parser.feed(data):
            self.counters["lines"] += 1
            if isinstance(event, RxPacket):
                self._on_packet(event, stamp_us, at_s, mono_s)
            elif isinstance(event, Status):
                if self._status is not None and not self._status.done():
                    self._status.set_result(event.code)
            elif isinstance(event, TxDone):
                if self._tx_done is not None and not self._tx_done.done():
                    self._tx_done.set_result(None)
            elif isinstance(event, Boot):
                self._on_boot(event)
            elif isinstance(event, Garbage):
                self._reject(event.reason, f"line {event.line!r}")
            elif isinstance(event, Info):
                _log.debug("%s: %s", self.name, event.line)

    def _on_packet(self, packet: RxPacket, stamp_us: int, at_s: float, mono_s: float) -> None:
        if not packet.payload:
            self._reject("empty_payload", "+EVT:RXP2P without payload")
            return
        rx = RxInfo(
            freq_hz=self.freq_hz,
            rssi_dbm=packet.rssi_dbm,
            snr_db=packet.snr_db,
            sf=self.sf,
            bw_hz=self.bw_hz,
            coding_rate=self.coding_rate,
            crc_ok=True,  # RUI3 reports only packets that passed the CRC
            backend=self.name,
            concentrator_tmst_us=stamp_us,
        )
        self._deliver(RadioFrame(packet.payload, rx, at_s, mono_s))

    def _on_boot(self, event: Boot) -> None:
        self.counters["modem_reset"] += 1
        if not self._connected.is_set():
            return  # we are configuring it anyway
        self._log_once("modem_reset", "%s: modem restarted (%s), configuring it again", self.name, event.line)
        if self._reconfigure is None or self._reconfigure.done():
            self._reconfigure = asyncio.get_running_loop().create_task(self._configure_or_reconnect())

    async def _configure_or_reconnect(self) -> None:
        try:
            await self._configure()
        except ModemError as exc:
            _log.warning("%s: reconfiguring after a reset failed (%s): reconnecting", self.name, exc)
            self._lost.set()

    # ---------------------------------------------------------------- commands

    async def _command(self, line: bytes, timeout_s: float = COMMAND_TIMEOUT_S) -> None:
        """Send one command and wait for its status line; ModemError unless OK."""
        port = self._serial
        if port is None:
            raise ModemError(line, "disconnected")
        loop = asyncio.get_running_loop()
        self._status = loop.create_future()
        try:
            await asyncio.to_thread(port.write, line)
        except (OSError, serial.SerialException) as exc:
            raise ModemError(line, "disconnected") from exc
        try:
            code = await asyncio.wait_for(self._status, timeout_s)
        except TimeoutError as exc:
            raise ModemError(line, "timeout") from exc
        finally:
            self._status = None
        if code != "OK":
            self.counters["command_error"] += 1
            raise ModemError(line, code)

    async def _configure(self) -> None:
        async with self._command_lock:
            await self._command(protocol.command("AT+NWM=0"))
            await self._command(protocol.receive(protocol.RECEIVE_OFF))
            await self._command(protocol.command(f"AT+SYNCWORD={self.sync_word}"))
            await self._command(self._rx_config)
            await self._command(protocol.command("AT+IQINVER=0"))
            await self._command(protocol.receive(protocol.RECEIVE_CONTINUOUS))

    # ---------------------------------------------------------------- transmit

    async def _transmit(self, request: TxRequest, airtime_s: float) -> TxResult:
        if not self._connected.is_set():
            return TxResult(TxStatus.NO_ROUTE, f"modem on {self.port} not connected")
        if request.send_at_tmst_us is None and request.send_at_gps_ms is not None:
            return TxResult(TxStatus.GPS_UNLOCKED, "a serial P2P modem has no GPS time")
        try:
            tx_config = protocol.p2p_config(
                freq_hz=request.freq_hz,
                sf=request.sf,
                bw_hz=request.bw_hz,
                cr_index=coding_rate_index(request.coding_rate),
                preamble=8,
                # The RAK RUI3 modules (STM32WL) transmit at most 22 dBm; RX2 and class C ask 27.
                power_dbm=min(round(request.power_dbm), MODEM_MAX_POWER_DBM),
            )
            send = protocol.send(request.phy_payload)
        except ValueError as exc:
            return TxResult(TxStatus.FAILED, f"bad request: {exc}")
        async with self._command_lock:
            try:
                # RUI3 answers AT_BUSY_ERROR to PSEND while receiving: stop RX first.
                await self._command(protocol.receive(protocol.RECEIVE_OFF))
                await self._command(tx_config)
                await self._command(protocol.command(f"AT+IQINVER={int(request.invert_polarity)}"))
                if request.send_at_tmst_us is not None:
                    delta_us = (request.send_at_tmst_us - tmst_us() + (1 << 31)) % (1 << 32) - (1 << 31)
                    if delta_us < 0:
                        return await self._back_to_rx(
                            TxResult(TxStatus.TOO_LATE, f"{-delta_us / 1000:.1f} ms late")
                        )
                    if delta_us > 10_000_000:
                        return await self._back_to_rx(TxResult(TxStatus.TOO_EARLY, f"{delta_us / 1e6:.1f} s"))
                    await asyncio.sleep(delta_us / 1e6)
                self._tx_done = asyncio.get_running_loop().create_future()
                await self._command(send)
                await asyncio.wait_for(self._tx_done, airtime_s * 2 + COMMAND_TIMEOUT_S)
                result = TxResult(TxStatus.SENT, "sent")
            except ModemError as exc:
                result = TxResult(TxStatus.FAILED, str(exc))
            except TimeoutError:
                result = TxResult(TxStatus.FAILED, "no +EVT:TXP2P DONE from the modem")
            finally:
                self._tx_done = None
            return await self._back_to_rx(result)

    async def _back_to_rx(self, result: TxResult) -> TxResult:
        try:
            await self._command(protocol.command("AT+IQINVER=0"))
            await self._command(self._rx_config)
            await self._command(protocol.receive(protocol.RECEIVE_CONTINUOUS))
        except ModemError as exc:
            _log.warning("%s: could not go back to receive (%s): reconnecting", self.name, exc)
            self._lost.set()
        return result
