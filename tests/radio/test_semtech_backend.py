"""SemtechUdpBackend over real UDP sockets on 127.0.0.1, fed by the simulator's fake forwarder.

Behaviour checked against Semtech's PROTOCOL.TXT (Lora-net/packet_forwarder, protocol
version 2, commit 36ab4b40542c7ad59b6b4d083577aa9f13a2ed46): PUSH_ACK at once with the
PUSH_DATA token (§3.1, §3.3), PULL_ACK with the PULL_DATA token and the downlink route
learnt from PULL_DATA (§5.1-§5.3), TX_ACK (§5.5), the rxpk stat field (§4).
Also the registry of ``gateway.radio.open_backend``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.messages import RadioFrame, TxRequest, TxStatus
from gateway.radio import open_backend
from gateway.radio.semtech_udp.backend import MAX_FORWARDERS, MAX_FORWARDERS_PER_HOST, SemtechUdpBackend
from gateway.radio.semtech_udp.packets import (
    PullAck,
    PullData,
    PullResp,
    PushAck,
    PushData,
    TxAck,
    make_rxpk,
    parse,
)
from simulator.forwarder import AsyncPacketForwarder, PacketForwarder
from tests.fixtures.semtech import LORA_RXPK, PROTO_RXPK_FSK, PROTO_RXPK_LORA_SF7, PROTO_RXPK_LORA_SF10

EUI_A = bytes.fromhex("b827ebfffe000001")
EUI_B = bytes.fromhex("b827ebfffe000002")
TIMEOUT_S = 2.0


@pytest.fixture
async def backend() -> AsyncIterator[SemtechUdpBackend]:
    radio = SemtechUdpBackend("127.0.0.1", 0)
    await radio.start()
    try:
        yield radio
    finally:
        await radio.stop()


@pytest.fixture
async def forwarder(backend: SemtechUdpBackend) -> AsyncIterator[AsyncPacketForwarder]:
    fwd = await AsyncPacketForwarder.open(EUI_A, ("127.0.0.1", backend.bound_port))
    try:
        yield fwd
    finally:
        await fwd.close()


async def receive(backend: SemtechUdpBackend) -> RadioFrame:
    return await asyncio.wait_for(backend.receive(), TIMEOUT_S)


class RawPeer:
    """A bare UDP socket, to see the exact bytes the backend sends back."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind((host, 0))  # another host on the loopback network: 127.0.0.2, ...
        self.sock.connect(("127.0.0.1", port))

    async def exchange(self, datagram: bytes) -> bytes:
        self.sock.send(datagram)
        return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 65535), TIMEOUT_S)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
async def raw(backend: SemtechUdpBackend) -> AsyncIterator[RawPeer]:
    peer = RawPeer(backend.bound_port)
    try:
        yield peer
    finally:
        peer.close()


# --------------------------------------------------------------------------- upstream


async def test_push_data_is_acked_with_its_token_and_the_frame_comes_out(
    backend: SemtechUdpBackend, forwarder: AsyncPacketForwarder
) -> None:
    phy = bytes.fromhex("40ac9d0b2600430301ee2bb9403eac1f9bb50be621")
    before_s, before_mono_s = time.time(), time.monotonic()
    token = forwarder.send_frames(
        [(phy, {"freq_hz": 867_100_000, "sf": 9, "rssi_dbm": -101, "snr_db": -3.5, "tmst_us": 123456})]
    )
    assert await forwarder.wait_ack(token, TIMEOUT_S)
    frame = await receive(backend)
    assert frame.phy_payload == phy
    rx = frame.rx
    assert (rx.freq_hz, rx.sf, rx.bw_hz, rx.coding_rate) == (867_100_000, 9, 125_000, "4/5")
    assert (rx.rssi_dbm, rx.snr_db, rx.crc_ok) == (-101, -3.5, True)
    assert (rx.backend, rx.gateway_eui, rx.concentrator_tmst_us) == ("semtech-udp", EUI_A.hex(), 123456)
    assert before_s <= frame.received_at_s <= time.time()
    assert before_mono_s <= frame.received_mono_s <= time.monotonic()
    assert backend.counters["datagrams"] == 1
    assert backend.counters["push_data"] == 1
    assert backend.counters["frames"] == 1
    assert [r.phy_payload_hex for r in backend.recent] == [phy.hex()]


async def test_push_ack_bytes_are_the_header_with_the_same_token(raw: RawPeer) -> None:
    # §3.3: version, the PUSH_DATA's token bytes, identifier 0x01, nothing else.
    rxpk = make_rxpk(b"\x40\x01", freq_hz=868_100_000, sf=7, rssi_dbm=-50, snr_db=9.0, tmst_us=1)
    reply = await raw.exchange(PushData(0xBE37, EUI_A, [rxpk]).to_bytes())
    assert reply == b"\x02\xbe\x37\x01"


async def test_version_1_forwarder_gets_version_1_acks(raw: RawPeer) -> None:
    reply = await raw.exchange(PushData(0x0102, EUI_A, [], version=1).to_bytes())
    assert reply == PushAck(0x0102, version=1).to_bytes() == b"\x01\x01\x02\x01"


async def test_several_rxpk_in_one_datagram_come_out_in_order(
    backend: SemtechUdpBackend, forwarder: AsyncPacketForwarder
) -> None:
    frames: list[tuple[bytes, dict[str, Any]]] = [
        (bytes([0x40, i]), {"freq_hz": 868_100_000 + 200_000 * i, "sf": 7 + i}) for i in range(3)
    ]
    assert await forwarder.wait_ack(forwarder.send_frames(frames), TIMEOUT_S)
    got = [await receive(backend) for _ in frames]
    assert [f.phy_payload for f in got] == [phy for phy, _ in frames]
    assert [(f.rx.freq_hz, f.rx.sf) for f in got] == [(868_100_000, 7), (868_300_000, 8), (868_500_000, 9)]
    # One datagram, one receive time for all its frames.
    assert len({f.received_at_s for f in got}) == 1
    assert backend.counters["datagrams"] == 1 and backend.counters["frames"] == 3


async def test_crc_failed_and_crc_less_rxpk_are_counted_not_delivered(
    backend: SemtechUdpBackend, forwarder: AsyncPacketForwarder
) -> None:
    good = make_rxpk(b"\x40good", freq_hz=868_100_000, sf=7, rssi_dbm=-50, snr_db=9.0, tmst_us=1)
    bad_crc = make_rxpk(
        b"\x40bad", freq_hz=868_100_000, sf=7, rssi_dbm=-50, snr_db=9.0, tmst_us=2, crc_ok=False
    )
    no_crc = make_rxpk(b"\x40none", freq_hz=868_100_000, sf=7, rssi_dbm=-50, snr_db=9.0, tmst_us=3)
    no_crc["stat"] = 0  # §4: 0 = no CRC
    token = forwarder.send_rxpk([bad_crc, good, no_crc])
    assert await forwarder.wait_ack(token, TIMEOUT_S)
    assert (await receive(backend)).phy_payload == b"\x40good"
    # The datagram was handled in one callback before its ack went out: nothing else is coming.
    assert backend.pending == 0
    assert backend.counters["crc_error"] == 1
    assert backend.counters["no_crc"] == 1
    assert backend.counters["frames"] == 1
    # The ring shows all three for `edgegw diag`, with their CRC status.
    assert [(r.phy_payload_hex, r.rx.crc_ok) for r in backend.recent] == [
        (b"\x40bad".hex(), False),
        (b"\x40good".hex(), True),
        (b"\x40none".hex(), False),
    ]


async def test_fsk_rxpk_is_rejected_without_losing_its_lora_neighbour(
    backend: SemtechUdpBackend, forwarder: AsyncPacketForwarder
) -> None:
    # §4 second example rxpk (FSK, datr 50000).
    fsk: Any = {"tmst": 1, "freq": 869.1, "stat": 1, "modu": "FSK", "datr": 50000, "rssi": -75, "size": 16}
    fsk["data"] = "VEVTVF9QQUNLRVRfMTIzNA=="
    lora = make_rxpk(b"\x40lora", freq_hz=868_100_000, sf=7, rssi_dbm=-50, snr_db=9.0, tmst_us=1)
    assert await forwarder.wait_ack(forwarder.send_rxpk([fsk, lora]), TIMEOUT_S)
    assert (await receive(backend)).phy_payload == b"\x40lora"
    assert backend.counters["bad_datagram.unsupported_modulation"] == 1
    assert backend.pending == 0


async def test_stat_is_kept_per_gateway(backend: SemtechUdpBackend, forwarder: AsyncPacketForwarder) -> None:
    # §4 status example values.
    stat: Any = {"time": "2014-01-12 08:59:28 GMT", "rxnb": 2, "rxok": 2, "rxfw": 2, "ackr": 100.0}
    assert await forwarder.wait_ack(forwarder.send_frames([], stat=stat), TIMEOUT_S)
    assert backend.last_stat == {EUI_A.hex(): stat}
    assert backend.counters["stat"] == 1 and backend.counters["frames"] == 0


async def test_full_queue_drops_and_counts(forwarder: AsyncPacketForwarder) -> None:
    small = SemtechUdpBackend("127.0.0.1", 0, queue_size=2)
    await small.start()
    try:
        async with AsyncPacketForwarder(EUI_B, ("127.0.0.1", small.bound_port)) as fwd:
            token = fwd.send_frames([(bytes([0x40, i]), {}) for i in range(5)])
            assert await fwd.wait_ack(token, TIMEOUT_S)
        assert small.counters["frames"] == 5
        assert small.counters["queue_full"] == 3
        assert small.pending == 2
        # The oldest frames were kept: the queue never blocks and never reorders.
        assert [(await receive(small)).phy_payload for _ in range(2)] == [b"\x40\x00", b"\x40\x01"]
    finally:
        await small.stop()


# --------------------------------------------------------------------------- downstream route


async def test_pull_data_is_acked_and_the_downlink_address_remembered(
    backend: SemtechUdpBackend, forwarder: AsyncPacketForwarder
) -> None:
    assert await forwarder.pull(TIMEOUT_S)
    # §5.1: downlinks go where PULL_DATA came from (the forwarder's "down" socket).
    assert backend.downlink_addresses == {EUI_A.hex(): forwarder.down_address}
    assert backend.counters["pull_data"] == 1


async def test_pull_ack_bytes_are_the_header_with_the_same_token(
    backend: SemtechUdpBackend, raw: RawPeer
) -> None:
    reply = await raw.exchange(b"\x02\x4a\x17\x02" + EUI_B)
    assert reply == PullAck(0x4A17).to_bytes() == b"\x02\x4a\x17\x04"
    assert backend.downlink_addresses[EUI_B.hex()] == raw.sock.getsockname()


async def test_tx_ack_is_counted_by_error(
    backend: SemtechUdpBackend, forwarder: AsyncPacketForwarder
) -> None:
    for ack in (TxAck(1, EUI_A), TxAck(2, EUI_A, "NONE"), TxAck(3, EUI_A, "TOO_LATE"), TxAck(4, EUI_A, "??")):
        forwarder.send_raw(ack.to_bytes())
    assert await forwarder.wait_ack(forwarder.send_frames([]), TIMEOUT_S)  # all earlier datagrams handled
    assert backend.counters["tx_ack"] == 4
    assert backend.counters["tx_ack.TOO_LATE"] == 1
    assert backend.counters["tx_ack.other"] == 1
    assert backend.counters["bad_datagram"] == 0


# --------------------------------------------------------------------------- robustness

_EUI = EUI_A
# (No empty datagram here: asyncio's sendto silently skips b"", see the raw test below.)
GARBAGE: list[tuple[bytes, str]] = [
    (b"\x02", "truncated"),
    (b"\xff" * 64, "bad_version"),
    (b"\x02\x00\x00\x09", "unknown_identifier"),
    (b"\x02\x00\x00\x00" + _EUI + b"{", "bad_json"),
    (b"\x02\x00\x00\x00" + _EUI + b'{"rxpk":[{"data":"!!"}]}', "bad_base64"),
    (b"\x02\x00\x00\x00" + _EUI + b'{"rxpk":[{"data":"AQID","size":9}]}', "size_mismatch"),
    (b"\x02\x00\x00\x02" + _EUI[:3], "truncated"),
    # Server → gateway packets sent to the server:
    (PushAck(1).to_bytes(), "unexpected_identifier"),
    (PullAck(1).to_bytes(), "unexpected_identifier"),
    (PullResp(1, {"imme": True}).to_bytes(), "unexpected_identifier"),
]
ROUNDS = 20


async def test_a_burst_of_garbage_is_counted_and_the_backend_keeps_serving(
    backend: SemtechUdpBackend, forwarder: AsyncPacketForwarder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.radio")
    for _ in range(ROUNDS):
        for datagram, _reason in GARBAGE:
            forwarder.send_raw(datagram)
    token = forwarder.send_frames([(b"\x40after", {})])
    assert await forwarder.wait_ack(token, TIMEOUT_S)
    assert (await receive(backend)).phy_payload == b"\x40after"
    assert forwarder.bad_datagrams == 0  # the backend never answered garbage
    assert backend.counters["bad_datagram"] == ROUNDS * len(GARBAGE)
    assert backend.counters["datagrams"] == ROUNDS * len(GARBAGE) + 1
    for reason in {r for _, r in GARBAGE}:
        expected = ROUNDS * sum(1 for _, r in GARBAGE if r == reason)
        assert backend.counters[f"bad_datagram.{reason}"] == expected, reason
        # Logged once loudly, then quietly.
        loud = [r for r in caplog.records if r.levelno == logging.WARNING and f"({reason})" in r.getMessage()]
        assert len(loud) == 1, reason
    assert backend.pending == 0


async def test_proto_example_push_data_is_acked_and_its_good_rxpk_kept(
    backend: SemtechUdpBackend, raw: RawPeer
) -> None:
    # PROTOCOL.TXT §4's example PUSH_DATA: an SF7 rxpk whose data is not base64, an FSK rxpk and a
    # valid SF10 rxpk. §3.3: the server acknowledges the PUSH_DATA; the SF10 frame comes out and the
    # other two are counted (issue 18: no PUSH_ACK, nothing kept).
    datagram = PushData(0x4242, EUI_A, [PROTO_RXPK_LORA_SF7, PROTO_RXPK_FSK, PROTO_RXPK_LORA_SF10])  # type: ignore[list-item]
    assert await raw.exchange(datagram.to_bytes()) == PushAck(0x4242).to_bytes()
    frame = await receive(backend)
    assert len(frame.phy_payload) == PROTO_RXPK_LORA_SF10["size"]
    assert (frame.rx.freq_hz, frame.rx.sf, frame.rx.concentrator_tmst_us) == (863_009_810, 10, 3316387610)
    assert backend.pending == 0
    assert backend.counters["bad_datagram.bad_base64"] == 1
    assert backend.counters["bad_datagram.unsupported_modulation"] == 1
    assert backend.counters["frames"] == 1


async def test_a_size_mismatch_costs_only_its_own_rxpk(backend: SemtechUdpBackend, raw: RawPeer) -> None:
    rxpk = [LORA_RXPK | {"data": "AQID"}, LORA_RXPK | {"size": 4}, LORA_RXPK | {"data": "BAUG"}]
    assert await raw.exchange(PushData(7, EUI_A, rxpk).to_bytes()) == PushAck(7).to_bytes()  # type: ignore[arg-type]
    assert [(await receive(backend)).phy_payload for _ in range(2)] == [b"\x01\x02\x03", b"\x04\x05\x06"]
    assert backend.counters["bad_datagram.size_mismatch"] == 1


async def test_an_empty_datagram_is_counted(backend: SemtechUdpBackend, raw: RawPeer) -> None:
    raw.sock.send(b"")
    assert await raw.exchange(PushData(7, EUI_A, []).to_bytes()) == PushAck(7).to_bytes()
    assert backend.counters["bad_datagram.truncated"] == 1
    assert backend.counters["datagrams"] == 2


async def test_two_forwarders_at_once_are_told_apart(backend: SemtechUdpBackend) -> None:
    server = ("127.0.0.1", backend.bound_port)
    async with AsyncPacketForwarder(EUI_A, server) as fwd_a, AsyncPacketForwarder(EUI_B, server) as fwd_b:
        tokens = []
        for i in range(10):
            tokens.append((fwd_a, fwd_a.send_frames([(b"\x40A" + bytes([i]), {})])))
            tokens.append((fwd_b, fwd_b.send_frames([(b"\x40B" + bytes([i]), {})])))
        acks = await asyncio.gather(*(fwd.wait_ack(token, TIMEOUT_S) for fwd, token in tokens))
        assert all(acks)
        frames = [await receive(backend) for _ in range(20)]
        by_gateway: dict[str | None, list[bytes]] = {}
        for frame in frames:
            by_gateway.setdefault(frame.rx.gateway_eui, []).append(frame.phy_payload)
        assert by_gateway == {
            EUI_A.hex(): [b"\x40A" + bytes([i]) for i in range(10)],
            EUI_B.hex(): [b"\x40B" + bytes([i]) for i in range(10)],
        }
        assert all(await asyncio.gather(fwd_a.pull(TIMEOUT_S), fwd_b.pull(TIMEOUT_S)))
        assert backend.downlink_addresses == {
            EUI_A.hex(): fwd_a.down_address,
            EUI_B.hex(): fwd_b.down_address,
        }


async def test_blocking_forwarder_from_a_thread(backend: SemtechUdpBackend) -> None:
    def talk() -> tuple[bool, bool, tuple[str, int]]:
        with PacketForwarder(EUI_B, ("127.0.0.1", backend.bound_port)) as fwd:
            token = fwd.send_frames([(b"\x40thread", {"sf": 12})])
            return fwd.wait_ack(token, TIMEOUT_S), fwd.pull(TIMEOUT_S), fwd.down_address

    acked, pulled, down_address = await asyncio.to_thread(talk)
    assert acked and pulled
    frame = await receive(backend)
    assert (frame.phy_payload, frame.rx.sf, frame.rx.gateway_eui) == (b"\x40thread", 12, EUI_B.hex())
    assert backend.downlink_addresses[EUI_B.hex()] == down_address


async def test_stop_closes_the_socket_and_the_port_can_be_bound_again() -> None:
    radio = SemtechUdpBackend("127.0.0.1", 0)
    await radio.start()
    port = radio.bound_port
    await radio.stop()
    await radio.stop()  # idempotent
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))
    again = SemtechUdpBackend("127.0.0.1", port)
    await again.start()
    try:
        async with AsyncPacketForwarder(EUI_A, ("127.0.0.1", port)) as fwd:
            assert await fwd.pull(TIMEOUT_S)
    finally:
        await again.stop()


async def test_start_on_a_busy_port_is_a_config_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        radio = SemtechUdpBackend("127.0.0.1", sock.getsockname()[1])
        with pytest.raises(ConfigError) as info:
            await radio.start()
    assert info.value.key_path == "radio.url"
    await radio.stop()  # stopping a backend that never started is harmless


async def test_no_ack_when_nobody_listens(free_udp_port: int) -> None:
    async with AsyncPacketForwarder(EUI_A, ("127.0.0.1", free_udp_port)) as fwd:
        assert not await fwd.wait_ack(fwd.send_frames([(b"\x40", {})]), 0.2)
        assert not await fwd.pull(0.2)


# ------------------------------------------------------------------- bounds and downlink address pinning


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
async def pinned() -> AsyncIterator[tuple[SemtechUdpBackend, FakeClock]]:
    clock = FakeClock()
    radio = SemtechUdpBackend("127.0.0.1", 0, pull_pin_s=30.0, clock=clock)
    await radio.start()
    try:
        yield radio, clock
    finally:
        await radio.stop()


async def _no_reply(peer: RawPeer, datagram: bytes) -> bool:
    peer.sock.send(datagram)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_recv(peer.sock, 65535), 0.2)
    except TimeoutError:
        return True
    return False


async def test_pull_data_from_another_host_does_not_take_the_downlink_route(
    pinned: tuple[SemtechUdpBackend, FakeClock],
) -> None:
    backend, clock = pinned
    real, intruder = RawPeer(backend.bound_port), RawPeer(backend.bound_port, host="127.0.0.2")
    try:
        assert await real.exchange(PullData(1, EUI_A).to_bytes()) == PullAck(1).to_bytes()
        clock.now_s += 29.0
        # The intruder gets no PULL_ACK and the route stays with the real forwarder.
        assert await _no_reply(intruder, PullData(2, EUI_A).to_bytes())
        assert backend.downlink_addresses == {EUI_A.hex(): real.sock.getsockname()}
        assert backend.counters["pull_data_moved"] == 1
        # Its keepalives keep the pin; the intruder stays refused.
        assert await real.exchange(PullData(3, EUI_A).to_bytes()) == PullAck(3).to_bytes()
        clock.now_s += 29.0
        assert await _no_reply(intruder, PullData(4, EUI_A).to_bytes())
        assert backend.downlink_addresses == {EUI_A.hex(): real.sock.getsockname()}
        assert backend.counters["pull_data_moved"] == 2
    finally:
        real.close()
        intruder.close()


async def test_a_restarted_forwarder_on_the_same_host_gets_its_route_at_once(
    pinned: tuple[SemtechUdpBackend, FakeClock],
) -> None:
    backend, _clock = pinned
    old, new = RawPeer(backend.bound_port), RawPeer(backend.bound_port)
    try:
        assert await old.exchange(PullData(1, EUI_A).to_bytes()) == PullAck(1).to_bytes()
        assert await new.exchange(PullData(2, EUI_A).to_bytes()) == PullAck(2).to_bytes()  # new port
        assert backend.downlink_addresses == {EUI_A.hex(): new.sock.getsockname()}
        assert backend.counters["pull_data_moved"] == 0
    finally:
        old.close()
        new.close()


async def test_a_forwarder_that_moved_host_gets_its_route_back_after_the_pin_delay(
    pinned: tuple[SemtechUdpBackend, FakeClock],
) -> None:
    backend, clock = pinned
    old, new = RawPeer(backend.bound_port), RawPeer(backend.bound_port, host="127.0.0.2")
    try:
        assert await old.exchange(PullData(1, EUI_A).to_bytes()) == PullAck(1).to_bytes()
        clock.now_s += 10.0
        assert await _no_reply(new, PullData(2, EUI_A).to_bytes())  # new DHCP lease
        clock.now_s += 20.0  # the old host has been silent for pull_pin_s
        assert await new.exchange(PullData(3, EUI_A).to_bytes()) == PullAck(3).to_bytes()
        assert backend.downlink_addresses == {EUI_A.hex(): new.sock.getsockname()}
    finally:
        old.close()
        new.close()


async def test_tx_ack_from_another_address_does_not_complete_a_downlink(backend: SemtechUdpBackend) -> None:
    real, intruder = RawPeer(backend.bound_port), RawPeer(backend.bound_port)
    try:
        assert await real.exchange(PullData(1, EUI_A).to_bytes()) == PullAck(1).to_bytes()
        request = TxRequest(b"\x60" + bytes(11), freq_hz=869_525_000, sf=9, gateway_eui=EUI_A.hex())
        send = asyncio.ensure_future(backend.transmit(request))
        reply = asyncio.get_running_loop().sock_recv(real.sock, 65535)
        resp = parse(await asyncio.wait_for(reply, TIMEOUT_S))
        assert isinstance(resp, PullResp)
        intruder.sock.send(TxAck(resp.token, EUI_A, "TOO_LATE").to_bytes())  # forged
        await asyncio.sleep(0.1)
        assert not send.done()
        assert backend.counters["tx_ack_foreign"] == 1
        real.sock.send(TxAck(resp.token, EUI_A, "NONE").to_bytes())
        assert (await asyncio.wait_for(send, TIMEOUT_S)).status is TxStatus.SENT
    finally:
        real.close()
        intruder.close()


async def test_forwarders_remembered_are_bounded_and_live_ones_are_never_evicted(
    pinned: tuple[SemtechUdpBackend, FakeClock],
) -> None:
    backend, clock = pinned
    hosts = MAX_FORWARDERS // MAX_FORWARDERS_PER_HOST + 3
    peers = [RawPeer(backend.bound_port, f"127.0.0.{2 + h}") for h in range(hosts)]
    try:
        euis = [i.to_bytes(8, "big") for i in range(1, MAX_FORWARDERS + 11)]

        def peer_of(i: int) -> RawPeer:  # MAX_FORWARDERS_PER_HOST EUIs per host, as gateways do
            return peers[i // MAX_FORWARDERS_PER_HOST]

        for i, eui in enumerate(euis[:MAX_FORWARDERS]):
            assert await peer_of(i).exchange(PullData(i, eui).to_bytes()) == PullAck(i).to_bytes()
        # All 64 are live: a 65th EUI is refused rather than unpinning one of them.
        assert await _no_reply(peer_of(MAX_FORWARDERS), PullData(999, euis[MAX_FORWARDERS]).to_bytes())
        assert backend.counters["too_many_forwarders"] == 1
        assert len(backend.downlink_addresses) == MAX_FORWARDERS
        # Once they fall silent, new EUIs replace the oldest.
        clock.now_s += 31.0
        for i, eui in enumerate(euis[MAX_FORWARDERS:], start=MAX_FORWARDERS):
            assert await peer_of(i).exchange(PullData(i, eui).to_bytes()) == PullAck(i).to_bytes()
        assert len(backend.downlink_addresses) == MAX_FORWARDERS
        assert euis[0].hex() not in backend.downlink_addresses
        assert euis[-1].hex() in backend.downlink_addresses
    finally:
        for peer in peers:
            peer.close()


async def test_one_host_pulling_for_many_euis_cannot_lock_a_real_forwarder_out(
    pinned: tuple[SemtechUdpBackend, FakeClock],
) -> None:
    # The review's case: one host kept 64 EUIs pulling and every new gateway got too_many_forwarders.
    backend, _clock = pinned
    flooder, real = RawPeer(backend.bound_port, "127.0.0.2"), RawPeer(backend.bound_port, "127.0.0.3")
    try:
        for i in range(MAX_FORWARDERS * 2):
            assert await flooder.exchange(PullData(i, (1000 + i).to_bytes(8, "big")).to_bytes())
        assert await real.exchange(PullData(1, EUI_A).to_bytes()) == PullAck(1).to_bytes()
        assert EUI_A.hex() in backend.downlink_addresses
        from_flooder = [e for e, a in backend.downlink_addresses.items() if a[0] == "127.0.0.2"]
        assert len(from_flooder) == MAX_FORWARDERS_PER_HOST
    finally:
        flooder.close()
        real.close()


async def test_stats_are_trimmed_and_bounded(backend: SemtechUdpBackend, raw: RawPeer) -> None:
    stat: Any = {"rxnb": 1, "desc": "x" * 2000, "mail": "y" * 2000}
    for i in range(MAX_FORWARDERS * 2):
        datagram = PushData(i, i.to_bytes(8, "big"), [], stat).to_bytes()
        assert await raw.exchange(datagram) == PushAck(i).to_bytes()
    assert len(backend.last_stat) == MAX_FORWARDERS
    assert all(kept == {"rxnb": 1} for kept in backend.last_stat.values())


async def test_an_oversized_datagram_is_refused_before_parsing(
    backend: SemtechUdpBackend, raw: RawPeer
) -> None:
    big = PushData(1, EUI_A, [], {"desc": "x" * 60_000}).to_bytes()  # type: ignore[typeddict-unknown-key]
    assert await _no_reply(raw, big)
    assert backend.counters["bad_datagram.datagram_too_large"] == 1
    assert backend.last_stat == {}


# ------------------------------------------------------------------- the fake forwarder's downlink side


def test_blocking_forwarder_answers_pull_resp_with_tx_ack() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(TIMEOUT_S)
        with PacketForwarder(EUI_A, server.getsockname()) as fwd:
            assert fwd.wait_downlink(0.05) is None
            txpk = {"imme": True, "freq": 869.525, "powe": 14, "modu": "LORA", "datr": "SF9BW125"}
            server.sendto(PullResp(0x0042, txpk).to_bytes(), fwd.down_address)
            resp = fwd.wait_downlink(TIMEOUT_S, tx_ack_error="TOO_LATE")
            assert resp == PullResp(0x0042, txpk)
            datagram, sender = server.recvfrom(65535)
            assert sender == fwd.down_address
            assert parse(datagram) == TxAck(0x0042, EUI_A, "TOO_LATE")


# --------------------------------------------------------------------------- open_backend


def test_open_backend_builds_the_semtech_backend_from_its_url() -> None:
    radio = open_backend("semtech-udp://0.0.0.0:1700")
    assert isinstance(radio, SemtechUdpBackend)
    assert (radio.host, radio.port, radio.name) == ("0.0.0.0", 1700, "semtech-udp")
    default_port = open_backend("semtech-udp://127.0.0.1")
    assert isinstance(default_port, SemtechUdpBackend) and default_port.port == 1700
    ipv6 = open_backend("semtech-udp://[::1]:1680")
    assert isinstance(ipv6, SemtechUdpBackend) and (ipv6.host, ipv6.port) == ("::1", 1680)


@pytest.mark.parametrize(
    "url",
    [
        "sx9999://spi0.0",  # unknown scheme
        "semtech-udp",  # not a URL
        "",
        "semtech-udp://0.0.0.0:99999",  # port out of range
        "semtech-udp://0.0.0.0:udp",  # port not a number
        "semtech-udp://:1700",  # no host
        "semtech-udp://0.0.0.0:1700/path",
        "semtech-udp://0.0.0.0:1700?sf=7",
        "semtech-udp://[::1:1700",  # broken IPv6 literal
    ],
)
def test_open_backend_refuses_bad_urls_with_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_backend(url)
    assert info.value.key_path == "radio.url"


def test_unknown_scheme_error_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="semtech-udp"):
        open_backend("lorawan-magic://x")
