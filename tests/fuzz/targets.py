"""The fuzz targets: one function per parser of untrusted input, and the valid inputs mutations start from.

Each ``check_*`` feeds one input to a parser the way the agent does and lets only the typed
errors of ``gateway.errors`` through silently; any other exception propagates and is a crash.
They are shared by ``tests/fuzz/test_parsers.py`` (hypothesis, CI) and ``fuzz/fuzz_*.py``
(atheris, on demand), so both fuzz exactly the same thing.

Seed sources: Semtech PROTOCOL.TXT (Lora-net/packet_forwarder, protocol v2, rev. v1.3) §4-§6
examples; LoRaWAN frames built by ``gateway.lorawan.phy`` with the LoRaWAN 1.0.x layout
(§4, §6.2); each shipped device profile's own ``examples``; ``config.template()``;
``rules/examples/*.yaml``; the CSV columns of ``gateway.provisioning.csv_import``; envelopes
signed by the reference signer ``gateway.fleet.sign``.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway import config
from gateway.app.commands import Actions, build_dispatcher
from gateway.codec import Profile, ProfileStore, default_profiles_dir
from gateway.errors import (
    CommandRejected,
    ConfigError,
    DatagramError,
    DecodeError,
    FrameError,
    RegistryError,
)
from gateway.fleet import desired, sign, signed_envelope
from gateway.fleet.commands import CommandDispatcher, CommandResult
from gateway.fleet.trust import PINNED_KEY_FILE, Trust
from gateway.lorawan import mac, phy
from gateway.lorawan.crypto import SessionKeys
from gateway.lorawan.downlink import DownlinkRef
from gateway.messages import DevEui, MType
from gateway.provisioning import csv_import
from gateway.radio.semtech_udp import packets
from gateway.radio.serial_modem import protocol
from gateway.rules.loader import parse_rules
from tests.fixtures.semtech import (
    GATEWAY_EUI,
    LORA_RXPK,
    PROTO_RXPK_FSK,
    PROTO_RXPK_LORA_SF10,
    PROTO_STAT,
    PROTO_TXPK_LORA,
    header,
)

REPO = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- Semtech UDP

# Besides the rxpk of tests/fixtures/semtech.py: a multi-antenna forwarder's, signal per antenna in
# "rsig" instead of top-level rssi/lsnr (Kerlink "jver":2 style).
_RXPK_RSIG: dict[str, Any] = {k: v for k, v in LORA_RXPK.items() if k not in ("rssi", "lsnr")} | {
    "rsig": [
        {"ant": 0, "chan": 0, "rssic": -80, "lsnr": 7.5},
        {"ant": 1, "chan": 0, "rssic": -90, "lsnr": 9},
    ],
}
# (header + EUI prefix, JSON document or None): the JSON part is what structure mutations change.
UDP_SEEDS: list[tuple[bytes, Any]] = [
    (
        header(packets.PUSH_DATA) + GATEWAY_EUI,
        {"rxpk": [PROTO_RXPK_LORA_SF10, PROTO_RXPK_FSK], "stat": PROTO_STAT},
    ),
    (header(packets.PUSH_DATA) + GATEWAY_EUI, {"rxpk": [_RXPK_RSIG]}),
    (header(packets.PUSH_DATA, version=1) + GATEWAY_EUI, {"stat": PROTO_STAT}),
    (header(packets.PULL_RESP), {"txpk": PROTO_TXPK_LORA}),
    (header(packets.TX_ACK) + GATEWAY_EUI, {"txpk_ack": {"error": "COLLISION_PACKET"}}),
    (header(packets.TX_ACK) + GATEWAY_EUI, None),
    (header(packets.PULL_DATA) + GATEWAY_EUI, None),
    (header(packets.PUSH_ACK), None),
    (header(packets.PULL_ACK), None),
]


def udp_seed_bytes() -> list[bytes]:
    return [head + (b"" if doc is None else json.dumps(doc).encode()) for head, doc in UDP_SEEDS]


def check_udp(datagram: bytes) -> None:
    """``packets.parse`` and, for each rxpk, ``rxpk_to_frame_parts``: only DatagramError."""
    try:
        packet = packets.parse(datagram)
        if isinstance(packet, packets.PushData):
            for rxpk in packet.rxpk:
                try:
                    payload, rx = packets.rxpk_to_frame_parts(rxpk, gateway_eui=packet.gateway_eui)
                except DatagramError:
                    continue
                assert isinstance(payload, bytes) and rx.freq_hz > 0
    except DatagramError as exc:
        assert exc.reason, "every DatagramError carries a reason"


# --------------------------------------------------------------------------- LoRaWAN PHYPayload

_KEYS = SessionKeys(nwk_s_key=bytes(range(16)), app_s_key=bytes(range(16, 32)))
_DEV_ADDR = bytes.fromhex("26011bda")
_APP_KEY = bytes(range(32, 48))


def phy_seeds() -> list[bytes]:
    """Frames of every MType built with the LoRaWAN 1.0.x layout (§4.3, §6.2.4, §6.2.6)."""
    data = [
        phy.build_data_frame(
            _KEYS, mtype=MType.UNCONFIRMED_DATA_UP, dev_addr=_DEV_ADDR, fcnt32=1, fport=1, payload=b"\x01\x02"
        ),
        phy.build_data_frame(
            _KEYS,
            mtype=MType.CONFIRMED_DATA_UP,
            dev_addr=_DEV_ADDR,
            fcnt32=70000,
            fport=None,
            payload=b"",
            fopts=bytes.fromhex("02030006"),  # LinkCheckReq, LinkADRAns, DutyCycleAns (§5)
        ),
        phy.build_data_frame(
            _KEYS, mtype=MType.UNCONFIRMED_DATA_UP, dev_addr=_DEV_ADDR, fcnt32=2, fport=0, payload=b"\x0d\x02"
        ),
        phy.build_data_frame(
            _KEYS, mtype=MType.UNCONFIRMED_DATA_DOWN, dev_addr=_DEV_ADDR, fcnt32=3, fport=2, payload=b"\xff"
        ),
        phy.build_join_request(
            _APP_KEY, join_eui=bytes(8), dev_eui=bytes.fromhex("0004a30b001c0530"), dev_nonce=b"\x00\x01"
        ),
        phy.build_join_accept(
            _APP_KEY,
            join_nonce=b"\x00\x00\x01",
            net_id=b"\x00\x00\x00",
            dev_addr=_DEV_ADDR,
            cflist=[867_100_000, 867_300_000],
        ),
        bytes([0xE0]) + b"proprietary",
    ]
    return data


def check_phy(raw: bytes) -> None:
    """``phy.parse``, then the MAC commands of FOpts / an FPort-0 payload: only FrameError.

    tests/lorawan/test_phy.py fuzzes ``parse`` alone (random and mutated frames); this adds
    what the agent does next with a parsed uplink's MAC commands, and join-accept opening.
    """
    try:
        frame = phy.parse(raw)
    except FrameError:
        return
    if isinstance(frame, phy.DataFrame):
        mac.parse_commands(frame.fopts, uplink=frame.uplink)
        if frame.fport == 0:
            mac.parse_commands(frame.frm_payload, uplink=frame.uplink)
    elif isinstance(frame, phy.JoinAccept):
        try:
            phy.open_join_accept(frame, _APP_KEY)
        except FrameError:
            pass


# --------------------------------------------------------------------------- codec


@functools.cache
def profiles() -> tuple[Profile, ...]:
    """Every shipped device profile (device_profiles/)."""
    return tuple(ProfileStore.load_dir(default_profiles_dir()))


def profile_params(profile: Profile) -> dict[str, float]:
    """Plausible installation parameters for every derived value of ``profile``."""
    return {name: 1000.0 + 100.0 * i for i, name in enumerate(profile.installation_params)}


# Installation parameters are finite numbers (registry.check_param) but otherwise anything an
# installer typed: zero, negative, equal empty and full distances, huge.
PARAM_VALUES: tuple[float, ...] = (0.0, -0.0, 1.0, -1.0, 1000.0, 1e-300, 1e300, 1.7976931348623157e308)


def any_params(profile: Profile, choose: Callable[[int], int]) -> dict[str, float]:
    """Installation parameters picked by ``choose(n) -> 0..n-1``, each one present or not."""
    params: dict[str, float] = {}
    for name in profile.installation_params:
        index = choose(len(PARAM_VALUES) + 1)
        if index < len(PARAM_VALUES):
            params[name] = PARAM_VALUES[index]
    return params


def codec_seeds() -> list[tuple[int, int, bytes]]:
    """(profile index, fport, payload) of every example of every shipped profile."""
    return [
        (index, example.fport, example.payload)
        for index, profile in enumerate(profiles())
        for example in profile.examples
    ]


def check_codec(profile: Profile, fport: int, payload: bytes, params: Mapping[str, float] | None) -> None:
    """``Profile.decode``: only DecodeError; a result is an object that serialises to JSON."""
    try:
        decoded = profile.decode(fport, payload, params)
    except DecodeError as exc:
        assert exc.reason
        return
    assert isinstance(decoded.data, dict)
    json.dumps(decoded.data)  # what the outbox stores; TypeError here would be a crash downstream


# A vendor-style codec in the TTN payload-formatter API (decodeUplink(input) -> {data, errors}),
# written for this test: it indexes past the end on short payloads like many vendor codecs do.
JS_CODEC = """
function decodeUplink(input) {
  var b = input.bytes;
  if (b.length === 0) { return { errors: ["empty"] }; }
  var data = { type: b[0], port: input.fPort };
  if (b[0] === 1) { data.temperature = ((b[1] << 8) | b[2]) / 10; }
  if (b[0] === 2) { data.text = String.fromCharCode.apply(null, b.slice(1)); }
  if (b[0] === 3) { data.list = b.slice(1).map(function (x) { return x * 2; }); }
  if (b[0] === 4) { throw new Error("vendor bug " + b[1]); }
  if (b[0] === 5) { return b[1]; }
  return { data: data, warnings: b.length > 10 ? ["long"] : [] };
}
"""


@functools.cache
def js_codec() -> Any:
    from gateway.codec.js import JsCodec

    return JsCodec(JS_CODEC, name="fuzz.js")


def check_js(fport: int, payload: bytes) -> None:
    """``JsCodec.decode`` on any payload: only DecodeError."""
    try:
        decoded = js_codec().decode(fport, payload, 1_700_000_000.0)
    except DecodeError:
        return
    assert isinstance(decoded.data, dict)


# --------------------------------------------------------------------------- serial modem


SERIAL_SEEDS: list[bytes] = [
    # RAK RUI3 AT Command Manual: status codes, the P2P receive event, TX done, boot banner.
    b"OK\r\n",
    b"AT_PARAM_ERROR\r\n",
    b"+EVT:RXP2P:-45:9:40DA1B0126800100010203\r\n",
    b"+EVT:RXP2P:-112.5:-7.25:00\r\n",
    b"+EVT:TXP2P DONE\r\n",
    b"+EVT:RXP2P RECEIVE TIMEOUT\r\n",
    b"AT+PRECV=65534\r\n",
    b"----------------------\r\nCurrent Work Mode: LoRa P2P.\r\n",
]


def check_serial(stream: bytes, cuts: list[int]) -> None:
    """``LineParser.feed`` over ``stream`` cut at ``cuts``: raises nothing, events are well formed."""
    parser = protocol.LineParser()
    start = 0
    for cut in [*sorted(c % (len(stream) + 1) for c in cuts), len(stream)]:
        for event in parser.feed(stream[start:cut]):
            if isinstance(event, protocol.RxPacket):
                assert isinstance(event.payload, bytes)
            elif isinstance(event, protocol.Garbage):
                assert event.reason and len(event.line) <= 64
        start = max(start, cut)
    assert parser.pending <= protocol.MAX_LINE_BYTES


# --------------------------------------------------------------------------- command envelopes

GATEWAY_ID = "gw-fuzz-01"
NOW_S = 1_764_000_000  # a fixed clock (2025-11-24)
PLATFORM_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))  # a test key, nothing else


def platform_public_pem() -> bytes:
    return PLATFORM_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# Payloads of the commands the agent allows (gateway/app/commands.py, gateway/fleet/commands.py).
COMMAND_SEEDS: list[dict[str, Any]] = [
    sign.command("flush"),
    sign.command(
        "downlink", {"dev_eui": "0004a30b001c0530", "fport": 10, "payload_hex": "01ff", "confirmed": True}
    ),
    sign.command("set_log_level", {"level": "DEBUG", "duration_s": 60}),
    sign.command("add_platform_key", {"public_key_pem": platform_public_pem().decode()}),
    sign.command("retire_platform_key", {"sha256": "00" * 32}),
]


def envelope_seeds() -> list[dict[str, Any]]:
    return [
        sign.sign_envelope(PLATFORM_KEY, payload, target=GATEWAY_ID, seq=i + 1, issued_at=NOW_S)
        for i, payload in enumerate(COMMAND_SEEDS)
    ]


def check_envelope(data: bytes) -> None:
    """``signed_envelope.parse``, then ``check`` with the test key pinned: only CommandRejected."""
    try:
        env = signed_envelope.parse(data)
        signed_envelope.check(
            env,
            [PLATFORM_KEY.public_key()],
            gateway_id=GATEWAY_ID,
            groups=frozenset({"fuzz"}),
            now_s=NOW_S,
            last_seq=0,
        )
    except CommandRejected as exc:
        assert exc.reason in {r.value for r in signed_envelope.Rejection}


class _Recorder:
    """Stands in for the agent behind the platform commands: records what the commands ask of it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def actions(self) -> Actions:
        return Actions(
            flush=lambda: self.calls.append(("flush", ())),
            downlinks=self,
            request_restart=lambda: self.calls.append(("restart", ())),
            announce_update=self._announce_update,
            configured_log_level="INFO",
        )

    def enqueue(
        self,
        dev_eui: DevEui,
        fport: int,
        payload: bytes,
        *,
        confirmed: bool = False,
        ref: DownlinkRef | None = None,
        now_s: float | None = None,
    ) -> None:
        self.calls.append(("enqueue", (dev_eui, fport, payload, confirmed)))

    def queued(self, dev_eui: DevEui) -> int:
        return 1

    def _announce_update(self, params: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("update_agent", (params,)))
        return {"announced": True}


class CommandBench:
    """A dispatcher with the agent's command allow-list over a real trust file in a temp dir.

    Signed envelopes get a fresh, growing ``seq`` so that mutations reach the allow-list and
    parameter checks instead of stopping at the replay check.
    """

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="edgegw-fuzz-")
        data_dir = Path(self._tmp.name)
        (data_dir / PINNED_KEY_FILE).write_bytes(platform_public_pem())
        self.agent = _Recorder()
        self.dispatcher: CommandDispatcher = build_dispatcher(
            Trust(data_dir, gateway_id=GATEWAY_ID), self.agent.actions(), clock=lambda: float(NOW_S)
        )
        self.seq = 0

    def trust(self) -> Trust:
        return self.dispatcher.trust

    def run(self, topic_name: str, data: bytes) -> CommandResult:
        root = logging.getLogger()
        level = root.level
        try:
            result = asyncio.run(self.dispatcher.handle(topic_name, data))
        finally:
            root.setLevel(level)  # set_log_level changes the root logger for a while
        json.loads(result.to_bytes())
        assert result.ok or result.reason in {r.value for r in signed_envelope.Rejection}
        return result

    def signed(self, payload: Any) -> bytes:
        self.seq += 1
        body: dict[str, Any] = {
            "v": 1,
            "payload": payload,
            "target": GATEWAY_ID,
            "seq": self.seq,
            "issued_at": NOW_S,
            "expires_at": NOW_S + 300,
        }
        try:
            body["sig"] = base64.b64encode(PLATFORM_KEY.sign(sign.signing_bytes(body))).decode()
        except ValueError:  # a payload the signer itself cannot write canonically (1e400)
            body["sig"] = base64.b64encode(bytes(64)).decode()
        return json.dumps(body).encode()

    def close(self) -> None:
        self._tmp.cleanup()


def check_signed_command(bench: CommandBench, topic_name: str, payload: Any) -> None:
    """A correctly signed envelope around any payload: ``handle`` returns a result, never raises."""
    bench.run(topic_name, bench.signed(payload))


def check_command_bytes(bench: CommandBench, topic_name: str, data: bytes) -> None:
    """Any bytes on a command topic: ``handle`` returns a result, never raises."""
    bench.run(topic_name, data)


# Payloads of pushed configurations (docs/fleet.md, "config" topic): settings overlay and rules text.
DESIRED_SEEDS: list[dict[str, Any]] = [
    {"config": {"version": "2026-11-25.1", "settings": {"mqtt": {"host": "broker.example", "port": 8883}}}},
    {
        "config": {
            "version": "2",
            "settings": {"log": {"level": "DEBUG"}, "outbox": {"max_age_s": 86400}},
            "rules": "schema_version: 1\nrules: []\n",
        }
    },
]
_LOCAL_YAML = f"gateway: {{id: {GATEWAY_ID}}}\ndata_dir: /var/lib/edgegw-fuzz\n"


def json_envelope(payload_json: bytes) -> bytes:
    """An (unsigned-looking) envelope around raw payload JSON, for ``signed_envelope.parse``."""
    sig = "A" * 86 + "=="
    head = json.dumps({"v": 1, "target": GATEWAY_ID, "seq": 1, "issued_at": 1, "expires_at": 2, "sig": sig})
    return head[:-1].encode() + b', "payload": ' + payload_json + b"}"


def check_desired(payload: Any) -> None:
    """A pushed configuration's payload: ``from_payload``, ``hash`` (computed before the signature
    check) and ``effective`` (the overlay over the local file, through ``config.loads``); only
    CommandRejected and ConfigError."""
    try:
        wanted = desired.from_payload(payload)
        assert len(wanted.hash) == 64
        local = config.loads(_LOCAL_YAML, file="<local>", environ={})
        desired.effective(
            yaml.safe_load(_LOCAL_YAML),
            wanted,
            rules_path=Path("/nonexistent/edgegw-fuzz/rules.yaml"),  # only written into the config
            file="<pushed>",
            local=local,
            environ={},
        )
    except (CommandRejected, ConfigError):
        pass


# --------------------------------------------------------------------------- config, rules, CSV


def config_seeds() -> list[str]:
    minimal = "gateway: {id: gw-1}\nmqtt: {host: broker.example, port: 8883, tls: true}\n"
    return [config.template().replace("gw-change-me", "gw-1"), minimal]


def check_config(text: str) -> None:
    """``config.loads``: only ConfigError."""
    try:
        config.loads(text, file="<fuzz>", environ={})
    except ConfigError as exc:
        assert exc.reason


def rules_seeds() -> list[str]:
    return [path.read_text(encoding="utf-8") for path in sorted((REPO / "rules" / "examples").glob("*.yaml"))]


def check_rules(text: str) -> None:
    """``parse_rules``: only ConfigError."""
    try:
        parse_rules(text, file="<fuzz>")
    except ConfigError as exc:
        assert exc.reason


def load_yaml(text: str) -> Any:
    return yaml.safe_load(text)


_NWK = "2b7e151628aed2a6abf7158809cf4f3c"
_APP = "000102030405060708090a0b0c0d0e0f"
_ABP = ["70b3d57ed0000001", "milesight/em310-udl", "abp", "", "", "26011001", _NWK, _APP]
_OTAA = ["70b3d57ed0000002", "dragino/ldds75", "otaa", "70b3d57ed0000000", _APP, "", "", ""]
_OTAA_NEW_KEY = ["70b3d57ed0000003", "milesight/em310-udl", "otaa", "70b3d57ed0000000", "", "", "", ""]
CSV_SEED: list[list[str]] = [
    [*csv_import.COLUMNS, "param.empty_distance_mm", "param.note"],
    ["# batch of street A"],
    [*_ABP, "aix/a1", "43.5", "5.4", "1500", "north"],
    [*_OTAA, "aix/b", "", "", "", ""],
    [*_OTAA_NEW_KEY, "", "-12.25", "170", "2e3", ""],
]


@functools.cache
def profile_ids() -> frozenset[str]:
    return frozenset(profile.id for profile in profiles())


def check_csv(text: str) -> None:
    """``csv_import.parse_csv``: only ImportFailed (a RegistryError listing the line errors)."""
    try:
        rows = csv_import.parse_csv(text, profile_ids())
    except RegistryError as exc:
        assert isinstance(exc, csv_import.ImportFailed) and exc.errors
        return
    for row in rows:
        assert row.profile in profile_ids()
