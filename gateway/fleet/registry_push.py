"""The pushed registry's message: what the platform gives one gateway, signed, keys sealed; pure.

Owns the wire format of ``<prefix>/<gateway id>/registry`` (retained; docs/fleet.md "Registry
push"), the bytes its signature covers, its checks (signed by a trusted platform key, for this
gateway), the opening of its sealed keys, and the difference between two registries (what
``edgegw fleet registry diff`` prints and what makes a push's ``removals``). It does not own the
database (``gateway.provisioning.pushed_registry`` applies a message), the keys' files
(``gateway.fleet.trust``, ``gateway.provisioning.gateway_setup``), nor MQTT.

A message is the whole registry the platform gives that gateway at ``version`` (not a delta: a
gateway that missed versions converges on the last one); versions only grow. Wire format (one JSON
object, UTF-8)::

    {"v": 1, "gateway": "gw-17", "target": "gw-17" | "group:<name>", "version": 42,
     "issued_at": <unix s>,
     "devices": [{"dev_eui", "profile", "activation": "abp"|"otaa", "join_eui" (OTAA),
                  "dev_addr" (ABP), "site", "lat", "lon", "class": "A"|"C", "adr": true,
                  "mac_version": null | "1.0.4", "params": {name: number | text},
                  "home_gateway": null | "gw-3"}, ...],
     "removals": ["<dev_eui>", ...],      # listed in the previous version, not in this one
     "groups": [{"name", "mc_addr", "dr", "freq_hz", "members": ["<dev_eui>", ...]}, ...],
     "sealed": "<base64 blob>",           # gateway.fleet.seal: the keys below, for this gateway only
     "sig": "<base64 Ed25519>"}

The sealed plaintext is ``{"devices": {dev_eui: {"app_key"} | {"nwk_s_key", "app_s_key"}},
"groups": {name: {"nwk_s_key", "app_s_key"}}}`` (hex): nothing secret is in clear. ``gateway`` is
the receiving gateway even for a group target (each member gets its own copy: its keys are sealed
to it), and with ``version`` it is the blob's associated data. The signature covers ``DOMAIN`` +
the canonical JSON of every field but ``sig`` (the envelope's rule, its own domain: a registry
signature is never a command's). Unlike a command there is no expiry: the message is retained,
a gateway back after a month must still apply it; the version refuses a replay.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from gateway.errors import CommandRejected
from gateway.fleet import seal
from gateway.fleet.signed_envelope import strict_json

FORMAT_VERSION = 1
DOMAIN = b"edgegw-registry-v1\n"
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
"""The largest message a gateway takes (its MQTT inbound queue's bound): 10,000 devices are ~3 MiB."""
MAX_DEVICES = 20_000
MAX_GROUPS = 1_000
GROUP_PREFIX = "group:"
SIGNATURE_BYTES = 64
_HEX16 = re.compile(r"[0-9a-f]{16}")
_HEX8 = re.compile(r"[0-9a-f]{8}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_PARAM_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
_TEXT_MAX = 200
_FIELDS = {"v", "gateway", "target", "version", "issued_at", "devices", "removals", "groups", "sealed", "sig"}
_DEVICE_FIELDS = {
    "dev_eui", "profile", "activation", "join_eui", "dev_addr", "site", "lat", "lon", "class", "adr",
    "mac_version", "params", "home_gateway",
}  # fmt: skip
_GROUP_FIELDS = {"name", "mc_addr", "dr", "freq_hz", "members"}
ABP_KEYS = ("nwk_s_key", "app_s_key")
OTAA_KEYS = ("app_key",)


class Refusal(StrEnum):
    """Why a registry message was refused: the ``reason`` on ``registry-state`` and a counter key."""

    MALFORMED = "malformed"  # not JSON, a field missing or of the wrong type, too large
    UNSIGNED = "unsigned"
    NO_PLATFORM_KEY = "no_platform_key"
    BAD_SIGNATURE = "bad_signature"
    MISADDRESSED = "misaddressed"  # another gateway's copy, or a group this gateway is not in
    NO_SEAL_KEY = "no_seal_key"  # this gateway has no X25519 key (provisioned before it existed)
    UNSEALABLE = seal.UNSEALABLE  # the keys do not open with this gateway's key
    FAILED = "failed"  # verified, but the database refused the whole transaction


def refuse(reason: Refusal, message: str) -> CommandRejected:
    return CommandRejected(message, reason=reason.value)


def canonical_bytes(body: Mapping[str, Any]) -> bytes:
    """DOMAIN + canonical JSON of ``body`` (which must not hold ``sig``)."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return DOMAIN + text.encode("ascii")


@dataclass(frozen=True, slots=True)
class PushedDevice:
    """One device as the platform gives it, without its keys."""

    dev_eui: str
    profile: str
    activation: str
    join_eui: str | None = None
    dev_addr: str | None = None
    site: str = ""
    lat: float | None = None
    lon: float | None = None
    lorawan_class: str = "A"
    adr: bool = True
    mac_version: str | None = None
    params: Mapping[str, float | str] = field(default_factory=dict)
    home_gateway: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "dev_eui": self.dev_eui,
            "profile": self.profile,
            "activation": self.activation,
            "join_eui": self.join_eui,
            "dev_addr": self.dev_addr,
            "site": self.site,
            "lat": self.lat,
            "lon": self.lon,
            "class": self.lorawan_class,
            "adr": self.adr,
            "mac_version": self.mac_version,
            "params": dict(self.params),
            "home_gateway": self.home_gateway,
        }


@dataclass(frozen=True, slots=True)
class PushedGroup:
    """One class C multicast group, without its keys."""

    name: str
    mc_addr: str
    dr: int | None = None
    freq_hz: int | None = None
    members: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mc_addr": self.mc_addr,
            "dr": self.dr,
            "freq_hz": self.freq_hz,
            "members": list(self.members),
        }


@dataclass(frozen=True, slots=True)
class Secrets:
    """The root keys of a message, hex: per device (``ABP_KEYS`` or ``OTAA_KEYS``) and per group."""

    devices: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    groups: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        doc = {"devices": {k: dict(v) for k, v in self.devices.items()},
               "groups": {k: dict(v) for k, v in self.groups.items()}}  # fmt: skip
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode("ascii")


@dataclass(frozen=True, slots=True)
class RegistryMessage:
    gateway: str
    target: str
    version: int
    issued_at: int
    devices: tuple[PushedDevice, ...]
    removals: tuple[str, ...]
    groups: tuple[PushedGroup, ...]
    sealed: bytes
    sig: bytes = b""

    def body(self) -> dict[str, Any]:
        return {
            "v": FORMAT_VERSION,
            "gateway": self.gateway,
            "target": self.target,
            "version": self.version,
            "issued_at": self.issued_at,
            "devices": [d.as_json() for d in self.devices],
            "removals": list(self.removals),
            "groups": [g.as_json() for g in self.groups],
            "sealed": base64.b64encode(self.sealed).decode("ascii"),
        }

    def signing_bytes(self) -> bytes:
        return canonical_bytes(self.body())

    def to_bytes(self) -> bytes:
        doc = self.body()
        doc["sig"] = base64.b64encode(self.sig).decode("ascii")
        return json.dumps(doc, separators=(",", ":")).encode("ascii")


# --- the platform's side ---------------------------------------------------------------------


def build(
    *,
    gateway: str,
    target: str,
    version: int,
    issued_at: int,
    devices: Sequence[PushedDevice],
    groups: Sequence[PushedGroup],
    secrets: Secrets,
    removals: Iterable[str],
    recipient: X25519PublicKey,
    signing_key: Ed25519PrivateKey,
) -> RegistryMessage:
    """The signed message for ``gateway``, its keys sealed to ``recipient`` (that gateway's key)."""
    if version < 1:
        raise ValueError(f"a registry version is a positive integer, not {version}")
    missing = [d.dev_eui for d in devices if d.dev_eui not in secrets.devices]
    if missing:
        raise ValueError(f"no keys for {len(missing)} device(s), first {missing[0]}")
    blob = seal.seal(recipient, secrets.to_bytes(), gateway_id=gateway, version=version)
    unsigned = RegistryMessage(
        gateway, target, version, issued_at, tuple(devices), tuple(sorted(set(removals))), tuple(groups), blob
    )
    message = dataclasses.replace(unsigned, sig=signing_key.sign(unsigned.signing_bytes()))
    if len(message.to_bytes()) > MAX_MESSAGE_BYTES:
        raise ValueError(f"the registry for {gateway} exceeds {MAX_MESSAGE_BYTES} bytes: split the fleet")
    return message


# --- the gateway's side ----------------------------------------------------------------------


def _malformed(message: str) -> CommandRejected:
    return refuse(Refusal.MALFORMED, message)


def _str(doc: Mapping[str, Any], name: str, where: str, *, pattern: re.Pattern[str] | None = None,
         optional: bool = False, max_len: int = _TEXT_MAX) -> str | None:  # fmt: skip
    value = doc.get(name)
    if value is None and optional:
        return None
    if (
        not isinstance(value, str)
        or len(value) > max_len
        or (pattern is not None and not pattern.fullmatch(value))
    ):
        raise _malformed(f"{where}: {name} is not valid")
    return value


def _number(doc: Mapping[str, Any], name: str, where: str) -> float | None:
    value = doc.get(name)
    if value is None:
        return None
    if type(value) not in (int, float):
        raise _malformed(f"{where}: {name} must be a number")
    return float(value)


def _int(value: Any, where: str) -> int:
    if type(value) is not int or value < 0:
        raise _malformed(f"{where} must be a non-negative integer")
    return value


def _device(doc: Any, index: int) -> PushedDevice:
    where = f"devices[{index}]"
    if not isinstance(doc, dict):
        raise _malformed(f"{where} must be an object")
    unknown = set(doc) - _DEVICE_FIELDS
    if unknown:
        raise _malformed(f"{where}: unknown fields {sorted(unknown)}")
    eui = _str(doc, "dev_eui", where, pattern=_HEX16)
    activation = doc.get("activation")
    if activation not in ("abp", "otaa"):
        raise _malformed(f"{where}: activation must be abp or otaa")
    params = doc.get("params", {})
    if not isinstance(params, dict) or not all(
        isinstance(k, str) and _PARAM_NAME.fullmatch(k)
        and (type(v) in (int, float) or (isinstance(v, str) and len(v) <= _TEXT_MAX))
        for k, v in params.items()
    ):  # fmt: skip
        raise _malformed(f"{where}: params must map snake_case names to numbers or short texts")
    cls = doc.get("class", "A")
    if cls not in ("A", "C"):
        raise _malformed(f"{where}: class must be A or C")
    adr = doc.get("adr", True)
    if not isinstance(adr, bool):
        raise _malformed(f"{where}: adr must be true or false")
    assert eui is not None
    return PushedDevice(
        dev_eui=eui,
        profile=_str(doc, "profile", where, max_len=64) or "",
        activation=activation,
        join_eui=_str(doc, "join_eui", where, pattern=_HEX16, optional=activation == "abp"),
        dev_addr=_str(doc, "dev_addr", where, pattern=_HEX8, optional=activation == "otaa"),
        site=_str(doc, "site", where, optional=True) or "",
        lat=_number(doc, "lat", where),
        lon=_number(doc, "lon", where),
        lorawan_class=cls,
        adr=adr,
        mac_version=_str(doc, "mac_version", where, optional=True, max_len=8),
        params=dict(params),
        home_gateway=_str(doc, "home_gateway", where, optional=True, max_len=64),
    )


def group_from_json(doc: Any, index: int = 0) -> PushedGroup:
    """One group of a message's ``groups`` (without its keys); ``CommandRejected`` (malformed)."""
    where = f"groups[{index}]"
    if not isinstance(doc, dict) or set(doc) - _GROUP_FIELDS:
        raise _malformed(f"{where} must be an object with {sorted(_GROUP_FIELDS)}")
    members = doc.get("members", [])
    if not isinstance(members, list) or not all(isinstance(m, str) and _HEX16.fullmatch(m) for m in members):
        raise _malformed(f"{where}: members must be DevEUIs (16 lowercase hex digits)")
    dr, freq = doc.get("dr"), doc.get("freq_hz")
    return PushedGroup(
        name=_str(doc, "name", where, max_len=40) or "",
        mc_addr=_str(doc, "mc_addr", where, pattern=_HEX8) or "",
        dr=None if dr is None else _int(dr, f"{where}.dr"),
        freq_hz=None if freq is None else _int(freq, f"{where}.freq_hz"),
        members=tuple(members),
    )


def parse(data: bytes) -> RegistryMessage:
    """The message in ``data``; ``CommandRejected`` (malformed / unsigned) when it is not one.

    Only the shape is checked here (cheaply, before the signature): the values a gateway must
    judge against its own registry (profiles, DevAddr clashes) are the applier's."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise _malformed(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        doc = strict_json(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _malformed(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise _malformed("a registry message is a JSON object")
    if not doc.get("sig"):
        raise refuse(Refusal.UNSIGNED, "the registry message carries no signature")
    if doc.get("v") != FORMAT_VERSION:
        raise _malformed(f"format {doc.get('v')!r} is not {FORMAT_VERSION}")
    unknown = set(doc) - _FIELDS
    if unknown:
        raise _malformed(f"unknown fields {sorted(unknown)}")
    devices, removals, groups = doc.get("devices"), doc.get("removals"), doc.get("groups")
    if not isinstance(devices, list) or len(devices) > MAX_DEVICES:
        raise _malformed(f"devices must be a list of at most {MAX_DEVICES}")
    if not isinstance(groups, list) or len(groups) > MAX_GROUPS:
        raise _malformed(f"groups must be a list of at most {MAX_GROUPS}")
    if not isinstance(removals, list) or not all(
        isinstance(r, str) and _HEX16.fullmatch(r) for r in removals
    ):
        raise _malformed("removals must be DevEUIs (16 lowercase hex digits)")
    try:
        sealed = base64.b64decode(doc.get("sealed") or "", validate=True)
        sig = base64.b64decode(doc["sig"], validate=True) if isinstance(doc["sig"], str) else b""
    except (binascii.Error, ValueError) as exc:
        raise _malformed("sealed and sig are base64") from exc
    if len(sig) != SIGNATURE_BYTES:
        raise refuse(Refusal.BAD_SIGNATURE, f"signature of {len(sig)} bytes, Ed25519 has {SIGNATURE_BYTES}")
    parsed = [_device(d, i) for i, d in enumerate(devices)]
    euis = [d.dev_eui for d in parsed]
    if len(set(euis)) != len(euis):
        raise _malformed("a DevEUI is listed twice")
    return RegistryMessage(
        gateway=_str(doc, "gateway", "message", max_len=64) or "",
        target=_str(doc, "target", "message", max_len=128) or "",
        version=_int(doc.get("version"), "version"),
        issued_at=_int(doc.get("issued_at"), "issued_at"),
        devices=tuple(parsed),
        removals=tuple(removals),
        groups=tuple(group_from_json(g, i) for i, g in enumerate(groups)),
        sealed=sealed,
        sig=sig,
    )


def verify(message: RegistryMessage, keys: Sequence[Ed25519PublicKey], *, gateway_id: str,
           groups: frozenset[str] = frozenset()) -> None:  # fmt: skip
    """Signed by one of ``keys`` and addressed to this gateway; ``CommandRejected`` otherwise.

    The signature first: nothing an unauthenticated sender wrote is judged further."""
    if not keys:
        raise refuse(Refusal.NO_PLATFORM_KEY, "no platform key is pinned on this gateway")
    signed = message.signing_bytes()
    for key in keys:
        try:
            key.verify(message.sig, signed)
            break
        except InvalidSignature:
            continue
    else:
        raise refuse(Refusal.BAD_SIGNATURE, "signature does not verify with any trusted platform key")
    if message.gateway != gateway_id:
        raise refuse(Refusal.MISADDRESSED, f"registry for {message.gateway!r}, this is {gateway_id!r}")
    target = message.target
    if target != gateway_id and not (
        target.startswith(GROUP_PREFIX) and target[len(GROUP_PREFIX) :] in groups
    ):
        raise refuse(Refusal.MISADDRESSED, f"registry for {target!r}, this gateway is not in it")


def _hex_keys(value: Any, names: tuple[str, ...], where: str) -> dict[str, str]:
    if not isinstance(value, dict) or set(value) != set(names):
        raise refuse(Refusal.MALFORMED, f"sealed keys of {where}: expected {', '.join(names)}")
    for name in names:
        if not isinstance(value[name], str) or not _HEX32.fullmatch(value[name]):
            raise refuse(Refusal.MALFORMED, f"sealed keys of {where}: {name} is not 32 hex digits")
    return {name: value[name] for name in names}


def open_secrets(message: RegistryMessage, private: X25519PrivateKey) -> Secrets:
    """The message's keys, opened with this gateway's key; ``CommandRejected`` (``unsealable`` or
    ``malformed``) when they do not open or do not match the devices and groups listed."""
    plain = seal.open_sealed(private, message.sealed, gateway_id=message.gateway, version=message.version)
    try:
        doc = json.loads(plain)
    except ValueError as exc:
        raise refuse(Refusal.MALFORMED, "the sealed keys are not JSON") from exc
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("devices"), dict)
        or not isinstance(doc.get("groups", {}), dict)
    ):
        raise refuse(Refusal.MALFORMED, "the sealed keys are not {devices, groups}")
    device_keys, group_keys = doc["devices"], doc.get("groups", {})
    devices = {
        d.dev_eui: _hex_keys(
            device_keys.get(d.dev_eui), ABP_KEYS if d.activation == "abp" else OTAA_KEYS, d.dev_eui
        )
        for d in message.devices
    }
    groups = {g.name: _hex_keys(group_keys.get(g.name), ABP_KEYS, f"group {g.name}") for g in message.groups}
    return Secrets(devices, groups)


# --- differences -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegistryDiff:
    """What a new registry changes against an older one (DevEUIs and group names, sorted)."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    unchanged: int = 0
    groups_added: tuple[str, ...] = ()
    groups_changed: tuple[str, ...] = ()
    groups_removed: tuple[str, ...] = ()
    keys_compared: bool = False
    """False when the older registry's keys were not at hand (a retained message: sealed): a device
    whose only change is its keys then counts as unchanged."""

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed or self.groups_added or self.groups_changed
                    or self.groups_removed)  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        return {
            "added": list(self.added),
            "changed": list(self.changed),
            "removed": list(self.removed),
            "unchanged": self.unchanged,
            "groups_added": list(self.groups_added),
            "groups_changed": list(self.groups_changed),
            "groups_removed": list(self.groups_removed),
            "keys_compared": self.keys_compared,
        }


def diff(
    old_devices: Iterable[PushedDevice],
    new_devices: Iterable[PushedDevice],
    *,
    old_groups: Iterable[PushedGroup] = (),
    new_groups: Iterable[PushedGroup] = (),
    old_secrets: Secrets | None = None,
    new_secrets: Secrets | None = None,
) -> RegistryDiff:
    """What going from the old registry to the new one changes; keys compared when both are given."""
    old = {d.dev_eui: d for d in old_devices}
    new = {d.dev_eui: d for d in new_devices}
    with_keys = old_secrets is not None and new_secrets is not None

    def keys_differ(eui: str) -> bool:
        if old_secrets is None or new_secrets is None:
            return False
        return dict(old_secrets.devices.get(eui, {})) != dict(new_secrets.devices.get(eui, {}))

    changed = sorted(e for e in old.keys() & new.keys() if old[e] != new[e] or keys_differ(e))
    old_g = {g.name: g for g in old_groups}
    new_g = {g.name: g for g in new_groups}

    def group_differs(name: str) -> bool:
        if old_g[name] != new_g[name]:
            return True
        if old_secrets is None or new_secrets is None:
            return False
        return dict(old_secrets.groups.get(name, {})) != dict(new_secrets.groups.get(name, {}))

    return RegistryDiff(
        added=tuple(sorted(new.keys() - old.keys())),
        changed=tuple(changed),
        removed=tuple(sorted(old.keys() - new.keys())),
        unchanged=len(old.keys() & new.keys()) - len(changed),
        groups_added=tuple(sorted(new_g.keys() - old_g.keys())),
        groups_changed=tuple(sorted(n for n in old_g.keys() & new_g.keys() if group_differs(n))),
        groups_removed=tuple(sorted(old_g.keys() - new_g.keys())),
        keys_compared=with_keys,
    )


# --- the gateways' seal keys ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SealKey:
    """What a gateway publishes, retained, on ``<prefix>/<gateway id>/seal-key``::

        {"v": 1, "gateway": "gw-17", "x25519": "<base64 raw public key>", "groups": ["north"]}

    ``groups`` are the gateway's groups (its configuration's): what resolves a ``group:<name>``
    target to its members on the platform's side."""

    gateway: str
    key: X25519PublicKey
    groups: frozenset[str] = frozenset()

    def to_bytes(self) -> bytes:
        doc = {"v": FORMAT_VERSION, "gateway": self.gateway, "x25519": seal.public_key_text(self.key),
               "groups": sorted(self.groups)}  # fmt: skip
        return json.dumps(doc, separators=(",", ":")).encode("ascii")


def parse_seal_key(data: bytes) -> SealKey:
    """A ``seal-key`` message, or a file holding one; ``CommandRejected`` (malformed / bad_seal_key)."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _malformed(f"seal-key is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("v") != FORMAT_VERSION:
        raise _malformed("seal-key is not a {v: 1, gateway, x25519, groups} object")
    gateway, text, groups = doc.get("gateway"), doc.get("x25519"), doc.get("groups", [])
    if not isinstance(gateway, str) or not gateway or not isinstance(text, str):
        raise _malformed("seal-key names no gateway or no x25519 key")
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise _malformed("seal-key groups must be a list of names")
    return SealKey(gateway, seal.load_public_key(text), frozenset(groups))
