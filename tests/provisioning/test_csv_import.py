"""Batch import: every line validated first, all errors with line numbers, all or nothing, idempotent."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import db
from gateway.codec import ProfileStore, default_profiles_dir, load_profiles
from gateway.messages import DevEui
from gateway.provisioning import csv_import, registry

PROFILES = set(ProfileStore.load_dir(default_profiles_dir()).ids())
P = "milesight/em310-udl"
NWK = "2b7e151628aed2a6abf7158809cf4f3c"
APP = "000102030405060708090a0b0c0d0e0f"
HEADER = (
    "dev_eui,profile,activation,join_eui,app_key,dev_addr,nwk_s_key,app_s_key,site,lat,lon,"
    "param.empty_distance_mm"
)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = db.connect(db.db_path(tmp_path))
    yield c
    c.close()


def good_file(n: int = 3) -> str:
    lines = [HEADER, "# container batch, street A"]
    for i in range(1, n + 1):
        lines.append(
            f"70b3d57ed00000{i:02x},{P},abp,,,260110{i:02x},{NWK},{APP},aix/a{i},43.5,5.4,{1500 + i}"
        )
    lines.append(f"70b3d57ed00001ff,{P},otaa,70b3d57ed0000000,{APP},,,,aix/b,,,")
    return "\n".join(lines) + "\n"


def load(conn: sqlite3.Connection, text: str) -> csv_import.ImportResult:
    return csv_import.import_devices(conn, csv_import.parse_csv(text, PROFILES))


def test_import_registers_everything_with_params(conn: sqlite3.Connection) -> None:
    result = load(conn, good_file())
    assert len(result.added) == 4 and not result.updated and not result.unchanged
    dev = registry.get_device(conn, DevEui.from_hex("70b3d57ed0000002"))
    assert dev.site == "aix/a2" and dev.lat == 43.5 and dev.params == {"empty_distance_mm": 1502.0}
    assert registry.device_params(conn)["70b3d57ed0000001"] == {"empty_distance_mm": 1501.0}
    assert "70b3d57ed00001ff" not in registry.device_params(conn)  # no params, not listed


def test_every_error_is_reported_with_its_line_and_nothing_is_written(conn: sqlite3.Connection) -> None:
    text = "\n".join(
        [
            HEADER,
            f"70b3d57ed0000001,{P},abp,,,26011001,{NWK},{APP},,,,",  # line 2 ok
            f"70b3d57ed000zz02,{P},abp,,,26011002,{NWK},{APP},,,,",  # 3 bad hex
            f"70b3d57ed0000003,{P},abp,,,26011003,{NWK[:-2]},{APP},,,,",  # 4 short key
            f"70b3d57ed0000001,{P},abp,,,26011004,{NWK},{APP},,,,",  # 5 duplicate DevEUI
            f"70b3d57ed0000005,acme/nope,abp,,,26011005,{NWK},{APP},,,,",  # 6 unknown profile
            f"70b3d57ed0000006,{P},abp,,,26011006",  # 7 too few fields
            f"70b3d57ed0000007,{P},otaa,,,,,,,,,",  # 8 otaa without JoinEUI
            f"70b3d57ed0000008,{P},abp,,,26011008,{NWK},{APP},,91,5,18OO",  # 9 lat out of range, typo
        ]
    )
    with pytest.raises(csv_import.ImportFailed) as info:
        csv_import.parse_csv(text, PROFILES)
    got = [str(e) for e in info.value.errors]
    assert got[0].startswith("line 3, dev_eui: DevEui must be hex")
    assert got[1].startswith("line 4, nwk_s_key: AesKey must be 16 bytes")
    assert got[2] == "line 5, dev_eui: duplicate DevEUI 70b3d57ed0000001 (first on line 2)"
    assert got[3] == "line 6, profile: unknown profile 'acme/nope'"
    assert got[4] == "line 7: expected 12 fields, got 6"
    assert got[5] == "line 8, join_eui: is required here"
    assert any(g.startswith("line 9, lat: latitude 91.0 is outside") for g in got)
    assert "line 9, param.empty_distance_mm: parameter empty_distance_mm must be a number" in " ".join(got)
    assert conn.execute("SELECT count(*) FROM devices").fetchone()[0] == 0


def test_bad_header_is_reported_before_lines() -> None:
    with pytest.raises(csv_import.ImportFailed) as info:
        csv_import.parse_csv("dev_eui,profile,appkey\n", PROFILES)
    messages = [str(e) for e in info.value.errors]
    assert messages[0].startswith("line 1, appkey: unknown column 'appkey'")
    assert "line 1: missing required column 'activation'" in messages


def test_conflicts_with_the_registry_fail_the_whole_import(conn: sqlite3.Connection) -> None:
    load(conn, good_file(2))
    other_key = "ff" * 16
    text = "\n".join(
        [
            HEADER,
            f"70b3d57ed0000009,{P},abp,,,26011009,{NWK},{APP},,,,",  # new, fine on its own
            f"70b3d57ed0000001,{P},abp,,,26011001,{other_key},{APP},,,,",  # same DevEUI, other key
            f"70b3d57ed000000a,{P},abp,,,26011002,{NWK},{APP},,,,",  # DevAddr taken in the registry
        ]
    )
    with pytest.raises(csv_import.ImportFailed) as info:
        load(conn, text)
    got = [str(e) for e in info.value.errors]
    assert got[0] == (
        "line 3: 70b3d57ed0000001 is already registered with different session keys (remove it first)"
    )
    assert got[1].startswith("line 4, dev_addr: DevAddr 26011002 is already used")
    assert len(got) == 2
    assert len(registry.list_devices(conn)) == 3  # line 2 was not written either


def test_reimport_is_idempotent_and_updates_installation_cells(conn: sqlite3.Connection) -> None:
    load(conn, good_file())
    again = load(conn, good_file())
    assert len(again.unchanged) == 4 and not again.added and not again.updated
    moved = good_file().replace("aix/a2,43.5,5.4,1502", "aix/a2-bis,43.5,5.4,1600")
    result = load(conn, moved)
    assert result.updated == ["70b3d57ed0000002"] and len(result.unchanged) == 3
    dev = registry.get_device(conn, DevEui.from_hex("70b3d57ed0000002"))
    assert dev.site == "aix/a2-bis" and dev.params == {"empty_distance_mm": 1600.0}


def test_otaa_without_app_key_gets_a_generated_one_then_keeps_it(conn: sqlite3.Connection) -> None:
    text = f"dev_eui,profile,activation,join_eui\n0000000000000042,{P},otaa,70b3d57ed0000000\n"
    assert load(conn, text).generated_app_keys == 1
    key = registry.device_keys(conn, DevEui.from_hex("0000000000000042"))["app_key"]
    assert len(key) == 32 and key != "0" * 32
    assert load(conn, text).unchanged == ["0000000000000042"]
    assert registry.device_keys(conn, DevEui.from_hex("0000000000000042"))["app_key"] == key


def test_export_import_round_trip(tmp_path: Path, conn: sqlite3.Connection) -> None:
    load(conn, good_file(5))
    registry.update_installation(conn, DevEui.from_hex("70b3d57ed0000003"), set_params={"lamp_group": "B"})
    text = csv_import.to_csv(csv_import.export_rows(conn, with_keys=True), with_keys=True)
    other = db.connect(db.db_path(tmp_path / "second"))
    try:
        assert len(load(other, text).added) == 6

        def snapshot(c: sqlite3.Connection) -> list[tuple[object, ...]]:
            out = []
            for d in registry.list_devices(c):
                j = d.as_json()
                j.pop("created_at")
                out.append((j, registry.device_keys(c, d.dev_eui)))
            return out

        assert snapshot(other) == snapshot(conn)
        assert load(other, text).unchanged and not load(other, text).added
    finally:
        other.close()


def test_export_without_keys_has_no_key_columns(conn: sqlite3.Connection) -> None:
    load(conn, good_file(1))
    text = csv_import.to_csv(csv_import.export_rows(conn, with_keys=False), with_keys=False)
    assert NWK not in text and APP not in text
    assert (
        text.splitlines()[0]
        == "dev_eui,profile,activation,join_eui,dev_addr,site,lat,lon,param.empty_distance_mm"
    )


# --- issue 19, installer safety ---------------------------------------------------------------

STORE = load_profiles(None)
BY_ID = {profile.id: profile for profile in STORE}
CONTAINER_HEADER = (
    "dev_eui,profile,activation,dev_addr,nwk_s_key,app_s_key,param.empty_distance_mm,param.full_distance_mm"
)


def test_parameters_are_checked_against_the_profile_with_line_numbers() -> None:
    text = "\n".join(
        [
            CONTAINER_HEADER + ",param.probe_level_cm",
            f"70b3d57ed0000001,{P},abp,26011001,{NWK},{APP},1800,300,",  # 2 fine
            f"70b3d57ed0000002,{P},abp,26011002,{NWK},{APP},300,1800,",  # 3 columns swapped
            f"70b3d57ed0000003,{P},abp,26011003,{NWK},{APP},1800,300,450",  # 4 a river parameter
            f"70b3d57ed0000004,{P},abp,26011004,{NWK},{APP},,,",  # 5 a container with none
            f"70b3d57ed0000005,{P},abp,26011005,{NWK},{APP},99999,300,",  # 6 out of bounds
        ]
    )
    with pytest.raises(csv_import.ImportFailed) as info:
        csv_import.parse_csv(text, BY_ID, BY_ID)
    got = [str(e) for e in info.value.errors]
    assert got[0] == (
        "line 3, param.full_distance_mm: full_distance_mm (1800 mm) must be less than "
        "empty_distance_mm (300 mm) (are the two swapped?)"
    )
    assert got[1].startswith("line 4, param.probe_level_cm: milesight/em310-udl has no installation")
    assert got[2].startswith("line 5, param.empty_distance_mm: missing required parameter")
    assert got[3].startswith("line 5, param.full_distance_mm: missing required parameter")
    assert got[4] == (
        "line 6, param.empty_distance_mm: parameter empty_distance_mm 99999 mm is outside 100..10000 mm"
    )
    assert len(got) == 5
    # Without the profiles (only their ids), the parameters are not checked: as before.
    header, _, swapped = text.split("\n")[:3]
    assert len(csv_import.parse_csv(f"{header}\n{swapped}\n", PROFILES)) == 1


def test_a_semicolon_sheet_from_french_excel_is_read_with_decimal_commas() -> None:
    text = (
        "dev_eui;profile;activation;dev_addr;nwk_s_key;app_s_key;site;lat;lon;"
        "param.empty_distance_mm;param.full_distance_mm\n"
        f"70b3d57ed0000001;{P};abp;26011001;{NWK};{APP};aix, cours Mirabeau;43,5263;5,4454;1800,5;300\n"
    )
    (row,) = csv_import.parse_csv(text, PROFILES)
    assert (row.lat, row.lon, row.site) == (43.5263, 5.4454, "aix, cours Mirabeau")
    assert row.params == {"empty_distance_mm": 1800.5, "full_distance_mm": 300.0}
    assert csv_import.separator(text) == ";"
    assert csv_import.separator("# a comment; with a semicolon\ndev_eui,profile\n") == ","


def test_key_errors_say_the_expected_length_and_never_echo_the_key() -> None:
    secret = "2b7e151628aed2a6abf7158809cf4f"  # 30 digits: a pasted key lost its end
    not_hex = "2b7e151628aed2a6abf71588zzcf4f3c"
    text = "\n".join(
        [
            "dev_eui,profile,activation,dev_addr,nwk_s_key,app_s_key",
            f"70b3d57ed0000001,{P},abp,26011001,{secret},{APP}",
            f"70b3d57ed0000002,{P},abp,2601100,{not_hex},{APP}",
            f"70b3d57ed00000,{P},abp,26011003,{NWK},{APP}",
        ]
    )
    with pytest.raises(csv_import.ImportFailed) as info:
        csv_import.parse_csv(text, PROFILES)
    got = [str(e) for e in info.value.errors]
    assert got == [
        "line 2, nwk_s_key: AesKey must be 16 bytes (32 hex digits for a 128-bit key), got 30 digits",
        "line 3, dev_addr: DevAddr must be 4 bytes (8 hex digits for a 32-bit DevAddr), got 7 digits",
        "line 3, nwk_s_key: AesKey must be hex: 32 hex digits for a 128-bit key; "
        "character 25 is not a hex digit (0-9, a-f)",
        "line 4, dev_eui: DevEui must be 8 bytes (16 hex digits for an EUI-64), got 14 digits",
    ]
    assert not any(secret in g or not_hex in g or "zz" in g for g in got)


def test_the_class_column_sets_checks_and_exports_the_class(conn: sqlite3.Connection) -> None:
    profiles = {p.id: p for p in ProfileStore.load_dir(default_profiles_dir())}
    display = "edgegw/display"  # classes: [A, C]
    header = "dev_eui,profile,activation,dev_addr,nwk_s_key,app_s_key,class"
    text = "\n".join(
        [
            header,
            f"70b3d57ed0000001,{display},abp,26011001,{NWK},{APP},C",
            f"70b3d57ed0000002,{display},abp,26011002,{NWK},{APP},",  # the profile's first: A
        ]
    )
    result = csv_import.import_devices(conn, csv_import.parse_csv(text, PROFILES, profiles))
    assert len(result.added) == 2
    assert [d.lorawan_class for d in registry.list_devices(conn)] == ["C", "A"]
    rows = csv_import.export_rows(conn, with_keys=False)
    assert [row["class"] for row in rows] == ["C", "A"]
    assert csv_import.to_csv(rows, with_keys=False).splitlines()[0].endswith(",lon,class")
    # A known device: an empty cell keeps its class, a filled one changes it.
    again = "\n".join([header, f"70b3d57ed0000001,{display},abp,26011001,{NWK},{APP},"])
    assert csv_import.import_devices(conn, csv_import.parse_csv(again, PROFILES, profiles)).unchanged
    back = "\n".join([header, f"70b3d57ed0000001,{display},abp,26011001,{NWK},{APP},a"])
    assert csv_import.import_devices(conn, csv_import.parse_csv(back, PROFILES, profiles)).updated
    assert registry.get_device(conn, DevEui.from_hex("70b3d57ed0000001")).lorawan_class == "A"
    # C for a profile that does not declare it, and a class we do not serve: line errors.
    bad = "\n".join(
        [
            header,
            f"70b3d57ed0000003,{P},abp,26011003,{NWK},{APP},C",
            f"70b3d57ed0000004,{P},abp,26011004,{NWK},{APP},B",
        ]
    )
    with pytest.raises(csv_import.ImportFailed) as failed:
        csv_import.parse_csv(bad, PROFILES, profiles)
    class_errors = [(e.line, e.column) for e in failed.value.errors if e.column == "class"]
    assert class_errors == [(2, "class"), (3, "class")]  # (the em310 lines also lack its parameters)
