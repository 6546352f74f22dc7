"""Keys sealed to one gateway (gateway.fleet.seal): only that gateway's key, id and version open them."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gateway.errors import CommandRejected
from gateway.fleet import seal
from gateway.provisioning import gateway_setup

SECRET = b'{"devices":{"70b3d57ed0000001":{"app_key":"000102030405060708090a0b0c0d0e0f"}}}'


def test_a_blob_opens_with_the_gateway_key_it_was_sealed_to() -> None:
    key = X25519PrivateKey.generate()
    blob = seal.seal(key.public_key(), SECRET, gateway_id="gw-a", version=7)
    assert SECRET not in blob  # nothing in clear
    assert seal.open_sealed(key, blob, gateway_id="gw-a", version=7) == SECRET
    # A fresh ephemeral key per blob: the same secret never gives the same bytes twice.
    assert seal.seal(key.public_key(), SECRET, gateway_id="gw-a", version=7) != blob


def test_another_gateways_key_does_not_open_it() -> None:
    ours, theirs = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    blob = seal.seal(ours.public_key(), SECRET, gateway_id="gw-a", version=7)
    with pytest.raises(CommandRejected) as caught:
        seal.open_sealed(theirs, blob, gateway_id="gw-a", version=7)
    assert caught.value.reason == seal.UNSEALABLE


@pytest.mark.parametrize(
    ("gateway_id", "version"), [("gw-b", 7), ("gw-a", 8)], ids=["other-id", "other-version"]
)
def test_a_blob_moved_to_another_gateway_id_or_version_does_not_open(gateway_id: str, version: int) -> None:
    key = X25519PrivateKey.generate()
    blob = seal.seal(key.public_key(), SECRET, gateway_id="gw-a", version=7)
    with pytest.raises(CommandRejected, match="do not open"):
        seal.open_sealed(key, blob, gateway_id=gateway_id, version=version)


@pytest.mark.parametrize(
    "where", [0, 1, 40, 60, -1], ids=["format", "ephemeral", "nonce", "ciphertext", "tag"]
)
def test_a_tampered_blob_is_refused(where: int) -> None:
    key = X25519PrivateKey.generate()
    blob = bytearray(seal.seal(key.public_key(), SECRET, gateway_id="gw-a", version=7))
    blob[where] ^= 0x01
    with pytest.raises(CommandRejected) as caught:
        seal.open_sealed(key, bytes(blob), gateway_id="gw-a", version=7)
    assert caught.value.reason == seal.UNSEALABLE


def test_a_truncated_blob_is_refused() -> None:
    key = X25519PrivateKey.generate()
    blob = seal.seal(key.public_key(), SECRET, gateway_id="gw-a", version=7)
    for cut in (0, 10, seal.HEADER_BYTES + seal.TAG_BYTES - 1):
        with pytest.raises(CommandRejected):
            seal.open_sealed(key, blob[:cut], gateway_id="gw-a", version=7)


def test_public_key_text_round_trip_and_bad_keys() -> None:
    key = X25519PrivateKey.generate().public_key()
    text = seal.public_key_text(key)
    assert seal.load_public_key(text).public_bytes_raw() == key.public_bytes_raw()
    for bad in ("", "not base64!", "AAAA"):
        with pytest.raises(CommandRejected) as caught:
            seal.load_public_key(bad)
        assert caught.value.reason == seal.BAD_KEY


def test_provisioning_creates_the_gateway_seal_key_once_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    gateway_setup.provision_identity(data, "gw-a")
    path = data / gateway_setup.SEAL_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = gateway_setup.load_seal_key(data)
    assert first is not None
    gateway_setup.provision_identity(data, "gw-a")  # again: a new CSR, the same keys
    public, created = gateway_setup.ensure_seal_key(data)
    assert not created and public.public_bytes_raw() == first.public_key().public_bytes_raw()
    blob = seal.seal(public, SECRET, gateway_id="gw-a", version=1)
    assert seal.open_sealed(first, blob, gateway_id="gw-a", version=1) == SECRET
