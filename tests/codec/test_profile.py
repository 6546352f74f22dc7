"""Device profiles: every shipped example decodes as written; invalid profiles are refused clearly.

Sources of the vectors: the examples are embedded in each profile under
device_profiles/ and cite their own source (for milesight/em310-udl: the vendor's
README example in Milesight-IoT/SensorDecoders em-series/em310-udl/README.md and
frames written from em310-udl-decoder.js). The malformed profiles below are made up.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.codec import Example, Profile, ProfileStore, default_profiles_dir, load_profile
from gateway.errors import ConfigError

SHIPPED = ProfileStore.load_dir(default_profiles_dir())
SHIPPED_EXAMPLES = [
    pytest.param(profile, example, id=f"{profile.id}#{index}")
    for profile in SHIPPED
    for index, example in enumerate(profile.examples)
]


@pytest.mark.parametrize(("profile", "example"), SHIPPED_EXAMPLES)
def test_every_shipped_example_decodes_to_its_expected_output(profile: Profile, example: Example) -> None:
    assert example.source.strip(), "every example names its source"
    assert profile.check_example(example) is None
    assert profile.decode(example.fport, example.payload, example.params).data == example.expected


def test_shipped_profiles_are_found_and_each_has_examples() -> None:
    assert default_profiles_dir() == Path(__file__).resolve().parents[2] / "device_profiles"
    assert "milesight/em310-udl" in SHIPPED.ids()
    for profile in SHIPPED:
        assert profile.examples, f"{profile.id} has no examples"
        assert profile.file is not None
        assert profile.file.relative_to(default_profiles_dir()).with_suffix("").as_posix() == profile.id


def test_em310_udl_identity_and_lorawan_facts() -> None:
    # TTN lorawan-devices vendor/milesight-iot/em310-udl-codec.yaml (fPort 85) and profile-eu868.yaml.
    profile = SHIPPED.get("milesight/em310-udl")
    assert (profile.vendor, profile.model) == ("Milesight", "EM310-UDL")
    assert profile.uplink_fports == (85,)
    assert profile.lorawan.classes == ("A",)
    assert profile.lorawan.mac_version == "1.0.3"
    outputs = {output.name: output for output in profile.outputs}
    assert outputs["distance"].unit == "mm"
    assert outputs["battery"].unit == "%"
    assert outputs["battery"].sdm == "Device.batteryLevel"
    assert outputs["position"].unit is None


def test_the_vendor_readme_example_is_among_the_em310_examples() -> None:
    # Milesight-IoT/SensorDecoders em-series/em310-udl/README.md: 01755C 03824408 040001.
    profile = SHIPPED.get("milesight/em310-udl")
    payloads = {example.payload: example.expected for example in profile.examples}
    assert payloads[bytes.fromhex("01755C03824408040001")] == {
        "battery": 92,
        "distance": 2116,
        "position": "tilt",
    }


def test_check_example_reports_a_mismatch_and_a_decode_error() -> None:
    profile = SHIPPED.get("milesight/em310-udl")
    wrong = Example(fport=85, payload=bytes.fromhex("03822c01"), expected={"distance": 301}, source="test")
    assert "expected" in (profile.check_example(wrong) or "")
    as_float = Example(
        fport=85, payload=bytes.fromhex("03822c01"), expected={"distance": 300.0}, source="test"
    )
    assert profile.check_example(as_float) is not None  # 300 and 300.0 differ on the wire
    cut = Example(fport=85, payload=bytes.fromhex("038244"), expected={}, source="test")
    assert "truncated" in (profile.check_example(cut) or "")


def test_store_lookup() -> None:
    assert "milesight/em310-udl" in SHIPPED
    assert "nobody/nothing" not in SHIPPED
    assert 42 not in SHIPPED
    with pytest.raises(KeyError):
        SHIPPED.get("nobody/nothing")
    assert len(SHIPPED) == len(SHIPPED.ids())


# ------------------------------------------------------------------ invalid profiles

BASE: dict[str, Any] = {
    "schema_version": 1,
    "id": "acme/bin-1",
    "vendor": "Acme",
    "model": "BIN-1",
    "description": "test device",
    "lorawan": {
        "mac_version": "1.0.3",
        "regions": ["EU868"],
        "classes": ["A"],
        "activation": ["otaa"],
        "uplink_fports": [85],
    },
    "decoder": {
        "family": "channel_tlv",
        "endian": "le",
        "channels": [
            {
                "channel_id": 1,
                "channel_type": 0x75,
                "name": "battery",
                "type": "uint8",
                "quantity": "battery_level",
                "unit": "%",
            },
            {
                "channel_id": 3,
                "channel_type": 0x82,
                "name": "distance",
                "type": "uint16",
                "quantity": "distance",
                "unit": "mm",
            },
            {
                "channel_id": 4,
                "channel_type": 0,
                "name": "position",
                "type": "uint8",
                "quantity": "position",
                "enum": {0: "normal", 1: "tilt"},
            },
        ],
    },
    "examples": [
        {"source": "test", "fport": 85, "payload": "0175 5c", "expected": {"battery": 92}},
    ],
}


def write_profile(root: Path, doc: dict[str, Any] | str, rel: str = "acme/bin-1.yaml") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def test_the_base_test_profile_is_valid(tmp_path: Path) -> None:
    write_profile(tmp_path, BASE)
    store = ProfileStore.load_dir(tmp_path)
    profile = store.get("acme/bin-1")
    assert [profile.check_example(example) for example in profile.examples] == [None]


def _edit(path: str, value: Any) -> dict[str, Any]:
    """A copy of BASE with the dotted ``path`` (``decoder.channels.2.type``) set, or deleted if DELETE."""
    doc = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return doc


DELETE = object()

# Channel [2] reuses channel [1]'s id and type.
_DUPLICATE = copy.deepcopy(BASE)
_DUPLICATE["decoder"]["channels"][2].update(channel_id=3, channel_type=0x82)

INVALID = [
    pytest.param(_edit("model", DELETE), "<top>", "missing required key 'model'", id="missing-top-key"),
    pytest.param(
        _edit("decoder.channels.1.quantity", DELETE),
        "decoder.channels[1]",
        "missing required key 'quantity'",
        id="missing-field-key",
    ),
    pytest.param(
        _edit("decoder.channels.2.type", "uint12"),
        "decoder.channels[2].type",
        "unknown value 'uint12'",
        id="unknown-field-type",
    ),
    pytest.param(
        _edit("decoder.channels.2.enum", {0: "normal", 256: "tilt"}),
        "decoder.channels[2].enum.256",
        "out of range 0..255",
        id="enum-key-out-of-range",
    ),
    pytest.param(
        _edit("decoder.channels.2.enum", {0: "normal", 1: 7}),
        "decoder.channels[2].enum.1",
        "must be a string",
        id="enum-value-not-a-string",
    ),
    pytest.param(
        _edit("decoder.channels.2.enum", {}), "decoder.channels[2].enum", "non-empty mapping", id="enum-empty"
    ),
    pytest.param(
        _edit("decoder.channels.0.channel_id", 256),
        "decoder.channels[0].channel_id",
        "out of range 0..255",
        id="channel-id-out-of-range",
    ),
    pytest.param(
        _edit("decoder.channels.0.channel_type", -1),
        "decoder.channels[0].channel_type",
        "out of range 0..255",
        id="channel-type-out-of-range",
    ),
    pytest.param(
        _DUPLICATE,
        "decoder.channels[2]",
        "duplicate channel 03 82 (already at decoder.channels[1])",
        id="duplicate-channel",
    ),
    pytest.param(
        _edit("id", "acme/bin-2"), "id", "does not match the file's path", id="id-not-matching-path"
    ),
    pytest.param(_edit("id", "Acme/BIN_1"), "id", "is not valid", id="id-bad-syntax"),
    pytest.param(
        _edit("schema_version", 2), "schema_version", "unsupported schema_version 2", id="newer-schema"
    ),
    pytest.param(
        _edit("decoder.channels.1.scal", 0.1), "decoder.channels[1].scal", "unknown key", id="typo-key"
    ),
    pytest.param(
        _edit("decoder.endian", DELETE),
        "decoder.channels[1]",
        "needs 'endian: le' or 'endian: be'",
        id="endian-missing",
    ),
    pytest.param(
        _edit("decoder.channels.1.unit", DELETE),
        "decoder.channels[1]",
        "needs a 'unit'",
        id="numeric-without-unit",
    ),
    pytest.param(
        _edit("decoder.channels.1.type", "hex"),
        "decoder.channels[1]",
        "needs a 'size'",
        id="hex-without-size",
    ),
    pytest.param(
        _edit("decoder.channels.1.type", "bytes"),
        "decoder.channels[1]",
        "needs a 'size'",
        id="bytes-without-format",
    ),
    pytest.param(
        _edit("decoder.channels.1.format", "version_roman"),
        "decoder.channels[1].format",
        "not allowed with type uint16",
        id="format-on-int",
    ),
    pytest.param(
        _edit("decoder.channels.2.scale", 2),
        "decoder.channels[2].scale",
        "not allowed together with 'enum'",
        id="enum-and-scale",
    ),
    pytest.param(
        _edit("decoder.family", "decentlab"),
        "decoder.family",
        "unknown value 'decentlab'",
        id="unknown-family",
    ),
    pytest.param(
        _edit("lorawan.uplink_fports", [0]),
        "lorawan.uplink_fports[0]",
        "out of range 1..223",
        id="fport-zero",
    ),
    pytest.param(
        _edit("lorawan.classes", ["A", "D"]), "lorawan.classes[1]", "unknown value 'D'", id="bad-class"
    ),
    pytest.param(
        _edit("examples.0.payload", "01 7g"), "examples[0].payload", "is not hex", id="example-not-hex"
    ),
    pytest.param(
        _edit("examples.0.payload", 175),
        "examples[0].payload",
        "quoted hex string",
        id="example-payload-number",
    ),
    pytest.param(
        _edit("examples.0.fport", 86),
        "examples[0].fport",
        "not one of lorawan.uplink_fports",
        id="example-fport",
    ),
    pytest.param(
        _edit("examples.0.expected", {"batery": 92}),
        "examples[0].expected.batery",
        "not an output",
        id="example-unknown-key",
    ),
    pytest.param(
        _edit("examples.0.source", DELETE),
        "examples[0]",
        "missing required key 'source'",
        id="example-without-source",
    ),
]


@pytest.mark.parametrize(("doc", "key_path", "reason"), INVALID)
def test_invalid_profile_is_refused_naming_file_key_path_and_reason(
    tmp_path: Path, doc: dict[str, Any], key_path: str, reason: str
) -> None:
    path = write_profile(tmp_path, doc)
    with pytest.raises(ConfigError) as info:
        ProfileStore.load_dir(tmp_path)
    error = info.value
    assert error.file == str(path)
    assert error.key_path == key_path
    assert reason in error.reason
    assert str(path) in str(error)
    assert key_path in str(error)
    assert reason in str(error)


def test_shared_channel_layout_and_shared_output_meaning(tmp_path: Path) -> None:
    doc = copy.deepcopy(BASE)
    doc["decoder"]["channels"].append(
        {
            "channel_id": [0xFE, 0xFF],
            "channel_type": 0x03,
            "name": "report_interval",
            "type": "uint16",
            "quantity": "report_interval",
            "unit": "s",
        }
    )
    # The same key from a second channel must mean the same thing ...
    doc["decoder"]["channels"].append(
        {
            "channel_id": 0x84,
            "channel_type": 0x82,
            "name": "distance",
            "type": "uint16",
            "quantity": "distance",
            "unit": "mm",
        }
    )
    write_profile(tmp_path, doc)
    profile = ProfileStore.load_dir(tmp_path).get("acme/bin-1")
    assert profile.decode(85, bytes.fromhex("fe031000ff032000")).data == {"report_interval": 32}
    assert profile.decode(85, bytes.fromhex("84820a00")).data == {"distance": 10}
    # ... and a different unit for it is refused.
    doc["decoder"]["channels"][-1]["unit"] = "cm"
    write_profile(tmp_path, doc)
    with pytest.raises(ConfigError) as info:
        ProfileStore.load_dir(tmp_path)
    assert info.value.key_path == "decoder.channels[4]"
    assert "same key must keep one meaning" in info.value.reason


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write_profile(tmp_path, "schema_version: 1\nid: acme/bin-1\ndecoder: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        ProfileStore.load_dir(tmp_path)
    assert info.value.file == str(path)
    assert "not valid YAML: line 4, column 1" in info.value.reason
    assert str(path) in str(info.value)


def test_duplicate_yaml_key_is_an_error_not_last_wins(tmp_path: Path) -> None:
    text = yaml.safe_dump(BASE, sort_keys=False).replace("model: BIN-1\n", "model: BIN-1\nmodel: BIN-2\n")
    path = write_profile(tmp_path, text)
    with pytest.raises(ConfigError, match="duplicate key 'model'") as info:
        ProfileStore.load_dir(tmp_path)
    assert info.value.file == str(path)


def test_yaml_boolean_words_get_a_hint(tmp_path: Path) -> None:
    # YAML 1.1 reads an unquoted `off` as false, a classic trap for enum labels.
    text = yaml.safe_dump(BASE, sort_keys=False).replace("1: tilt", "1: off")
    write_profile(tmp_path, text)
    with pytest.raises(ConfigError, match="quote YAML words") as info:
        ProfileStore.load_dir(tmp_path)
    assert info.value.key_path == "decoder.channels[2].enum.1"


def test_empty_file_and_non_mapping_are_refused(tmp_path: Path) -> None:
    write_profile(tmp_path, "")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        ProfileStore.load_dir(tmp_path)
    write_profile(tmp_path, "- just\n- a list\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        ProfileStore.load_dir(tmp_path)


def test_store_stops_at_the_first_invalid_file_and_names_it(tmp_path: Path) -> None:
    write_profile(tmp_path, BASE)
    bad = write_profile(tmp_path, _edit("model", 5) | {"id": "zeta/two"}, rel="zeta/two.yaml")
    with pytest.raises(ConfigError) as info:
        ProfileStore.load_dir(tmp_path)
    assert info.value.file == str(bad)
    assert info.value.key_path == "model"


def test_directory_layout_rules(tmp_path: Path) -> None:
    assert ProfileStore.load_dir(tmp_path).ids() == []
    with pytest.raises(ConfigError, match="does not exist"):
        ProfileStore.load_dir(tmp_path / "missing")
    (tmp_path / "bin-1.yaml").write_text("{}", encoding="utf-8")
    with pytest.raises(ConfigError, match="<vendor>/<model>"):
        ProfileStore.load_dir(tmp_path)


def test_load_profile_without_a_store(tmp_path: Path) -> None:
    path = write_profile(tmp_path, BASE, rel="anywhere/else.yaml")
    profile = load_profile(path)
    assert profile.id == "acme/bin-1"
    with pytest.raises(ConfigError, match="does not match"):
        load_profile(path, expected_id="anywhere/else")
