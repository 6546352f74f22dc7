"""SemtechUdpBackend.transmit over real UDP sockets: PULL_RESP out, TX_ACK back (PROTOCOL.TXT v2).

Behaviour from Semtech's PROTOCOL.TXT (Lora-net/packet_forwarder, protocol version 2,
commit 36ab4b40542c7ad59b6b4d083577aa9f13a2ed46): PULL_RESP goes to the address PULL_DATA
came from (§5.1, §5.4); the txpk object fields and the txpk_ack error names (§6); TX_ACK
echoes the PULL_RESP token (§5.5); protocol v1 has no TX_ACK (§7).
"""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator

import pytest

from gateway.messages import TxRequest, TxStatus
from gateway.radio import open_backend
from gateway.radio.semtech_udp.backend import SemtechUdpBackend, build_txpk
from gateway.radio.semtech_udp.packets import PullData, PullResp, TxAck, parse
from simulator.forwarder import PacketForwarder

EUI_A = bytes.fromhex("b827ebfffe000001")
EUI_B = bytes.fromhex("b827ebfffe000002")
TIMEOUT_S = 2.0
PHY = bytes.fromhex("60ac9d0b26000100010203")


@pytest.fixture
async def backend() -> AsyncIterator[SemtechUdpBackend]:
    radio = SemtechUdpBackend("127.0.0.1", 0, tx_ack_timeout_s=0.5)
    await radio.start()
    try:
        yield radio
    finally:
        await radio.stop()


def request(**changes: object) -> TxRequest:
    fields: dict[str, object] = {
        "phy_payload": PHY,
        "freq_hz": 869_525_000,
        "sf": 9,
        "power_dbm": 14.0,
        "gateway_eui": EUI_A.hex(),
    }
    fields.update(changes)
    return TxRequest(**fields)  # type: ignore[arg-type]


async def serve_one_downlink(
    backend: SemtechUdpBackend, eui: bytes, tx_ack_error: str | None, req: TxRequest
) -> tuple[PullResp | None, object]:
    """A blocking forwarder in a thread pulls, then answers the next PULL_RESP; we transmit meanwhile."""
    ready = asyncio.Event()
    loop = asyncio.get_running_loop()

    def forwarder() -> PullResp | None:
        with PacketForwarder(eui, ("127.0.0.1", backend.bound_port)) as fwd:
            assert fwd.pull(TIMEOUT_S)
            loop.call_soon_threadsafe(ready.set)
            return fwd.wait_downlink(TIMEOUT_S, tx_ack_error=tx_ack_error)

    thread = asyncio.create_task(asyncio.to_thread(forwarder))
    await asyncio.wait_for(ready.wait(), TIMEOUT_S)
    result = await backend.transmit(req)
    return await thread, result


async def test_immediate_downlink_is_a_pull_resp_and_tx_ack_means_sent(backend: SemtechUdpBackend) -> None:
    resp, result = await serve_one_downlink(backend, EUI_A, None, request())
    assert resp is not None
    txpk = resp.txpk
    # §6 txpk: immediate, MHz, integer dBm, LoRa datr/codr, inverted polarity, no CRC, base64 data.
    assert txpk["imme"] is True and "tmst" not in txpk
    assert (txpk["freq"], txpk["powe"], txpk["modu"], txpk["datr"], txpk["codr"]) == (
        869.525,
        14,
        "LORA",
        "SF9BW125",
        "4/5",
    )
    assert (txpk["ipol"], txpk["ncrc"], txpk["size"]) == (True, True, len(PHY))
    assert base64.b64decode(txpk["data"]) == PHY
    assert result.status is TxStatus.SENT  # type: ignore[attr-defined]
    assert result.airtime_ms == pytest.approx(144.384)  # type: ignore[attr-defined]  # SF9, 11 B, no CRC
    assert backend.counters["tx_ok"] == 1 and backend.counters["tx.sent"] == 1
    assert backend.counters["tx_ack"] == 1 and backend.counters["tx_airtime_ms"] == 144
    assert backend.health()["duty_cycle"]["P"]["used_s"] == pytest.approx(0.144, abs=0.001)


async def test_class_a_downlink_carries_the_concentrator_timestamp(backend: SemtechUdpBackend) -> None:
    resp, result = await serve_one_downlink(
        backend, EUI_A, "NONE", request(freq_hz=868_100_000, sf=7, send_at_tmst_us=(1 << 32) + 5_000_000)
    )
    assert resp is not None
    assert resp.txpk["tmst"] == 5_000_000 and "imme" not in resp.txpk  # wraps like the counter
    assert resp.txpk["freq"] == 868.1
    assert result.status is TxStatus.SENT  # type: ignore[attr-defined]


async def test_gps_time_downlink_uses_tmms(backend: SemtechUdpBackend) -> None:
    resp, _ = await serve_one_downlink(backend, EUI_A, None, request(send_at_gps_ms=1_300_000_000_123))
    assert resp is not None and resp.txpk["tmms"] == 1_300_000_000_123 and "imme" not in resp.txpk


@pytest.mark.parametrize(
    ("error", "status"),
    [
        ("TOO_LATE", TxStatus.TOO_LATE),
        ("TOO_EARLY", TxStatus.TOO_EARLY),
        ("COLLISION_PACKET", TxStatus.COLLISION_PACKET),
        ("COLLISION_BEACON", TxStatus.COLLISION_BEACON),
        ("TX_FREQ", TxStatus.TX_FREQ),
        ("TX_POWER", TxStatus.TX_POWER),
        ("GPS_UNLOCKED", TxStatus.GPS_UNLOCKED),
        ("SOMETHING_NEW", TxStatus.FAILED),
    ],
)
async def test_tx_ack_errors_map_to_statuses_and_give_the_airtime_back(
    backend: SemtechUdpBackend, error: str, status: TxStatus
) -> None:
    _, result = await serve_one_downlink(backend, EUI_A, error, request())
    assert result.status is status  # type: ignore[attr-defined]
    assert error in result.detail  # type: ignore[attr-defined]
    assert backend.counters["tx_failed"] == 1 and backend.counters[f"tx.{status.value}"] == 1
    # Nothing went on air: the duty-cycle booking was cancelled.
    assert backend.health()["duty_cycle"]["P"]["used_s"] == 0.0
    assert backend.counters["tx_airtime_ms"] == 0


async def test_no_pull_data_from_that_gateway_is_no_route(backend: SemtechUdpBackend) -> None:
    result = await backend.transmit(request())
    assert result.status is TxStatus.NO_ROUTE
    assert backend.counters["tx.no_route"] == 1
    # A gateway that pulls does not open a route for another one.
    with PacketForwarder(EUI_B, ("127.0.0.1", backend.bound_port)) as fwd:
        assert await asyncio.to_thread(fwd.pull, TIMEOUT_S)
        assert (await backend.transmit(request())).status is TxStatus.NO_ROUTE


async def recv(sock: socket.socket) -> bytes:
    return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 65535), TIMEOUT_S)


def raw_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect(("127.0.0.1", port))
    return sock


async def test_silent_forwarder_times_out_as_failed(backend: SemtechUdpBackend) -> None:
    with raw_socket(backend.bound_port) as sock:
        sock.send(PullData(7, EUI_A).to_bytes())
        assert (await recv(sock))[3] == 0x04  # PULL_ACK
        result = await backend.transmit(request())
        assert result.status is TxStatus.FAILED and "no TX_ACK" in result.detail
        # The PULL_RESP did arrive; a TX_ACK after the timeout is counted, not matched.
        resp = parse(await recv(sock))
        assert isinstance(resp, PullResp)
        sock.send(TxAck(resp.token, EUI_A).to_bytes())
        sock.send(PullData(8, EUI_A).to_bytes())
        assert (await recv(sock))[3] == 0x04
    assert backend.counters["tx_ack_timeout"] == 1
    assert backend.counters["tx_ack_unmatched"] == 1


async def test_protocol_v1_forwarder_gets_v1_pull_resp_without_waiting(backend: SemtechUdpBackend) -> None:
    with raw_socket(backend.bound_port) as sock:
        sock.send(PullData(7, EUI_A, version=1).to_bytes())
        assert await recv(sock) == b"\x01\x00\x07\x04"
        result = await asyncio.wait_for(backend.transmit(request()), 0.4)  # less than the ack timeout
        assert result.status is TxStatus.SENT and "v1" in result.detail
        resp = await recv(sock)
        assert resp[0] == 1 and resp[3] == 0x03


async def test_two_forwarders_each_get_their_own_downlinks(backend: SemtechUdpBackend) -> None:
    loop = asyncio.get_running_loop()
    ready = [asyncio.Event(), asyncio.Event()]

    def run(eui: bytes, index: int, error: str | None) -> list[PullResp]:
        got: list[PullResp] = []
        with PacketForwarder(eui, ("127.0.0.1", backend.bound_port)) as fwd:
            assert fwd.pull(TIMEOUT_S)
            loop.call_soon_threadsafe(ready[index].set)
            for _ in range(2):
                resp = fwd.wait_downlink(TIMEOUT_S, tx_ack_error=error)
                if resp is not None:
                    got.append(resp)
        return got

    task_a = asyncio.create_task(asyncio.to_thread(run, EUI_A, 0, None))
    task_b = asyncio.create_task(asyncio.to_thread(run, EUI_B, 1, "TOO_LATE"))
    await asyncio.wait_for(asyncio.gather(ready[0].wait(), ready[1].wait()), TIMEOUT_S)
    results = await asyncio.gather(
        backend.transmit(request(phy_payload=b"\x60A1")),
        backend.transmit(request(phy_payload=b"\x60B1", gateway_eui=EUI_B.hex())),
        backend.transmit(request(phy_payload=b"\x60A2")),
        backend.transmit(request(phy_payload=b"\x60B2", gateway_eui=EUI_B.hex().upper())),
    )
    got_a, got_b = await task_a, await task_b
    assert [base64.b64decode(r.txpk["data"]) for r in got_a] == [b"\x60A1", b"\x60A2"]
    assert [base64.b64decode(r.txpk["data"]) for r in got_b] == [b"\x60B1", b"\x60B2"]
    assert [r.status for r in results] == [TxStatus.SENT, TxStatus.TOO_LATE] * 2


async def test_without_a_gateway_eui_the_latest_puller_is_used(backend: SemtechUdpBackend) -> None:
    _, result = await serve_one_downlink(backend, EUI_B, None, request(gateway_eui=None))
    assert result.status is TxStatus.SENT  # type: ignore[attr-defined]


def test_build_txpk_rounds_frequency_and_power() -> None:
    txpk = build_txpk(request(freq_hz=867_100_000, power_dbm=13.6, bw_hz=250_000, sf=7, coding_rate="4/6"))
    assert (txpk["freq"], txpk["powe"], txpk["datr"], txpk["codr"]) == (867.1, 14, "SF7BW250", "4/6")


def test_url_query_parameters() -> None:
    radio = open_backend("semtech-udp://127.0.0.1:1700?tx_ack_timeout_s=0.25&max_defer_s=30")
    assert isinstance(radio, SemtechUdpBackend)
    assert (radio.tx_ack_timeout_s, radio.max_defer_s) == (0.25, 30.0)
