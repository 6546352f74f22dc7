"""RUI3 P2P line protocol: a table of known lines, partial lines, garbage and resync.

Line formats from RAKwireless' RUI3 AT Command Manual (docs.rakwireless.com/product-categories/
software-apis-and-libraries/rui3/at-command-manual: status codes, AT+P2P, AT+PRECV 65534/0,
AT+PSEND) and the RAK "AT Command Migration Guide" LoRa P2P section: the RUI3 receive event is
one line ``+EVT:RXP2P:-60:11:AABBCCDD`` (rssi, snr, payload hex).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.radio.serial_modem import protocol
from gateway.radio.serial_modem.protocol import Boot, Garbage, Info, LineParser, RxPacket, Status, TxDone

KNOWN: list[tuple[bytes, object]] = [
    (b"+EVT:RXP2P:-60:11:AABBCCDD", RxPacket(bytes.fromhex("aabbccdd"), -60.0, 11.0)),  # migration guide
    (b"+EVT:RXP2P:-112:-7:40aabb", RxPacket(bytes.fromhex("40aabb"), -112.0, -7.0)),
    (b"+EVT:TXP2P DONE", TxDone()),
    (b"OK", Status("OK")),
    (b"AT_BUSY_ERROR", Status("AT_BUSY_ERROR")),
    (b"AT_PARAM_ERROR", Status("AT_PARAM_ERROR")),
    (b"Current Work Mode: LoRa P2P.", Boot("Current Work Mode: LoRa P2P.")),
    (b"AT+PRECV=65534", Info("AT+PRECV=65534")),  # echo with ATE on
    (b"+EVT:RXP2P RECEIVE TIMEOUT", Info("+EVT:RXP2P RECEIVE TIMEOUT")),
    (b"+EVT:RXP2P:-60:11:ABC", Garbage("bad_rxp2p", b"+EVT:RXP2P:-60:11:ABC")),  # odd hex
    (b"+EVT:RXP2P:x:11:AB", Garbage("bad_rxp2p", b"+EVT:RXP2P:x:11:AB")),
    (b"\xff\xfe", Garbage("not_text", b"\xff\xfe")),
    (b"hello", Garbage("unknown_line", b"hello")),
]


@pytest.mark.parametrize(("line", "event"), KNOWN)
def test_known_lines(line: bytes, event: object) -> None:
    assert protocol.parse_line(line) == event
    assert LineParser().feed(line + b"\r\n") == [event]


def test_partial_lines_are_kept_until_their_end() -> None:
    parser = LineParser()
    assert parser.feed(b"\r\nO") == []
    assert parser.feed(b"K\r") == [Status("OK")]
    assert parser.feed(b"\n+EVT:RXP2P:-5") == []
    assert parser.pending > 0
    assert parser.feed(b"0:7:0102\r\n") == [RxPacket(b"\x01\x02", -50.0, 7.0)]
    assert parser.pending == 0


def test_garbage_then_resync_on_the_next_line() -> None:
    parser = LineParser()
    events = parser.feed(b"\x00\x13noise\xff\r\n+EVT:RXP2P:-70:9:40\r\n")
    assert isinstance(events[0], Garbage)
    assert events[1:] == [RxPacket(b"\x40", -70.0, 9.0)]


def test_an_endless_line_is_dropped_and_parsing_resumes() -> None:
    parser = LineParser(max_line_bytes=100)
    events = parser.feed(b"A" * 150)
    assert events == [Garbage("line_too_long", b"A" * 64)]
    assert parser.feed(b"B" * 50 + b"\r\nOK\r\n") == [Status("OK")]  # the tail is skipped, OK is not


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=20))
def test_any_bytes_in_any_chunks_never_raise(chunks: list[bytes]) -> None:
    parser = LineParser(max_line_bytes=64)
    for chunk in chunks:
        parser.feed(chunk)
    assert parser.pending <= 64
    # Whatever came before, a clean line after a line end is understood.
    assert parser.feed(b"\nOK\r\n")[-1] == Status("OK")


def test_commands() -> None:
    assert protocol.p2p_config(
        freq_hz=868_100_000, sf=7, bw_hz=125_000, cr_index=1, preamble=8, power_dbm=14
    ) == (b"AT+P2P=868100000:7:125:0:8:14\r\n")
    assert protocol.receive(65534) == b"AT+PRECV=65534\r\n"
    assert protocol.send(b"\x60\xab") == b"AT+PSEND=60AB\r\n"
    with pytest.raises(ValueError):
        protocol.send(b"")
    with pytest.raises(ValueError):
        protocol.p2p_config(freq_hz=868_100_000, sf=7, bw_hz=62_500, cr_index=1, preamble=8, power_dbm=14)
