"""Every parser of untrusted input, fed random and mutated inputs: only the typed errors escape (issue 12).

Parsers: Semtech UDP datagrams, LoRaWAN PHYPayloads with their MAC commands, every shipped
profile's compiled decoder, the JavaScript codec runner, the serial modem's line parser, signed
command envelopes and the platform command dispatcher, the config file, the rules file and the
device CSV import. The targets and their seed inputs are in ``targets.py`` (sources cited there),
the mutators in ``mutate.py``; ``fuzz/`` runs the same targets under atheris for longer.

Derandomized with no example database, so CI runs the same inputs every time. The last section
holds the crashes the fuzzers found, as regression tests.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import config
from gateway.errors import CommandRejected, ConfigError, DatagramError
from gateway.fleet import signed_envelope
from gateway.radio.semtech_udp import packets
from gateway.rules.loader import parse_rules
from tests.fixtures.semtech import GATEWAY_EUI
from tests.fuzz import mutate, targets


def _fuzz(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


class _Draw:
    """A ``mutate.Chooser`` drawing from hypothesis."""

    def __init__(self, draw: Callable[..., Any]) -> None:
        self._draw = draw

    def integer(self, lo: int, hi: int) -> int:
        return int(self._draw(st.integers(min_value=lo, max_value=hi)))

    def blob(self, max_size: int) -> bytes:
        return bytes(self._draw(st.binary(max_size=max_size)))


# --------------------------------------------------------------------------- Semtech UDP


@st.composite
def _udp_datagrams(draw: st.DrawFn) -> bytes:
    ch = _Draw(draw)
    head, doc = mutate.pick(ch, targets.UDP_SEEDS)
    kind = ch.integer(0, 2)
    if kind == 0 and doc is not None:
        return bytes(head + mutate.mutate_json(ch, doc))
    if kind == 1:
        return mutate.mutate_bytes(ch, head + (b"" if doc is None else json.dumps(doc).encode()))
    return bytes(head[:4]) + ch.blob(64)


@_fuzz(800)
@given(_udp_datagrams())
def test_semtech_udp_mutated_datagrams(datagram: bytes) -> None:
    targets.check_udp(datagram)


@_fuzz(200)
@given(st.binary(max_size=120))
def test_semtech_udp_random_bytes(datagram: bytes) -> None:
    targets.check_udp(datagram)


# --------------------------------------------------------------------------- LoRaWAN

_PHY_SEEDS = targets.phy_seeds()


@_fuzz(600)
@given(st.data())
def test_lorawan_mutated_frames_and_their_mac_commands(data: st.DataObject) -> None:
    # Random and mutated frames for phy.parse alone: tests/lorawan/test_phy.py.
    ch = _Draw(data.draw)
    targets.check_phy(mutate.mutate_bytes(ch, mutate.pick(ch, _PHY_SEEDS)))


# --------------------------------------------------------------------------- codec

_CODEC_SEEDS = targets.codec_seeds()


@_fuzz(1000)
@given(st.data())
def test_every_profile_decoder_mutated_and_random_payloads(data: st.DataObject) -> None:
    ch = _Draw(data.draw)
    index, fport, payload = mutate.pick(ch, _CODEC_SEEDS)
    if ch.integer(0, 3) == 0:
        index = ch.integer(0, len(targets.profiles()) - 1)
        payload = ch.blob(64)
    else:
        payload = mutate.mutate_bytes(ch, payload)
    profile = targets.profiles()[index]
    if ch.integer(0, 5) == 0:
        fport = ch.integer(0, 255)
    params = mutate.pick(
        ch,
        (None, targets.profile_params(profile), targets.any_params(profile, lambda n: ch.integer(0, n - 1))),
    )
    targets.check_codec(profile, fport, payload, params)


@_fuzz(150)
@given(fport=st.integers(0, 255), payload=st.binary(max_size=40))
def test_javascript_codec_runner(fport: int, payload: bytes) -> None:
    pytest.importorskip("quickjs")
    targets.check_js(fport, payload)


# --------------------------------------------------------------------------- serial modem


@_fuzz(300)
@given(st.data())
def test_serial_modem_lines_mutated_and_cut_anywhere(data: st.DataObject) -> None:
    # Random bytes in random chunks: tests/radio/test_serial_protocol.py.
    ch = _Draw(data.draw)
    stream = b"".join(mutate.pick(ch, targets.SERIAL_SEEDS) for _ in range(ch.integer(1, 4)))
    stream = mutate.mutate_bytes(ch, stream)
    if ch.integer(0, 9) == 0:
        stream = stream[:20] + bytes([0x41]) * ch.integer(500, 1500) + stream[20:]  # over-long line
    targets.check_serial(stream, data.draw(st.lists(st.integers(0, 2000), max_size=4)))


# --------------------------------------------------------------------------- command envelopes

_ENVELOPES = targets.envelope_seeds()


@_fuzz(500)
@given(st.data())
def test_command_envelope_mutated(data: st.DataObject) -> None:
    ch = _Draw(data.draw)
    doc = mutate.pick(ch, _ENVELOPES)
    if ch.integer(0, 2) == 0:
        raw = mutate.mutate_bytes(ch, json.dumps(doc).encode())
    else:
        raw = mutate.mutate_json(ch, doc, tuple(doc.values()))
    targets.check_envelope(raw)


@pytest.fixture(scope="module")
def bench() -> Iterator[targets.CommandBench]:
    bench = targets.CommandBench()
    yield bench
    bench.close()


@_fuzz(300)
@given(data=st.data())
def test_signed_commands_with_mutated_payloads(bench: targets.CommandBench, data: st.DataObject) -> None:
    ch = _Draw(data.draw)
    seed = mutate.pick(ch, targets.COMMAND_SEEDS)
    payload = mutate.mutate_tree(ch, seed, ("flush", "downlink", "set_log_level", "0004a30b001c0530", "ff"))
    topic_name = seed["cmd"] if ch.integer(0, 3) else mutate.pick(ch, ("flush", "nope", "", "a/b"))
    targets.check_signed_command(bench, topic_name, payload)


@_fuzz(150)
@given(data=st.data())
def test_any_bytes_on_a_command_topic(bench: targets.CommandBench, data: st.DataObject) -> None:
    ch = _Draw(data.draw)
    raw = mutate.mutate_json(ch, mutate.pick(ch, _ENVELOPES)) if ch.integer(0, 1) else ch.blob(200)
    targets.check_command_bytes(bench, "flush", raw)


@_fuzz(250)
@given(st.data())
def test_pushed_configuration_mutated(data: st.DataObject) -> None:
    ch = _Draw(data.draw)
    seed = mutate.pick(ch, targets.DESIRED_SEEDS)
    # The payload as signed_envelope.parse hands it over: JSON that passed its checks (finite, bounded depth).
    raw = mutate.mutate_json(ch, seed, ("mqtt", "rules", "settings", "gateway", "data_dir", "$x"))
    try:
        env = signed_envelope.parse(targets.json_envelope(raw))
    except CommandRejected:
        return
    targets.check_desired(env.payload)


# --------------------------------------------------------------------------- config, rules, CSV

_CONFIG_TEXTS = targets.config_seeds()
_RULES_TEXTS = targets.rules_seeds()


@_fuzz(250)
@given(st.data())
def test_config_mutated_yaml(data: st.DataObject) -> None:
    ch = _Draw(data.draw)
    text = mutate.pick(ch, _CONFIG_TEXTS)
    targets.check_config(mutate.mutate_yaml(ch, yaml.safe_load(text), text))


@_fuzz(200)
@given(st.data())
def test_rules_mutated_yaml(data: st.DataObject) -> None:
    ch = _Draw(data.draw)
    text = mutate.pick(ch, _RULES_TEXTS)
    targets.check_rules(mutate.mutate_yaml(ch, yaml.safe_load(text), text))


@_fuzz(150)
@given(st.text(max_size=200))
def test_config_and_rules_random_text(text: str) -> None:
    targets.check_config(text)
    targets.check_rules(text)


@_fuzz(400)
@given(st.data())
def test_csv_import_mutated_rows(data: st.DataObject) -> None:
    targets.check_csv(mutate.mutate_csv(_Draw(data.draw), targets.CSV_SEED))


# --------------------------------------------------------------------------- crashes found, kept


def _rules_with(location: str) -> str:
    return f"schema_version: 1\nlocation: {location}\n"


@pytest.mark.parametrize(
    "text",
    [
        "gateway: {id: gw-1}\ndata_dir: 2001-02-30\n",  # PyYAML timestamp → ValueError
        "[" * 5000,  # PyYAML's recursive composer → RecursionError
        "gateway: {id: gw-1}\nlorawan: {downlink_power_dbm: " + "9" * 400 + "}\n",  # float() OverflowError
    ],
    ids=["bad-date", "deep-nesting", "huge-int-as-float"],
)
def test_config_crash_regressions(text: str) -> None:
    with pytest.raises(ConfigError):
        config.loads(text, environ={})


@pytest.mark.parametrize(
    "text",
    [
        "{[a]: 1}",  # unhashable key in the duplicate-key check → TypeError
        "schema_version: 2001-02-30",  # PyYAML timestamp → ValueError
        _rules_with("{lat: " + "9" * 400 + "}"),  # float() OverflowError
        "lighting: [{id: a, devices: {profiles: x}, command: c, preset: [1]}]",  # list in dict → TypeError
        "[" * 5000,  # PyYAML's recursive composer → RecursionError
        "rules: [{id: a, devices: {profiles: x}, when: "
        + "{all: [" * 400
        + "{flag: {field: f, equals: 1}}"
        + "]}" * 400
        + "}]",  # recursive condition reader → RecursionError
        "lighting: [{id: a, devices: {profiles: x}, command: c, steps: [{at: 'sunset+"
        + "9" * 5000
        + "min', level_pct: 5}]}]",  # int() beyond 4300 digits → ValueError
    ],
    ids=[
        "unhashable-key",
        "bad-date",
        "huge-int",
        "list-preset",
        "deep-yaml",
        "deep-condition",
        "huge-offset",
    ],
)
def test_rules_crash_regressions(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_rules(text)


def test_envelope_with_an_out_of_range_float_is_malformed_not_a_value_error() -> None:
    # 1e400 parses to inf, which the canonical JSON of the signature check cannot write.
    body = {
        "v": 1,
        "payload": {"x": 1},
        "target": targets.GATEWAY_ID,
        "seq": 1,
        "issued_at": 1,
        "expires_at": 2,
    }
    raw = json.dumps({**body, "sig": "A" * 86 + "=="}).replace('"x": 1', '"x": 1e400').encode()
    with pytest.raises(CommandRejected) as info:
        signed_envelope.parse(raw)
    assert info.value.reason == "malformed"


def test_signed_command_with_a_huge_integer_for_a_float_parameter(bench: targets.CommandBench) -> None:
    # set_log_level's duration_s is a float parameter: float(10**400) raised OverflowError.
    result = bench.run(
        "set_log_level",
        bench.signed({"cmd": "set_log_level", "params": {"level": "INFO", "duration_s": 10**400}}),
    )
    assert (result.ok, result.reason) == (False, "bad_params")


def test_udp_out_of_range_size_is_a_datagram_error() -> None:
    # 1e400 parses to inf: not an integer size, so bad_rxpk (no OverflowError on the way). The
    # datagram itself is well formed (acknowledged); the rxpk is refused on its own.
    packet = packets.parse(bytes((2, 0, 1, 0)) + GATEWAY_EUI + b'{"rxpk":[{"data":"AA","size":1e400}]}')
    assert isinstance(packet, packets.PushData)
    with pytest.raises(DatagramError) as info:
        packets.rxpk_to_frame_parts(packet.rxpk[0])
    assert info.value.reason == "bad_rxpk"


def test_envelope_with_a_non_ascii_signature_is_malformed_not_a_value_error() -> None:
    # base64.b64decode raises a plain ValueError (not binascii.Error) for non-ASCII text.
    with pytest.raises(CommandRejected) as info:
        signed_envelope.parse(json.dumps({"v": 1, "sig": "é" * 88}).encode())
    assert info.value.reason == "malformed"


@pytest.mark.parametrize("depth", [33, 989, 990, 991])
def test_envelope_nested_too_deep_is_malformed_not_a_recursion_error(depth: int) -> None:
    # json.loads accepted ~990 nested arrays; the signature check's json.dumps, one level deeper
    # and further down the stack, raised RecursionError.
    payload = "[" * depth + "]" * depth
    raw = (
        '{"v":1,"payload":{"x":' + payload + '},"target":"gw-fuzz-01","seq":1,"issued_at":1,'
        '"expires_at":2,"sig":"' + "A" * 86 + '=="}'
    ).encode()
    with pytest.raises(CommandRejected) as info:
        signed_envelope.parse(raw)
    assert info.value.reason == "malformed"


def test_signed_add_platform_key_of_an_unknown_algorithm_fails_cleanly(bench: targets.CommandBench) -> None:
    # A well-formed SubjectPublicKeyInfo (RFC 5280 §4.1) with algorithm OID 1.2.3: cryptography raises
    # UnsupportedAlgorithm, which is not a ValueError and escaped CommandDispatcher.handle.
    spki = bytes.fromhex("3029" + "3004" + "06022a03" + "032100" + "00" * 32)
    pem = "-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(spki).decode() + "\n-----END PUBLIC KEY-----\n"
    payload = {"cmd": "add_platform_key", "params": {"public_key_pem": pem}}
    result = bench.run("add_platform_key", bench.signed(payload))
    assert (result.ok, result.reason) == (False, "failed")
    assert "not an Ed25519 public key" in result.result["error"]


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "9" * 400])
def test_config_float_must_be_finite(value: str) -> None:
    # NaN passed every range check (comparisons with NaN are false) and reached the MQTT client.
    with pytest.raises(ConfigError) as info:
        config.loads(f"gateway: {{id: gw-1}}\nmqtt: {{reconnect_min_s: {value}}}\n", environ={})
    assert info.value.key_path == "mqtt.reconnect_min_s"


@pytest.mark.parametrize("timezone", ["Europe/Par" + "1" * 300, "Europe"])
def test_rules_unknown_long_timezone_is_a_config_error(timezone: str) -> None:
    # zoneinfo opens the file named by the key: a 300-character name raised OSError (ENAMETOOLONG).
    with pytest.raises(ConfigError) as info:
        parse_rules(_rules_with(f"{{timezone: {timezone}}}"))
    assert info.value.key_path == "location.timezone"
