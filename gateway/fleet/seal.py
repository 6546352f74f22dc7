"""Secrets sealed to one gateway's own key: X25519 + HKDF-SHA256 + AES-256-GCM, pure.

Owns the sealed blob of the pushed registry (docs/fleet.md, "Registry push"): the device and
multicast root keys the platform sends a gateway, readable by that gateway only. No files, no
clock: the gateway's X25519 private key is kept by ``gateway.provisioning.gateway_setup``
(``tls/seal.key``), the message that carries a blob is ``gateway.fleet.registry_push``'s.

Blob (bytes; base64 in the JSON message)::

    0x01 ‖ ephemeral X25519 public key (32) ‖ nonce (12) ‖ AES-256-GCM ciphertext ‖ tag (16)

The sender draws a fresh X25519 key per blob; the AES key is HKDF-SHA256 (RFC 5869) of the
ECDH shared secret, salted with the ephemeral and the recipient public keys, ``INFO`` as info.
The associated data binds the blob to the receiving gateway's id and the message version: a
blob copied into another gateway's message, or into another version of the same gateway's,
does not open. Whether the blob comes from the platform is not its business: the message's
Ed25519 signature covers it.
"""

from __future__ import annotations

import base64
import binascii
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.errors import CommandRejected

FORMAT = 1
INFO = b"edgegw-seal-v1"
KEY_BYTES = 32  # X25519 public key, RFC 7748 §5
NONCE_BYTES = 12
TAG_BYTES = 16
HEADER_BYTES = 1 + KEY_BYTES + NONCE_BYTES


UNSEALABLE = "unsealable"
"""The ``reason`` of a blob that does not open: another gateway's, another version's, altered, not a blob."""
BAD_KEY = "bad_seal_key"
"""The ``reason`` of a text that is not an X25519 public key."""


def associated_data(gateway_id: str, version: int) -> bytes:
    """What a blob is bound to besides its key: the receiving gateway and the message version."""
    return INFO + b"\n" + gateway_id.encode("utf-8") + b"\n" + str(version).encode("ascii")


def public_key_text(key: X25519PublicKey) -> str:
    """The base64 of the raw 32-byte public key (printed by provisioning, published on ``seal-key``)."""
    return base64.b64encode(key.public_bytes_raw()).decode("ascii")


def load_public_key(text: str) -> X25519PublicKey:
    """A public key from ``public_key_text``'s form; ``CommandRejected`` (``bad_seal_key``) otherwise."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CommandRejected("an X25519 public key is 32 bytes in base64", reason=BAD_KEY) from exc
    if len(raw) != KEY_BYTES:
        raise CommandRejected(f"an X25519 public key is {KEY_BYTES} bytes, not {len(raw)}", reason=BAD_KEY)
    return X25519PublicKey.from_public_bytes(raw)


def _aead(shared: bytes, ephemeral: bytes, recipient: bytes) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral + recipient, info=INFO).derive(shared)
    return AESGCM(key)


def seal(recipient: X25519PublicKey, plaintext: bytes, *, gateway_id: str, version: int) -> bytes:
    """``plaintext`` readable only with ``recipient``'s private key, bound to ``gateway_id``, ``version``."""
    ephemeral = X25519PrivateKey.generate()
    epk = ephemeral.public_key().public_bytes_raw()
    nonce = secrets.token_bytes(NONCE_BYTES)
    aead = _aead(ephemeral.exchange(recipient), epk, recipient.public_bytes_raw())
    return (
        bytes([FORMAT]) + epk + nonce + aead.encrypt(nonce, plaintext, associated_data(gateway_id, version))
    )


def open_sealed(private: X25519PrivateKey, blob: bytes, *, gateway_id: str, version: int) -> bytes:
    """The plaintext of ``blob``; ``CommandRejected`` (``unsealable``) when it was not sealed to this
    key, gateway and version."""
    if len(blob) < HEADER_BYTES + TAG_BYTES or blob[0] != FORMAT:
        raise CommandRejected(
            f"not a sealed blob (format {blob[:1].hex() or 'none'}, {len(blob)} bytes)", reason=UNSEALABLE
        )
    epk, nonce = blob[1 : 1 + KEY_BYTES], blob[1 + KEY_BYTES : HEADER_BYTES]
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(epk))
    except ValueError as exc:  # a low-order point gives an all-zero secret: refused by the library
        raise CommandRejected("the blob's ephemeral key is not usable", reason=UNSEALABLE) from exc
    aead = _aead(shared, epk, private.public_key().public_bytes_raw())
    try:
        return aead.decrypt(nonce, blob[HEADER_BYTES:], associated_data(gateway_id, version))
    except InvalidTag as exc:
        raise CommandRejected(
            "the sealed keys do not open with this gateway's key "
            "(sealed to another gateway, another version, or altered)",
            reason=UNSEALABLE,
        ) from exc
