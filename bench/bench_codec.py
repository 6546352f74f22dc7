"""Benchmark: profile-compiled decoding vs a hand-written struct decoder, in one run.

Decodes the embedded examples of every shipped profile that has a hand-written
decoder below (what a developer would write for that one model: an if-chain and
``struct``) in a loop with the compiled profile and with the hand decoder, and prints
payloads/s for both and their ratio. Then the cost of one call of a JavaScript codec
in the QuickJS sandbox. Ratios, not absolute numbers, are comparable across machines
(ARCHITECTURE.md §4). Target: hand ÷ profile ≤ 3 and > 100,000 payloads/s (TLV family).

    python bench/bench_codec.py [--payloads N] [--js-calls N] [--json]
"""

from __future__ import annotations

import argparse
import json
import struct
import time
from collections.abc import Callable
from typing import Any

from gateway.codec import ProfileStore, default_profiles_dir

_U16 = struct.Struct("<H").unpack_from
_CLASSES = {0: "Class A", 1: "Class B", 2: "Class C", 3: "Class CtoB"}


def hand_decode(payload: bytes) -> dict[str, Any]:
    """EM310-UDL decoded by hand, the baseline (same outputs as the profile)."""
    out: dict[str, Any] = {}
    i = 0
    n = len(payload)
    while i + 2 <= n:
        cid, ctype = payload[i], payload[i + 1]
        i += 2
        if cid == 0x01 and ctype == 0x75:
            out["battery"] = payload[i]
            i += 1
        elif cid == 0x03 and ctype == 0x82:
            out["distance"] = _U16(payload, i)[0]
            i += 2
        elif cid == 0x04 and ctype == 0x00:
            out["position"] = {0: "normal", 1: "tilt"}.get(payload[i], "unknown")
            i += 1
        elif cid == 0xFF and ctype == 0x01:
            out["ipso_version"] = f"v{payload[i] >> 4}.{payload[i] & 15}"
            i += 1
        elif cid == 0xFF and ctype == 0x09:
            out["hardware_version"] = f"v{payload[i]:x}.{payload[i + 1] >> 4}"
            i += 2
        elif cid == 0xFF and ctype == 0x0A:
            out["firmware_version"] = f"v{payload[i]:x}.{payload[i + 1]:x}"
            i += 2
        elif cid == 0xFF and ctype == 0xFF:
            out["tsl_version"] = f"v{payload[i]}.{payload[i + 1]}"
            i += 2
        elif cid == 0xFF and ctype == 0x16:
            out["sn"] = payload[i : i + 8].hex()
            i += 8
        elif cid == 0xFF and ctype == 0x0F:
            out["lorawan_class"] = _CLASSES.get(payload[i], "unknown")
            i += 1
        elif cid == 0xFF and ctype == 0xFE:
            out["reset_event"] = "reset"
            i += 1
        elif cid == 0xFF and ctype == 0x0B:
            out["device_status"] = "on"
            i += 1
        elif cid in (0xFE, 0xFF) and ctype == 0x10:
            out["reboot"] = "yes"
            i += 1
        elif cid in (0xFE, 0xFF) and ctype == 0x02:
            out["collection_interval"] = _U16(payload, i)[0]
            i += 2
        elif cid in (0xFE, 0xFF) and ctype == 0x03:
            out["report_interval"] = _U16(payload, i)[0]
            i += 2
        else:
            break
    return out


_U16BE = struct.Struct(">H").unpack_from
_WS302_FREQ = {0: "Z", 1: "A", 2: "C"}
_WS302_TIME = {0: "I", 1: "F", 2: "S"}


def hand_em500_swl(payload: bytes) -> dict[str, Any]:
    """EM500-SWL by hand (battery, level)."""
    out: dict[str, Any] = {}
    i, n = 0, len(payload)
    while i + 2 <= n:
        cid, ctype = payload[i], payload[i + 1]
        i += 2
        if cid == 0x01 and ctype == 0x75:
            out["battery"] = payload[i]
            i += 1
        elif cid == 0x03 and ctype == 0x77:
            out["level"] = _U16(payload, i)[0]
            i += 2
        else:
            break
    return out


def hand_ws302(payload: bytes) -> dict[str, Any]:
    """WS302 by hand: battery and the weighted sound levels (the examples' attribute frames too)."""
    out: dict[str, Any] = {}
    i, n = 0, len(payload)
    while i + 2 <= n:
        cid, ctype = payload[i], payload[i + 1]
        i += 2
        if cid == 0x01 and ctype == 0x75:
            out["battery"] = payload[i]
            i += 1
        elif cid == 0x05 and ctype == 0x5B:
            w = payload[i]
            f = _WS302_FREQ.get(w & 3, "unknown")
            t = _WS302_TIME.get((w >> 2) & 3, "unknown")
            for key, off in ((f"L{f}{t}", 1), (f"L{f}eq", 3), (f"L{f}{t}max", 5)):
                v = _U16(payload, i + off)[0] / 10
                out[key] = int(v) if v.is_integer() else v
            i += 7
        elif cid == 0xFF and ctype == 0x01:
            out["ipso_version"] = f"v{payload[i] >> 4}.{payload[i] & 15}"
            i += 1
        elif cid == 0xFF and ctype == 0x09:
            out["hardware_version"] = f"v{payload[i]}.{payload[i + 1] >> 4}"
            i += 2
        elif cid == 0xFF and ctype in (0x0A, 0xFF):
            out["firmware_version" if ctype == 0x0A else "tsl_version"] = f"v{payload[i]}.{payload[i + 1]}"
            i += 2
        elif cid == 0xFF and ctype == 0x16:
            out["sn"] = payload[i : i + 8].hex()
            i += 8
        elif cid == 0xFF and ctype == 0x0F:
            out["lorawan_class"] = _CLASSES.get(payload[i], "unknown")
            i += 1
        elif cid == 0xFF and ctype == 0xFE:
            out["reset_event"] = "reset"
            i += 1
        elif cid == 0xFF and ctype == 0x0B:
            out["device_status"] = "on"
            i += 1
        elif cid in (0xFE, 0xFF) and ctype == 0x1D:
            out["frequency_weighting_type"] = _WS302_FREQ.get(payload[i], "unknown")
            out["time_weighting_type"] = _WS302_TIME.get(payload[i + 1], "unknown")
            i += 2
        else:
            break
    return out


def _hand_decentlab(groups: list[tuple[int, list[tuple[str, int, Callable[[int], Any], str, str | None]]]]):  # type: ignore[no-untyped-def]
    """A Decentlab v2 decoder written by hand for one model's sensor table."""

    def decode(payload: bytes) -> dict[str, Any]:
        flags = _U16BE(payload, 3)[0]
        out: dict[str, Any] = {"protocol_version": payload[0], "device_id": _U16BE(payload, 1)[0]}
        pos = 5
        for index, (words, values) in enumerate(groups):
            if not (flags >> index) & 1:
                continue
            x = struct.unpack_from(f">{words}H", payload, pos)
            pos += 2 * words
            for name, word, convert, display, unit in values:
                v = convert(x[word])
                if isinstance(v, float) and v.is_integer():
                    v = int(v)
                out[name] = (
                    {"displayName": display, "value": v, "unit": unit}
                    if unit
                    else {
                        "displayName": display,
                        "value": v,
                    }
                )
        return out

    return decode


_BATTERY = (1, [("battery_voltage", 0, lambda w: w / 1000, "Battery voltage", "V")])
HAND: dict[str, Callable[[bytes], dict[str, Any]]] = {
    "milesight/em310-udl": hand_decode,
    "milesight/em500-swl": hand_em500_swl,
    "milesight/ws302": hand_ws302,
    "decentlab/dl-mbx": _hand_decentlab(
        [
            (
                2,
                [
                    ("distance", 0, lambda w: w, "Distance", "mm"),
                    ("number_of_valid_samples", 1, lambda w: w, "Number of valid samples", None),
                ],
            ),
            _BATTERY,
        ]
    ),
    "decentlab/dl-pr26": _hand_decentlab(
        [
            (
                2,
                [
                    ("pressure", 0, lambda w: (w - 16384) / 32768 * 1.0 + 0.0, "Pressure", "bar"),
                    ("temperature", 1, lambda w: (w - 384) * 0.003125 - 50, "Temperature", "°C"),
                ],
            ),
            _BATTERY,
        ]
    ),
    "decentlab/dl-ctd10": _hand_decentlab(
        [
            (
                4,
                [
                    ("water_depth", 0, lambda w: w - 32768, "Water depth", "mm"),
                    ("temperature", 1, lambda w: (w - 32768) / 10, "Temperature", "°C"),
                    ("electrical_conductivity", 2, lambda w: w, "Electrical conductivity", "µS⋅cm⁻¹"),
                    ("freezing_flag", 3, lambda w: w, "Freezing flag", None),
                ],
            ),
            _BATTERY,
        ]
    ),
}

# An EM310-UDL codec in the TTN style, written for this benchmark (no vendor code).
JS_EM310 = """
function decodeUplink(input) {
  var b = input.bytes, d = {};
  for (var i = 0; i < b.length;) {
    var id = b[i++], ty = b[i++];
    if (id === 0x01 && ty === 0x75) { d.battery = b[i]; i += 1; }
    else if (id === 0x03 && ty === 0x82) { d.distance = (b[i + 1] << 8) | b[i]; i += 2; }
    else if (id === 0x04 && ty === 0x00) { d.position = b[i] === 1 ? "tilt" : "normal"; i += 1; }
    else { break; }
  }
  return { data: d };
}
"""


def _rate(decode: Callable[[bytes], object], payloads: list[bytes], total: int) -> float:
    rounds = max(1, total // len(payloads))
    start = time.perf_counter()
    for _ in range(rounds):
        for payload in payloads:
            decode(payload)
    elapsed_s = time.perf_counter() - start
    return rounds * len(payloads) / elapsed_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payloads", type=int, default=300_000, help="payloads per decoder (default 300000)")
    parser.add_argument("--js-calls", type=int, default=2_000, help="JavaScript codec calls (default 2000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    store = ProfileStore.load_dir(default_profiles_dir())
    results: dict[str, Any] = {"profiles": {}}
    for profile in store:
        hand = HAND.get(profile.id)
        if hand is None:
            continue
        # Examples without installation params: the hand decoders compute no derived values.
        payloads = [e.payload for e in profile.examples if not e.params]
        fport = profile.uplink_fports[0]
        for payload in payloads:  # same outputs, or the comparison means nothing
            assert profile.decode(fport, payload).data == hand(payload), (profile.id, payload.hex())
        decode = profile.decode

        def compiled(payload: bytes, decode: Callable[..., Any] = decode, fport: int = fport) -> object:
            return decode(fport, payload)

        _rate(compiled, payloads, args.payloads // 10)  # warm-up
        profile_per_s = _rate(compiled, payloads, args.payloads)
        hand_per_s = _rate(hand, payloads, args.payloads)
        results["profiles"][profile.id] = {
            "family": profile.family,
            "payloads": len(payloads),
            "profile_payloads_per_s": round(profile_per_s),
            "hand_payloads_per_s": round(hand_per_s),
            "hand_over_profile": round(hand_per_s / profile_per_s, 2),
        }
    try:
        from gateway.codec.js import JsCodec

        codec = JsCodec(JS_EM310, name="bench-em310.js")
        em310 = store.get("milesight/em310-udl")
        js_payloads = [e.payload for e in em310.examples if e.payload[0] in (0x01, 0x03, 0x04)]
        start = time.perf_counter()
        for i in range(args.js_calls):
            codec.decode(85, js_payloads[i % len(js_payloads)], 0.0)
        results["js_us_per_call"] = round((time.perf_counter() - start) / args.js_calls * 1e6, 1)
    except ImportError:
        results["js_us_per_call"] = None
    if args.json:
        print(json.dumps(results))
        return
    print(f"{'profile':<22} {'family':<13} {'profile/s':>12} {'hand/s':>12} {'hand÷profile':>13}")
    for pid, r in results["profiles"].items():
        print(
            f"{pid:<22} {r['family']:<13} {r['profile_payloads_per_s']:>12,} {r['hand_payloads_per_s']:>12,}"
            f" {r['hand_over_profile']:>12.2f}x"
        )
    print(f"JavaScript codec (QuickJS sandbox), EM310-style: {results['js_us_per_call']} µs per call")


if __name__ == "__main__":
    main()
