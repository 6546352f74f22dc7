"""Micro-benchmark: LoRaWAN MIC verification + FRMPayload decryption per frame.

Measures, in one run and on one core:

* ``session``: what the uplink path does per frame with ``SessionKeys``
  (``data_mic`` + constant-time compare + ``crypt_frm_payload``);
* ``parse+session``: the same after ``phy.parse``;
* ``accept``: the MAC stage as the agent runs it, ``SessionTable.accept`` (parse,
  16→32-bit FCnt, MIC, decryption, the ``UplinkData`` value and the pending
  counter), then the downlink scheduler's look at the uplink (nothing owed);
* ``stage``: ``accept`` plus multi-gateway de-duplication (each frame heard
  twice: one copy dropped) in front of it;
* ``bare``: the floor under it, the ``cryptography`` calls alone, with every
  block prepared in advance: a copied, pre-keyed CMAC fed B0 | message in one
  update, and the keystream A_1 .. A_n (n = ceil(len(FRMPayload) / 16), 2 here)
  in one update of a reused ECB encryptor. It leaves out what only Python does
  in the MAC: building B0 and the A_i, the MIC compare and the keystream XOR;

and prints frames/s and the session/bare cost ratio. The frame is a typical
sensor uplink: 20-byte application payload, 33-byte PHYPayload.

Targets (issue 3): session/bare ≤ 2x, and the MAC stage above 50,000 frames/s on one core.

Run: ``python bench/bench_mac.py [--seconds 0.5] [--json]`` (about 10 s with the default).
"""

from __future__ import annotations

import argparse
import hmac
import json
import struct
import time
import timeit
from collections.abc import Callable
from dataclasses import replace

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from gateway.config import LorawanSection
from gateway.lorawan import phy
from gateway.lorawan.crypto import SessionKeys
from gateway.lorawan.dedup import Deduplicator
from gateway.lorawan.downlink import DownlinkScheduler
from gateway.lorawan.sessions import Session, SessionTable
from gateway.messages import DevAddr, DevEui, MType, RadioFrame, RxInfo

NWK_S_KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
APP_S_KEY = bytes.fromhex("f0e0d0c0b0a090807060504030201000")
DEV_ADDR = bytes.fromhex("26011bda")
FCNT32 = 0x0001_2345
PAYLOAD = bytes(range(20))


def _frames_per_s(fn: Callable[[], object], seconds: float) -> float:
    """Best of 3 runs of about ``seconds`` each."""
    timer = timeit.Timer(fn)
    count, elapsed = timer.autorange()
    per_run = max(1, int(count * seconds / elapsed))
    best = min(timer.repeat(repeat=3, number=per_run))
    return per_run / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="length of one timed run")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()

    keys = SessionKeys(NWK_S_KEY, APP_S_KEY)
    raw = phy.build_data_frame(
        keys, mtype=MType.UNCONFIRMED_DATA_UP, dev_addr=DEV_ADDR, fcnt32=FCNT32, fport=1, payload=PAYLOAD
    )
    frame = phy.parse(raw)
    assert isinstance(frame, phy.DataFrame) and frame.fport is not None
    fport = frame.fport

    def session() -> bytes:
        mic = keys.data_mic(frame.mic_input, frame.dev_addr, FCNT32, True)
        if not hmac.compare_digest(mic, frame.mic):
            raise AssertionError("MIC mismatch")
        return keys.crypt_frm_payload(frame.frm_payload, frame.dev_addr, FCNT32, True, fport)

    # A session outside the WARM_SESSIONS that kept their OpenSSL contexts: every frame rebuilds them
    # (two sessions taking turns with room for one).
    cold_pair = [SessionKeys(NWK_S_KEY, APP_S_KEY), SessionKeys(NWK_S_KEY, APP_S_KEY)]
    turn = [0]

    def cold_session() -> bytes:
        turn[0] ^= 1
        cold = cold_pair[turn[0]]
        mic = cold.data_mic(frame.mic_input, frame.dev_addr, FCNT32, True)
        if not hmac.compare_digest(mic, frame.mic):
            raise AssertionError("MIC mismatch")
        return cold.crypt_frm_payload(frame.frm_payload, frame.dev_addr, FCNT32, True, fport)

    def parse_and_session() -> bytes:
        parsed = phy.parse(raw)
        assert isinstance(parsed, phy.DataFrame) and parsed.fport is not None
        mic = keys.data_mic(parsed.mic_input, parsed.dev_addr, FCNT32, True)
        if not hmac.compare_digest(mic, parsed.mic):
            raise AssertionError("MIC mismatch")
        return keys.crypt_frm_payload(parsed.frm_payload, parsed.dev_addr, FCNT32, True, parsed.fport)

    # The floor: only the cryptography calls the MAC needs, every block built in advance. The keystream
    # covers the whole FRMPayload: ceil(len / 16) counter blocks A_1 .. A_n (§4.3.3.1), in one ECB call.
    cmac_template = CMAC(algorithms.AES(NWK_S_KEY))
    ecb = Cipher(algorithms.AES(APP_S_KEY), modes.ECB()).encryptor()
    msg = frame.mic_input
    b0_msg = struct.pack("<B4xB4sIxB", 0x49, 0, DEV_ADDR[::-1], FCNT32, len(msg)) + msg
    blocks = -(-len(frame.frm_payload) // 16)
    counter_blocks = b"".join(
        struct.pack("<B4xB4sIxB", 0x01, 0, DEV_ADDR[::-1], FCNT32, i) for i in range(1, blocks + 1)
    )

    def bare() -> bytes:
        mac = cmac_template.copy()
        mac.update(b0_msg)
        mac.finalize()
        return ecb.update(counter_blocks)

    # The floor is real work: the CMAC is the frame's MIC and the keystream XORs to the payload.
    bare_mic = cmac_template.copy()
    bare_mic.update(b0_msg)
    keystream = ecb.update(counter_blocks)
    if (
        bare_mic.finalize()[:4] != frame.mic
        or bytes(c ^ k for c, k in zip(frame.frm_payload, keystream, strict=False)) != PAYLOAD
    ):
        raise AssertionError("the bare floor does not compute this frame's MIC and keystream")

    # The MAC stage proper: the session table (counter rewound before each call so that the same frame
    # stays acceptable; one attribute store, negligible) and the downlink scheduler.
    eui = DevEui.from_hex("70b3d57ed0001234")
    table_session = Session(eui, DevAddr(DEV_ADDR), "bench/model", "abcd0123", keys, FCNT32 - 1)
    table = SessionTable([table_session])
    scheduler = DownlinkScheduler(LorawanSection(), table)
    rx = RxInfo(868_100_000, -90.0, 7.0, 7, 125_000, "4/5", True, "bench", "aa555a0000000001", 1_000_000)
    radio_frame = RadioFrame(raw, rx, time.time(), time.monotonic())
    # The copy comes from a second forwarder: with one forwarder only, the window does not apply.
    twin = RadioFrame(raw, replace(rx, gateway_eui="aa555a0000000002"), time.time(), time.monotonic())
    dedup = Deduplicator(0.2)

    def accept() -> bytes:
        table_session.fcnt_up = FCNT32 - 1
        up = table.accept(radio_frame)
        scheduler.on_uplink(up)
        return up.payload

    clock = [0.0]

    def stage() -> bytes:
        # Two copies of one uplink; the window closes before the next frame (the clock moves 1 s a frame).
        clock[0] += 1.0
        dedup.add(radio_frame, clock[0])
        dedup.add(twin, clock[0])
        (heard,) = dedup.due(clock[0] + 0.5)
        table_session.fcnt_up = FCNT32 - 1
        up = table.accept(heard.frame)
        scheduler.on_uplink(up, gw_count=heard.gateways)
        return up.payload

    if (
        session() != PAYLOAD
        or cold_session() != PAYLOAD
        or parse_and_session() != PAYLOAD
        or accept() != PAYLOAD
        or stage() != PAYLOAD
    ):
        raise AssertionError("the benchmarked path does not decrypt the frame")

    warm_sessions = SessionKeys.WARM_SESSIONS
    SessionKeys.WARM_SESSIONS = 1
    try:
        cold_rate = _frames_per_s(cold_session, args.seconds)
    finally:
        SessionKeys.WARM_SESSIONS = warm_sessions
    rates = {
        "session": _frames_per_s(session, args.seconds),
        "cold session": cold_rate,
        "parse+session": _frames_per_s(parse_and_session, args.seconds),
        "accept": _frames_per_s(accept, args.seconds),
        "stage": _frames_per_s(stage, args.seconds),
        "bare": _frames_per_s(bare, args.seconds),
    }
    result = {
        "frame_bytes": len(raw),
        "frames_per_s": {name: round(rate) for name, rate in rates.items()},
        "us_per_frame": {name: round(1e6 / rate, 3) for name, rate in rates.items()},
        "session_cost_vs_bare": round(rates["bare"] / rates["session"], 2),
        "context_rebuild_us": round(1e6 / rates["cold session"] - 1e6 / rates["session"], 2),
        "parse_session_cost_vs_bare": round(rates["bare"] / rates["parse+session"], 2),
        "accept_cost_vs_bare": round(rates["bare"] / rates["accept"], 2),
        "stage_cost_vs_bare": round(rates["bare"] / rates["stage"], 2),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"LoRaWAN MIC verify + decrypt, {len(raw)}-byte PHYPayload, one core")
    for name, rate in rates.items():
        print(f"  {name:<14} {rate:>12,.0f} frames/s  {1e6 / rate:7.3f} us/frame")
    print(f"  session / bare cost ratio:       {result['session_cost_vs_bare']:.2f}x")
    print(f"  contexts rebuilt (cold - warm):  {result['context_rebuild_us']:.2f} us")
    print(f"  parse+session / bare cost ratio: {result['parse_session_cost_vs_bare']:.2f}x")
    print(f"  accept / bare cost ratio:        {result['accept_cost_vs_bare']:.2f}x")
    print(f"  stage / bare cost ratio:         {result['stage_cost_vs_bare']:.2f}x")


if __name__ == "__main__":
    main()
