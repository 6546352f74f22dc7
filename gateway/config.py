"""The agent's configuration: one YAML file → a frozen, typed tree, validated once.

Owns the schema of the config file (the dataclasses below are the schema), its
loading and validation, environment overrides and the commented template
printed by ``edgegw config template``. Stages receive their own section in their
constructor; nobody reads raw dicts deeper in the code.

Every error names the file, the dotted key path and the reason::

    ConfigError: /etc/edgegw/edgegw.yaml: mqtt.port: expected an integer in 1..65535, got 'abc'

The file is read by ``gateway.textfile`` (UTF-8 or a one-line error, a repeated key refused)
and its values with ``gateway.yamldoc`` (the key paths and wording shared with the other files).
``load`` raises the first problem; ``load_all`` returns every one (``edgegw config check``, with
the checks beyond the schema in ``gateway.preflight``).

Environment overrides: ``EDGEGW_<SECTION>__<KEY>=value`` (double underscore between
levels, case-insensitive), e.g. ``EDGEGW_MQTT__HOST=broker.example``; ``EDGEGW_DATA_DIR``
for a top-level key. Values are read as YAML scalars (``true``, ``1883``, ``text``). An error
in an overridden value names the variable (``EDGEGW_MQTT__PORT: expected an integer, got 'x'``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import yaml

from gateway import eu868, textfile
from gateway.errors import ConfigError
from gateway.yamldoc import Node

ENV_PREFIX = "EDGEGW_"
MIN_MESSAGE_BYTES = 4096
"""``mqtt.max_message_bytes`` at least: a reading with its envelope must fit (they are < 2 KiB)."""
MAX_MESSAGE_BYTES = 268_435_460
"""``mqtt.max_message_bytes`` at most: MQTT's largest packet (remaining length 268,435,455 + header)."""
_MISSING = dataclasses.MISSING


def _doc(text: str, **kwargs: Any) -> Any:
    """A dataclass field carrying the help text shown in the template."""
    return field(metadata={"doc": text}, **kwargs)


@dataclass(frozen=True, slots=True)
class GatewaySection:
    id: str = _doc("Unique gateway id, used in MQTT topics (letters, digits, '-', '_'). Required.")
    name: str = _doc("Human-readable name shown in status views.", default="")


@dataclass(frozen=True, slots=True)
class RadioSection:
    url: str = _doc(
        "Radio front end, chosen by URL (docs/radio.md): semtech-udp://HOST:PORT (packet "
        "forwarder), sx127x://spi0.0?freq_hz=868100000&sf=7 (SPI module), "
        "serial:///dev/ttyUSB0?baud=115200 (RAK RUI3 modem). Semtech UDP has no "
        "authentication: keep 127.0.0.1 (the forwarder on the same Pi) unless it runs elsewhere.",
        default="semtech-udp://127.0.0.1:1700",
    )
    antenna_gain_dbi: float = _doc(
        "Gain of the gateway's antenna in dBi, minus the loss of its cable in dB: taken off each "
        "sub-band's radiated limit to get the conducted power of a downlink (docs/radio.md, 'Transmit "
        "power'). 2.15 is a dipole-class whip (conducted = e.r.p.); set it for any other antenna.",
        default=eu868.DEFAULT_ANTENNA_GAIN_DBI,
    )


@dataclass(frozen=True, slots=True)
class MqttSection:
    host: str = _doc("Broker host name or address.", default="localhost")
    port: int = _doc("Broker port (8883 is usual with TLS, 1883 without).", default=8883)
    tls: bool = _doc(
        "Use TLS with certificate verification. Turn off only on a trusted local link.", default=True
    )
    ca_file: str = _doc("CA bundle to verify the broker; empty means the system's.", default="")
    cert_file: str = _doc("Client certificate (PEM) for mutual TLS; empty for none.", default="")
    key_file: str = _doc("Client private key (PEM) for mutual TLS.", default="")
    username: str = _doc("Optional username.", default="")
    password: str = _doc("Optional password (prefer EDGEGW_MQTT__PASSWORD over the file).", default="")
    client_id: str = _doc("MQTT client id; empty means 'edgegw-<gateway id>'.", default="")
    topic_prefix: str = _doc("Topic root: <prefix>/<gateway id>/...", default="edgegw")
    keepalive_s: int = _doc("MQTT keepalive in seconds.", default=30)
    reconnect_max_s: float = _doc("Upper bound of the reconnect backoff, in seconds.", default=60.0)
    protocol: Literal["mqttv311", "mqttv5"] = _doc(
        "MQTT protocol version: mqttv311 (3.1.1) or mqttv5 (needed for shared subscriptions' content type).",
        default="mqttv311",
    )
    reconnect_min_s: float = _doc(
        "First reconnect delay; doubles per failed attempt up to reconnect_max_s, with random jitter.",
        default=1.0,
    )
    max_inflight_messages: int = _doc(
        "QoS 1 messages published and not yet acknowledged, at most.", default=32
    )
    publish_timeout_s: float = _doc(
        "Watchdog: a connection with a PUBACK outstanding this long is closed and set up again.", default=30.0
    )
    compression: Literal["none", "zlib"] = _doc(
        "Compress 'up' batches with zlib; they then go to <prefix>/<id>/up/zlib (docs/mqtt.md).",
        default="none",
    )
    drain_rate_records_s: float = _doc(
        "Backlog drain limit in records per second for 'up' batches (alerts are never limited); 0: no limit.",
        default=5000.0,
    )
    health_interval_s: float = _doc(
        "Publish gateway health on <prefix>/<id>/health this often; 0: never.", default=60.0
    )
    inventory_interval_s: float = _doc(
        "Publish the devices heard (last seen, RSSI/SNR, battery) on <prefix>/<id>/inventory this often; "
        "0: never.",
        default=900.0,
    )
    max_message_bytes: int = _doc(
        "Largest MQTT message the broker takes, in bytes, topic and headers included (AWS IoT Core: "
        "131072; mosquitto: message_size_limit / max_packet_size). Every publish is sized to fit; an "
        "MQTT 5 broker's Maximum Packet Size (CONNACK) applies when smaller. A 3.1.1 broker cannot say "
        "its limit and may acknowledge and drop what is larger: keep this at or below it (docs/mqtt.md).",
        default=131072,
    )


@dataclass(frozen=True, slots=True)
class OutboxSection:
    commit_interval_ms: int = _doc(
        "Group commit: accepted records are committed and fsync'd at most this often.", default=50
    )
    commit_max_records: int = _doc("Group commit: commit at once when this many records wait.", default=500)
    batch_max_records: int = _doc("Records per MQTT batch message on the 'up' topic.", default=100)
    batch_linger_ms: int = _doc("Wait at most this long for a batch to fill before sending it.", default=200)
    max_inflight_batches: int = _doc("Batches published and not yet acknowledged, at most.", default=8)
    batch_max_bytes: int = _doc(
        "Bytes of records per MQTT batch message, at most (before compression).", default=262144
    )
    max_bytes: int = _doc(
        "Bound of the buffer in stored bytes; when full, the lowest-priority, oldest records are evicted "
        "(alerts last) and counted. Size it with docs/outbox.md.",
        default=268435456,
    )
    max_age_s: float = _doc(
        "Records older than this (outbox clock: monotonic, corrected across restarts) are evicted; 0: never.",
        default=604800.0,
    )
    disk_reserve_bytes: int = _doc(
        "Disk space held back in data_dir (the file edgegw.reserve) and given up when the disk is full, so "
        "acknowledged rows can be deleted and alerts committed; written again when space is back; 0: none.",
        default=4194304,
    )
    memory_queue_records: int = _doc(
        "While the disk is full, accepted records wait in memory for a commit, at most this many (the "
        "lowest-priority, oldest beyond it are dropped and counted as dropped_uncommitted).",
        default=5000,
    )


@dataclass(frozen=True, slots=True)
class LogSection:
    level: Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"] = _doc(
        "Log level of the agent (TRACE adds per-frame hex dumps).", default="INFO"
    )
    stats_interval_s: float = _doc(
        "Log a one-line summary of the counters this often; 0 turns it off.", default=60.0
    )


@dataclass(frozen=True, slots=True)
class RulesSection:
    path: str = _doc(
        "Edge rules file (YAML, docs/rules.md); empty means no rules. Re-read when it changes; "
        "an invalid new file is refused and the previous rules stay.",
        default="",
    )
    reload_check_s: float = _doc("How often to look for a changed rules file, in seconds.", default=5.0)


@dataclass(frozen=True, slots=True)
class FleetSection:
    revert_after_s: float = _doc(
        "Patience of a pushed configuration on trial: go back to the last known good one if, within "
        "this many seconds, the broker is not reached (when it changed mqtt) or no record is "
        "acknowledged while records wait (docs/fleet.md).",
        default=300.0,
    )
    update_check_s: float = _doc(
        "After an agent update, the new version must reach the broker (and hear radio frames again if "
        "they were flowing before) within this many seconds, or the previous version comes back "
        "(docs/fleet.md).",
        default=300.0,
    )
    remote_settable: str = _doc(
        "Keys a pushed configuration may change although only this file sets them by default (mqtt.tls, "
        "ca/cert/key files, username, password, host, port, client_id, topic_prefix, radio.url, file "
        "paths, fleet.*): dotted keys or globs, space-separated, e.g. 'mqtt.host mqtt.port'; empty: none. "
        "gateway.id, data_dir and this key are never set by a push (docs/fleet.md).",
        default="",
    )

    groups: str = _doc(
        "The gateway groups this gateway belongs to, space-separated names (letters, digits, '-', '_'), "
        "e.g. 'north old-port': signed commands and pushed configurations addressed to 'group:<name>' are "
        "for it (docs/fleet.md). A push may set it only if remote_settable lists fleet.groups.",
        default="",
    )

    @property
    def remote_settable_keys(self) -> tuple[str, ...]:
        return tuple(self.remote_settable.split())

    @property
    def group_names(self) -> tuple[str, ...]:
        return tuple(self.groups.split())


@dataclass(frozen=True, slots=True)
class LorawanSection:
    net_id: str = _doc(
        "NetID sent in join-accepts, 6 hex digits (000000 and 000001 are for private networks).",
        default="000000",
    )
    dev_addr_prefix: str = _doc(
        "DevAddrs given to joining devices: HEX/BITS, the address block of the NetID "
        "(NetID 000000: 00000000/7; 000001: 02000000/7).",
        default="00000000/7",
    )
    rx1_dr_offset: int = _doc(
        "RX1DROffset sent in join-accepts: RX1 DR = uplink DR - offset (0..5).", default=0
    )
    rx2_dr: int = _doc("RX2 (and class C) data rate, 0..6 (EU868 default DR0 = SF12; TTN uses 3).", default=0)
    rx2_freq_hz: int = _doc("RX2 (and class C) frequency in Hz.", default=869_525_000)
    rx_delay_s: int = _doc("RX1 delay after an uplink in seconds (1..15), sent in join-accepts.", default=1)
    cflist_hz: str = _doc(
        "Extra channels sent in join-accepts (CFList): up to 5 frequencies in Hz, space-separated; "
        "empty for none.",
        default="867100000 867300000 867500000 867700000 867900000",
    )
    downlink_power_dbm: float = _doc(
        "Highest conducted transmit power of downlinks in dBm (the concentrator's); each downlink is "
        "sent at the lower of this and its sub-band's limit less radio.antenna_gain_dbi (EU868: 14 dBm "
        "e.r.p. in the RX1 bands, 27 dBm e.r.p. at 869.525 MHz; docs/radio.md).",
        default=27.0,
    )
    dedup_window_ms: int = _doc(
        "The same uplink heard by several forwarders within this window is processed once (best RSSI/SNR); "
        "with a single forwarder heard in the last hour, frames are processed at once.",
        default=200,
    )
    dev_status_period_s: int = _doc(
        "Ask each device its battery and demodulation margin (DevStatusReq, LoRaWAN 1.0.4 §5.5) when its "
        "last answer is older than this, in seconds; the request rides on the downlink after one of its "
        "uplinks. 0: never.",
        default=86_400,
    )
    confirmed_retries: int = _doc(
        "A confirmed downlink not acknowledged (the device's next uplink has no ACK; class C: no uplink "
        "within class_c_ack_timeout_s) is sent again this many times, each a new frame with a new FCntDown "
        "(LoRaWAN 1.0.4 §4.3.1.3), before it ends 'unacknowledged'; a frame the radio refused (duty cycle, "
        "too late) is sent again within the same budget (0..15).",
        default=3,
    )
    class_c_ack_timeout_s: float = _doc(
        "How long a class C device has to acknowledge a confirmed downlink before it is sent again, in "
        "seconds: CLASS_C_RESP_TIMEOUT (RP002: 8 s) plus the airtime of its answer.",
        default=10.0,
    )
    downlink_ttl_s: int = _doc(
        "A queued downlink still waiting after this many seconds ends 'expired' (a class A device that "
        "sent nothing since); its command's answer says so.",
        default=86_400,
    )
    adr: bool = _doc(
        "Network-side ADR (LoRaWAN 1.0.4 §5.3): devices whose uplinks set the ADR bit are asked, by "
        "LinkADRReq, for the fastest data rate and lowest power their last 20 uplinks allow "
        "(`device set --adr off` opts one out; docs/lorawan.md).",
        default=True,
    )
    adr_margin_db: float = _doc(
        "ADR installation margin in dB: SNR kept above the demodulation floor of the data rate chosen "
        "(rain, foliage, a parked lorry); 10 is Semtech's and ChirpStack's default.",
        default=10.0,
    )

    @property
    def cflist(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.cflist_hz.split())

    @property
    def dev_addr_block(self) -> tuple[int, int]:
        """(prefix value, prefix length in bits) of ``dev_addr_prefix``."""
        value, _, bits = self.dev_addr_prefix.partition("/")
        return int(value, 16), int(bits)


@dataclass(frozen=True, slots=True)
class Config:
    gateway: GatewaySection = _doc("Identity of this gateway.")
    radio: RadioSection = _doc("Radio front end.", default_factory=RadioSection)
    mqtt: MqttSection = _doc("Uplink to the central platform's MQTT broker.", default_factory=MqttSection)
    outbox: OutboxSection = _doc("Durable store-and-forward buffer.", default_factory=OutboxSection)
    log: LogSection = _doc("Logging.", default_factory=LogSection)
    rules: RulesSection = _doc(
        "Edge rules that run on the gateway, backhaul or not.", default_factory=RulesSection
    )
    lorawan: LorawanSection = _doc(
        "LoRaWAN network server at the edge: joins and downlinks.", default_factory=LorawanSection
    )
    fleet: FleetSection = _doc(
        "Configuration pushed by the central platform (signed, with automatic revert).",
        default_factory=FleetSection,
    )
    data_dir: str = _doc(
        "Directory for the database (device registry, sessions, outbox). Must be writable by the agent.",
        default="/var/lib/edgegw",
    )
    profiles_dir: str = _doc(
        "Directory of your own device profiles (<vendor>/<model>.yaml), searched in addition to the 19"
        " shipped with edgegw (one with a shipped id replaces it, logged); `edgegw profile import-ttn`"
        " writes there."
        " Empty: the shipped profiles only.",
        default="",
    )
    source: str = field(default="<defaults>", metadata={"internal": True})
    """Where this config was read from (for messages); not a config key."""

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def mqtt_client_id(self) -> str:
        return self.mqtt.client_id or f"edgegw-{self.gateway.id}"


_GATEWAY_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


SECRET_MARK: Final = "<secret>"


def redacted(cfg: Config, mark: str = SECRET_MARK) -> dict[str, Any]:
    """The configuration as a JSON document with its one secret value (``mqtt.password``) replaced
    by ``mark``; the TLS files are paths and stay (their contents are never read here)."""
    doc = dataclasses.asdict(cfg)
    if doc["mqtt"]["password"]:
        doc["mqtt"]["password"] = mark
    return doc


def load(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment and validate a config file; ConfigError on the first problem."""
    config, errors = load_all(path, environ)
    if errors:
        raise errors[0]
    assert config is not None
    return config


def loads(text: str, *, file: str = "<string>", environ: Mapping[str, str] | None = None) -> Config:
    """Validate config text. ``environ`` defaults to ``os.environ``."""
    config, errors = _validate(textfile.parse_yaml(text, file=file), file, environ)
    if errors:
        raise errors[0]
    assert config is not None
    return config


def load_all(
    path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> tuple[Config | None, list[ConfigError]]:
    """Every problem of a config file at once (``edgegw config check``), not only the first.

    Also returns the config when the file could be parsed, with defaults standing in for the
    values found wrong, so that ``gateway.preflight`` can check the rest of it; never run that one.
    An error from an ``EDGEGW_*`` override names the variable instead of the file and key path.
    """
    file = str(path)
    try:
        raw = textfile.parse_yaml(textfile.read_text(path), file=file)
    except ConfigError as exc:
        return None, [exc]
    return _validate(raw, file, environ)


def name_overrides(errors: list[ConfigError], environ: Mapping[str, str], file: str) -> list[ConfigError]:
    """``errors`` with those about ``file``'s keys that an ``EDGEGW_*`` variable set naming the variable."""
    overrides = {".".join(path): name for name, path in _env_paths(environ)}
    named: list[ConfigError] = []
    for error in errors:
        key = error.key_path if error.file == file else None
        variable = None
        if key is not None:
            variable = next((v for k, v in overrides.items() if key == k or key.startswith(f"{k}.")), None)
        named.append(error if variable is None else ConfigError(error.reason, key_path=variable))
    return named


def _validate(
    raw: Any, file: str, environ: Mapping[str, str] | None
) -> tuple[Config | None, list[ConfigError]]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return None, [ConfigError(f"the top level must be a mapping, got {type(raw).__name__}", file=file)]
    env = os.environ if environ is None else environ
    errors: list[ConfigError] = []
    _apply_env(raw, env, file, errors)
    config: Config = dataclasses.replace(_build(Config, Node(raw, file=file), errors), source=file)
    config = _check_all(config, file, errors)
    return config, name_overrides(_first_per_key(errors), env, file)


def _env_paths(environ: Mapping[str, str]) -> list[tuple[str, list[str]]]:
    """(variable, key path parts) of every ``EDGEGW_*`` override in ``environ``."""
    return [
        (name, [part.lower() for part in name[len(ENV_PREFIX) :].split("__")])
        for name in environ
        if name.upper().startswith(ENV_PREFIX) and name.upper() != "EDGEGW_CONFIG"
    ]


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str], file: str, errors: list[ConfigError]) -> None:
    for name, path in _env_paths(environ):
        value = environ[name]
        try:
            # The strict loader of the files: a repeated key, an alias bomb or a bad date such as
            # 2001-02-30 (a ValueError from PyYAML) is a ConfigError, not a crash or a silent pick.
            parsed = textfile.parse_yaml(value, file=name) if value != "" else ""
        except ConfigError:
            errors.append(ConfigError(f"environment override {name} is not a YAML scalar", file=file))
            continue
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                errors.append(ConfigError(f"environment override {name}: {part} is not a section", file=file))
                break
            node = child
        else:
            node[path[-1]] = parsed


def _build(cls: type[Any], node: Node, errors: list[ConfigError]) -> Any:
    """The dataclass ``cls`` from ``node``; each problem goes to ``errors`` and the default stands in.

    Unlike the other readers on ``gateway.yamldoc`` it goes on after a problem, so that
    ``edgegw config check`` lists every one; the schema is the dataclasses' fields.
    """
    known = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    try:
        errors.extend(node.unknown_keys(known))
    except ConfigError as exc:  # not a mapping
        errors.append(exc)
        node = Node({}, file=node.file, path=node.path)
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, f in known.items():
        required = f.default is _MISSING and f.default_factory is _MISSING
        child = node.get(name)
        if child is not None:
            try:
                values[name] = _coerce(hints[name], child, errors)
                continue
            except ConfigError as exc:
                errors.append(exc)
        elif required:
            # Worded as docs/configuration.md shows ("gateway: required key is missing").
            errors.append(
                ConfigError("required key is missing", file=node.file, key_path=node.child_path(name))
            )
        if required:
            values[name] = _placeholder(hints[name])
    return cls(**values)


def _placeholder(tp: Any) -> Any:
    """A value of type ``tp`` for a required key found missing or wrong (the error is already listed)."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, Node({}, file=""), [])
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)[0]
    return tp() if tp in (str, int, float, bool) else None


def _first_per_key(errors: list[ConfigError]) -> list[ConfigError]:
    """One error per key: a key already reported hides what follows from it (a missing section's keys)."""
    kept: list[ConfigError] = []
    reported: list[str] = []
    for error in errors:
        key = error.key_path
        if key is not None and any(key == done or key.startswith(f"{done}.") for done in reported):
            continue
        kept.append(error)
        if key is not None:
            reported.append(key)
    return kept


# A valid stand-in for a required key that has no default, so that the checks after it still run.
_STAND_INS: dict[str, Any] = {"gateway.id": "gateway"}
# Each round sets one more key back to its default: far more rounds than the schema has keys.
_MAX_CHECK_ROUNDS = 500


def _check_all(config: Config, file: str, errors: list[ConfigError]) -> Config:
    """Run ``_check`` until it passes: it stops at the first problem, so each time the value it names
    goes back to its default (or a stand-in) and the checks run again, to list every problem."""
    for _ in range(_MAX_CHECK_ROUNDS):
        try:
            _check(config, file)
            return config
        except ConfigError as exc:
            errors.append(exc)
            key_path = exc.key_path or ""
            fixed = _with_value(config, key_path, _STAND_INS.get(key_path, _MISSING))
            if fixed is None or fixed == config:
                return config
            config = fixed
    return config


def _with_value(section: Any, key_path: str, value: Any) -> Any:
    """``section`` with the key at ``key_path`` set to ``value`` (``_MISSING``: its default); None if
    there is no such key or it has no default."""
    head, _, rest = key_path.partition(".")
    f = next((f for f in dataclasses.fields(section) if f.name == head), None)
    if f is None:
        return None
    if rest:
        inner = getattr(section, head)
        if not dataclasses.is_dataclass(inner):
            return None
        changed = _with_value(inner, rest, value)
        return None if changed is None else dataclasses.replace(section, **{head: changed})
    if value is _MISSING:
        if f.default is not _MISSING:
            value = f.default
        elif callable(f.default_factory):  # MISSING is not
            value = f.default_factory()
        else:
            return None
    return dataclasses.replace(section, **{head: value})


def _coerce(tp: Any, node: Node, errors: list[ConfigError]) -> Any:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        # An empty section (`mqtt:` alone) is YAML null: every key of it at its default.
        return _build(tp, Node({}, file=node.file, path=node.path) if node.value is None else node, errors)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return node.as_choice([str(choice) for choice in typing.get_args(tp)])
    if origin in (typing.Union, types.UnionType):
        raise node.fail("internal: unions are not supported in config")
    if tp is bool:
        return node.as_bool()
    if tp is int:
        return node.as_int()
    if tp is float:
        # Finite: every float here is a duration, rate or power, and NaN passes every range check.
        return node.as_float()
    if tp is str:
        value = node.value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # `name: 42` is the text 42
        return node.as_str()
    raise node.fail(f"internal: unsupported type {tp!r}")


def _check(config: Config, file: str) -> None:
    """Checks that need more than one value's type."""
    if not _GATEWAY_ID.match(config.gateway.id):
        raise ConfigError(
            "must be 1-64 letters, digits, '-' or '_' (it is part of MQTT topics)",
            file=file,
            key_path="gateway.id",
        )
    if not 1 <= config.mqtt.port <= 65535:
        raise ConfigError(
            f"expected a port in 1..65535, got {config.mqtt.port}", file=file, key_path="mqtt.port"
        )
    if config.mqtt.keepalive_s < 5:
        raise ConfigError("must be at least 5 seconds", file=file, key_path="mqtt.keepalive_s")
    if bool(config.mqtt.cert_file) != bool(config.mqtt.key_file):
        raise ConfigError("cert_file and key_file go together", file=file, key_path="mqtt.cert_file")
    if "/" in config.mqtt.topic_prefix.strip("/") or not config.mqtt.topic_prefix.strip("/"):
        raise ConfigError("must be one non-empty topic level", file=file, key_path="mqtt.topic_prefix")
    for key in (
        "commit_interval_ms",
        "commit_max_records",
        "batch_max_records",
        "max_inflight_batches",
        "batch_max_bytes",
        "max_bytes",
        "memory_queue_records",
    ):
        if getattr(config.outbox, key) < 1:
            raise ConfigError("must be at least 1", file=file, key_path=f"outbox.{key}")
    if config.mqtt.max_inflight_messages < 1:
        raise ConfigError("must be at least 1", file=file, key_path="mqtt.max_inflight_messages")
    if not MIN_MESSAGE_BYTES <= config.mqtt.max_message_bytes <= MAX_MESSAGE_BYTES:
        raise ConfigError(
            f"expected {MIN_MESSAGE_BYTES}..{MAX_MESSAGE_BYTES} bytes, got {config.mqtt.max_message_bytes}",
            file=file,
            key_path="mqtt.max_message_bytes",
        )
    intervals = ("health_interval_s", "inventory_interval_s")
    for key in ("reconnect_min_s", "publish_timeout_s", "drain_rate_records_s", *intervals):
        if getattr(config.mqtt, key) < 0:
            raise ConfigError("must not be negative", file=file, key_path=f"mqtt.{key}")
    # Bounds a pushed overlay could otherwise abuse: a reconnect loop with no pause hammers the
    # broker from every gateway at once; a drain of a record an hour stalls the backlog; an hour
    # between group commits holds every accepted record in memory (lost on a power cut).
    if not config.mqtt.reconnect_min_s >= 0.05:
        raise ConfigError("must be at least 0.05 seconds", file=file, key_path="mqtt.reconnect_min_s")
    if config.mqtt.reconnect_max_s < config.mqtt.reconnect_min_s:
        raise ConfigError("must be at least reconnect_min_s", file=file, key_path="mqtt.reconnect_max_s")
    if 0 < config.mqtt.drain_rate_records_s < 1:
        raise ConfigError(
            "must be 0 (no limit) or at least 1", file=file, key_path="mqtt.drain_rate_records_s"
        )
    if config.outbox.commit_interval_ms > 1000:
        raise ConfigError("must be at most 1000 ms", file=file, key_path="outbox.commit_interval_ms")
    if config.outbox.disk_reserve_bytes < 0:
        raise ConfigError("must not be negative", file=file, key_path="outbox.disk_reserve_bytes")
    if config.outbox.max_age_s < 0:
        raise ConfigError("must not be negative", file=file, key_path="outbox.max_age_s")
    if config.outbox.batch_linger_ms < 0:
        raise ConfigError("must not be negative", file=file, key_path="outbox.batch_linger_ms")
    if config.log.stats_interval_s < 0:
        raise ConfigError("must not be negative", file=file, key_path="log.stats_interval_s")
    if not config.data_dir:
        raise ConfigError("must not be empty", file=file, key_path="data_dir")
    for key in ("revert_after_s", "update_check_s"):
        if not getattr(config.fleet, key) > 0:
            raise ConfigError("must be more than 0 seconds", file=file, key_path=f"fleet.{key}")
    _check_remote_settable(config, file)
    for name in config.fleet.group_names:
        if not _GATEWAY_ID.match(name):
            raise ConfigError(
                f"{name!r}: a group name is 1-64 letters, digits, '-' or '_' (space-separated names)",
                file=file,
                key_path="fleet.groups",
            )
    if "://" not in config.radio.url:
        raise ConfigError(
            "expected a URL such as semtech-udp://127.0.0.1:1700", file=file, key_path="radio.url"
        )
    if not -10.0 <= config.radio.antenna_gain_dbi <= 30.0:
        raise ConfigError(
            "must be -10..30 dBi (antenna gain minus cable loss)",
            file=file,
            key_path="radio.antenna_gain_dbi",
        )
    _check_lorawan(config.lorawan, file)


def _check_lorawan(section: LorawanSection, file: str) -> None:
    def bad(key: str, reason: str) -> ConfigError:
        return ConfigError(reason, file=file, key_path=f"lorawan.{key}")

    if not re.fullmatch(r"[0-9A-Fa-f]{6}", section.net_id):
        raise bad("net_id", f"expected 6 hex digits, got {section.net_id!r}")
    if not re.fullmatch(r"[0-9A-Fa-f]{8}/([1-9]|[12][0-9]|3[01])", section.dev_addr_prefix):
        raise bad("dev_addr_prefix", f"expected HEX/BITS such as 00000000/7, got {section.dev_addr_prefix!r}")
    value, bits = section.dev_addr_block
    if value & ((1 << (32 - bits)) - 1):
        raise bad("dev_addr_prefix", "has bits set beyond the prefix length")
    if not 0 <= section.rx1_dr_offset <= 5:
        raise bad("rx1_dr_offset", "must be 0..5")
    if not 0 <= section.rx2_dr <= 6:
        raise bad("rx2_dr", "must be 0..6")
    if not 863_000_000 <= section.rx2_freq_hz <= 870_000_000:
        raise bad("rx2_freq_hz", "must be in the EU868 band (863..870 MHz)")
    if eu868.sub_band_for(section.rx2_freq_hz, 125_000) is None:
        # Refused here rather than at every downlink (TxStatus tx_freq): a class C gateway would
        # otherwise start and never reach a device.
        raise bad(
            "rx2_freq_hz",
            f"{section.rx2_freq_hz} Hz: a 125 kHz channel there is not inside one EU868 sub-band "
            "(863-865, 865-868, 868.0-868.6, 868.7-869.2, 869.4-869.65, 869.7-870 MHz)",
        )
    if not 1 <= section.rx_delay_s <= 15:
        raise bad("rx_delay_s", "must be 1..15")
    if not 0 <= section.downlink_power_dbm <= 27:
        # The ceiling of the radio: EN 300 220-2 allows at most 27 dBm e.r.p. (869.40-869.65 MHz) and
        # RadioBackend.transmit limits each downlink to its own sub-band's e.r.p. below that.
        raise bad("downlink_power_dbm", "must be 0..27 dBm (EU868: 14 in the RX1 bands, 27 at most in RX2)")
    if section.dedup_window_ms < 0:
        raise bad("dedup_window_ms", "must not be negative")
    if section.dev_status_period_s < 0:
        raise bad("dev_status_period_s", "must not be negative (0: never ask)")
    if not 0 <= section.confirmed_retries <= 15:
        raise bad("confirmed_retries", "must be 0..15")
    if not 1 <= section.class_c_ack_timeout_s <= 600:
        raise bad("class_c_ack_timeout_s", "must be 1..600 seconds")
    if section.downlink_ttl_s < 1:
        raise bad("downlink_ttl_s", "must be at least 1 second")
    if not 0 <= section.adr_margin_db <= 30:
        raise bad("adr_margin_db", "must be 0..30 dB")
    try:
        freqs = section.cflist
    except ValueError as exc:
        raise bad("cflist_hz", "expected frequencies in Hz separated by spaces") from exc
    if len(freqs) > 5 or any(f % 100 or not 863_000_000 <= f <= 870_000_000 for f in freqs):
        raise bad("cflist_hz", "at most 5 EU868 frequencies in Hz, multiples of 100 Hz")
    for freq_hz in freqs:
        # A CFList channel is a 125 kHz uplink channel (RP002 EU863-870 CFList): all of it must lie in
        # one sub-band of EN 300 220-2 (869.2-869.4 MHz and the gaps at 868.6 and 869.65 MHz are not
        # for generic devices).
        if eu868.sub_band_for(freq_hz, 125_000) is None:
            raise bad(
                "cflist_hz",
                f"{freq_hz} Hz: a 125 kHz channel there is not inside one EU868 sub-band "
                "(863-865, 865-868, 868.0-868.6, 868.7-869.2, 869.4-869.65, 869.7-870 MHz)",
            )


def leaf_keys(cls: type[Any] | None = None, prefix: str = "") -> list[str]:
    """Every dotted key of the schema (``mqtt.host``, ``data_dir``...), for key patterns."""
    schema: type[Any] = Config if cls is None else cls
    hints = typing.get_type_hints(schema)
    keys: list[str] = []
    for f in dataclasses.fields(schema):
        if f.metadata.get("internal"):
            continue
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            keys.extend(leaf_keys(tp, f"{prefix}{f.name}."))
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _check_remote_settable(config: Config, file: str) -> None:
    # A pattern that matches nothing is a typo that would silently keep a key local-only.
    keys = leaf_keys()
    for pattern in config.fleet.remote_settable_keys:
        if not any(fnmatch.fnmatchcase(key, pattern) for key in keys):
            raise ConfigError(
                f"{pattern!r} matches no configuration key (dotted keys or globs, e.g. 'mqtt.host mqtt.*')",
                file=file,
                key_path="fleet.remote_settable",
            )


def template() -> str:
    """The whole default configuration, commented, as printed by ``edgegw config template``."""
    lines = [
        "# edgegw configuration. Every key except gateway.id has a default.",
        "# Environment overrides: EDGEGW_<SECTION>__<KEY>=value, e.g. EDGEGW_MQTT__HOST=broker.example",
        "",
    ]
    defaults: dict[str, Any] = {"gateway": {"id": "gw-change-me", "name": ""}}
    for f in dataclasses.fields(Config):
        if f.metadata.get("internal"):
            continue
        lines.append(f"# {f.metadata['doc']}")
        tp = typing.get_type_hints(Config)[f.name]
        if dataclasses.is_dataclass(tp):
            lines.append(f"{f.name}:")
            for sub in dataclasses.fields(tp):
                value = defaults.get(f.name, {}).get(sub.name, sub.default)
                lines.append(f"  # {sub.metadata['doc']}")
                lines.append(f"  {sub.name}: {_yaml_scalar(value)}")
        else:
            lines.append(f"{f.name}: {_yaml_scalar(f.default)}")
        lines.append("")
    return "\n".join(lines)


def _yaml_scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()
