"""Vendor-style JavaScript codecs in the QuickJS sandbox: results, errors, time, isolation, limits.

Every codec here is written for these tests in the style of the TTN payload-formatter API
(https://www.thethingsindustries.com/docs/integrations/payload-formatters/javascript/:
``decodeUplink(input) -> {data, warnings, errors}``, legacy ``Decoder(bytes, port)``).
No vendor code is used.
"""

from __future__ import annotations

import time

import pytest

from gateway.codec.js import JsCodec
from gateway.errors import DecodeError

pytest.importorskip("quickjs")

UPLINK = """
function decodeUplink(input) {
  if (input.bytes.length < 2) { return { errors: ["too short"] }; }
  var t = (input.bytes[0] << 8 | input.bytes[1]) / 10;
  return { data: { temperature: t, port: input.fPort, at: input.recvTime.toISOString(),
                   now: Date.now(), fresh: new Date().getTime() },
           warnings: t > 50 ? ["hot"] : [] };
}
"""
LEGACY = "function Decoder(bytes, port) { return { first: bytes[0], port: port }; }"
T0_S = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def test_decode_uplink_gets_bytes_port_and_the_callers_time() -> None:
    codec = JsCodec(UPLINK, name="t.js")
    decoded = codec.decode(2, bytes.fromhex("00eb"), T0_S)
    assert decoded.data == {
        "temperature": 23.5,
        "port": 2,
        "at": "2023-11-14T22:13:20.000Z",
        "now": T0_S * 1000,
        "fresh": T0_S * 1000,
    }
    assert decoded.warnings == ()
    assert codec.decode(2, bytes.fromhex("01f5"), T0_S).warnings == ("hot",)


def test_legacy_decoder_and_errors() -> None:
    assert JsCodec(LEGACY).decode(5, b"\x07", 0.0).data == {"first": 7, "port": 5}
    with pytest.raises(DecodeError, match="too short") as info:
        JsCodec(UPLINK).decode(1, b"\x00", 0.0)
    assert info.value.reason == "codec_error"
    with pytest.raises(DecodeError, match="boom"):
        JsCodec("function decodeUplink(i) { throw new Error('boom'); }").decode(1, b"", 0.0)
    with pytest.raises(DecodeError, match="neither decodeUplink nor Decoder"):
        JsCodec("var x = 1;").decode(1, b"", 0.0)
    with pytest.raises(DecodeError, match="not an object"):
        JsCodec("function decodeUplink(i) { return { data: 42 }; }").decode(1, b"", 0.0)
    with pytest.raises(DecodeError, match="does not load"):
        JsCodec("function (")


def test_the_sandbox_offers_no_host_access() -> None:
    probe = """
    function decodeUplink(input) {
      return { data: { require: typeof require, std: typeof std, os: typeof os, process: typeof process,
                       fetch: typeof fetch, xhr: typeof XMLHttpRequest, imp: typeof importScripts } };
    }
    """
    assert set(JsCodec(probe).decode(1, b"", 0.0).data.values()) == {"undefined"}
    # import() gives a promise the sandbox never runs (no job loop), and the context has no
    # module loader: QuickJS rejects it with "could not load module 'os'".
    importer = JsCodec("function decodeUplink(i) { return { data: { m: import('os') } }; }")
    assert importer.decode(1, b"", 0.0).data == {"m": {}}


def test_an_infinite_loop_is_stopped_within_budget_and_the_codec_recovers() -> None:
    codec = JsCodec(
        "function decodeUplink(i) {"
        " if (i.bytes[0] === 1) { while (true) {} } return { data: { ok: true } }; }",
        time_budget_s=0.05,
    )
    start = time.perf_counter()
    with pytest.raises(DecodeError, match="exceeded its 50 ms budget"):
        codec.decode(1, b"\x01", 0.0)
    assert time.perf_counter() - start < 0.5
    assert codec.decode(1, b"\x00", 0.0).data == {"ok": True}
    assert codec.resets == 1


def test_a_memory_bomb_is_stopped_and_the_codec_recovers() -> None:
    codec = JsCodec(
        """
        function decodeUplink(i) {
          if (i.bytes[0] === 1) { var a = []; while (true) { a.push(new Array(100000).fill(i.bytes[0])); } }
          return { data: { ok: true } };
        }
        """,
        memory_limit_bytes=8 * 1024 * 1024,
        time_budget_s=2.0,
    )
    start = time.perf_counter()
    with pytest.raises(DecodeError, match="memory cap"):
        codec.decode(1, b"\x01", 0.0)
    assert time.perf_counter() - start < 2.0
    assert codec.decode(1, b"\x00", 0.0).data == {"ok": True}


def test_deep_recursion_is_an_error_not_a_crash() -> None:
    codec = JsCodec(
        "function f(n) { return f(n + 1) + 1; } function decodeUplink(i) { return { data: f(0) }; }"
    )
    with pytest.raises(DecodeError):
        codec.decode(1, b"", 0.0)


def test_a_top_level_loop_is_refused_at_load() -> None:
    start = time.perf_counter()
    with pytest.raises(DecodeError, match="does not load"):
        JsCodec("while (true) {}", time_budget_s=0.05)
    assert time.perf_counter() - start < 0.5
