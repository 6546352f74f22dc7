"""Fixtures for the fleet tests: a platform key pair, a gateway data dir with the key pinned the
way ``edgegw provision gateway --platform-key`` pins it, and the reference signer ``gateway.fleet.sign``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.fleet import sign
from gateway.provisioning.gateway_setup import pin_platform_key

GATEWAY_ID = "gw-test-01"
NOW_S = 1_764_000_000  # a fixed clock for every pure test (2025-11-24)


def public_pem(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture
def platform_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def data_dir(tmp_path: Path, platform_key: Ed25519PrivateKey) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    pub = tmp_path / "platform.pub"
    pub.write_text(public_pem(platform_key))
    pin_platform_key(data, pub)
    return data


Signer = Callable[..., bytes]


@pytest.fixture
def signed(platform_key: Ed25519PrivateKey) -> Signer:
    """``signed(name, params=None, *, key=, target=, seq=1, issued_at=NOW_S, ttl_s=300)``: envelope
    bytes built by the reference signer (key defaults to the platform key, target to GATEWAY_ID)."""

    def make(
        name: str,
        params: dict[str, Any] | None = None,
        *,
        key: Ed25519PrivateKey | None = None,
        target: str = GATEWAY_ID,
        seq: int = 1,
        issued_at: int = NOW_S,
        ttl_s: int = 300,
    ) -> bytes:
        env = sign.sign_envelope(
            key or platform_key,
            sign.command(name, params),
            target=target,
            seq=seq,
            issued_at=issued_at,
            ttl_s=ttl_s,
        )
        return json.dumps(env).encode()

    return make
