"""The pure envelope checks: every rejection reason, and that gateway and reference signer agree on the bytes.

Vectors: Ed25519 is RFC 8032 (signatures of 64 bytes, §5.1.6); the envelope format and
reasons are this project's (docs/fleet.md, ARCHITECTURE.md §3.5). Envelopes are signed by
the reference signer ``gateway.fleet.sign`` with fresh keys; forgeries are made by hand.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.errors import CommandRejected, InputError
from gateway.fleet import sign, signed_envelope
from gateway.fleet.signed_envelope import Rejection
from tests.fleet.conftest import GATEWAY_ID, NOW_S, Signer


def check(data: bytes, key: Ed25519PrivateKey, *, last_seq: int = 0, now_s: float = NOW_S) -> int:
    return signed_envelope.check(
        signed_envelope.parse(data),
        [key.public_key()],
        gateway_id=GATEWAY_ID,
        groups=frozenset({"roof-north"}),
        now_s=now_s,
        last_seq=last_seq,
    )


def reason_of(data: bytes, key: Ed25519PrivateKey, **kw: Any) -> str:
    with pytest.raises(CommandRejected) as info:
        check(data, key, **kw)
    assert isinstance(info.value, InputError)
    return info.value.reason


def edit(data: bytes, **changes: Any) -> bytes:
    doc = json.loads(data)
    doc.update(changes)
    return json.dumps(doc).encode()


def test_a_signed_envelope_for_us_is_accepted(signed: Signer, platform_key: Ed25519PrivateKey) -> None:
    data = signed("flush", seq=7)
    assert check(data, platform_key, last_seq=6) == 0
    env = signed_envelope.parse(data)
    assert (env.payload, env.target, env.seq) == ({"cmd": "flush", "params": {}}, GATEWAY_ID, 7)
    assert env.expires_at == NOW_S + 300
    assert signed_envelope.parse(env.to_bytes()) == env  # round trip


def test_group_target_is_accepted_for_a_member_group_only(
    signed: Signer, platform_key: Ed25519PrivateKey
) -> None:
    assert check(signed("flush", target="group:roof-north"), platform_key) == 0
    assert reason_of(signed("flush", target="group:roof-south"), platform_key) == "misaddressed"


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b"[1,2]", b'{"v": 1, "sig": "AAAA", "payload": {}}', b"\xff\xfe", b"NaN"],
)
def test_malformed(data: bytes, platform_key: Ed25519PrivateKey) -> None:
    assert reason_of(data, platform_key) == "malformed"


def test_malformed_fields(signed: Signer, platform_key: Ed25519PrivateKey) -> None:
    good = signed("flush")
    changes: dict[str, Any]
    for changes in (
        {"v": 2},
        {"seq": -1},
        {"seq": True},
        {"seq": "5"},
        {"payload": []},
        {"target": ""},
        {"sig": "***"},
        {"extra": 1},
    ):
        assert reason_of(edit(good, **changes), platform_key) == "malformed", changes
    assert reason_of(b"x" * (signed_envelope.MAX_ENVELOPE_BYTES + 1), platform_key) == "malformed"


def test_unsigned(signed: Signer, platform_key: Ed25519PrivateKey) -> None:
    doc = json.loads(signed("flush"))
    del doc["sig"]
    assert reason_of(json.dumps(doc).encode(), platform_key) == "unsigned"
    assert reason_of(edit(signed("flush"), sig=""), platform_key) == "unsigned"


def test_forged_altered_or_other_key(signed: Signer, platform_key: Ed25519PrivateKey) -> None:
    good = signed("flush", seq=5)
    # Altered after signing: each signed field.
    for changes in (
        {"seq": 6},
        {"target": "gw-other"},
        {"expires_at": NOW_S + 10**6},
        {"payload": {"cmd": "x"}},
    ):
        assert reason_of(edit(good, **changes), platform_key) == "bad_signature", changes
    # Signed by a key that is not pinned.
    assert reason_of(signed("flush", key=Ed25519PrivateKey.generate()), platform_key) == "bad_signature"
    # Random bytes of the right length, and a truncated signature.
    assert reason_of(edit(good, sig=base64.b64encode(bytes(64)).decode()), platform_key) == "bad_signature"
    assert reason_of(edit(good, sig=base64.b64encode(bytes(10)).decode()), platform_key) == "bad_signature"


def test_no_key_pinned(signed: Signer) -> None:
    with pytest.raises(CommandRejected) as info:
        signed_envelope.check(
            signed_envelope.parse(signed("flush")),
            [],
            gateway_id=GATEWAY_ID,
            groups=frozenset(),
            now_s=NOW_S,
            last_seq=0,
        )
    assert info.value.reason == "no_platform_key"


def test_misaddressed(signed: Signer, platform_key: Ed25519PrivateKey) -> None:
    assert reason_of(signed("flush", target="gw-test-02"), platform_key) == "misaddressed"
    assert reason_of(signed("flush", target="roof-north"), platform_key) == "misaddressed"  # no group: prefix


def test_expired_and_not_yet_valid(signed: Signer, platform_key: Ed25519PrivateKey) -> None:
    data = signed("flush", ttl_s=60)
    assert check(data, platform_key, now_s=NOW_S + 60) == 0  # the last valid second
    assert reason_of(data, platform_key, now_s=NOW_S + 61) == "expired"
    assert check(data, platform_key, now_s=NOW_S - signed_envelope.MAX_CLOCK_SKEW_S) == 0
    assert (
        reason_of(data, platform_key, now_s=NOW_S - signed_envelope.MAX_CLOCK_SKEW_S - 1) == "not_yet_valid"
    )


def test_replayed(signed: Signer, platform_key: Ed25519PrivateKey) -> None:
    data = signed("flush", seq=10)
    assert check(data, platform_key, last_seq=9) == 0
    assert reason_of(data, platform_key, last_seq=10) == "replayed"
    assert reason_of(data, platform_key, last_seq=11) == "replayed"


def test_signature_is_checked_before_the_rest(platform_key: Ed25519PrivateKey, signed: Signer) -> None:
    """A forgery that is also expired, misaddressed and replayed says bad_signature: nothing else counts."""
    data = signed("flush", key=Ed25519PrivateKey.generate(), target="gw-x", seq=1, ttl_s=1)
    assert reason_of(data, platform_key, last_seq=5, now_s=NOW_S + 1000) == "bad_signature"


def test_every_reason_is_a_rejection_value() -> None:
    assert {r.value for r in Rejection} >= {
        "malformed", "unsigned", "bad_signature", "misaddressed", "expired", "replayed", "no_platform_key"
    }  # fmt: skip


@pytest.mark.parametrize(
    "payload",
    [
        {"cmd": "downlink", "params": {"dev_eui": "70B3D57ED0000001", "fport": 2, "payload_hex": "01ff"}},
        {"cmd": "x", "params": {"text": "Zürich - ü € 😀", "nested": {"b": [1, 2.5, None, True], "a": {}}}},
        {"cmd": "x", "params": {"big": 2**62, "neg": -3, "float": 1e-7}},
    ],
)
def test_gateway_and_reference_signer_agree_on_the_signed_bytes(
    payload: dict[str, Any], platform_key: Ed25519PrivateKey
) -> None:
    """The gateway recomputes the bytes from the parsed JSON; they must equal what the signer signed."""
    doc = sign.sign_envelope(platform_key, payload, target=GATEWAY_ID, seq=3, issued_at=NOW_S)
    body = {k: v for k, v in doc.items() if k != "sig"}
    env = signed_envelope.parse(
        json.dumps(doc, ensure_ascii=False, indent=2).encode()
    )  # any spacing on the wire
    assert env.signing_bytes() == sign.signing_bytes(body)
    assert check(json.dumps(doc).encode(), platform_key) == 0
    assert sign.DOMAIN == signed_envelope.DOMAIN


def test_docs_show_the_reference_signer_verbatim() -> None:
    """docs/fleet.md promises the platform team the exact code the tests sign with."""
    root = Path(__file__).resolve().parents[2]
    source = (root / "gateway/fleet/sign.py").read_text()
    assert f"```python\n{source}```" in (root / "docs/fleet.md").read_text()
