"""Benchmark: profile-compiled decoding vs a hand-written struct decoder, in one run.

Decodes the embedded examples of milesight/em310-udl in a loop with the compiled
profile and with ``hand_decode`` below (what a developer would write for this one
model: an if-chain and ``struct``), and prints payloads/s for both and their ratio.
Ratios, not absolute numbers, are comparable across machines (ARCHITECTURE.md §4).

    python bench/bench_codec.py [--payloads N] [--json]
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
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    profile = ProfileStore.load_dir(default_profiles_dir()).get("milesight/em310-udl")
    payloads = [example.payload for example in profile.examples]
    fport = profile.uplink_fports[0]
    for payload in payloads:  # same outputs, or the comparison means nothing
        assert profile.decode(fport, payload).data == hand_decode(payload), payload.hex()

    def compiled(payload: bytes) -> object:
        return profile.decode(fport, payload)

    _rate(compiled, payloads, args.payloads // 10)  # warm-up
    profile_per_s = _rate(compiled, payloads, args.payloads)
    hand_per_s = _rate(hand_decode, payloads, args.payloads)
    result = {
        "payloads": len(payloads) * max(1, args.payloads // len(payloads)),
        "profile_payloads_per_s": round(profile_per_s),
        "hand_payloads_per_s": round(hand_per_s),
        "profile_over_hand": round(profile_per_s / hand_per_s, 3),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"em310-udl examples: {len(payloads)} distinct payloads, {result['payloads']} decodes per decoder"
        )
        print(f"  profile (compiled) : {profile_per_s:>12,.0f} payloads/s")
        print(f"  hand-written struct: {hand_per_s:>12,.0f} payloads/s")
        print(f"  ratio profile/hand : {profile_per_s / hand_per_s:.2f}")


if __name__ == "__main__":
    main()
