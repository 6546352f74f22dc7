"""A simulated RAK RUI3 modem in LoRa P2P mode, at the far end of a pseudo-terminal.

Owns the modem's side of the AT dialogue the serial backend speaks (see
``gateway.radio.serial_modem.protocol`` and RAK's "RUI3 AT Command Manual"): status
lines for ``AT+NWM``, ``AT+P2P``, ``AT+SYNCWORD``, ``AT+IQINVER``, ``AT+PRECV`` and
``AT+PSEND`` (``AT_BUSY_ERROR`` when asked to send while receiving, as RUI3 does),
``+EVT:RXP2P:<rssi>:<snr>:<hex>`` for packets heard while in continuous receive, and
``+EVT:TXP2P DONE`` after a send. It also plays the failures a gateway sees in the
field: garbage on the line, a reboot (banner, receive state lost) and a USB unplug
and replug (the pty disappears and a new one appears behind the same path).

The port is a symlink at ``link_path`` pointing to the pty's slave, so the backend
always opens the same name, like a udev ``/dev/serial/by-id/...`` link.

For a scenario run (``simulator.transports.SerialModemTransport``) it also says how many
bytes written to the host are still unread (``unread_bytes``, the FIONREAD of the pty's
slave), whether the host has put it back in continuous receive (``wait_receiving``) and
hands over what the host sent (``take_transmitted``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import struct
import termios
import threading
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path

BANNER = b"\r\nRAKwireless RAK3172-E Example\r\n" + b"-" * 54 + b"\r\nCurrent Work Mode: LoRa P2P.\r\n"


@dataclass
class ModemState:
    nwm: int = 1
    receiving: bool = False
    p2p: str = "868000000:7:125:0:8:14"
    sync_word: str = "1424"
    iq_inverted: bool = False
    transmitted: list[tuple[bytes, str, bool]] = field(default_factory=list)
    """(payload, P2P settings, inverted IQ) of each send."""
    commands: list[str] = field(default_factory=list)


class Rui3ModemSimulator:
    """The modem behind a pty; ``link_path`` is what the backend opens."""

    def __init__(self, link_path: Path) -> None:
        self.link_path = link_path
        self.state = ModemState()
        self._lock = threading.Lock()
        self._master: int | None = None
        self._slave: int | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.last_write_mono_s = 0.0
        self.plug()

    # ------------------------------------------------------------------ USB

    def plug(self) -> None:
        """A (new) USB serial device appears behind ``link_path``."""
        master, slave = os.openpty()
        tty.setraw(slave)
        tty.setraw(master)
        self._master, self._slave = master, slave
        self._stop.clear()
        with contextlib.suppress(FileNotFoundError):
            self.link_path.unlink()
        self.link_path.symlink_to(os.ttyname(slave))
        self._thread = threading.Thread(target=self._serve, args=(master,), name="rui3-sim", daemon=True)
        self._thread.start()

    def unplug(self) -> None:
        """The device vanishes: the pty closes under whoever has it open, the path goes away."""
        # Stop the serving thread first: a close() does not wake a thread blocked in read(),
        # and the pty only hangs up once no one holds the master any more.
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            master, slave = self._master, self._slave
            self._master = self._slave = None
        with contextlib.suppress(FileNotFoundError):
            self.link_path.unlink()
        for fd in (master, slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.state.receiving = False

    def close(self) -> None:
        self.unplug()

    # ------------------------------------------------------------------ the air and the wire

    def hear(self, payload: bytes, *, rssi_dbm: int = -70, snr_db: int = 9) -> bool:
        """A packet on the air: reported only while in continuous receive."""
        if not self.state.receiving:
            return False
        self.write(f"+EVT:RXP2P:{rssi_dbm}:{snr_db}:{payload.hex().upper()}\r\n".encode())
        return True

    def reboot(self) -> None:
        """The module resets (brown-out, watchdog): banner, receive mode forgotten."""
        self.state.receiving = False
        self.state.iq_inverted = False
        self.write(BANNER)

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._master is not None:
                os.write(self._master, data)
                self.last_write_mono_s = time.monotonic()

    def unread_bytes(self) -> int:
        """Bytes written to the host that it has not read yet (FIONREAD on the pty's slave side).

        Linux moves what the master writes into the slave's input queue from a work queue, a
        few microseconds later (measured: at most 47 us in 2,000 writes): right after a write
        this can still say 0. Callers wait a moment after ``last_write_mono_s`` before trusting a 0.
        """
        with self._lock:
            slave = self._slave
            if slave is None:
                return 0
            raw = fcntl.ioctl(slave, termios.FIONREAD, b"\0\0\0\0")
        count: int = struct.unpack("i", raw)[0]
        return count

    def wait_receiving(self, timeout_s: float) -> bool:
        """True once the host has the modem in continuous receive (it may be sending a downlink)."""
        deadline = time.monotonic() + timeout_s
        while not self.state.receiving:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    def take_transmitted(self) -> list[tuple[bytes, str, bool]]:
        """What the host sent with AT+PSEND since the last call (payload, P2P settings, inverted IQ)."""
        sent = self.state.transmitted
        taken = sent[: len(sent)]
        del sent[: len(taken)]
        return taken

    # ------------------------------------------------------------------ commands

    def _serve(self, master: int) -> None:
        buffer = b""
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([master], [], [], 0.05)
                if not ready:
                    continue
                chunk = os.read(master, 4096)
            except OSError:
                return  # unplugged (EIO / EBADF)
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, _, buffer = buffer.partition(b"\n")
                text = line.strip(b"\r ").decode("ascii", "replace")
                if text:
                    self._answer(text)

    def _answer(self, text: str) -> None:
        state = self.state
        state.commands.append(text)
        name, _, value = text.partition("=")
        status = "OK"
        after = b""
        if name == "AT+NWM":
            state.nwm = int(value) if value.isdigit() else state.nwm
        elif name == "AT+PRECV":
            if not value.isdigit():
                status = "AT_PARAM_ERROR"
            else:
                state.receiving = int(value) in (65534, 65535) or 0 < int(value) < 65534
        elif name == "AT+P2P":
            if len(value.split(":")) != 6:
                status = "AT_PARAM_ERROR"
            else:
                state.p2p = value
        elif name == "AT+SYNCWORD":
            state.sync_word = value
        elif name == "AT+IQINVER":
            state.iq_inverted = value == "1"
        elif name == "AT+PSEND":
            if state.receiving:
                status = "AT_BUSY_ERROR"
            else:
                try:
                    payload = bytes.fromhex(value)
                except ValueError:
                    status = "AT_PARAM_ERROR"
                else:
                    state.transmitted.append((payload, state.p2p, state.iq_inverted))
                    after = b"+EVT:TXP2P DONE\r\n"
        elif name != "AT":
            status = "AT_ERROR"
        self.write(f"\r\n{status}\r\n".encode() + after)
