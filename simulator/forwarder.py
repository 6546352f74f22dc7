"""A fake Semtech UDP packet forwarder (protocol v2) for tests, the demo and the simulator.

Owns the gateway side of PROTOCOL.TXT: PUSH_DATA with one ``rxpk`` per frame and
waiting for its PUSH_ACK (§3), PULL_DATA keep-alives and their PULL_ACK (§5.2,
§5.3), and answering a PULL_RESP with TX_ACK (§5.5). Like the reference
``lora_pkt_fwd`` it uses two sockets, one "up" (PUSH_DATA) and one "down"
(PULL_DATA, PULL_RESP), so the server must learn the downlink address from
PULL_DATA rather than from PUSH_DATA.

It owns no datagram format (``gateway.radio.semtech_udp.packets`` builds and
parses every byte) and no LoRaWAN: frames are PHYPayloads built elsewhere.

Two flavours with the same vocabulary: ``PacketForwarder`` (blocking sockets, for
scripts and threads) and ``AsyncPacketForwarder`` (asyncio, for tests and the
simulator running in the same loop as the agent). They share the bytes (``_Session``:
tokens, datagrams, acks) and the sending (``_Sender``); only waiting differs. Frames
are given as ``(phy_payload, rx)`` where ``rx`` holds keyword arguments of
:func:`~gateway.radio.semtech_udp.packets.make_rxpk`; missing ones default to
``DEFAULT_RX`` and ``tmst_us`` to a microsecond counter, like a concentrator's.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Self

from gateway.errors import DatagramError
from gateway.radio.semtech_udp.packets import (
    EUI_SIZE,
    PROTOCOL_VERSION,
    PULL_ACK,
    PUSH_ACK,
    PullAck,
    PullData,
    PullResp,
    PushAck,
    PushData,
    Rxpk,
    Stat,
    TxAck,
    make_rxpk,
    parse,
)

Frame = tuple[bytes, Mapping[str, Any]]

DEFAULT_RX: Final[Mapping[str, Any]] = {
    "freq_hz": 868_100_000,
    "sf": 7,
    "rssi_dbm": -60.0,
    "snr_db": 7.0,
}
_MAX_DATAGRAM: Final = 65_535
_BOOK_LIMIT: Final = 4096


def concentrator_tmst_us() -> int:
    """A free-running 32-bit microsecond counter, like the concentrator's ``tmst`` (§4)."""
    return (time.monotonic_ns() // 1000) & 0xFFFFFFFF


def frame_rxpk(phy_payload: bytes, rx: Mapping[str, Any]) -> Rxpk:
    """The rxpk for one frame: ``rx`` overrides DEFAULT_RX and the current ``tmst``."""
    kwargs: dict[str, Any] = {**DEFAULT_RX, "tmst_us": concentrator_tmst_us(), **rx}
    return make_rxpk(phy_payload, **kwargs)


class _Session:
    """What both flavours share: tokens, datagram building, and the acks seen so far."""

    def __init__(self, gateway_eui: bytes, version: int) -> None:
        if len(gateway_eui) != EUI_SIZE:
            raise ValueError(f"gateway EUI must be {EUI_SIZE} bytes, got {len(gateway_eui)}")
        self.gateway_eui = gateway_eui
        self.version = version
        self._token = random.getrandbits(16)
        # (identifier, token) of acks received but not yet waited for; bounded.
        self._acked: dict[tuple[int, int], None] = {}
        self.downlinks: list[PullResp] = []
        self.bad_datagrams = 0

    def next_token(self, ack_identifier: int) -> int:
        self._token = (self._token + 1) & 0xFFFF
        self._acked.pop((ack_identifier, self._token), None)  # a stale ack from 65536 tokens ago
        return self._token

    def push(self, rxpk: list[Rxpk], stat: Stat | None) -> tuple[int, bytes]:
        token = self.next_token(PUSH_ACK)
        return token, PushData(token, self.gateway_eui, rxpk, stat, self.version).to_bytes()

    def pull(self) -> tuple[int, bytes]:
        token = self.next_token(PULL_ACK)
        return token, PullData(token, self.gateway_eui, self.version).to_bytes()

    def tx_ack(self, token: int, error: str | None) -> bytes:
        return TxAck(token, self.gateway_eui, error, self.version).to_bytes()

    def handle(self, datagram: bytes) -> None:
        try:
            packet = parse(datagram)
        except DatagramError:
            self.bad_datagrams += 1
            return
        if isinstance(packet, PushAck):
            self._note(PUSH_ACK, packet.token)
        elif isinstance(packet, PullAck):
            self._note(PULL_ACK, packet.token)
        elif isinstance(packet, PullResp):
            self.downlinks.append(packet)
        else:
            self.bad_datagrams += 1  # a gateway's packet sent to a gateway

    def take_ack(self, identifier: int, token: int) -> bool:
        try:
            del self._acked[(identifier, token)]
        except KeyError:
            return False
        return True

    def _note(self, identifier: int, token: int) -> None:
        self._acked[(identifier, token)] = None
        if len(self._acked) > _BOOK_LIMIT:
            del self._acked[next(iter(self._acked))]


class _Sender:
    """The sending side both flavours share, over their ``_Session``; each sends on its own up socket."""

    _session: _Session

    @property
    def gateway_eui(self) -> bytes:
        return self._session.gateway_eui

    @property
    def bad_datagrams(self) -> int:
        """Datagrams from the server that did not parse or made no sense to a gateway."""
        return self._session.bad_datagrams

    def send_frames(self, frames: Sequence[Frame], *, stat: Stat | None = None) -> int:
        """PUSH_DATA with one rxpk per ``(phy_payload, rx)`` (does not wait); returns its token."""
        return self.send_rxpk([frame_rxpk(phy, rx) for phy, rx in frames], stat=stat)

    def send_rxpk(self, rxpk: list[Rxpk], *, stat: Stat | None = None) -> int:
        """PUSH_DATA carrying these rxpk objects as they are; returns its token."""
        token, datagram = self._session.push(rxpk, stat)
        self._send_up(datagram)
        return token

    def send_raw(self, datagram: bytes) -> None:
        """Send arbitrary bytes from the up socket (to test a server's robustness)."""
        self._send_up(datagram)

    def _send_up(self, datagram: bytes) -> None:  # pragma: no cover - each flavour sends its way
        raise NotImplementedError


class PacketForwarder(_Sender):
    """Blocking fake forwarder for ``gateway_eui`` talking to the server at ``server``."""

    def __init__(
        self, gateway_eui: bytes, server: tuple[str, int], *, version: int = PROTOCOL_VERSION
    ) -> None:
        self._session = _Session(gateway_eui, version)
        family, _, _, _, address = socket.getaddrinfo(server[0], server[1], type=socket.SOCK_DGRAM)[0]
        self._up = socket.socket(family, socket.SOCK_DGRAM)
        self._down = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._up.connect(address)
            self._down.connect(address)
        except OSError:
            self.close()
            raise

    @property
    def up_address(self) -> tuple[str, int]:
        """Local address of the socket PUSH_DATA is sent from."""
        host, port = self._up.getsockname()[:2]
        return str(host), int(port)

    @property
    def down_address(self) -> tuple[str, int]:
        """Local address of the socket PULL_DATA is sent from (where downlinks must go)."""
        host, port = self._down.getsockname()[:2]
        return str(host), int(port)

    def wait_ack(self, token: int, timeout_s: float = 1.0) -> bool:
        """True once the PUSH_ACK for ``token`` arrived, False after ``timeout_s``."""
        return self._wait(self._up, PUSH_ACK, token, timeout_s)

    def pull(self, timeout_s: float = 1.0) -> bool:
        """One PULL_DATA / PULL_ACK round trip on the down socket (§5.2, §5.3)."""
        token, datagram = self._session.pull()
        self._down.send(datagram)
        return self._wait(self._down, PULL_ACK, token, timeout_s)

    def wait_downlink(self, timeout_s: float = 1.0, *, tx_ack_error: str | None = None) -> PullResp | None:
        """The next PULL_RESP (answered with TX_ACK carrying ``tx_ack_error``), or None."""
        deadline = time.monotonic() + timeout_s
        while not self._session.downlinks:
            if not self._recv(self._down, deadline):
                return None
        resp = self._session.downlinks.pop(0)
        if self._session.version >= 2:  # TX_ACK exists since protocol v2 (§7, v1.3)
            self._down.send(self._session.tx_ack(resp.token, tx_ack_error))
        return resp

    def close(self) -> None:
        self._up.close()
        self._down.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send_up(self, datagram: bytes) -> None:
        self._up.send(datagram)

    def _wait(self, sock: socket.socket, identifier: int, token: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self._session.take_ack(identifier, token):
            if not self._recv(sock, deadline):
                return self._session.take_ack(identifier, token)
        return True

    def _recv(self, sock: socket.socket, deadline: float) -> bool:
        """Receive and file one datagram; False when the deadline passed or nobody listens."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        sock.settimeout(remaining)
        try:
            datagram = sock.recv(_MAX_DATAGRAM)
        except (TimeoutError, ConnectionRefusedError):
            return False
        self._session.handle(datagram)
        return True


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, owner: AsyncPacketForwarder) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._owner._on_datagram(data)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors while the server is down: acks simply do not come


class AsyncPacketForwarder(_Sender):
    """Asyncio fake forwarder; build it with ``await AsyncPacketForwarder.open(eui, server)``."""

    def __init__(
        self, gateway_eui: bytes, server: tuple[str, int], *, version: int = PROTOCOL_VERSION
    ) -> None:
        self._session = _Session(gateway_eui, version)
        self._server = server
        self._up: asyncio.DatagramTransport | None = None
        self._down: asyncio.DatagramTransport | None = None
        self._arrived = asyncio.Event()

    @classmethod
    async def open(
        cls, gateway_eui: bytes, server: tuple[str, int], *, version: int = PROTOCOL_VERSION
    ) -> AsyncPacketForwarder:
        forwarder = cls(gateway_eui, server, version=version)
        await forwarder.start()
        return forwarder

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._up, _ = await loop.create_datagram_endpoint(lambda: _Endpoint(self), remote_addr=self._server)
        self._down, _ = await loop.create_datagram_endpoint(lambda: _Endpoint(self), remote_addr=self._server)

    @property
    def down_address(self) -> tuple[str, int]:
        host, port = self._transport(self._down).get_extra_info("sockname")[:2]
        return str(host), int(port)

    async def wait_ack(self, token: int, timeout_s: float = 1.0) -> bool:
        return await self._wait(PUSH_ACK, token, timeout_s)

    async def pull(self, timeout_s: float = 1.0) -> bool:
        token, datagram = self._session.pull()
        self._transport(self._down).sendto(datagram)
        return await self._wait(PULL_ACK, token, timeout_s)

    async def close(self) -> None:
        for transport in (self._up, self._down):
            if transport is not None:
                transport.close()
        self._up = self._down = None
        await asyncio.sleep(0)  # let connection_lost run so the sockets are really closed

    async def __aenter__(self) -> Self:
        if self._up is None:
            await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _on_datagram(self, data: bytes) -> None:
        self._session.handle(data)
        self._arrived.set()

    def _send_up(self, datagram: bytes) -> None:
        # Python 3.11's asyncio drops an empty datagram: there, send_raw(b"") sends nothing.
        self._transport(self._up).sendto(datagram)

    def _transport(self, transport: asyncio.DatagramTransport | None) -> asyncio.DatagramTransport:
        if transport is None:
            raise RuntimeError("the forwarder is not open")
        return transport

    async def _wait(self, identifier: int, token: int, timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self._session.take_ack(identifier, token):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return self._session.take_ack(identifier, token)
        return True
