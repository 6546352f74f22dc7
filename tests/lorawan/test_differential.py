"""Differential test against npm ``lora-packet`` (anthonykirby/lora-packet, pinned in package.json).

A few thousand random frames, keys and counters go to ONE node process
(``js/lora_packet_oracle.js``, JSON over stdin/stdout); both implementations
must agree, in both directions:

* frames we build (data up/down with FOpts, FPort 0 and 1..255, 32-bit counters
  past 16 bits; join-requests; join-accepts with and without CFList) are parsed,
  MIC-checked and decrypted by lora-packet exactly as we meant them;
* frames lora-packet builds are parsed, verified and decrypted by us to the
  fields and plaintext it was given; session keys derived by both agree.

lora-packet is installed by ``npm ci`` (``make test``). If node or the package is
missing the test FAILS with a message saying how to install them: a skipped
oracle would let a regression through CI unnoticed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gateway.lorawan import phy
from gateway.lorawan.crypto import SessionKeys, derive_session_keys, join_request_mic
from gateway.messages import MType

ROOT = Path(__file__).resolve().parents[2]
ORACLE = Path(__file__).with_name("js") / "lora_packet_oracle.js"
CASES_PER_KIND = 1500
SEED = 20240603

_MTYPE_NAMES = {
    MType.UNCONFIRMED_DATA_UP: "Unconfirmed Data Up",
    MType.UNCONFIRMED_DATA_DOWN: "Unconfirmed Data Down",
    MType.CONFIRMED_DATA_UP: "Confirmed Data Up",
    MType.CONFIRMED_DATA_DOWN: "Confirmed Data Down",
}
_UPLINKS = (MType.UNCONFIRMED_DATA_UP, MType.CONFIRMED_DATA_UP)


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "node is not installed: install Debian packages 'nodejs npm' (make system-deps), then npm ci"
        )
    if not (ROOT / "node_modules" / "lora-packet" / "package.json").exists():
        pytest.fail(
            "npm package lora-packet is missing: run 'npm ci' at the repository root (make test does)"
        )
    return node


def _oracle(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    completed = subprocess.run(
        [_node(), str(ORACLE)],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "NODE_PATH": str(ROOT / "node_modules")},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    results: list[dict[str, Any]] = json.loads(completed.stdout)
    assert len(results) == len(cases)
    return results


def _data_case(rng: random.Random) -> dict[str, Any]:
    mtype = rng.choice(list(_MTYPE_NAMES))
    fport: int | None = rng.choice([None, 0, rng.randint(1, 255), rng.randint(1, 223)])
    fopts = b"" if fport == 0 else rng.randbytes(rng.randint(0, 15))
    payload = (
        b"" if fport is None else rng.randbytes(rng.choice([0, rng.randint(1, 16), rng.randint(17, 120)]))
    )
    return {
        "mtype": mtype,
        "dev_addr": rng.randbytes(4),
        "fcnt32": rng.choice([rng.randint(0, 0xFFFF), rng.randint(0x10000, 0xFFFFFFFF)]),
        "fport": fport,
        "fopts": fopts,
        "payload": payload,
        "flags": {k: rng.random() < 0.5 for k in ("adr", "ack", "adr_ack_req", "fpending")},
        "nwk": rng.randbytes(16),
        "app": rng.randbytes(16),
    }


def _ours(case: dict[str, Any]) -> bytes:
    return phy.build_data_frame(
        SessionKeys(case["nwk"], case["app"]),
        mtype=case["mtype"],
        dev_addr=case["dev_addr"],
        fcnt32=case["fcnt32"],
        fport=case["fport"],
        payload=case["payload"],
        fopts=case["fopts"],
        **case["flags"],
    )


def test_lora_packet_agrees_on_data_frames_both_directions() -> None:
    rng = random.Random(SEED)
    ours_built = [_data_case(rng) for _ in range(CASES_PER_KIND)]
    theirs_built = [c for c in (_data_case(rng) for _ in range(CASES_PER_KIND)) if c["fport"] is not None]
    requests: list[dict[str, Any]] = []
    for case in ours_built:
        requests.append(
            {
                "kind": "data_parse",
                "phy": _ours(case).hex(),
                "nwk": case["nwk"].hex(),
                "app": case["app"].hex(),
                "fcnt32": case["fcnt32"],
            }
        )
    for case in theirs_built:
        requests.append(
            {
                "kind": "data_build",
                "mtype": _MTYPE_NAMES[case["mtype"]],
                "dev_addr": case["dev_addr"].hex(),
                "fcnt32": case["fcnt32"],
                "fport": case["fport"],
                "fopts": case["fopts"].hex(),
                "payload": case["payload"].hex(),
                "nwk": case["nwk"].hex(),
                "app": case["app"].hex(),
                **case["flags"],
            }
        )
    results = _oracle(requests)

    # Direction 1: frames we built, read by lora-packet.
    for case, got in zip(ours_built, results[: len(ours_built)], strict=True):
        assert "error" not in got, (case, got)
        assert got["mtype"] == _MTYPE_NAMES[case["mtype"]]
        assert got["dir"] == ("up" if case["mtype"] in _UPLINKS else "down")
        assert got["dev_addr"] == case["dev_addr"].hex()
        assert got["fcnt16"] == case["fcnt32"] & 0xFFFF
        assert {k: got[k] for k in case["flags"]} == case["flags"]
        assert got["fopts"] == case["fopts"].hex()
        assert got["fport"] == case["fport"]
        assert got["mic_ok"] is True, case
        assert got["plaintext"] == case["payload"].hex()

    # Direction 2: frames lora-packet built, read by us.
    for case, got in zip(theirs_built, results[len(ours_built) :], strict=True):
        assert "error" not in got, (case, got)
        frame = bytes.fromhex(got["phy"])
        assert frame == _ours(case), case  # byte for byte the same frame
        parsed = phy.parse(frame)
        assert isinstance(parsed, phy.DataFrame)
        keys = SessionKeys(case["nwk"], case["app"])
        uplink = case["mtype"] in _UPLINKS
        assert keys.data_mic(parsed.mic_input, parsed.dev_addr, case["fcnt32"], uplink) == parsed.mic
        plain = keys.crypt_frm_payload(
            parsed.frm_payload, parsed.dev_addr, case["fcnt32"], uplink, case["fport"]
        )
        assert (parsed.fport, plain, parsed.fopts) == (case["fport"], case["payload"], case["fopts"])


def test_lora_packet_agrees_on_joins_both_directions() -> None:
    rng = random.Random(SEED + 1)
    requests: list[dict[str, Any]] = []
    joins = []
    for _ in range(CASES_PER_KIND // 2):
        key, join_eui, dev_eui, dev_nonce = (
            rng.randbytes(16),
            rng.randbytes(8),
            rng.randbytes(8),
            rng.randbytes(2),
        )
        frame = phy.build_join_request(key, join_eui=join_eui, dev_eui=dev_eui, dev_nonce=dev_nonce)
        joins.append((join_eui, dev_eui, dev_nonce, frame))
        requests.append({"kind": "join_request", "phy": frame.hex(), "app_key": key.hex()})
    accepts = []
    for _ in range(CASES_PER_KIND // 2):
        fields: dict[str, Any] = {
            "join_nonce": rng.randbytes(3),
            "net_id": rng.randbytes(3),
            "dev_addr": rng.randbytes(4),
            "rx1_dr_offset": rng.randint(0, 7),
            "rx2_dr": rng.randint(0, 15),
            "rx_delay": rng.randint(0, 15),
            "cflist": rng.choice(
                [None, [rng.randint(0, (1 << 24) - 1) * 100 for _ in range(rng.randint(0, 5))]]
            ),
        }
        key, dev_nonce = rng.randbytes(16), rng.randbytes(2)
        frame = phy.build_join_accept(key, **fields)
        accepts.append((fields, key, dev_nonce, frame))
        requests.append(
            {
                "kind": "join_accept_open",
                "phy": frame.hex(),
                "app_key": key.hex(),
                "dev_nonce": dev_nonce.hex(),
            }
        )
    builds = []
    for _ in range(CASES_PER_KIND // 2):
        cflist = rng.choice([b"", rng.randbytes(15) + b"\x00"])
        fields = {
            "join_nonce": rng.randbytes(3),
            "net_id": rng.randbytes(3),
            "dev_addr": rng.randbytes(4),
            "rx1_dr_offset": rng.randint(0, 7),
            "rx2_dr": rng.randint(0, 15),
            "rx_delay": rng.randint(0, 15),
        }
        key = rng.randbytes(16)
        builds.append((fields, cflist, key))
        requests.append(
            {
                "kind": "join_accept_build",
                "app_key": key.hex(),
                "cflist": cflist.hex(),
                **{k: v.hex() if isinstance(v, bytes) else v for k, v in fields.items()},
            }
        )
    results = iter(_oracle(requests))

    for join_eui, dev_eui, dev_nonce, _frame in joins:
        got = next(results)
        assert got == {
            "mtype": "Join Request",
            "join_eui": join_eui.hex(),
            "dev_eui": dev_eui.hex(),
            "dev_nonce": dev_nonce.hex(),
            "mic": _frame[-4:].hex(),
            "mic_ok": True,
        }

    for fields, key, dev_nonce, _frame in accepts:
        got = next(results)
        assert "error" not in got, got
        assert got["mic_ok"] is True and got["mtype"] == "Join Accept"
        assert (got["join_nonce"], got["net_id"], got["dev_addr"]) == (
            fields["join_nonce"].hex(),
            fields["net_id"].hex(),
            fields["dev_addr"].hex(),
        )
        assert (got["rx1_dr_offset"], got["rx2_dr"], got["rx_delay"]) == (
            fields["rx1_dr_offset"],
            fields["rx2_dr"],
            fields["rx_delay"],
        )
        ours = derive_session_keys(key, fields["join_nonce"], fields["net_id"], dev_nonce)
        assert (got["nwk_s_key"], got["app_s_key"]) == (ours[0].hex(), ours[1].hex())
        opened = phy.open_join_accept(phy.JoinAccept(encrypted=_frame[1:]), key)
        assert got["cflist"] == opened.cflist_raw.hex() and got["mic"] == opened.mic.hex()

    for fields, cflist, key in builds:
        got = next(results)
        assert "error" not in got, got
        parsed = phy.parse(bytes.fromhex(got["phy"]))
        assert isinstance(parsed, phy.JoinAccept)
        opened = phy.open_join_accept(parsed, key)  # raises MicMismatch if lora-packet's MIC differs
        assert (opened.join_nonce, opened.net_id, opened.dev_addr) == (
            fields["join_nonce"],
            fields["net_id"],
            fields["dev_addr"],
        )
        assert (opened.rx1_dr_offset, opened.rx2_dr, opened.rx_delay) == (
            fields["rx1_dr_offset"],
            fields["rx2_dr"],
            fields["rx_delay"],
        )
        assert opened.cflist_raw == cflist


def test_join_request_mic_matches_for_a_wrong_key_too() -> None:
    # The oracle must be able to say "no": a wrong AppKey fails in lora-packet as in our code.
    key = bytes(range(16))
    frame = phy.build_join_request(key, join_eui=bytes(8), dev_eui=bytes(8), dev_nonce=b"\x00\x01")
    (got,) = _oracle([{"kind": "join_request", "phy": frame.hex(), "app_key": bytes(16).hex()}])
    assert got["mic_ok"] is False
    assert join_request_mic(bytes(16), frame[:-4]) != frame[-4:]
