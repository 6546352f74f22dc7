"""The agent on an emulated SX1276: ``python -m simulator.sx127x_bridge SOCKET [--clock FILE] -- run ...``.

Owns the agent's side of a scenario run through the SX127x backend. In the agent's own
process it installs the register emulator (``simulator.sx127x_emulator``) behind fake
``RPi.GPIO`` and ``spidev`` modules on spi0.0 (DIO0 on BCM 4, NRESET on BCM 22, the backend's
defaults), serves a Unix stream socket at SOCKET for the simulator, then runs the ``edgegw``
command line (``radio: {url: "sx127x://spi0.0?freq_hz=868100000&sf=7"}`` in its config).
With ``--clock FILE`` the agent also reads the simulated clock (``simulator.simclock``): the
two wrappers compose in one process, clock first.

The socket speaks one JSON object per line, each request answered by one line:

* ``{"op": "status"}`` → ``{"listening": bool, "freq_hz": int, "sf": int}``;
* ``{"op": "receive", "payload": HEX, "rssi_dbm": x, "snr_db": x, "crc_ok": bool}`` → ``{"heard": bool}``:
  waits (bounded) until the chip listens again (the agent may be sending) and the previous
  packet was read, then puts the packet in the FIFO and raises RxDone (with PayloadCrcError
  when ``crc_ok`` is false). The chip hears it whatever the frame's SF and channel: in a
  simulation it stands for a receiver retuned to each frame (the agent's records carry the
  SF and frequency of its radio.url);
* ``{"op": "sync"}`` → ``{"synced": bool}``: true once the backend has cleared RxDone and read
  the packet out of the FIFO. The backend stamps a frame (``time.time()``) before it touches
  the chip, so after this the clock may move on;
* ``{"op": "transmitted"}`` → ``{"tx": [{"payload": HEX, "freq_hz", "sf", "invert_iq"}, ...]}``:
  what the agent sent since the last call (downlinks).

It owns no LoRaWAN and no scenario (``simulator.transports.Sx127xTransport`` is the client).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socketserver
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from simulator.sx127x_emulator import REG_FIFO, Sx127xEmulator, install_fake_rpi

log = logging.getLogger(__name__)

USAGE: Final = "usage: python -m simulator.sx127x_bridge SOCKET [--clock FILE] [--] EDGEGW_ARGS..."
LISTEN_WAIT_S: Final = 10.0
"""How long a reception waits for the chip to listen: a join-accept's RX2 is 6 s after its uplink."""
SYNC_WAIT_S: Final = 2.0
_POLL_S: Final = 0.001
_MAX_SOCKET_PATH: Final = 100  # sun_path holds 108 bytes on Linux


class WatchedChip(Sx127xEmulator):
    """The emulator, noting when the driver reads a received packet out of the FIFO."""

    def __init__(self) -> None:
        super().__init__()
        self.read_done = threading.Event()
        self.read_done.set()

    def receive(self, payload: bytes, **kwargs: Any) -> bool:
        self.read_done.clear()
        heard = super().receive(payload, **kwargs)
        if not heard:
            self.read_done.set()
        return heard

    def xfer(self, data: list[int]) -> list[int]:
        out = super().xfer(data)
        if len(data) > 1 and data[0] == REG_FIFO and not self.read_done.is_set():
            # A burst read of RegFifo after RxDone: the backend's read_payload (it reads the
            # FIFO nowhere else, and only after stamping the frame and clearing the flags).
            self.read_done.set()
        return out


class Bridge:
    """The emulated chip and the transmissions not yet taken by the simulator."""

    def __init__(self, emulator: WatchedChip) -> None:
        self.emulator = emulator
        self._taken = 0
        self._lock = threading.Lock()

    def status(self) -> dict[str, Any]:
        chip = self.emulator
        return {"listening": chip.listening, "freq_hz": chip.freq_hz, "sf": chip.sf}

    def receive(self, payload: bytes, rssi_dbm: float, snr_db: float, crc_ok: bool) -> bool:
        self.sync()  # one packet at a time: a second RxDone before the first was read would hide it
        deadline = time.monotonic() + LISTEN_WAIT_S
        while not self.emulator.listening:
            if time.monotonic() > deadline:
                return False
            time.sleep(_POLL_S)
        return self.emulator.receive(payload, rssi_dbm=rssi_dbm, snr_db=snr_db, crc_ok=crc_ok)

    def sync(self) -> bool:
        return self.emulator.read_done.wait(SYNC_WAIT_S)

    def transmitted(self) -> list[dict[str, Any]]:
        with self._lock:
            sent = self.emulator.transmitted[self._taken :]
            self._taken += len(sent)
        return [
            {"payload": t.payload.hex(), "freq_hz": t.freq_hz, "sf": t.sf, "invert_iq": t.invert_iq}
            for t in sent
        ]

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "status":
            return self.status()
        if op == "receive":
            payload = bytes.fromhex(str(request["payload"]))
            heard = self.receive(
                payload,
                float(request.get("rssi_dbm", -80.0)),
                float(request.get("snr_db", 8.0)),
                bool(request.get("crc_ok", True)),
            )
            return {"heard": heard}
        if op == "sync":
            return {"synced": self.sync()}
        if op == "transmitted":
            return {"tx": self.transmitted()}
        return {"error": f"unknown op {op!r}"}


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        for line in self.rfile:
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("expected a JSON object")
                reply = self.server.bridge.answer(request)
            except (ValueError, KeyError, TypeError) as exc:
                reply = {"error": str(exc)}
            self.wfile.write(json.dumps(reply).encode() + b"\n")
            self.wfile.flush()


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, bridge: Bridge) -> None:
        self.bridge = bridge
        super().__init__(str(path), _Handler)


def serve(path: Path, bridge: Bridge) -> _Server:
    """Listen on ``path`` (replacing a stale socket file) from a daemon thread."""
    if len(str(path)) > _MAX_SOCKET_PATH:
        raise ValueError(f"socket path too long for AF_UNIX ({len(str(path))} > {_MAX_SOCKET_PATH}): {path}")
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    server = _Server(path, bridge)
    threading.Thread(target=server.serve_forever, name="sx127x-bridge", daemon=True).start()
    return server


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    socket_path, rest = Path(args[0]), args[1:]
    if rest[:1] == ["--clock"]:
        if len(rest) < 2:
            print(USAGE, file=sys.stderr)
            return 2
        from simulator.simclock import install

        install(Path(rest[1]))
        rest = rest[2:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    emulator = WatchedChip()
    with install_fake_rpi(emulator):
        server = serve(socket_path, Bridge(emulator))
        try:
            from gateway.cli.main import main as edgegw_main  # after the clock and the fake modules

            code: int = edgegw_main(rest)
        finally:
            server.shutdown()
            server.server_close()
            with contextlib.suppress(FileNotFoundError):
                socket_path.unlink()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
