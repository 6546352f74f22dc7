"""Radio backend for a Semtech UDP packet forwarder (protocol v2): the server side.

Owns the UDP socket a packet forwarder (``lora_pkt_fwd`` and compatibles) talks
to, the acknowledgements the protocol requires (PUSH_ACK, PULL_ACK), the
forwarders' downlink addresses learnt from PULL_DATA, their last status report,
and turning each good ``rxpk`` into a :class:`~gateway.messages.RadioFrame`.

It does not own the datagram format (``packets.py``, pure) and does not transmit:
downlinks (PULL_RESP) come with the transmit path, which will use
``downlink_addresses``. One asyncio loop, no threads.

PROTOCOL.TXT has no authentication (§1): anyone who can reach the port can push
frames. Bind to the address the forwarder uses (often 127.0.0.1 on the same Pi).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any, Final, TypeVar
from urllib.parse import SplitResult

from gateway.errors import ConfigError, DatagramError
from gateway.messages import RadioFrame
from gateway.radio.base import RadioBackend
from gateway.radio.semtech_udp.packets import (
    BACKEND_NAME,
    TX_ACK_ERRORS,
    PullAck,
    PullData,
    PushAck,
    PushData,
    Stat,
    TxAck,
    parse,
    rxpk_to_frame_parts,
)

_log = logging.getLogger(__name__)

DEFAULT_PORT: Final = 1700  # serv_port_up/serv_port_down in the reference forwarder's global_conf.json
# Per-gateway maps are keyed by an EUI taken from untrusted datagrams: bound them.
MAX_GATEWAYS: Final = 1024
# A bigger kernel receive buffer absorbs bursts while the loop is busy elsewhere.
_RCVBUF_BYTES: Final = 1 << 20

_V = TypeVar("_V")


def _remember(table: dict[str, _V], key: str, value: _V) -> None:
    """Insert or refresh ``key`` as the newest entry; evict the oldest beyond MAX_GATEWAYS."""
    table.pop(key, None)
    table[key] = value
    if len(table) > MAX_GATEWAYS:
        del table[next(iter(table))]


class _Protocol(asyncio.DatagramProtocol):
    """Hands socket events to the backend; keeps asyncio's callback names off its public API."""

    def __init__(self, backend: SemtechUdpBackend) -> None:
        self._backend = backend

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._backend._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # E.g. ICMP port unreachable after acking a forwarder that went away: not fatal.
        self._backend.counters["socket_error"] += 1
        _log.debug("%s: socket error: %s", self._backend.name, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._backend._on_closed(exc)


class SemtechUdpBackend(RadioBackend):
    """Listens on ``host:port`` for packet forwarders (``semtech-udp://HOST:PORT``).

    Port 0 picks a free port (see ``bound_port``), for tests.

    Extra counters: ``datagrams`` (every datagram received), ``push_data``, ``pull_data``,
    ``stat``, ``tx_ack`` and ``tx_ack.<ERROR>``, ``socket_error``.
    """

    def __init__(self, host: str, port: int, *, queue_size: int = 10000, ring_size: int = 64) -> None:
        super().__init__(BACKEND_NAME, queue_size=queue_size, ring_size=ring_size)
        self.host = host
        self.port = port
        self.downlink_addresses: dict[str, tuple[str, int]] = {}
        """Gateway EUI (hex) → address its PULL_DATA came from: where PULL_RESP must go (§5.1)."""
        self.last_stat: dict[str, Stat] = {}
        """Gateway EUI (hex) → the last ``stat`` object it pushed (§4)."""
        self._transport: asyncio.DatagramTransport | None = None
        self._closed: asyncio.Future[None] | None = None
        self._bound_port: int | None = None

    @classmethod
    def from_url(cls, url: SplitResult) -> SemtechUdpBackend:
        """``semtech-udp://HOST[:PORT]``; the port defaults to 1700 like the reference forwarder."""
        try:
            port = url.port
        except ValueError as exc:
            raise ConfigError(f"bad port in {url.geturl()!r}: {exc}", key_path="radio.url") from exc
        if not url.hostname:
            raise ConfigError(
                f"{url.geturl()!r} needs an address to listen on, e.g. semtech-udp://0.0.0.0:1700",
                key_path="radio.url",
            )
        if url.path not in ("", "/") or url.query or url.fragment or url.username or url.password:
            raise ConfigError(f"{url.geturl()!r}: semtech-udp takes only HOST:PORT", key_path="radio.url")
        return cls(url.hostname, DEFAULT_PORT if port is None else port)

    @property
    def bound_port(self) -> int:
        """The UDP port actually bound (after ``start()``; kept after ``stop()``)."""
        if self._bound_port is None:
            raise RuntimeError("the backend has not been started")
        return self._bound_port

    async def start(self) -> None:
        if self._transport is not None:
            raise RuntimeError(f"{self.name} backend already started")
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(self), local_addr=(self.host, self.port)
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot listen for the packet forwarder on {self.host}:{self.port}: {exc}",
                key_path="radio.url",
            ) from exc
        self._transport = transport
        self._closed = loop.create_future()
        sock = transport.get_extra_info("socket")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF_BYTES)
        except OSError:  # capped or refused by the kernel: the default still works
            pass
        self._bound_port = transport.get_extra_info("sockname")[1]
        _log.info("%s: listening on %s:%d", self.name, self.host, self._bound_port)

    async def stop(self) -> None:
        transport, closed = self._transport, self._closed
        if transport is None or closed is None:
            return
        self._transport = None
        transport.close()
        # The socket is released in connection_lost, one loop iteration later: wait for
        # it so that the port can be bound again as soon as stop() returns.
        await closed
        _log.info("%s: stopped", self.name)

    # ---------------------------------------------------------------- socket events

    def _on_closed(self, exc: Exception | None) -> None:
        if exc is not None:
            _log.warning("%s: socket closed with an error: %s", self.name, exc)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def _send(self, data: bytes, addr: Any) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, addr)

    def _on_datagram(self, data: bytes, addr: Any) -> None:
        self.counters["datagrams"] += 1
        try:
            packet = parse(data)
        except DatagramError as exc:
            self._reject(exc.reason, f"{len(data)} bytes from {addr[0]}:{addr[1]}: {exc}")
            return
        if isinstance(packet, PushData):
            self._on_push_data(packet, addr)
        elif isinstance(packet, PullData):
            self._on_pull_data(packet, addr)
        elif isinstance(packet, TxAck):
            self._on_tx_ack(packet)
        else:
            # PUSH_ACK, PULL_ACK, PULL_RESP travel server → gateway; a gateway never sends them.
            what = f"{type(packet).__name__} from {addr[0]}:{addr[1]}"
            self._reject("unexpected_identifier", f"{what} is a server's packet")

    def _on_push_data(self, packet: PushData, addr: Any) -> None:
        # §3.1/§3.3: acknowledge immediately, process the packets after the ack. The ack
        # carries the version we were spoken to (v1 forwarders drop v2 acks).
        self._send(PushAck(packet.token, packet.version).to_bytes(), addr)
        self.counters["push_data"] += 1
        if packet.stat is not None:
            self.counters["stat"] += 1
            _remember(self.last_stat, packet.gateway_eui.hex(), packet.stat)
        if not packet.rxpk:
            return
        received_at_s = time.time()
        received_mono_s = time.monotonic()
        for rxpk in packet.rxpk:
            try:
                payload, rx = rxpk_to_frame_parts(rxpk, gateway_eui=packet.gateway_eui, backend=self.name)
            except DatagramError as exc:
                # One bad rxpk (e.g. FSK) does not spoil the others of the same datagram.
                self._reject(exc.reason, f"rxpk from {packet.gateway_eui.hex()}: {exc}")
                continue
            frame = RadioFrame(payload, rx, received_at_s, received_mono_s)
            if rx.crc_ok:
                self._deliver(frame)
            else:
                # §4 stat: -1 = CRC failed, 0 = no CRC. LoRaWAN uplinks always carry a CRC.
                self._drop(frame, "crc_error" if rxpk.get("stat") == -1 else "no_crc")

    def _on_pull_data(self, packet: PullData, addr: Any) -> None:
        # §5.2/§5.3: PULL_ACK opens (and keeps open) the route through the gateway's NAT;
        # the forwarder's downlink socket is not the one it pushes from, so remember it.
        self._send(PullAck(packet.token, packet.version).to_bytes(), addr)
        self.counters["pull_data"] += 1
        eui = packet.gateway_eui.hex()
        address = (str(addr[0]), int(addr[1]))
        if self.downlink_addresses.get(eui) != address:
            _log.info("%s: gateway %s pulls from %s:%d", self.name, eui, address[0], address[1])
        _remember(self.downlink_addresses, eui, address)

    def _on_tx_ack(self, packet: TxAck) -> None:
        self.counters["tx_ack"] += 1
        if not packet.ok:
            error = packet.error if packet.error in TX_ACK_ERRORS else "other"
            self.counters[f"tx_ack.{error}"] += 1
