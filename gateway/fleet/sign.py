"""Reference signer for the platform side: build and sign a command envelope (docs/fleet.md).

Self-contained on purpose (Python ≥3.11 and ``cryptography`` only): the platform team
may copy this file as it is. The gateway's checks live in ``gateway.fleet.signed_envelope``;
the tests sign with this very module, and docs/fleet.md shows it verbatim.

Signed bytes: ``DOMAIN`` followed by the canonical JSON of every envelope field but
``sig`` (keys sorted, no spaces, ASCII only, no NaN/Infinity). The domain prefix keeps an
envelope signature from ever being valid for anything else signed with the same key.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

DOMAIN = b"edgegw-envelope-v1\n"
DEFAULT_TTL_S = 300


def signing_bytes(body: dict[str, Any]) -> bytes:
    """The bytes the Ed25519 signature covers: DOMAIN + canonical JSON of ``body`` (without ``sig``)."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return DOMAIN + text.encode("ascii")


def sign_envelope(
    key: Ed25519PrivateKey,
    payload: dict[str, Any],
    *,
    target: str,
    seq: int | None = None,
    issued_at: int | None = None,
    ttl_s: int = DEFAULT_TTL_S,
) -> dict[str, Any]:
    """A signed envelope for ``target`` (a gateway id, or ``group:<name>``).

    ``seq`` must grow with every envelope a gateway receives; the default, microseconds
    since the epoch, needs no state on the platform as long as one signer sends at a time.
    """
    now_s = int(time.time())
    issued = now_s if issued_at is None else issued_at
    body: dict[str, Any] = {
        "v": 1,
        "payload": payload,
        "target": target,
        "seq": time.time_ns() // 1000 if seq is None else seq,
        "issued_at": issued,
        "expires_at": issued + ttl_s,
    }
    body["sig"] = base64.b64encode(key.sign(signing_bytes(body))).decode("ascii")
    return body


def command(name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The payload of command ``name``; publish its envelope on ``<prefix>/<gateway id>/cmd/<name>``."""
    return {"cmd": name, "params": params or {}}


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """An unencrypted PEM (PKCS#8) Ed25519 private key."""
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


if __name__ == "__main__":
    import sys

    # usage: python sign.py PRIVATE_KEY.pem TARGET COMMAND ['{"param": ...}']
    envelope = sign_envelope(
        load_private_key(sys.argv[1]),
        command(sys.argv[3], json.loads(sys.argv[4]) if len(sys.argv) > 4 else None),
        target=sys.argv[2],
    )
    print(json.dumps(envelope))
