"""SerialModemBackend over a real pty, with simulator.serial_modem playing a RAK RUI3 modem.

Protocol facts: RAKwireless RUI3 AT Command Manual (AT+PRECV=65534 receives until AT+PRECV=0;
AT_BUSY_ERROR for AT+PSEND while receiving; +EVT:TXP2P DONE) and the RAK AT Command Migration
Guide (+EVT:RXP2P:<rssi>:<snr>:<hex>). See tests/radio/test_serial_protocol.py for the line table.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.messages import TxRequest, TxStatus
from gateway.radio import open_backend
from gateway.radio.serial_modem.backend import SerialModemBackend
from simulator.serial_modem import Rui3ModemSimulator

TIMEOUT_S = 3.0


@pytest.fixture
def modem(tmp_path: Path) -> AsyncIterator[Rui3ModemSimulator]:
    sim = Rui3ModemSimulator(tmp_path / "ttyUSB0")
    yield sim  # type: ignore[misc]
    sim.close()


@pytest.fixture
async def radio(modem: Rui3ModemSimulator) -> AsyncIterator[SerialModemBackend]:
    backend = open_backend(
        f"serial://{modem.link_path}?baud=115200&freq_hz=868300000&sf=9&reconnect_max_s=0.2"
    )
    assert isinstance(backend, SerialModemBackend)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.stop()


async def until(predicate: object, what: str) -> None:
    for _ in range(int(TIMEOUT_S / 0.02)):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def test_configures_the_modem_for_continuous_p2p_receive(
    radio: SerialModemBackend, modem: Rui3ModemSimulator
) -> None:
    assert radio.connected and modem.state.receiving
    assert modem.state.nwm == 0 and modem.state.sync_word == "3444"
    assert modem.state.p2p == "868300000:9:125:0:8:14"
    assert modem.state.commands[-1] == "AT+PRECV=65534"


async def test_garbage_and_half_lines_are_counted_and_reception_goes_on(
    radio: SerialModemBackend, modem: Rui3ModemSimulator
) -> None:
    modem.write(b"\x00\xff\xfejunk\r\n+EVT:RXP2P:-9")
    modem.write(b"0:5:40AB\r\n+EVT:RXP2P:-90:5:ABC\r\n")
    frame = await asyncio.wait_for(radio.receive(), TIMEOUT_S)
    assert (frame.phy_payload, frame.rx.rssi_dbm, frame.rx.snr_db, frame.rx.sf) == (
        b"\x40\xab",
        -90.0,
        5.0,
        9,
    )
    await until(lambda: radio.counters["bad_datagram"] == 2, "two bad lines")
    assert radio.counters["bad_datagram.not_text"] == 1 and radio.counters["bad_datagram.bad_rxp2p"] == 1


async def test_transmit_stops_rx_sends_inverted_then_listens_again(
    radio: SerialModemBackend, modem: Rui3ModemSimulator
) -> None:
    result = await radio.transmit(TxRequest(b"\x60\x01", 869_525_000, 12))
    assert result.status is TxStatus.SENT
    assert modem.state.transmitted == [(b"\x60\x01", "869525000:12:125:0:8:14", True)]
    assert modem.state.receiving and not modem.state.iq_inverted
    assert modem.state.p2p == "868300000:9:125:0:8:14"
    assert modem.hear(b"\x40back")
    assert (await asyncio.wait_for(radio.receive(), TIMEOUT_S)).phy_payload == b"\x40back"


async def test_modem_reset_is_noticed_and_it_is_configured_again(
    radio: SerialModemBackend, modem: Rui3ModemSimulator
) -> None:
    modem.reboot()
    await until(lambda: modem.state.receiving, "the backend to restart reception")
    assert radio.counters["modem_reset"] >= 1
    assert modem.hear(b"\x40rebooted")
    assert (await asyncio.wait_for(radio.receive(), TIMEOUT_S)).phy_payload == b"\x40rebooted"


async def test_usb_unplug_and_replug(radio: SerialModemBackend, modem: Rui3ModemSimulator) -> None:
    modem.unplug()
    await until(lambda: not radio.connected, "the backend to notice the unplug")
    # While unplugged: transmit says there is no route, nothing crashes, reconnects keep failing.
    assert (await radio.transmit(TxRequest(b"\x60", 869_525_000, 9))).status is TxStatus.NO_ROUTE
    await asyncio.sleep(0.3)
    modem.plug()
    await until(lambda: radio.connected and modem.state.receiving, "the backend to reconnect")
    assert radio.counters["disconnects"] == 1 and radio.counters["connects"] == 2
    assert modem.hear(b"\x40replugged")
    assert (await asyncio.wait_for(radio.receive(), TIMEOUT_S)).phy_payload == b"\x40replugged"


async def test_no_device_at_start_keeps_retrying_until_it_appears(tmp_path: Path) -> None:
    backend = SerialModemBackend(str(tmp_path / "ttyACM0"), reconnect_max_s=0.1)
    start = asyncio.create_task(backend.start())
    await asyncio.sleep(0.3)
    modem = Rui3ModemSimulator(tmp_path / "ttyACM0")
    try:
        await asyncio.wait_for(start, 10)
        await until(lambda: backend.connected, "the first connection")
        assert modem.hear(b"\x40late")
        assert (await asyncio.wait_for(backend.receive(), TIMEOUT_S)).phy_payload == b"\x40late"
    finally:
        await backend.stop()
        modem.close()


async def test_a_modem_refusing_commands_is_retried_not_fatal(tmp_path: Path) -> None:
    modem = Rui3ModemSimulator(tmp_path / "tty")
    backend = SerialModemBackend(str(tmp_path / "tty"), sync_word="not-hex", reconnect_max_s=0.1)
    modem.state.commands.clear()
    original = modem._answer

    def refuse_syncword(text: str) -> None:
        if text.startswith("AT+SYNCWORD"):
            modem.state.commands.append(text)
            modem.write(b"\r\nAT_PARAM_ERROR\r\n")
        else:
            original(text)

    modem._answer = refuse_syncword  # type: ignore[method-assign]
    try:
        start = asyncio.create_task(backend.start())
        # The simulator records a command before it answers; the backend counts the refusal once it
        # has read the answer: wait for the backend's count, not the simulator's (a loaded machine
        # runs the assertion between the two).
        await until(lambda: backend.counters["command_error"] >= 2, "a retry")
        assert not backend.connected and modem.state.commands.count("AT+SYNCWORD=not-hex") >= 2
        await asyncio.wait_for(start, 10)
    finally:
        await backend.stop()
        modem.close()


@pytest.mark.parametrize(
    "url", ["serial://dev/ttyUSB0", "serial:///dev/ttyUSB0?bw_hz=62500", "serial:///dev/ttyUSB0?baud=fast"]
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        open_backend(url)


def test_loop_url() -> None:
    backend = open_backend("serial://loop?baud=9600")
    assert isinstance(backend, SerialModemBackend) and backend.port == "loop://" and backend.baud == 9600


async def test_a_request_above_the_modules_maximum_is_sent_at_22_dbm(
    radio: SerialModemBackend, modem: Rui3ModemSimulator
) -> None:
    # RX2 at 869.525 MHz may go to 27 dBm e.r.p. (EN 300 220-2, docs/radio.md), but a RAK RUI3 module
    # (STM32WL) transmits at most 22 dBm: asked for 27, it is configured at 22, not refused.
    result = await radio.transmit(TxRequest(b"\x60\x02", 869_525_000, 12, power_dbm=27.0))
    assert result.status is TxStatus.SENT
    assert modem.state.transmitted[-1][1] == "869525000:12:125:0:8:22"
