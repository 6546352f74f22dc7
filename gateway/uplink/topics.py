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
