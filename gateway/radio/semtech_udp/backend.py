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
frames. Bind to the address the forwarder uses (127.0.0.1 on the same Pi). What this
backend does about it (docs/radio.md, "Bounds" and "Downlink address pinning"):
every datagram is bounded before it is parsed (``packets.MAX_DATAGRAM_BYTES``, rxpk
count, stat keys), a stat keeps only the §4 fields, at most ``MAX_FORWARDERS`` gateway
EUIs are remembered, and a gateway's downlink route is pinned to the first host (IP
address) that pulled for it until that host has been silent for ``pull_pin_s``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass
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
# Per-gateway maps are keyed by an EUI taken from untrusted datagrams: bound them. A Pi
# serves one forwarder (its own concentrator), a site a handful.
MAX_FORWARDERS: Final = 64
MAX_FORWARDERS_PER_HOST: Final = 4
"""Gateway EUIs pulling from one IP address at most (a Pi runs one or two forwarders)."""
# A gateway's downlink route is pinned to the host that first sent PULL_DATA for it,
# until that host has been silent this long: 3 x the keepalive_interval (10 s) of the
# reference forwarder's global_conf.json, so a forwarder that moved to another address
# (DHCP) gets its downlinks back within this delay. A new port on the same host (the
# forwarder restarted) is taken at once.
DEFAULT_PULL_PIN_S: Final = 30.0
FORWARDER_STALE_S: Final = 30.0
"""A forwarder is shown ``stale`` (`edgegw status`) when neither PULL_DATA (every keepalive_interval,
10 s) nor PUSH_DATA (a stat every stat_interval, 30 s, reference global_conf.json) came for this
long: three keepalives missed, its downlink route is as good as gone."""
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
    """Insert or refresh ``key`` as the newest entry; evict the oldest beyond MAX_FORWARDERS."""
    table.pop(key, None)
    table[key] = value
    if len(table) > MAX_FORWARDERS:
        del table[next(iter(table))]


@dataclass(slots=True)
class _Forwarder:
    """What PULL_DATA taught us about one gateway EUI (§5.1-§5.2)."""

    address: tuple[str, int]
    """Where its PULL_DATA comes from: where PULL_RESP must go."""
    version: int
    last_pull_mono_s: float


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
    ``socket_error``; refusals: ``bad_datagram.<reason>`` (``datagram_too_large``,
    ``too_many_rxpk``, ``stat_too_large`` and the malformed ones), ``pull_data_moved``
    (a PULL_DATA for a pinned gateway EUI from another host), ``too_many_forwarders``
    (a new EUI while MAX_FORWARDERS are pulling), ``tx_ack_foreign`` (a TX_ACK from
    another address than the one the PULL_RESP went to).

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
        pull_pin_s: float = DEFAULT_PULL_PIN_S,
        **options: Any,
    ) -> None:
        super().__init__(BACKEND_NAME, queue_size=queue_size, ring_size=ring_size, **options)
        self.host = host
        self.port = port
        self.tx_ack_timeout_s = tx_ack_timeout_s
        self.pull_pin_s = pull_pin_s
        # Ordered by the last accepted PULL_DATA, oldest first (at most MAX_FORWARDERS).
        self._forwarders: OrderedDict[str, _Forwarder] = OrderedDict()
        # (EUI, token) → (address the PULL_RESP went to, the TX_ACK waiter)
        self._tx_waiters: dict[tuple[str, int], tuple[tuple[str, int], asyncio.Future[TxAck]]] = {}
        self._tx_token = random.getrandbits(16)
        self.last_stat: dict[str, Stat] = {}
        """Gateway EUI (hex) → the §4 fields of the last ``stat`` it pushed (MAX_FORWARDERS EUIs)."""
        self._last_push_mono_s: dict[str, float] = {}
        """Gateway EUI (hex) → when its last PUSH_DATA came (MAX_FORWARDERS EUIs)."""
        self._transport: asyncio.DatagramTransport | None = None
        self._closed: asyncio.Future[None] | None = None
        self._bound_port: int | None = None

    @property
    def downlink_addresses(self) -> dict[str, tuple[str, int]]:
        """Gateway EUI (hex) → address its PULL_DATA came from: where PULL_RESP must go (§5.1).

        A copy, oldest pull first.
        """
        return {eui: fwd.address for eui, fwd in self._forwarders.items()}

    def health(self) -> dict[str, Any]:
        """The common health, and each packet forwarder heard: last PULL_DATA and PUSH_DATA ages (s),
        its address, ``alive`` (one of them within ``FORWARDER_STALE_S``)."""
        return {**super().health(), "forwarders": self.forwarders(time.monotonic())}

    def forwarders(self, now_mono_s: float) -> list[dict[str, Any]]:
        """One row per gateway EUI that sent PULL_DATA or PUSH_DATA, by EUI."""
        rows = []
        for eui in sorted(set(self._forwarders) | set(self._last_push_mono_s)):
            fwd = self._forwarders.get(eui)
            pushed = self._last_push_mono_s.get(eui)
            pull_age_s = None if fwd is None else round(now_mono_s - fwd.last_pull_mono_s, 1)
            push_age_s = None if pushed is None else round(now_mono_s - pushed, 1)
            ages = [a for a in (pull_age_s, push_age_s) if a is not None]
            rows.append({
                "gateway_eui": eui,
                "address": None if fwd is None else f"{fwd.address[0]}:{fwd.address[1]}",
                "last_pull_age_s": pull_age_s,
                "last_push_age_s": push_age_s,
                "alive": min(ages) < FORWARDER_STALE_S,
            })  # fmt: skip
        return rows

    @classmethod
    def from_url(cls, url: SplitResult) -> SemtechUdpBackend:
        """``semtech-udp://HOST[:PORT][?tx_ack_timeout_s=1.0&pull_pin_s=30&max_defer_s=0]``.

        The port defaults to 1700 like the reference forwarder.
        """
        try:
            port = url.port
        except ValueError as exc:
            raise ConfigError(f"bad port in {url.geturl()!r}: {exc}", key_path="radio.url") from exc
        if not url.hostname:
            raise ConfigError(
                f"{url.geturl()!r} needs an address to listen on, e.g. semtech-udp://127.0.0.1:1700",
                key_path="radio.url",
            )
        if url.path not in ("", "/") or url.fragment or url.username or url.password:
            raise ConfigError(
                f"{url.geturl()!r}: semtech-udp takes HOST:PORT and query parameters only",
                key_path="radio.url",
            )
        options = url_options(
            url,
            {**COMMON_URL_OPTIONS, "tx_ack_timeout_s": non_negative_float, "pull_pin_s": non_negative_float},
        )
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
            self._on_tx_ack(packet, addr)
        else:
            # PUSH_ACK, PULL_ACK, PULL_RESP travel server → gateway; a gateway never sends them.
            what = f"{type(packet).__name__} from {addr[0]}:{addr[1]}"
            self._reject("unexpected_identifier", f"{what} is a server's packet")

    def _on_push_data(self, packet: PushData, addr: Any) -> None:
        # §3.1/§3.3: acknowledge immediately, process the packets after the ack. The ack
        # carries the version we were spoken to (v1 forwarders drop v2 acks).
        self._send(PushAck(packet.token, packet.version).to_bytes(), addr)
        self.counters["push_data"] += 1
        _remember(self._last_push_mono_s, packet.gateway_eui.hex(), time.monotonic())
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
                # One bad rxpk (FSK, bad base64, a size that is not its data's) does not spoil the
                # others of the same datagram, which was acknowledged above (packets.parse checks the
                # datagram, rxpk_to_frame_parts each rxpk).
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
        self.counters["pull_data"] += 1
        eui = packet.gateway_eui.hex()
        address = (str(addr[0]), int(addr[1]))
        now_s = self._clock()
        known = self._forwarders.get(eui)
        if known is not None and known.address[0] != address[0]:
            # PROTOCOL.TXT has no authentication: without this, anyone who can reach the
            # port takes a gateway's downlinks by sending PULL_DATA with its EUI. The host
            # is pinned, not the port: a restarted forwarder pulls from a new port at once.
            silent_s = now_s - known.last_pull_mono_s
            if silent_s < self.pull_pin_s:
                self.counters["pull_data_moved"] += 1
                self._log_once(
                    "pull_data_moved",
                    "%s: PULL_DATA for gateway %s from %s:%d refused: it pulls from %s:%d "
                    "(%.0f s ago; another address is accepted after %.0f s of silence)",
                    self.name,
                    eui,
                    address[0],
                    address[1],
                    known.address[0],
                    known.address[1],
                    silent_s,
                    self.pull_pin_s,
                )
                return
            _log.info(
                "%s: gateway %s moved from %s:%d to %s:%d (silent for %.0f s)",
                self.name,
                eui,
                known.address[0],
                known.address[1],
                address[0],
                address[1],
                silent_s,
            )
        elif known is not None and known.address != address:
            _log.info(
                "%s: gateway %s pulls from %s:%d (new port)", self.name, eui, address[0], address[1]
            )
        elif known is None:
            same_host = [e for e, f in self._forwarders.items() if f.address[0] == address[0]]
            if len(same_host) >= MAX_FORWARDERS_PER_HOST:
                # One host pulling for many EUIs is not a gateway: it must not fill the table and
                # lock a real forwarder out. Its own oldest EUI makes room, never another host's.
                del self._forwarders[same_host[0]]
                self.counters["forwarders_per_host_evicted"] += 1
            if len(self._forwarders) >= MAX_FORWARDERS:
                oldest_eui, oldest = next(iter(self._forwarders.items()))
                if now_s - oldest.last_pull_mono_s < self.pull_pin_s:
                    # All are pulling: evicting one would unpin a live forwarder.
                    self.counters["too_many_forwarders"] += 1
                    self._log_once(
                        "too_many_forwarders",
                        "%s: PULL_DATA for gateway %s from %s:%d refused: %d gateways are pulling",
                        self.name,
                        eui,
                        address[0],
                        address[1],
                        len(self._forwarders),
                    )
                    return
                del self._forwarders[oldest_eui]
            _log.info("%s: gateway %s pulls from %s:%d", self.name, eui, address[0], address[1])
        self._send(PullAck(packet.token, packet.version).to_bytes(), addr)
        self._forwarders.pop(eui, None)
        self._forwarders[eui] = _Forwarder(address, packet.version, now_s)

    def _on_tx_ack(self, packet: TxAck, addr: Any) -> None:
        self.counters["tx_ack"] += 1
        if not packet.ok:
            error = packet.error if packet.error in TX_ACK_ERRORS else "other"
            self.counters[f"tx_ack.{error}"] += 1
        key = (packet.gateway_eui.hex(), packet.token)
        entry = self._tx_waiters.get(key)
        if entry is None:
            self.counters["tx_ack_unmatched"] += 1  # late (after our timeout) or not ours
            return
        sent_to, waiter = entry
        if (str(addr[0]), int(addr[1])) != sent_to:
            # The reference forwarder answers from the socket it pulls from (thread_down).
            self.counters["tx_ack_foreign"] += 1
            return
        del self._tx_waiters[key]
        if not waiter.done():
            waiter.set_result(packet)

    # ---------------------------------------------------------------- transmit

    def _rx_plan_key(self, frame: RadioFrame) -> str:
        # Each forwarder is a concentrator with its own TX path and its own tmst counter.
        return (frame.rx.gateway_eui or "").lower()

    def _tx_plan_key(self, request: TxRequest) -> str:
        return self._route(request) or (request.gateway_eui or "").lower()

    def _route(self, request: TxRequest) -> str | None:
        if request.gateway_eui is not None:
            eui = request.gateway_eui.lower()
            return eui if eui in self._forwarders else None
        # The newest entry: the table is kept in order of the last accepted PULL_DATA.
        return next(reversed(self._forwarders), None)

    async def _transmit(self, request: TxRequest, airtime_s: float) -> TxResult:
        eui = self._route(request)
        if eui is None:
            wanted = request.gateway_eui or "any gateway"
            return TxResult(TxStatus.NO_ROUTE, f"no PULL_DATA seen from {wanted}")
        if self._transport is None:
            return TxResult(TxStatus.FAILED, "the backend is not started")
        self._tx_token = (self._tx_token + 1) & 0xFFFF
        token = self._tx_token
        forwarder = self._forwarders[eui]
        version = forwarder.version
        self._send(PullResp(token, build_txpk(request), version).to_bytes(), forwarder.address)
        if version < 2:
            # Protocol v1 has no TX_ACK (§7): handing the packet over is all we can know.
            return TxResult(TxStatus.SENT, f"sent to {eui} (protocol v1: no TX_ACK)")
        waiter: asyncio.Future[TxAck] = asyncio.get_running_loop().create_future()
        self._tx_waiters[(eui, token)] = (forwarder.address, waiter)
        try:
            ack = await asyncio.wait_for(waiter, self.tx_ack_timeout_s)
        except TimeoutError:
            self.counters["tx_ack_timeout"] += 1
            return TxResult(TxStatus.FAILED, f"no TX_ACK from {eui} within {self.tx_ack_timeout_s} s")
        finally:
            self._tx_waiters.pop((eui, token), None)
        status = tx_ack_status(ack)
        return TxResult(status, f"TX_ACK from {eui}: {ack.error or 'NONE'}")
