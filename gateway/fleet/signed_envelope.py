"""The signed envelope of platform commands and configuration (ARCHITECTURE.md §3.5), pure.

Owns the wire format of an envelope, the bytes its signature covers, and the checks
that decide whether one is acceptable: signed by a pinned key, addressed to us,
in its validity window, and newer than the last one accepted. It does not own where
the keys and the last sequence number are kept (``gateway.fleet.trust``), nor what
a payload means (``gateway.fleet.commands``). No clock, no files: the caller passes
``now_s``, the keys and ``last_seq``.

Wire format (one JSON object, UTF-8)::

    {"v": 1, "payload": {...}, "target": "gw-17" | "group:<name>", "seq": <int>,
     "issued_at": <unix s>, "expires_at": <unix s>, "sig": "<base64 Ed25519 signature>"}

The signature covers ``DOMAIN`` + the canonical JSON of all fields but ``sig`` (keys
sorted, separators ``,`` and ``:``, ASCII only): the same function as the reference
signer ``gateway.fleet.sign.signing_bytes``, written again here so that signer can be
copied out alone; a test keeps the two equal.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.errors import CommandRejected

ENVELOPE_VERSION = 1
DOMAIN = b"edgegw-envelope-v1\n"
MAX_ENVELOPE_BYTES = 64 * 1024
# Deep enough for any command; far from the recursion limit that canonical_bytes' json.dumps hits
# (a payload json.loads accepted, nested ~990 deep, made the signature check raise RecursionError).
MAX_PAYLOAD_DEPTH = 32
MAX_CLOCK_SKEW_S = 300
GROUP_PREFIX = "group:"
SIGNATURE_BYTES = 64  # RFC 8032 §5.1.6


class Rejection(StrEnum):
    """Why an envelope or command was refused; the ``reason`` on ``cmd-result`` and a counter key."""

    MALFORMED = "malformed"  # not JSON, a field missing or of the wrong type, unknown version
    UNSIGNED = "unsigned"  # no signature at all
    NO_PLATFORM_KEY = "no_platform_key"  # nothing pinned: provisioning skipped --platform-key
    BAD_SIGNATURE = "bad_signature"  # forged, altered, or signed by a key not pinned here
    MISADDRESSED = "misaddressed"  # for another gateway or a group we are not in
    EXPIRED = "expired"  # now is past expires_at
    NOT_YET_VALID = "not_yet_valid"  # issued_at is ahead of our clock by more than the skew
    REPLAYED = "replayed"  # seq not above the last accepted one
    # The payload's command is not the topic's (a signed flush re-published on cmd/restart).
    WRONG_TOPIC = "wrong_topic"
    UNKNOWN_COMMAND = "unknown_command"  # not on the allow-list
    BAD_PARAMS = "bad_params"  # parameters missing, unknown, or out of range
    FAILED = "failed"  # accepted, but the handler failed


def reject(reason: Rejection, message: str) -> CommandRejected:
    return CommandRejected(message, reason=reason.value)


def canonical_bytes(body: dict[str, Any]) -> bytes:
    """DOMAIN + canonical JSON of ``body`` (which must not hold ``sig``)."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return DOMAIN + text.encode("ascii")


@dataclass(frozen=True, slots=True)
class Envelope:
    payload: dict[str, Any]
    target: str
    seq: int
    issued_at: int
    expires_at: int
    sig: bytes

    def body(self) -> dict[str, Any]:
        return {
            "v": ENVELOPE_VERSION,
            "payload": self.payload,
            "target": self.target,
            "seq": self.seq,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
        }

    def signing_bytes(self) -> bytes:
        return canonical_bytes(self.body())

    def to_bytes(self) -> bytes:
        doc = self.body()
        doc["sig"] = base64.b64encode(self.sig).decode("ascii")
        return json.dumps(doc, separators=(",", ":")).encode()


def _int_field(doc: dict[str, Any], name: str) -> int:
    value = doc.get(name)
    if type(value) is not int or value < 0:  # bool is an int subclass: refuse it too
        raise reject(Rejection.MALFORMED, f"envelope field {name!r} must be a non-negative integer")
    return value


def strict_json(data: bytes) -> Any:
    """JSON as a signed platform message may be: UTF-8, no NaN/Infinity, every number finite.
    ``UnicodeDecodeError``, ``ValueError`` or ``RecursionError`` otherwise (the caller says why)."""
    return json.loads(data.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    # 1e400 is valid JSON but parses to inf, which the canonical JSON of the signature cannot write.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:24]} is out of range")
    return value


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        if isinstance(node, list):
            deepest = max(deepest, depth + 1)
            if depth < MAX_PAYLOAD_DEPTH:  # no need to look further down than the limit
                stack.extend((child, depth + 1) for child in node)
    return deepest


def parse(data: bytes) -> Envelope:
    """Parse an envelope; ``CommandRejected`` (malformed / unsigned) if it is not one."""
    if len(data) > MAX_ENVELOPE_BYTES:
        raise reject(Rejection.MALFORMED, f"envelope of {len(data)} bytes exceeds {MAX_ENVELOPE_BYTES}")
    try:
        doc = strict_json(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise reject(Rejection.MALFORMED, f"envelope is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise reject(Rejection.MALFORMED, "envelope must be a JSON object")
    sig_text = doc.get("sig")
    if sig_text is None or sig_text == "":
        raise reject(Rejection.UNSIGNED, "envelope carries no signature")
    if doc.get("v") != ENVELOPE_VERSION:
        raise reject(Rejection.MALFORMED, f"envelope version {doc.get('v')!r} is not {ENVELOPE_VERSION}")
    unknown = set(doc) - {"v", "payload", "target", "seq", "issued_at", "expires_at", "sig"}
    if unknown:
        # Unknown fields would not be covered by the signature check below as sent.
        raise reject(Rejection.MALFORMED, f"unknown envelope fields: {sorted(unknown)}")
    payload, target = doc.get("payload"), doc.get("target")
    if not isinstance(payload, dict):
        raise reject(Rejection.MALFORMED, "envelope payload must be a JSON object")
    if _depth(payload) > MAX_PAYLOAD_DEPTH:
        raise reject(Rejection.MALFORMED, f"envelope payload nests deeper than {MAX_PAYLOAD_DEPTH} levels")
    if not isinstance(target, str) or not target:
        raise reject(Rejection.MALFORMED, "envelope target must be a non-empty string")
    if not isinstance(sig_text, str):
        raise reject(Rejection.MALFORMED, "envelope sig must be a base64 string")
    try:
        sig = base64.b64decode(sig_text, validate=True)
    except ValueError as exc:  # binascii.Error, or a ValueError for non-ASCII characters
        raise reject(Rejection.MALFORMED, "envelope sig is not base64") from exc
    if len(sig) != SIGNATURE_BYTES:
        raise reject(Rejection.BAD_SIGNATURE, f"signature of {len(sig)} bytes, Ed25519 has {SIGNATURE_BYTES}")
    return Envelope(
        payload=payload,
        target=target,
        seq=_int_field(doc, "seq"),
        issued_at=_int_field(doc, "issued_at"),
        expires_at=_int_field(doc, "expires_at"),
        sig=sig,
    )


def _verifying_key(env: Envelope, keys: Sequence[Ed25519PublicKey]) -> int:
    message = env.signing_bytes()
    for index, key in enumerate(keys):
        try:
            key.verify(env.sig, message)
        except InvalidSignature:
            continue
        return index
    raise reject(Rejection.BAD_SIGNATURE, "signature does not verify with any pinned platform key")


def check(
    env: Envelope,
    keys: Sequence[Ed25519PublicKey],
    *,
    gateway_id: str,
    groups: frozenset[str],
    now_s: float,
    last_seq: int,
    max_skew_s: int = MAX_CLOCK_SKEW_S,
) -> int:
    """Accept ``env`` or raise ``CommandRejected``; returns the index of the key that verified it.

    Order: the signature first, so nothing an unauthenticated sender wrote is looked at
    further; then address, validity window, and the sequence number last (a replay of a
    still-valid envelope is the only thing that reaches it).
    """
    if not keys:
        raise reject(Rejection.NO_PLATFORM_KEY, "no platform key is pinned on this gateway")
    index = _verifying_key(env, keys)
    if env.target != gateway_id and not (
        env.target.startswith(GROUP_PREFIX) and env.target[len(GROUP_PREFIX) :] in groups
    ):
        raise reject(Rejection.MISADDRESSED, f"envelope is for {env.target!r}, this is {gateway_id!r}")
    if now_s > env.expires_at:
        raise reject(Rejection.EXPIRED, f"envelope expired {now_s - env.expires_at:.0f} s ago")
    if env.issued_at > now_s + max_skew_s:
        raise reject(
            Rejection.NOT_YET_VALID,
            f"envelope issued {env.issued_at - now_s:.0f} s ahead of this gateway's clock",
        )
    if env.seq <= last_seq:
        raise reject(Rejection.REPLAYED, f"seq {env.seq} is not above the last accepted {last_seq}")
    return index
