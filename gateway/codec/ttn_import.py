"""Turn a local copy of a TTN device-repository entry into an edgegw profile.

Owns reading ``vendor/<vendor>/<model>.yaml`` (the device), the codec YAML and the
LoRaWAN device profile YAML it names for EU863-870, and the JavaScript file the codec
names; and writing ``<out>/<vendor>/<model>.yaml`` (``family: javascript``) plus a copy
of the JavaScript beside it, with the codec's uplink examples as profile examples.
The TTN format is documented in TheThingsNetwork/lorawan-devices README.md.

A TTN device definition names no uplink fPorts, and a codec's examples show only some of
the ones it decodes (IMBuildings' ``imbuildings.js`` decodes header-less frames on fPorts
26-28 that no example uses). So the imported profile accepts every application fPort
(1..223) and leaves the choice to the codec: an fPort it does not handle is its own
``errors`` answer, a ``DecodeError`` (reason ``codec_error``) in edgegw.

It does not run the codec (``edgegw profile test`` does, in the sandbox of ``js.py``)
and it never fetches anything: the caller supplies the files.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from gateway import textfile
from gateway.errors import ConfigError

logger = logging.getLogger(__name__)

_EU868_KEYS: Final = ("EU863-870", "EU868")
# LoRaWAN application fPorts (LoRaWAN 1.0.x §4.3.2: 0 is the MAC, 224.. reserved).
ALL_APP_FPORTS: Final[tuple[int, ...]] = tuple(range(1, 224))
_SLUG_RE: Final = re.compile(r"[^a-z0-9]+")


class _FlowList(list[int]):
    """A list written on one line (``[1, 2, ...]``): the 223 fPorts, not 223 lines."""


class _ProfileDumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that writes a ``_FlowList`` in flow style."""


_ProfileDumper.add_representer(
    _FlowList, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)


@dataclass(frozen=True, slots=True)
class Imported:
    """What ``import_ttn`` wrote."""

    profile_id: str
    profile_path: Path
    codec_path: Path
    examples: int


def _load(path: Path) -> dict[str, Any]:
    document = textfile.load_yaml(path)  # ConfigError naming the file: unreadable, not UTF-8, bad YAML
    if not isinstance(document, dict):
        raise ConfigError("a TTN device-repository file must be a YAML mapping", file=str(path))
    return document


def _slug(text: str) -> str:
    return _SLUG_RE.sub("-", text.lower()).strip("-")


def _eu868_profile(device: dict[str, Any], path: Path) -> dict[str, Any]:
    for firmware in device.get("firmwareVersions") or ():
        profiles = (firmware or {}).get("profiles") or {}
        for key in _EU868_KEYS:
            if key in profiles:
                entry: dict[str, Any] = profiles[key]
                return entry
    raise ConfigError("no EU863-870 profile under firmwareVersions[].profiles", file=str(path))


def _example_bytes(raw: object, where: str, file: Path) -> str:
    if isinstance(raw, list) and all(isinstance(b, int) and 0 <= b <= 255 for b in raw):
        return bytes(raw).hex()
    raise ConfigError("input.bytes must be a list of byte values", file=str(file), key_path=where)


def import_ttn(device_path: Path, out_dir: Path, *, overwrite: bool = False) -> Imported:
    """Import the TTN entry whose device YAML is ``device_path`` into ``out_dir``."""
    device = _load(device_path)
    folder = device_path.parent
    vendor = folder.name
    model = _slug(device_path.stem)
    profile_id = f"{_slug(vendor)}/{model}"
    entry = _eu868_profile(device, device_path)
    codec_id = entry.get("codec")
    if not isinstance(codec_id, str):
        raise ConfigError("the EU863-870 profile names no codec", file=str(device_path))
    codec_path = folder / f"{codec_id}.yaml"
    codec = _load(codec_path)
    uplink = codec.get("uplinkDecoder")
    if not isinstance(uplink, dict) or not isinstance(uplink.get("fileName"), str):
        raise ConfigError("no uplinkDecoder.fileName", file=str(codec_path))
    js_name = Path(uplink["fileName"]).name
    js_source = folder / js_name

    lorawan_profile_id = entry.get("id")
    facts: dict[str, Any] = {}
    if isinstance(lorawan_profile_id, str) and (folder / f"{lorawan_profile_id}.yaml").is_file():
        facts = _load(folder / f"{lorawan_profile_id}.yaml")

    examples: list[dict[str, Any]] = []
    for index, example in enumerate(uplink.get("examples") or ()):
        where = f"uplinkDecoder.examples[{index}]"
        example_input = (example or {}).get("input") or {}
        output = (example or {}).get("output") or {}
        if "data" not in output or output.get("errors"):
            continue  # error examples test the vendor's own error paths, not data
        fport = example_input.get("fPort")
        if not isinstance(fport, int) or not 1 <= fport <= 223:
            raise ConfigError("input.fPort must be 1..223", file=str(codec_path), key_path=where)
        examples.append(
            {
                "description": str(example.get("description") or f"example {index + 1}"),
                "source": f"TTN lorawan-devices {vendor}/{codec_path.name}, {where}",
                "fport": fport,
                "payload": _example_bytes(example_input.get("bytes"), f"{where}.input.bytes", codec_path),
                "expected": output["data"],
            }
        )

    classes = (
        ["A"]
        + (["B"] if facts.get("supportsClassB") else [])
        + (["C"] if facts.get("supportsClassC") else [])
    )
    mac_version = str(facts.get("macVersion", "1.0.3"))
    lorawan: dict[str, Any] = {
        "mac_version": mac_version
        if mac_version in ("1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4", "1.1")
        else "1.0.3",
        "regions": ["EU868"],
        "classes": classes,
        "activation": ["otaa"] if facts.get("supportsJoin", True) else ["abp"],
        "uplink_fports": _FlowList(ALL_APP_FPORTS),  # the codec decides, see the module docstring
    }
    if isinstance(facts.get("regionalParametersVersion"), str):
        lorawan["regional_parameters"] = facts["regionalParametersVersion"]
    if isinstance(facts.get("maxEIRP"), int | float):
        lorawan["max_eirp_dbm"] = facts["maxEIRP"]
    if isinstance(facts.get("supports32bitFCnt"), bool):
        lorawan["supports_32bit_fcnt"] = facts["supports32bitFCnt"]

    profile: dict[str, Any] = {
        "schema_version": 1,
        "id": profile_id,
        "vendor": vendor,
        "model": str(device.get("name") or device_path.stem),
        "description": str(device.get("description") or "").strip() or f"{vendor} {device_path.stem}",
        "sources": [
            f"TTN lorawan-devices vendor/{vendor}/{name}"
            for name in (device_path.name, codec_path.name, js_name)
        ],
        "lorawan": lorawan,
        "decoder": {"family": "javascript", "file": js_name},
        "examples": examples,
    }
    target_dir = out_dir / _slug(vendor)
    target = target_dir / f"{model}.yaml"
    target_js = target_dir / js_name
    for path in (target, target_js):
        if path.exists() and not overwrite:
            raise ConfigError("already exists (use --overwrite)", file=str(path))
    if not js_source.is_file():
        raise ConfigError("the codec's JavaScript file is missing", file=str(js_source))
    target_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(js_source, target_js)
    header = f"# Imported from the TTN device repository by `edgegw profile import-ttn {device_path}`.\n"
    body = yaml.dump(profile, Dumper=_ProfileDumper, sort_keys=False, allow_unicode=True, width=100)
    target.write_text(header + body, encoding="utf-8")
    logger.info("imported %s into %s", profile_id, target)
    return Imported(profile_id=profile_id, profile_path=target, codec_path=target_js, examples=len(examples))
