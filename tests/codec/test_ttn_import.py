"""`import_ttn`: a TTN device-repository entry (device YAML + codec YAML + JS) becomes a profile.

The entry is written here in the format of TheThingsNetwork/lorawan-devices (README.md
"Files and directories": vendor/<vendor>/<device>.yaml with firmwareVersions[].profiles,
<codec>.yaml with uplinkDecoder.fileName and examples, <profile>.yaml with macVersion ...);
its JavaScript codec is written for this test, in the TTN style. No vendor code is used.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.codec import ProfileStore, load_profile
from gateway.codec.ttn_import import import_ttn
from gateway.errors import ConfigError, DecodeError

pytest.importorskip("quickjs")

CODEC_JS = """
function decodeUplink(input) {
  var data = {};
  if (input.bytes[0] === 0x01) { data.level_cm = (input.bytes[1] << 8) | input.bytes[2]; }
  data.battery = input.bytes[input.bytes.length - 1];
  return { data: data };
}
"""


def write_entry(root: Path) -> Path:
    folder = root / "vendor" / "acme"
    folder.mkdir(parents=True)
    (folder / "wl-1.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "WL-1",
                "description": "Water level sensor",
                "firmwareVersions": [
                    {
                        "version": "1.0",
                        "profiles": {"EU863-870": {"id": "acme-profile-eu868", "codec": "wl-1-codec"}},
                    }
                ],
            }
        )
    )
    (folder / "acme-profile-eu868.yaml").write_text(
        yaml.safe_dump(
            {
                "macVersion": "1.0.2",
                "regionalParametersVersion": "RP001-1.0.2-RevB",
                "supportsJoin": True,
                "supportsClassC": True,
                "maxEIRP": 16,
                "supports32bitFCnt": True,
            }
        )
    )
    (folder / "wl-1-codec.yaml").write_text(
        yaml.safe_dump(
            {
                "uplinkDecoder": {
                    "fileName": "wl-1.js",
                    "examples": [
                        {
                            "description": "level",
                            "input": {"fPort": 3, "bytes": [1, 0, 150, 88]},
                            "output": {"data": {"level_cm": 150, "battery": 88}},
                        },
                        {
                            "description": "error",
                            "input": {"fPort": 3, "bytes": []},
                            "output": {"errors": ["x"]},
                        },
                    ],
                }
            }
        )
    )
    (folder / "wl-1.js").write_text(CODEC_JS)
    return folder / "wl-1.yaml"


def test_import_writes_a_profile_whose_examples_pass(tmp_path: Path) -> None:
    device = write_entry(tmp_path / "ttn")
    out = tmp_path / "profiles"
    imported = import_ttn(device, out)
    assert imported.profile_id == "acme/wl-1"
    assert imported.examples == 1
    assert (out / "acme" / "wl-1.js").read_text() == CODEC_JS
    profile = ProfileStore.load_dir(out).get("acme/wl-1")
    assert profile.family == "javascript"
    assert profile.lorawan.classes == ("A", "C")
    assert profile.lorawan.mac_version == "1.0.2"
    assert profile.uplink_fports == tuple(range(1, 224))  # every application fPort: the codec decides
    assert [profile.check_example(e) for e in profile.examples] == [None]
    assert profile.decode(3, bytes([0, 77])).data == {"battery": 77}
    with pytest.raises(ConfigError, match="already exists"):
        import_ttn(device, out)
    import_ttn(device, out, overwrite=True)


def test_a_javascript_profile_refuses_a_missing_file(tmp_path: Path) -> None:
    device = write_entry(tmp_path / "ttn")
    imported = import_ttn(device, tmp_path / "profiles")
    imported.codec_path.unlink()
    with pytest.raises(ConfigError, match="cannot read") as info:
        load_profile(imported.profile_path)
    assert info.value.key_path == "decoder.file"


def test_an_entry_without_eu868_is_refused(tmp_path: Path) -> None:
    device = write_entry(tmp_path / "ttn")
    doc = yaml.safe_load(device.read_text())
    doc["firmwareVersions"][0]["profiles"] = {"US902-928": {"id": "p", "codec": "wl-1-codec"}}
    device.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="no EU863-870 profile"):
        import_ttn(device, tmp_path / "profiles")


# A codec that decodes a header-less frame on fPort 26 that no example shows (as IMBuildings'
# imbuildings.js does on fPorts 26-28) and refuses other fPorts with its own errors.
CODEC_BY_FPORT_JS = """
function decodeUplink(input) {
  if (input.fPort === 26) { return { data: { counter: input.bytes[0] } }; }
  if (input.bytes[0] === 0x01) { return { data: { level_cm: (input.bytes[1] << 8) | input.bytes[2] } }; }
  return { errors: ['unknown payload'] };
}
"""


def test_an_imported_profile_accepts_fports_its_examples_do_not_show(tmp_path: Path) -> None:
    device = write_entry(tmp_path / "ttn")
    (device.parent / "wl-1.js").write_text(CODEC_BY_FPORT_JS)
    codec_yaml = device.parent / "wl-1-codec.yaml"
    codec = yaml.safe_load(codec_yaml.read_text())
    codec["uplinkDecoder"]["examples"][0]["output"] = {"data": {"level_cm": 150}}
    codec_yaml.write_text(yaml.safe_dump(codec))
    imported = import_ttn(device, tmp_path / "profiles")
    profile = load_profile(imported.profile_path)
    # The examples only use fPort 3; the codec decodes fPort 26 too.
    assert profile.decode(26, bytes([7])).data == {"counter": 7}
    assert profile.uplink_fports == tuple(range(1, 224))
    # An fPort the codec does not handle is the codec's own refusal, not edgegw's.
    with pytest.raises(DecodeError) as info:
        profile.decode(5, bytes([9]))
    assert info.value.reason == "codec_error"
    assert [profile.check_example(e) for e in profile.examples] == [None]
