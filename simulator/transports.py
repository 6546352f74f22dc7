"""How a scenario's frames reach the agent, and how its downlinks come back: one protocol, three ways.

Owns the transport layer of ``simulator.runner``:

* ``SemtechUdpTransport`` (``semtech-udp://HOST:PORT``, or ``HOST:PORT``): one fake packet
  forwarder per scenario forwarder (``simulator.forwarder``), one PUSH_DATA per reception,
  PUSH_ACKs counted; ``sync`` is a PULL_DATA round trip on the first forwarder (the agent stamps
  a frame in the callback that acknowledges it); downlinks are PULL_RESPs, answered with TX_ACK.
* ``GatewaysTransport`` (a scenario with ``gateways``, ``simulator.gatewaylab``): the same, with
  one forwarder per gateway, each sending to its own agent.
* ``SerialModemTransport`` (``serial://PATH``): a RAK RUI3 P2P modem on a pty whose slave is
  linked at PATH (``simulator.serial_modem``); the agent runs ``serial://PATH`` in radio.url.
  One receiver: a frame heard with a good CRC by any forwarder is heard once, at its best SNR;
  CRC-error copies are not reported (RUI3 drops them). ``sync`` waits until the pty holds no
  unread byte; downlinks are the AT+PSEND payloads.
* ``Sx127xTransport`` (``sx127x-bridge://SOCKET``): the agent runs under
  ``python -m simulator.sx127x_bridge SOCKET`` with an emulated SX1276 in its own process;
  receptions are injected through the bridge's socket (CRC-error copies included, then the
  frame once at its best SNR), ``sync`` returns once the backend has read the FIFO, downlinks
  are what the chip transmitted.

Single-channel receivers hear one SF and one channel in the field. Here the modem and the chip
hear every frame whatever its SF: each stands for a receiver retuned to the frame, so a scenario
with a realistic radio (SF7-SF12) runs unchanged; the agent's records carry the SF and frequency
of its radio.url, not the frame's.

It builds no frame (``simulator.city``) and decides nothing about the truth (``simulator.truth``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import random
import socket
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from simulator.city import ScheduledFrame
from simulator.forwarder import PacketForwarder, concentrator_tmst_us, frame_rxpk
from simulator.radio import Reception
from simulator.serial_modem import Rui3ModemSimulator

log = logging.getLogger(__name__)

CHANNELS_HZ: Final = (868_100_000, 868_300_000, 868_500_000)
SCHEMES: Final = ("semtech-udp", "serial", "sx127x-bridge")
PUSH_FLUSH_S: Final = 0.001
"""Linux moves bytes a pty master wrote into the slave's queue from a work queue: at most 47 us
measured over 2,000 writes. A 0 from FIONREAD is trusted only this long after the write."""
STAMP_GRACE_S: Final = 0.002
"""The serial backend reads the clock right after the read() that emptied the pty."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one frame's delivery did: receptions sent, taken by the agent or not, CRC-error copies."""

    sent: int = 0
    acked: int = 0
    unacked: int = 0
    crc_error_copies: int = 0


class Transport(Protocol):
    """The runner's view of the way to the agent (see the module docstring for each one)."""

    name: str
    join_wait_s: float
    """How long a device waits for its join-accept: the single-channel backends send it in RX1,
    JOIN_ACCEPT_DELAY1 = 5 s after the uplink (RP002 §2.1.4 EU868 defaults), or RX2 at 6 s."""
    downlink_wait_s: float
    """How long to wait for a class A downlink (RX1 1 s after the uplink, RX2 at 2 s)."""

    def open(self, seed: int) -> None:
        """Before the first frame: wait (bounded) for the agent; ``seed`` drives channel draws."""

    def deliver(self, frame: ScheduledFrame) -> Delivery:
        """Hand the frame's receptions to the agent (none when it was lost on the air)."""

    def sync(self) -> bool:
        """Return once the agent has taken and time-stamped what was delivered (False: timed out)."""

    def keepalive(self, synced: bool) -> None:
        """Called every 50 frames (``synced``: ``sync`` is called after every frame)."""

    def downlinks(self, wait_s: float) -> list[bytes]:
        """The PHYPayloads the agent sent, waiting up to ``wait_s`` when none is there yet."""

    def ready_probe(self) -> Callable[[], bool]:
        """A check that an agent started from now on is ready to receive (cheap, call repeatedly)."""

    def close(self) -> None: ...


def _best(receptions: tuple[Reception, ...]) -> Reception | None:
    good = [r for r in receptions if r.crc_ok]
    return max(good, key=lambda r: (r.snr_db, r.rssi_dbm)) if good else None


# ------------------------------------------------------------------------------ Semtech UDP


class SemtechUdpTransport:
    """Packet forwarders with EUIs ``gateway_euis`` sending to the agent at ``server``."""

    name = "semtech-udp"
    join_wait_s = 3.0  # the agent sends the PULL_RESP at once; the forwarder would hold it until RX1
    downlink_wait_s = 1.0

    def __init__(
        self, server: tuple[str, int], gateway_euis: list[bytes], ack_timeout_s: float = 1.0
    ) -> None:
        self.server = server
        self.gateway_euis = gateway_euis
        self.ack_timeout_s = ack_timeout_s
        self.forwarders = [PacketForwarder(eui, server) for eui in gateway_euis]
        self._channel = random.Random(0)

    def open(self, seed: int) -> None:
        self._channel = random.Random(seed ^ 0xC4A)
        for forwarder in self.forwarders:  # the gateway learns where to send downlinks (PROTOCOL.TXT §5.2)
            forwarder.pull(self.ack_timeout_s)

    def deliver(self, frame: ScheduledFrame) -> Delivery:
        freq_hz = self._channel.choice(CHANNELS_HZ)
        tokens: list[tuple[PacketForwarder, int]] = []
        crc_copies = 0
        for reception in frame.receptions:
            forwarder = self.forwarders[min(reception.forwarder, len(self.forwarders) - 1)]
            data = frame.phy_payload if reception.crc_ok else frame.corrupted
            rxpk = frame_rxpk(
                data,
                {
                    "freq_hz": freq_hz,
                    "sf": reception.sf,
                    "rssi_dbm": reception.rssi_dbm,
                    "snr_db": reception.snr_db,
                    "crc_ok": reception.crc_ok,
                },
            )
            tokens.append((forwarder, forwarder.send_rxpk([rxpk])))
            crc_copies += 0 if reception.crc_ok else 1
        acked = sum(forwarder.wait_ack(token, self.ack_timeout_s) for forwarder, token in tokens)
        return Delivery(len(tokens), acked, len(tokens) - acked, crc_copies)

    def sync(self) -> bool:
        return self.forwarders[0].pull(self.ack_timeout_s)

    def keepalive(self, synced: bool) -> None:
        for forwarder in self.forwarders[1 if synced else 0 :]:
            forwarder.pull(self.ack_timeout_s)  # keep-alive, and collects their downlinks

    def downlinks(self, wait_s: float) -> list[bytes]:
        out: list[bytes] = []
        for forwarder in self.forwarders:
            wait = wait_s
            for _ in range(100):
                resp = forwarder.wait_downlink(wait)  # answered with TX_ACK (§5.5)
                if resp is None:
                    break
                wait = 0.0
                data = _txpk_bytes(resp.txpk)
                if data:
                    out.append(data)
        return out

    def ready_probe(self) -> Callable[[], bool]:
        def ready() -> bool:
            with PacketForwarder(self.gateway_euis[0], self.server) as probe:
                return probe.pull(timeout_s=0.3)

        return ready

    def close(self) -> None:
        for forwarder in self.forwarders:
            forwarder.close()


class GatewaysTransport(SemtechUdpTransport):
    """One packet forwarder per gateway, each sending to its own agent (a scenario's ``gateways``).

    A reception of forwarder N (``Reception.forwarder``, ``simulator.coverage``) goes to gateway N's
    agent at ``servers[N]``, so each agent gets exactly what its gateway heard. ``sync`` makes one
    PULL_DATA round trip with every agent that got a datagram since the last sync (each stamps a
    frame in the callback that acknowledges it). Downlinks are collected from every agent and also
    kept in ``transmissions`` with the index of the gateway that sent them and the uplink whose
    receive window it aims at (its ``tmst`` is that uplink's plus a whole number of seconds, the RX
    or join-accept delay: PROTOCOL.TXT §6, LoRaWAN 1.0.4 §3.3): which gateways transmit for one
    downlink opportunity is a multi-gateway truth. A gateway marked down (``set_down``: its
    agent was killed) gets nothing, not even keep-alives.
    """

    def __init__(
        self, servers: list[tuple[str, int]], gateway_euis: list[bytes], ack_timeout_s: float = 1.0
    ) -> None:
        if len(servers) != len(gateway_euis) or not servers:
            raise ValueError(f"one server per gateway: {len(servers)} servers, {len(gateway_euis)} EUIs")
        # Not SemtechUdpTransport.__init__: its forwarders would all send to one server.
        self.server = servers[0]
        self.servers = servers
        self.gateway_euis = gateway_euis
        self.ack_timeout_s = ack_timeout_s
        self.forwarders = [
            PacketForwarder(eui, server) for eui, server in zip(gateway_euis, servers, strict=True)
        ]
        self._channel = random.Random(0)
        self._unsynced: set[int] = set()
        # DevAddr -> (tmst, FCnt) of its last data uplinks delivered, to find the one a downlink answers.
        self._uplinks: dict[bytes, deque[tuple[int, int]]] = {}
        self.down: set[int] = set()
        self.transmissions: list[tuple[int, bytes, int | None]] = []
        """(gateway index, PHYPayload, FCnt of the uplink whose receive window it was sent in; None
        for a frame sent at once, class C) of every downlink an agent sent, in the order they came."""

    def set_down(self, index: int, down: bool) -> None:
        """Gateway ``index``'s agent is dead (True) or back (False; it then learns where to send
        downlinks from a PULL_DATA, PROTOCOL.TXT §5.2)."""
        if down:
            self.down.add(index)
            self._unsynced.discard(index)
        else:
            self.down.discard(index)
            self.forwarders[index].pull(self.ack_timeout_s)

    def open(self, seed: int) -> None:
        self._channel = random.Random(seed ^ 0xC4A)
        for index, forwarder in enumerate(self.forwarders):
            if index not in self.down:
                forwarder.pull(self.ack_timeout_s)

    def deliver(self, frame: ScheduledFrame) -> Delivery:
        last = len(self.forwarders) - 1
        heard = {min(r.forwarder, last) for r in frame.receptions}
        if heard & self.down:  # the runner drops a dead gateway's receptions (runner.Hooks.kill_gateway_at)
            down = sorted(heard & self.down)
            raise RuntimeError(f"{frame.device}: a reception for gateways that are down: {down}")
        self._unsynced |= heard
        tmst_us = concentrator_tmst_us()  # what every rxpk of this frame carries, within microseconds
        delivery = super().deliver(frame)
        if heard and frame.fcnt is not None:
            sent = self._uplinks.setdefault(_dev_addr(frame.phy_payload), deque(maxlen=_UPLINKS_KEPT))
            sent.append((tmst_us, frame.fcnt))
        return delivery

    def sync(self) -> bool:
        synced = all(self.forwarders[i].pull(self.ack_timeout_s) for i in sorted(self._unsynced))
        self._unsynced.clear()
        return synced

    def keepalive(self, synced: bool) -> None:
        for index, forwarder in enumerate(self.forwarders):
            if index not in self.down:
                forwarder.pull(self.ack_timeout_s)  # keep-alive, and collects their downlinks

    def downlinks(self, wait_s: float) -> list[bytes]:
        out: list[bytes] = []
        for index, forwarder in enumerate(self.forwarders):
            if index in self.down:
                continue
            wait = wait_s
            for _ in range(100):
                resp = forwarder.wait_downlink(wait)  # answered with TX_ACK (§5.5)
                if resp is None:
                    break
                wait = 0.0
                data = _txpk_bytes(resp.txpk)
                if data:
                    out.append(data)
                    self.transmissions.append((index, data, self._answered(data, resp.txpk.get("tmst"))))
        return out

    def _answered(self, data: bytes, tmst: Any) -> int | None:
        """FCnt of the uplink of the downlink's device whose tmst is a whole number of seconds (1-15,
        ±20 ms) before the downlink's; None for an immediate frame or when none is."""
        if not isinstance(tmst, int):
            return None
        for uplink_tmst, fcnt in reversed(self._uplinks.get(_dev_addr(data), ())):
            delay_us = (tmst - uplink_tmst) & 0xFFFFFFFF
            whole_s = round(delay_us / 1e6)
            if 1 <= whole_s <= 15 and abs(delay_us - whole_s * 1_000_000) <= _WINDOW_SLACK_US:
                return fcnt
        return None


_UPLINKS_KEPT: Final = 16
_WINDOW_SLACK_US: Final = 20_000
"""The forwarder stamps an uplink's rxpk and the transport reads the clock within microseconds; the
agent adds exactly the RX delay (gateway/lorawan/downlink.py)."""


def _dev_addr(phy_payload: bytes) -> bytes:
    """The DevAddr of a data frame (MHDR, then DevAddr little endian: LoRaWAN 1.0.4 §4.3.1); b"" else."""
    return phy_payload[4:0:-1] if len(phy_payload) >= 5 else b""


def _txpk_bytes(txpk: dict[str, Any]) -> bytes:
    data = txpk.get("data")
    if not isinstance(data, str):
        return b""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return b""


# ------------------------------------------------------------------------------ serial modem


class SerialModemTransport:
    """A simulated RUI3 modem whose pty the agent opens at ``link_path``."""

    name = "serial"
    join_wait_s = 8.0
    downlink_wait_s = 3.0

    def __init__(self, link_path: Path, *, agent_wait_s: float = 30.0, receive_wait_s: float = 10.0) -> None:
        self.modem = Rui3ModemSimulator(link_path)
        self.agent_wait_s = agent_wait_s
        self.receive_wait_s = receive_wait_s
        self._first_agent = self.ready_probe()

    def open(self, seed: int) -> None:
        deadline = time.monotonic() + self.agent_wait_s
        while not self._first_agent():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no agent put the modem on {self.modem.link_path} in receive mode")
            time.sleep(0.01)

    def deliver(self, frame: ScheduledFrame) -> Delivery:
        best = _best(frame.receptions)
        if best is None:
            return Delivery()  # RUI3 reports only packets that passed the CRC
        # The modem is deaf while the agent sends a downlink (AT+PRECV=0 ... AT+PRECV=65534).
        heard = self.modem.wait_receiving(self.receive_wait_s) and self.modem.hear(
            frame.phy_payload, rssi_dbm=round(best.rssi_dbm), snr_db=round(best.snr_db)
        )
        return Delivery(1, int(heard), int(not heard), 0)

    def sync(self) -> bool:
        """The pty is empty: the agent's reader thread has read the line and stamps it right after."""
        deadline = time.monotonic() + 2.0
        while True:
            now = time.monotonic()
            if now >= self.modem.last_write_mono_s + PUSH_FLUSH_S and self.modem.unread_bytes() == 0:
                break
            if now > deadline:
                return False
            time.sleep(0.0002)
        time.sleep(STAMP_GRACE_S)
        return True

    def keepalive(self, synced: bool) -> None:
        pass

    def downlinks(self, wait_s: float) -> list[bytes]:
        deadline = time.monotonic() + wait_s
        for _ in range(100_000):
            sent = self.modem.take_transmitted()
            if sent or time.monotonic() >= deadline:
                return [payload for payload, _settings, _iq in sent]
            time.sleep(0.005)
        return []

    def ready_probe(self) -> Callable[[], bool]:
        """Ready once the agent has configured the modem (AT+NWM=0 ... AT+PRECV=65534) since now."""
        commands = self.modem.state.commands
        mark = len(commands)

        def ready() -> bool:
            seen = commands[mark:]
            nwm = max((i for i, c in enumerate(seen) if c.startswith("AT+NWM")), default=-1)
            rx = max((i for i, c in enumerate(seen) if c.startswith("AT+PRECV=6553")), default=-1)
            return 0 <= nwm < rx and self.modem.state.receiving

        return ready

    def close(self) -> None:
        self.modem.close()


# ------------------------------------------------------------------------------ SX127x bridge


class BridgeError(RuntimeError):
    """The SX127x bridge answered with an error or not at all."""


class Sx127xTransport:
    """The client of ``simulator.sx127x_bridge`` listening at ``socket_path``."""

    name = "sx127x"
    join_wait_s = 8.0
    downlink_wait_s = 3.0

    def __init__(self, socket_path: Path, *, agent_wait_s: float = 30.0, timeout_s: float = 15.0) -> None:
        self.socket_path = socket_path
        self.agent_wait_s = agent_wait_s
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._buffer = b""

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout_s)
            try:
                sock.connect(str(self.socket_path))
            except OSError:
                sock.close()
                raise
            self._sock, self._buffer = sock, b""
        try:
            self._sock.sendall(json.dumps(request).encode() + b"\n")
            while b"\n" not in self._buffer:
                chunk = self._sock.recv(65536)
                if not chunk:
                    raise ConnectionResetError("the bridge closed the connection")
                self._buffer += chunk
        except OSError:
            self._drop()
            raise
        line, _, self._buffer = self._buffer.partition(b"\n")
        reply = json.loads(line)
        if not isinstance(reply, dict) or "error" in reply:
            raise BridgeError(f"bridge at {self.socket_path}: {reply}")
        return reply

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None

    def _try(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """``_call``, or None when the agent (and its bridge) is not there: killed, restarting."""
        try:
            return self._call(request)
        except OSError as exc:
            log.debug("sx127x bridge %s: %s", self.socket_path, exc)
            return None

    def open(self, seed: int) -> None:
        ready = self.ready_probe()
        deadline = time.monotonic() + self.agent_wait_s
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no SX127x bridge listening at {self.socket_path}")
            time.sleep(0.05)

    def deliver(self, frame: ScheduledFrame) -> Delivery:
        best = _best(frame.receptions)
        copies = [r for r in frame.receptions if not r.crc_ok]
        packets = [(frame.corrupted, r, False) for r in copies]
        if best is not None:
            packets.append((frame.phy_payload, best, True))
        acked = 0
        for payload, reception, crc_ok in packets:
            reply = self._try(
                {
                    "op": "receive",
                    "payload": payload.hex(),
                    "rssi_dbm": reception.rssi_dbm,
                    "snr_db": reception.snr_db,
                    "crc_ok": crc_ok,
                }
            )
            acked += bool(reply and reply.get("heard"))
        return Delivery(len(packets), acked, len(packets) - acked, len(copies))

    def sync(self) -> bool:
        reply = self._try({"op": "sync"})
        return bool(reply and reply.get("synced"))

    def keepalive(self, synced: bool) -> None:
        pass

    def downlinks(self, wait_s: float) -> list[bytes]:
        deadline = time.monotonic() + wait_s
        for _ in range(100_000):
            reply = self._try({"op": "transmitted"})
            sent = reply.get("tx", []) if reply else []
            if sent or reply is None or time.monotonic() >= deadline:
                return [bytes.fromhex(t["payload"]) for t in sent]
            time.sleep(0.005)
        return []

    def ready_probe(self) -> Callable[[], bool]:
        def ready() -> bool:
            self._drop()  # a new agent means a new bridge behind the same path
            reply = self._try({"op": "status"})
            return bool(reply and reply.get("listening"))

        return ready

    def close(self) -> None:
        self._drop()


# ------------------------------------------------------------------------------ targets


def parse_target(text: str) -> tuple[str, str]:
    """``(scheme, rest)`` of a ``--target``: ``semtech-udp://HOST:PORT`` (or bare ``HOST:PORT``),
    ``serial://PATH``, ``sx127x-bridge://SOCKET``. ValueError with the reason otherwise."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "semtech-udp", text
    if scheme not in SCHEMES:
        raise ValueError(f"unknown transport {scheme!r} in {text!r} (one of {', '.join(SCHEMES)})")
    if not rest:
        raise ValueError(f"{text!r}: missing {'HOST:PORT' if scheme == 'semtech-udp' else 'PATH'}")
    if scheme == "semtech-udp":
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"expected HOST:PORT, got {rest!r}")
    return scheme, rest


def open_transport(
    target: str | tuple[str, int],
    *,
    gateway_eui: bytes = bytes.fromhex("b827ebfffe000001"),
    forwarders: int = 1,
    ack_timeout_s: float = 1.0,
) -> Transport:
    """The transport a ``--target`` names; Semtech UDP gets ``forwarders`` EUIs from ``gateway_eui`` up."""
    if isinstance(target, tuple):
        scheme, rest = "semtech-udp", f"{target[0]}:{target[1]}"
    else:
        scheme, rest = parse_target(target)
    if scheme == "serial":
        return SerialModemTransport(Path(rest))
    if scheme == "sx127x-bridge":
        return Sx127xTransport(Path(rest))
    host, _, port = rest.rpartition(":")
    euis = [(int.from_bytes(gateway_eui) + k).to_bytes(8) for k in range(forwarders)]
    return SemtechUdpTransport((host, int(port)), euis, ack_timeout_s)


TRANSPORTS: Final = ("semtech-udp", "serial", "sx127x")
"""What ``edgegw-sim city --transport`` and ``citylab.run_city(transport=...)`` accept."""
SX127X_URL: Final = "sx127x://spi0.0?freq_hz=868100000&sf=7"


def agent_radio(transport: str, workdir: Path, port: int) -> tuple[str, str, Path | None]:
    """For a city run: the agent's radio.url, the runner's target, and the bridge socket (sx127x).

    The modem's pty is linked at ``workdir/ttySIM0``; the bridge listens at ``workdir/sx127x.sock``
    (in a fresh temporary directory when that path is too long for AF_UNIX).
    """
    if transport == "semtech-udp":
        return f"semtech-udp://127.0.0.1:{port}", f"semtech-udp://127.0.0.1:{port}", None
    if transport == "serial":
        link = (workdir / "ttySIM0").resolve()
        return f"serial://{link}", f"serial://{link}", None
    if transport == "sx127x":
        sock = (workdir / "sx127x.sock").resolve()
        if len(str(sock)) > 100:
            sock = Path(tempfile.mkdtemp(prefix="edgegw-")) / "sx127x.sock"
        return SX127X_URL, f"sx127x-bridge://{sock}", sock
    raise ValueError(f"unknown transport {transport!r} (one of {', '.join(TRANSPORTS)})")
