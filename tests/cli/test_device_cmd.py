"""`edgegw device add | set | import | export | rekey`: argv → output and exit code."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from gateway import db
from gateway.provisioning import keystore
from tests.cli.helpers import APP, NWK, abp_argv
from tests.cli.helpers import EM310 as P
from tests.cli.helpers import run_with_config as run


def add_device(capsys: pytest.CaptureFixture[str], cfg: Path, eui: str, *extra: str) -> tuple[int, str, str]:
    return run(capsys, cfg, "device", "add", "--dev-eui", eui, "--profile", P, *extra)


def test_otaa_add_generates_app_key_shown_once(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = add_device(
        capsys,
        cfg,
        "0000000000000002",
        "--otaa",
        "--join-eui",
        "70b3d57ed0000000",
        "--param",
        "empty_distance_mm=1800",
        "--param",
        "full_distance_mm=300",
        "--lat",
        "43.52",
        "--lon",
        "5.44",
        "--site",
        "aix/a1",
        "--json",
    )
    doc = json.loads(out)
    key = doc["generated_app_key"]
    assert code == 0 and len(key) == 32 and int(key, 16) >= 0
    assert doc["params"] == {"empty_distance_mm": 1800.0, "full_distance_mm": 300.0} and doc["lat"] == 43.52
    code, out, _ = run(capsys, cfg, "device", "list", "--json")
    assert key not in out and json.loads(out)["devices"][0]["site"] == "aix/a1"
    code, out, _ = run(capsys, cfg, "device", "list", "--show-keys", "--json")
    assert json.loads(out)["devices"][0]["keys"]["app_key"] == key
    code, out, _ = add_device(capsys, cfg, "0000000000000003", "--otaa", "--join-eui", "70b3d57ed0000000")
    assert code == 0 and "shown only now" in out


def test_set_changes_params_and_rejects_bad_ones(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    added, _, _ = add_device(
        capsys,
        cfg,
        "01" * 8,
        "--otaa",
        "--join-eui",
        "00" * 8,
        "--appkey",
        APP,
        "--param",
        "full_distance_mm=300",
    )
    assert added == 0
    code, out, _ = run(capsys, cfg, "device", "set", "01" * 8, "--param", "empty_distance_mm=1750", "--json")
    assert code == 0 and json.loads(out)["params"] == {"empty_distance_mm": 1750.0, "full_distance_mm": 300.0}
    code, out, _ = run(capsys, cfg, "device", "set", "01" * 8, "--unset", "full_distance_mm")
    assert code == 0 and "empty_distance_mm=1750" in out and "full_distance_mm" not in out
    for argv, message in (
        (["--param", "Bad-Name=1"], "--param: parameter name 'Bad-Name'"),
        (["--param", "x"], "--param: expected name=value"),
        (["--lat", "43"], "give both --lat and --lon"),
        ([], "nothing to change"),
        (["--unset", "nope"], "has no parameter 'nope'"),
    ):
        code, _, err = run(capsys, cfg, "device", "set", "01" * 8, *argv)
        assert code == 2 and message in err, argv
    code, _, err = run(capsys, cfg, "device", "set", "09" * 8, "--site", "x")
    assert code == 2 and "not registered" in err


def test_add_from_a_scanned_qr(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, cfg, "qr", "parse", "LW:D0:70B3D57ED0000001:A84041035660E3AA:000A0001")
    body = "LW:D0:70B3D57ED0000001:A84041035660E3AA:000A0001"
    code, out, _ = run(capsys, cfg, "device", "add", "--qr", body, "--profile", P, "--appkey", APP, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["dev_eui"] == "a84041035660e3aa" and doc["join_eui"] == "70b3d57ed0000001"
    assert "generated_app_key" not in doc
    code, _, err = run(capsys, cfg, "device", "add", "--qr", body + ":C0000", "--profile", P)
    assert code == 2 and "QR checksum mismatch" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, cfg, "device", "add", "--qr", body, "--profile", P, "--abp")
    assert code == 2 and "drop --abp" in err


def write_csv(path: Path, lines: list[str]) -> Path:
    """A sheet of containers: each line gets full_distance_mm 300, which the profile requires."""
    header = "dev_eui,profile,activation,dev_addr,nwk_s_key,app_s_key,site,param.empty_distance_mm"
    rows = [f"{header},param.full_distance_mm", *(f"{line},300" for line in lines)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_import_reports_all_errors_and_writes_nothing(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write_csv(
        tmp_path / "bad.csv",
        [
            f"0000000000000001,{P},abp,26011001,{NWK},{APP},a,1800",
            f"0000000000000002,{P},abp,26011002,{NWK}00,{APP},a,1800",
            f"0000000000000001,{P},abp,26011003,{NWK},{APP},a,1800",
            f"0000000000000004,nope/x,abp,26011004,{NWK},{APP},a,1800",
        ],
    )
    code, out, err = run(capsys, cfg, "device", "import", str(bad))
    assert code == 2 and out == ""
    assert f"{bad}: line 3, nwk_s_key: AesKey must be 16 bytes" in err
    assert f"{bad}: line 4, dev_eui: duplicate DevEUI 0000000000000001 (first on line 2)" in err
    assert f"{bad}: line 5, profile: unknown profile 'nope/x'" in err
    assert err.strip().endswith("3 error(s), nothing imported")
    code, out, _ = run(capsys, cfg, "device", "import", str(bad), "--json")
    doc = json.loads(out)
    assert code == 2 and doc["ok"] is False and [e["line"] for e in doc["errors"]] == [3, 4, 5]
    _, out, _ = run(capsys, cfg, "device", "list", "--json")
    assert json.loads(out) == {"devices": []}


def test_import_export_round_trip_and_idempotence(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_csv(
        tmp_path / "good.csv",
        [
            f"00000000000000{i:02x},{P},abp,260110{i:02x},{NWK},{APP},street-{i},{1700 + i}"
            for i in range(1, 6)
        ],
    )
    code, out, _ = run(capsys, cfg, "device", "import", str(good), "--dry-run", "--json")
    assert code == 0 and json.loads(out) == {"ok": True, "dry_run": True, "lines": 5}
    code, out, _ = run(capsys, cfg, "device", "import", str(good), "--json")
    assert code == 0 and len(json.loads(out)["added"]) == 5
    code, out, _ = run(capsys, cfg, "device", "import", str(good))
    assert code == 0 and "0 added, 0 updated, 5 unchanged" in out
    code, out, err = run(capsys, cfg, "device", "export")
    assert code == 0 and NWK not in out and err == "" and out.count("\n") == 6
    export = tmp_path / "export.csv"
    code, _, err = run(capsys, cfg, "device", "export", "--with-keys", "-o", str(export))
    assert code == 0 and "warning: this export contains device keys" in err
    assert stat.S_IMODE(export.stat().st_mode) == 0o600 and NWK in export.read_text()
    code, out, err = run(capsys, cfg, "device", "export", "--json", "--with-keys")
    assert code == 0 and json.loads(out)["devices"][0]["nwk_s_key"] == NWK and "warning" in err
    # Into a fresh gateway: same registry.
    cfg2 = tmp_path / "second.yaml"
    cfg2.write_text(cfg.read_text().replace(str(tmp_path / "data"), str(tmp_path / "data2")))
    code, out, _ = run(capsys, cfg2, "device", "import", str(export), "--json")
    assert code == 0 and len(json.loads(out)["added"]) == 5
    _, a, _ = run(capsys, cfg, "device", "list", "--show-keys", "--json")
    _, b, _ = run(capsys, cfg2, "device", "list", "--show-keys", "--json")

    def strip(doc: str) -> list[dict[str, object]]:
        return [{k: v for k, v in d.items() if k != "created_at"} for d in json.loads(doc)["devices"]]

    assert strip(a) == strip(b)


def test_rekey_encrypts_existing_rows(cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    added, _, _ = run(capsys, cfg, "device", "add", *abp_argv("01" * 8, "26011001"))
    assert added == 0
    code, out, _ = run(capsys, cfg, "device", "rekey", "--json")
    assert code == 0 and json.loads(out)["encrypted_values"] == 2
    conn = db.connect(db.db_path(tmp_path / "data"))
    try:
        raw = conn.execute("SELECT nwk_s_key FROM sessions").fetchone()[0]
    finally:
        conn.close()
    assert raw.startswith("enc1:") and keystore.open_key(tmp_path / "data").decrypt_hex(raw) == NWK
    _, out, _ = run(capsys, cfg, "device", "list", "--show-keys", "--json")
    assert json.loads(out)["devices"][0]["keys"]["nwk_s_key"] == NWK
    # New devices are encrypted on write from now on.
    added, _, _ = run(capsys, cfg, "device", "add", *abp_argv("02" * 8, "26011002"))
    assert added == 0
    code, out, _ = run(capsys, cfg, "device", "rekey", "--json")
    assert json.loads(out)["encrypted_values"] == 0


def test_add_and_set_check_parameters_against_the_profile(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = add_device(
        capsys, cfg, "0000000000000005", "--otaa", "--join-eui", "70b3d57ed0000000",
        "--param", "empty_distance_mm=300", "--param", "full_distance_mm=1800",
    )  # fmt: skip
    assert code == 2 and "full_distance_mm (1800 mm) must be less than empty_distance_mm (300 mm)" in err
    # Registered before it is measured: accepted, with a warning naming what is missing.
    code, _, err = add_device(capsys, cfg, "0000000000000005", "--otaa", "--join-eui", "70b3d57ed0000000")
    assert code == 0
    assert "warning: milesight/em310-udl needs empty_distance_mm (mm, " in err and "full_distance_mm" in err
    code, _, err = run(capsys, cfg, "device", "set", "0000000000000005", "--param", "probe_level_cm=450")
    assert code == 2 and "has no installation parameter 'probe_level_cm'" in err
    code, _, err = run(capsys, cfg, "device", "set", "0000000000000005", "--param", "empty_distnce_mm=1800")
    assert code == 2 and "did you mean 'empty_distance_mm'?" in err
    code, _, err = run(capsys, cfg, "device", "set", "0000000000000005", "--param", "full_distance_mm=1800")
    assert code == 0 and "needs empty_distance_mm" in err and "full_distance_mm (" not in err
    # The merged values are checked: an empty distance below the full one already set is refused.
    code, _, err = run(capsys, cfg, "device", "set", "0000000000000005", "--param", "empty_distance_mm=1200")
    assert code == 2 and "(are the two swapped?)" in err
    code, _, err = run(capsys, cfg, "device", "set", "0000000000000005", "--param", "empty_distance_mm=2200")
    assert code == 0 and err == ""


def test_a_mistyped_key_is_not_echoed(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    typo = APP[:20] + "o" + APP[21:]  # a letter o for a zero
    code, out, err = add_device(
        capsys, cfg, "0000000000000006", "--otaa", "--join-eui", "70b3d57ed0000000", "--appkey", typo
    )
    assert code == 2 and typo not in err + out
    assert (
        "--appkey: AesKey must be hex: 32 hex digits for a 128-bit key; character 21 is not a hex digit"
        in err
    )


def test_class_is_set_listed_and_refused_for_a_profile_without_c(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    display = "edgegw/display"  # classes: [A, C]
    code, out, _ = run(capsys, cfg, "device", "add", *abp_argv("0a" * 8, "0a0a0a0a", display), "--json")
    assert code == 0 and json.loads(out)["class"] == "A"  # the profile's first class
    code, out, _ = run(capsys, cfg, "device", "set", "0a" * 8, "--class", "c", "--json")
    assert code == 0 and json.loads(out)["class"] == "C"
    code, out, _ = run(
        capsys, cfg, "device", "add", *abp_argv("0b" * 8, "0b0b0b0b", display), "--class", "C", "--json"
    )
    assert code == 0 and json.loads(out)["class"] == "C"
    # milesight/em310-udl declares [A]: C is refused, nothing is written.
    code, _, err = run(capsys, cfg, "device", "add", *abp_argv("0c" * 8, "0c0c0c0c"), "--class", "C")
    assert code == 2 and "class C is not one of the profile's classes (A)" in err
    code, _, _ = run(capsys, cfg, "device", "add", *abp_argv("0c" * 8, "0c0c0c0c"))
    code, _, err = run(capsys, cfg, "device", "set", "0c" * 8, "--class", "C")
    assert code == 2 and "class C" in err
    code, out, _ = run(capsys, cfg, "device", "list", "--json")
    classes = {d["dev_eui"]: d["class"] for d in json.loads(out)["devices"]}
    assert classes == {"0a" * 8: "C", "0b" * 8: "C", "0c" * 8: "A"}
    code, out, _ = run(capsys, cfg, "device", "list", "--wide")
    assert "CLASS" in out.splitlines()[0]
    assert [line.split()[4] for line in out.splitlines()[1:4]] == ["C", "C", "A"]
    code, out, _ = run(capsys, cfg, "device", "set", "0a" * 8, "--class", "A", "--json")
    assert code == 0 and json.loads(out)["class"] == "A"
