"""Trust state on disk: the pinned key from provisioning, seq persisted across a restart, key rotation.

Source: ARCHITECTURE.md §3.5 (key pinned at provisioning, seq + expiry) and issue 8 (rotation by a
signed command that adds the next key). Real files in tmp_path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.errors import CommandRejected, StorageError
from gateway.fleet.trust import PINNED_KEY_FILE, TRUST_FILE, Trust, fingerprint
from gateway.provisioning.gateway_setup import pin_platform_key
from tests.fleet.conftest import GATEWAY_ID, NOW_S, Signer, public_pem


def test_pinned_key_is_trusted(data_dir: Path, platform_key: Ed25519PrivateKey, signed: Signer) -> None:
    trust = Trust(data_dir, gateway_id=GATEWAY_ID)
    assert trust.fingerprints() == [fingerprint(platform_key.public_key())]
    assert trust.verify(signed("flush", seq=3), NOW_S).seq == 3


def test_nothing_pinned_refuses_everything(tmp_path: Path, signed: Signer) -> None:
    trust = Trust(tmp_path, gateway_id=GATEWAY_ID)
    with pytest.raises(CommandRejected) as info:
        trust.verify(signed("flush"), NOW_S)
    assert info.value.reason == "no_platform_key"


def test_seq_survives_a_restart(data_dir: Path, signed: Signer) -> None:
    trust = Trust(data_dir, gateway_id=GATEWAY_ID)
    env = trust.verify(signed("flush", seq=41), NOW_S)
    trust.consume(env)
    assert json.loads((data_dir / TRUST_FILE).read_text())["last_seq"] == 41

    restarted = Trust(data_dir, gateway_id=GATEWAY_ID)
    assert restarted.last_seq == 41
    for seq in (41, 40):
        with pytest.raises(CommandRejected) as info:
            restarted.verify(signed("flush", seq=seq), NOW_S)
        assert info.value.reason == "replayed"
    assert restarted.verify(signed("flush", seq=42), NOW_S).seq == 42


def test_verify_alone_does_not_consume(data_dir: Path, signed: Signer) -> None:
    trust = Trust(data_dir, gateway_id=GATEWAY_ID)
    data = signed("flush", seq=5)
    trust.verify(data, NOW_S)
    trust.verify(data, NOW_S)
    assert trust.last_seq == 0 and not (data_dir / TRUST_FILE).exists()
    env = trust.verify(data, NOW_S)
    trust.consume(env)
    with pytest.raises(CommandRejected):
        trust.consume(env)


def test_corrupt_trust_file_fails_closed(data_dir: Path) -> None:
    (data_dir / TRUST_FILE).write_text("{not json")
    with pytest.raises(StorageError, match="move it away"):
        Trust(data_dir, gateway_id=GATEWAY_ID)


def test_rotation_add_then_retire(data_dir: Path, platform_key: Ed25519PrivateKey, signed: Signer) -> None:
    old_fp = fingerprint(platform_key.public_key())
    new_key = Ed25519PrivateKey.generate()
    new_fp = fingerprint(new_key.public_key())
    trust = Trust(data_dir, gateway_id=GATEWAY_ID)
    with pytest.raises(CommandRejected):
        trust.verify(signed("flush", key=new_key, seq=1), NOW_S)

    assert trust.add_key(public_pem(new_key)) == new_fp
    assert trust.add_key(public_pem(new_key)) == new_fp  # idempotent
    assert trust.fingerprints() == [old_fp, new_fp]
    assert trust.verify(signed("flush", key=new_key, seq=1), NOW_S).seq == 1
    assert trust.verify(signed("flush", seq=1), NOW_S).seq == 1  # the old key still works

    trust.retire_key(old_fp)
    with pytest.raises(ValueError, match="last trusted"):
        trust.retire_key(new_fp)
    with pytest.raises(ValueError, match="no trusted"):
        trust.retire_key(old_fp)

    restarted = Trust(data_dir, gateway_id=GATEWAY_ID)  # the pinned file is still there, retired
    assert restarted.fingerprints() == [new_fp]
    with pytest.raises(CommandRejected) as info:
        restarted.verify(signed("flush", seq=2), NOW_S)
    assert info.value.reason == "bad_signature"
    assert restarted.verify(signed("flush", key=new_key, seq=2), NOW_S).seq == 2


def test_add_key_refuses_other_key_types(data_dir: Path) -> None:
    trust = Trust(data_dir, gateway_id=GATEWAY_ID)
    with pytest.raises(ValueError):
        trust.add_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


def test_a_key_pinned_while_the_agent_runs_is_trusted_at_the_next_command(
    tmp_path: Path, platform_key: Ed25519PrivateKey, signed: Signer
) -> None:
    # `edgegw provision gateway --platform-key` on a running gateway (issue 19: the refusal kept
    # saying "no platform key is pinned" until a restart).
    data = tmp_path / "data"
    data.mkdir()
    trust = Trust(data, gateway_id=GATEWAY_ID)
    with pytest.raises(CommandRejected):
        trust.verify(signed("flush", seq=1), NOW_S)
    pub = tmp_path / "platform.pub"
    pub.write_text(public_pem(platform_key))
    pin_platform_key(data, pub)
    assert trust.verify(signed("flush", seq=1), NOW_S).seq == 1


def test_a_pinned_key_file_damaged_while_running_keeps_the_key_read_before(
    data_dir: Path, platform_key: Ed25519PrivateKey, signed: Signer
) -> None:
    trust = Trust(data_dir, gateway_id=GATEWAY_ID)
    (data_dir / PINNED_KEY_FILE).write_text("not a key, and longer than the PEM was before it" * 3)
    assert trust.fingerprints() == [fingerprint(platform_key.public_key())]  # fail closed, not open
    assert trust.verify(signed("flush", seq=2), NOW_S).seq == 2
