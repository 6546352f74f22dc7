"""Vendor profiles against the published decoder each one declares (``compatible_with``).

Every profile outside ``device_profiles/edgegw/`` names the vendor decoder it is compatible
with (repository, path, commit). ``tests/codec/vendor_vectors/<vendor>/<model>.yaml`` is the
table of (fPort, payload -> that decoder's output) for it: each row's ``expected`` was worked
out from the cited decoder at the cited commit (reading it, or running it locally in Node.js
outside the repository; no vendor code is in this repository), never from edgegw's output.
A row whose output differs from the decoder's on purpose names the profile's correction
(``correction: <id>``) and keeps the decoder's own output under ``decoder_output``.

The tables cover every channel or record type the decoder handles, not only the vendor's
README examples.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.codec import Profile, ProfileStore, default_profiles_dir, load_profile
from gateway.errors import ConfigError, DecodeError
from tests.codec.test_profile import BASE, write_profile

VECTORS_DIR = Path(__file__).resolve().parent / "vendor_vectors"
SHIPPED = ProfileStore.load_dir(default_profiles_dir())
# The project's own nodes: their format is defined by firmware/ in this repository.
OWN_VENDOR = "edgegw"
VENDOR_PROFILES = [profile for profile in SHIPPED if not profile.id.startswith(f"{OWN_VENDOR}/")]


def _load_table(path: Path) -> dict[str, Any]:
    table = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(table, dict), path
    return table


TABLES = {
    path.relative_to(VECTORS_DIR).with_suffix("").as_posix(): _load_table(path)
    for path in sorted(VECTORS_DIR.glob("*/*.yaml"))
}
ROWS = [
    pytest.param(profile_id, row, id=f"{profile_id}#{index}")
    for profile_id, table in TABLES.items()
    for index, row in enumerate(table["vectors"])
]


@pytest.mark.parametrize(("profile_id", "row"), ROWS)
def test_profile_output_equals_the_decoders(profile_id: str, row: dict[str, Any]) -> None:
    profile = SHIPPED.get(profile_id)
    assert str(row.get("how", "")).strip(), "every row says how its output was taken from the decoder"
    payload = bytes.fromhex(row["payload"])
    if row.get("refused"):
        # The decoder throws (or decodes nothing) on this payload: outside the contract, and
        # edgegw must not invent an output for it either.
        with pytest.raises(DecodeError):
            profile.decode(row["fport"], payload)
        return
    decoded = profile.decode(row["fport"], payload)
    got = json.dumps(decoded.data, sort_keys=True)
    want = json.dumps(row["expected"], sort_keys=True)
    assert got == want
    assert decoded.warnings == ()
    if "correction" in row:
        assert row["correction"] in _correction_ids(profile), "a deviation must be a listed correction"
        assert row["decoder_output"] != row["expected"]
    else:
        assert "decoder_output" not in row, "decoder_output is only for rows with a correction"


def _correction_ids(profile: Profile) -> set[str]:
    compatible = profile.compatible_with
    assert compatible is not None
    return {correction.id for correction in compatible.corrections}


@pytest.mark.parametrize("profile", VENDOR_PROFILES, ids=lambda profile: profile.id)
def test_every_vendor_profile_declares_its_decoder_and_has_a_table(profile: Profile) -> None:
    compatible = profile.compatible_with
    assert compatible is not None, f"{profile.id} declares no compatible_with"
    assert len(compatible.commit) == 40
    table = TABLES.get(profile.id)
    assert table is not None, f"no tests/codec/vendor_vectors/{profile.id}.yaml"
    # The table was taken from the very decoder (and commit) the profile declares.
    assert table["decoder"] == {
        "repository": compatible.repository,
        "path": compatible.path,
        "commit": compatible.commit,
    }
    assert table["vectors"], "a table needs rows"


@pytest.mark.parametrize("profile", VENDOR_PROFILES, ids=lambda profile: profile.id)
def test_every_correction_is_shown_by_a_row(profile: Profile) -> None:
    table = TABLES.get(profile.id, {"vectors": []})
    shown = {row["correction"] for row in table["vectors"] if "correction" in row}
    compatible = profile.compatible_with
    assert compatible is not None
    for correction in compatible.corrections:
        assert correction.reason.strip()
        assert correction.id in shown, f"{profile.id}: correction {correction.id} has no row"


def test_every_table_belongs_to_a_vendor_profile() -> None:
    assert set(TABLES) <= {profile.id for profile in VENDOR_PROFILES}


def _profile_with(tmp_path: Path, compatible_with: object) -> Path:
    doc = copy.deepcopy(BASE)
    doc["compatible_with"] = compatible_with
    return write_profile(tmp_path, doc)


def test_compatible_with_is_loaded_and_exposed(tmp_path: Path) -> None:
    path = _profile_with(
        tmp_path,
        {
            "repository": "acme/decoders",
            "path": "bin-1.js",
            "commit": "0" * 40,
            "corrections": [{"id": "lid-bit", "reason": "the decoder tests the wrong bit"}],
        },
    )
    compatible = load_profile(path).compatible_with
    assert compatible is not None
    assert (compatible.repository, compatible.path, compatible.commit) == (
        "acme/decoders",
        "bin-1.js",
        "0" * 40,
    )
    assert [(c.id, c.reason) for c in compatible.corrections] == [
        ("lid-bit", "the decoder tests the wrong bit")
    ]


@pytest.mark.parametrize(
    ("compatible_with", "key_path"),
    [
        ({"repository": "acme/decoders", "path": "bin-1.js", "commit": "abc"}, "compatible_with.commit"),
        ({"repository": "acme", "path": "bin-1.js", "commit": "0" * 40}, "compatible_with.repository"),
        ({"repository": "acme/decoders", "commit": "0" * 40}, "compatible_with"),
        (
            {"repository": "acme/d", "path": "x.js", "commit": "0" * 40, "corrections": [{"id": "x"}]},
            "compatible_with.corrections[0]",
        ),
    ],
    ids=["short-commit", "no-owner", "no-path", "correction-without-reason"],
)
def test_a_bad_compatible_with_is_refused(tmp_path: Path, compatible_with: object, key_path: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_profile(_profile_with(tmp_path, compatible_with))
    assert key_path in str(info.value)
