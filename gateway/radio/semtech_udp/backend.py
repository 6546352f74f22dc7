"""Radio backend for a Semtech UDP packet forwarder (protocol v2): the server side.

Owns the UDP socket a packet forwarder (``lora_pkt_fwd`` and compatibles) talks
to, the acknowledgements the protocol requires (PUSH_ACK, PULL_ACK), the
forwarders' downlink addresses learnt from PULL_DATA, their last status report,
and turning each good ``rxpk`` into a :class:`~gateway.messages.RadioFrame`.

It also transmits: a :class:`~gateway.messages.TxRequest` becomes a PULL_RESP with
a ``txpk`` (§6: immediate, at a concentrator ``tmst``, or at a GPS time ``tmms``)
sent to the address the chosen forwarder pulls from, and the outcome is its TX_ACK
(§5.5) mapped to a :class:`~gateway.messages.TxStatus`. It does not own the datagram
format (``packets.py``, pure). One asyncio loop, no threads.

PROTOCOL.TXT has no authentication (§1): anyone who can reach the port can push
frames. Bind to the address the forwarder uses (often 127.0.0.1 on the same Pi).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import socket
import time
from typing import Any, Final, TypeVar
from urllib.parse import SplitResult

from gateway.errors import ConfigError, DatagramError
from gateway.messages import RadioFrame, TxRequest, TxResult, TxStatus
from gateway.radio.base import COMMON_URL_OPTIONS, RadioBackend, non_negative_float, url_options
from gateway.radio.semtech_udp.packets import (
    BACKEND_NAME,
    TX_ACK_ERRORS,
    PullAck,
    PullData,
    PullResp,
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

# The reference forwarder answers a PULL_RESP with TX_ACK as soon as it has checked and
# queued the txpk (lora_pkt_fwd.c, thread_down), well under a second on a LAN or loopback.
DEFAULT_TX_ACK_TIMEOUT_S: Final = 1.0

# txpk_ack "error" (§6) → our status. "NONE" (or no JSON at all, §5.5) means scheduled.
_TX_ACK_STATUS: Final[dict[str, TxStatus]] = {
    "TOO_LATE": TxStatus.TOO_LATE,
    "TOO_EARLY": TxStatus.TOO_EARLY,
    "COLLISION_PACKET": TxStatus.COLLISION_PACKET,
    "COLLISION_BEACON": TxStatus.COLLISION_BEACON,
    "TX_FREQ": TxStatus.TX_FREQ,
    "TX_POWER": TxStatus.TX_POWER,
    "GPS_UNLOCKED": TxStatus.GPS_UNLOCKED,
}

_V = TypeVar("_V")


def tx_ack_status(ack: TxAck) -> TxStatus:
    """The TxStatus of a TX_ACK; errors outside PROTOCOL.TXT §6 are FAILED."""
    if ack.ok:
        return TxStatus.SENT
    return _TX_ACK_STATUS.get(ack.error or "", TxStatus.FAILED)


def build_txpk(request: TxRequest) -> dict[str, Any]:
    """The ``txpk`` object of PROTOCOL.TXT §6 for one LoRa downlink.

    Timing: ``tmst`` (class A: the uplink's tmst + RX delay) else ``tmms`` (GPS time,
    class B) else ``imme`` (class C). ``ncrc``: LoRaWAN downlinks carry no PHY CRC
    (LoRaWAN 1.0.4 §4.1). ``powe`` is an integer in dBm (§6).
    """
    txpk: dict[str, Any] = {}
    if request.send_at_tmst_us is not None:
        txpk["tmst"] = request.send_at_tmst_us & 0xFFFFFFFF
    elif request.send_at_gps_ms is not None:
        txpk["tmms"] = request.send_at_gps_ms
    else:
        txpk["imme"] = True
    txpk.update(
        {
            "freq": round(request.freq_hz / 1_000_000, 6),
            "rfch": 0,
            "powe": round(request.power_dbm),
            "modu": "LORA",
            "datr": f"SF{request.sf}BW{request.bw_hz // 1000}",
            "codr": request.coding_rate,
            "ipol": request.invert_polarity,
            "ncrc": True,
            "size": len(request.phy_payload),
            "data": base64.b64encode(request.phy_payload).decode("ascii"),
        }
    )
    return txpk


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
    ``stat``, ``tx_ack`` and ``tx_ack.<ERROR>``, ``tx_ack_timeout``, ``tx_ack_unmatched``,
    ``socket_error``.

    Transmit goes to ``TxRequest.gateway_eui``'s forwarder; without one (a class C send
    not tied to an uplink) to the forwarder that pulled most recently. NO_ROUTE when that
    forwarder has never sent PULL_DATA (§5.1: there is no address to send to).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        queue_size: int = 10000,
        ring_size: int = 64,
        tx_ack_timeout_s: float = DEFAULT_TX_ACK_TIMEOUT_S,
        **options: Any,
    ) -> None:
        super().__init__(BACKEND_NAME, queue_size=queue_size, ring_size=ring_size, **options)
        self.host = host
        self.port = port
        self.tx_ack_timeout_s = tx_ack_timeout_s
        self._versions: dict[str, int] = {}
        self._tx_waiters: dict[tuple[str, int], asyncio.Future[TxAck]] = {}
        self._tx_token = random.getrandbits(16)
        self.downlink_addresses: dict[str, tuple[str, int]] = {}
        """Gateway EUI (hex) → address its PULL_DATA came from: where PULL_RESP must go (§5.1)."""
        self.last_stat: dict[str, Stat] = {}
        """Gateway EUI (hex) → the last ``stat`` object it pushed (§4)."""
        self._transport: asyncio.DatagramTransport | None = None
        self._closed: asyncio.Future[None] | None = None
        self._bound_port: int | None = None

    @classmethod
    def from_url(cls, url: SplitResult) -> SemtechUdpBackend:
        """``semtech-udp://HOST[:PORT][?tx_ack_timeout_s=1.0&max_defer_s=0]``.

        The port defaults to 1700 like the reference forwarder.
        """
        try:
            port = url.port
        except ValueError as exc:
            raise ConfigError(f"bad port in {url.geturl()!r}: {exc}", key_path="radio.url") from exc
        if not url.hostname:
            raise ConfigError(
                f"{url.geturl()!r} needs an address to listen on, e.g. semtech-udp://0.0.0.0:1700",
                key_path="radio.url",
            )
        if url.path not in ("", "/") or url.fragment or url.username or url.password:
            raise ConfigError(
                f"{url.geturl()!r}: semtech-udp takes HOST:PORT and query parameters only",
                key_path="radio.url",
            )
        options = url_options(url, {**COMMON_URL_OPTIONS, "tx_ack_timeout_s": non_negative_float})
        return cls(url.hostname, DEFAULT_PORT if port is None else port, **options)

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
        _remember(self._versions, eui, packet.version)

    def _on_tx_ack(self, packet: TxAck) -> None:
        self.counters["tx_ack"] += 1
        if not packet.ok:
            error = packet.error if packet.error in TX_ACK_ERRORS else "other"
            self.counters[f"tx_ack.{error}"] += 1
        waiter = self._tx_waiters.pop((packet.gateway_eui.hex(), packet.token), None)
        if waiter is None:
            self.counters["tx_ack_unmatched"] += 1  # late (after our timeout) or not ours
        elif not waiter.done():
            waiter.set_result(packet)

    # ---------------------------------------------------------------- transmit

    def _route(self, request: TxRequest) -> str | None:
        if request.gateway_eui is not None:
            eui = request.gateway_eui.lower()
            return eui if eui in self.downlink_addresses else None
        # The newest entry: _remember keeps the table in order of the last PULL_DATA.
        return next(reversed(self.downlink_addresses), None)

    async def _transmit(self, request: TxRequest, airtime_s: float) -> TxResult:
        eui = self._route(request)
        if eui is None:
            wanted = request.gateway_eui or "any gateway"
            return TxResult(TxStatus.NO_ROUTE, f"no PULL_DATA seen from {wanted}")
        if self._transport is None:
            return TxResult(TxStatus.FAILED, "the backend is not started")
        self._tx_token = (self._tx_token + 1) & 0xFFFF
        token = self._tx_token
        version = self._versions.get(eui, 2)
        self._send(PullResp(token, build_txpk(request), version).to_bytes(), self.downlink_addresses[eui])
        if version < 2:
            # Protocol v1 has no TX_ACK (§7): handing the packet over is all we can know.
            return TxResult(TxStatus.SENT, f"sent to {eui} (protocol v1: no TX_ACK)")
        waiter: asyncio.Future[TxAck] = asyncio.get_running_loop().create_future()
        self._tx_waiters[(eui, token)] = waiter
        try:
            ack = await asyncio.wait_for(waiter, self.tx_ack_timeout_s)
        except TimeoutError:
            self.counters["tx_ack_timeout"] += 1
            return TxResult(TxStatus.FAILED, f"no TX_ACK from {eui} within {self.tx_ack_timeout_s} s")
        finally:
            self._tx_waiters.pop((eui, token), None)
        status = tx_ack_status(ack)
        return TxResult(status, f"TX_ACK from {eui}: {ack.error or 'NONE'}")
