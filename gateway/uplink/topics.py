"""MQTT topic names of one gateway (ARCHITECTURE.md §3.2), pure.

Owns the topic layout ``{prefix}/{gateway_id}/...``; it does not own payloads
(``gateway.uplink.envelope``) nor QoS/retain choices (the publishers decide, and
``docs/mqtt.md`` documents them).
"""

from __future__ import annotations

from dataclasses import dataclass

# MQTT 3.1.1 §4.7.1: '+' and '#' are wildcards and may not appear in a topic name;
# §4.7.3: topic names must not contain U+0000.
_FORBIDDEN = ("+", "#", "\x00")


def _check_part(value: str, what: str, *, slash_ok: bool) -> None:
    if not value:
        raise ValueError(f"{what} must not be empty")
    if any(ch in value for ch in _FORBIDDEN):
        raise ValueError(f"{what} must not contain MQTT wildcards or NUL: {value!r}")
    if not slash_ok and "/" in value:
        raise ValueError(f"{what} must be one topic level (no '/'): {value!r}")
    if slash_ok and "" in value.split("/"):
        raise ValueError(f"{what} must not have empty topic levels: {value!r}")


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics of gateway ``gateway_id`` under ``prefix`` (which may span several levels)."""

    prefix: str
    gateway_id: str

    def __post_init__(self) -> None:
        _check_part(self.prefix, "topic prefix", slash_ok=True)
        _check_part(self.gateway_id, "gateway id", slash_ok=False)

    @property
    def root(self) -> str:
        return f"{self.prefix}/{self.gateway_id}"

    @property
    def up(self) -> str:
        """Batches of records, QoS 1."""
        return f"{self.root}/up"

    @property
    def up_zlib(self) -> str:
        """Batches of records compressed with zlib (``mqtt.compression: zlib``), QoS 1."""
        return f"{self.root}/up/zlib"

    @property
    def alert(self) -> str:
        """One alert per message, QoS 1."""
        return f"{self.root}/alert"

    @property
    def state(self) -> str:
        """Retained online/offline (the last will)."""
        return f"{self.root}/state"

    @property
    def health(self) -> str:
        return f"{self.root}/health"

    @property
    def inventory(self) -> str:
        """Devices heard: last seen, signal, battery (paged, QoS 1, not retained)."""
        return f"{self.root}/inventory"

    def cmd(self, name: str) -> str:
        """Inbound signed command ``name``."""
        _check_part(name, "command name", slash_ok=False)
        return f"{self.root}/cmd/{name}"

    @property
    def cmd_filter(self) -> str:
        """Subscription filter for every inbound command."""
        return f"{self.root}/cmd/+"

    @property
    def cmd_result(self) -> str:
        return f"{self.root}/cmd-result"

    @property
    def config(self) -> str:
        """Inbound, retained, signed desired configuration."""
        return f"{self.root}/config"

    @property
    def config_state(self) -> str:
        return f"{self.root}/config-state"

    @property
    def update_chunks(self) -> str:
        """Inbound chunks of an agent package: ``update/<sha256>/<index>/<count>`` (raw bytes)."""
        return f"{self.root}/update/+/+/+"

    @property
    def update_state(self) -> str:
        """Retained outcome of the last agent update (applied, rolled_back, refused)."""
        return f"{self.root}/update-state"

    @property
    def registry(self) -> str:
        """Inbound, retained, signed registry of this gateway (``gateway.fleet.registry_push``)."""
        return f"{self.root}/registry"

    @property
    def registry_state(self) -> str:
        """Retained: the registry version applied, its devices, what was refused."""
        return f"{self.root}/registry-state"

    @property
    def seal_key(self) -> str:
        """Retained: this gateway's X25519 public key, which the platform seals registry keys to."""
        return f"{self.root}/seal-key"

    def fcnt_reserve(self, dev_eui: str) -> str:
        """Retained FCntDown reserve of one device at its home (issue 21, ``gateway.fleet.fcnt_reserve``)."""
        _check_part(dev_eui, "DevEUI", slash_ok=False)
        return f"{self.root}/fcnt-reserve/{dev_eui}"

    @property
    def fcnt_reserve_filter(self) -> str:
        """Subscription filter for this gateway's own reserves (read back at each connection)."""
        return f"{self.root}/fcnt-reserve/+"

    @property
    def fleet_home_filter(self) -> str:
        """Subscription filter for every device's signed, retained home assignment (the coordinator's)."""
        return fleet_home(self.prefix, "+")

    @property
    def join(self) -> str:
        """This gateway's join announcements (QoS 1, not retained; ``gateway.lorawan.join_share``)."""
        return f"{self.root}/join"

    @property
    def join_filter(self) -> str:
        """Subscription filter for every gateway's join announcements (``join_sender`` names who)."""
        return f"{self.prefix}/+/join"

    def join_sender(self, topic: str) -> str | None:
        """The gateway id of a join announcement's topic; None when ``topic`` is not one."""
        head, sep, sender = topic.removesuffix("/join").rpartition("/")
        if not sep or head != self.prefix or not topic.endswith("/join") or not sender:
            return None
        return sender


FLEET_LEVEL = "fleet"
"""The topic level under the prefix for fleet-wide messages: not usable as a gateway id."""


def fleet_home(prefix: str, dev_eui: str) -> str:
    """``{prefix}/fleet/home/{dev_eui}``: the signed, retained home assignment of one device."""
    return f"{prefix}/{FLEET_LEVEL}/home/{dev_eui}"
