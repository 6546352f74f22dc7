"""An installer's day with the real `edgegw` command (issue 19, installer safety).

The morning's sheet comes from a French Excel (`;`-separated, decimal commas) and carries the
usual mistakes: empty/full columns swapped, a river parameter on a container, a container with
no geometry, a key with a letter O for a zero. Each is refused with its line, nothing is
written, and the key is never printed. The corrected sheet goes in, a container's geometry is
changed with `device set` (checked too), the rules file's typos are caught by `rules test`, and
the site's own model sits next to the 19 shipped profiles (`profiles_dir`).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

from tests.codec.test_profile import BASE
from tests.e2e.harness import cli

NWK = "2b7e151628aed2a6abf7158809cf4f3c"
APPS = "000102030405060708090a0b0c0d0e0f"
EM310 = "milesight/em310-udl"
HEADER = "dev_eui;profile;activation;dev_addr;nwk_s_key;app_s_key;site;lat;lon"
PARAMS = ";param.empty_distance_mm;param.full_distance_mm;param.probe_level_cm;param.depth_mm"


def abp(n: int, profile: str, site: str, params: str) -> str:
    return f"70b3d57ed00000{n:02x};{profile};abp;260110{n:02x};{NWK};{APPS};{site};43,5263;5,4454;{params}"


def config(tmp_path: Path) -> Path:
    """A gateway whose `profiles_dir` holds the site's own model, acme/bin-1 (one parameter, required)."""
    own = copy.deepcopy(BASE)
    own["parameters"] = {"depth_mm": {"unit": "mm", "required": True, "min": 100, "max": 3000}}
    path = tmp_path / "own-profiles" / "acme" / "bin-1.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(own, sort_keys=False))
    config_file = tmp_path / "edgegw.yaml"
    config_file.write_text(
        "gateway: {id: gw-test-1}\nmqtt: {host: 127.0.0.1, tls: false}\n"
        f"data_dir: {tmp_path / 'data'}\nprofiles_dir: {tmp_path / 'own-profiles'}\n"
    )
    return config_file


def test_an_installers_day(tmp_path: Path) -> None:
    config_file = config(tmp_path)

    listed = cli(config_file, "profile", "list", "--json")
    ids = [row["id"] for row in json.loads(listed.stdout)]
    assert listed.returncode == 0 and len(ids) == 20 and "acme/bin-1" in ids and EM310 in ids

    typo_key = NWK[:10] + "O" + NWK[11:]
    morning = tmp_path / "tournee.csv"
    morning.write_text(
        "\n".join(
            [
                HEADER + PARAMS,
                abp(1, EM310, "aix/a1", "1800;300;;"),  # 2: fine
                abp(2, EM310, "aix/a2", "300;1800;;"),  # 3: empty and full swapped
                abp(3, EM310, "aix/a3", "1800;300;450;"),  # 4: a river parameter
                abp(4, EM310, "aix/a4", ";;;"),  # 5: no geometry at all
                abp(5, EM310, "aix/a5", "1800;300;;").replace(NWK, typo_key),  # 6: O for 0
                abp(6, "acme/bin-1", "aix/b1", ";;;5000"),  # 7: the site's model, out of bounds
            ]
        )
        + "\n"
    )
    refused = cli(config_file, "device", "import", str(morning))
    assert refused.returncode == 2 and refused.stdout == ""
    err = refused.stderr
    assert f"{morning}: line 3, param.full_distance_mm: full_distance_mm (1800 mm) must be less than" in err
    assert "(are the two swapped?)" in err
    assert f"{morning}: line 4, param.probe_level_cm: {EM310} has no installation parameter" in err
    assert f"{morning}: line 5, param.empty_distance_mm: missing required parameter" in err
    assert f"{morning}: line 6, nwk_s_key: AesKey must be hex: 32 hex digits for a 128-bit key" in err
    assert f"{morning}: line 7, param.depth_mm: parameter depth_mm 5000 mm is outside 100..3000 mm" in err
    assert typo_key not in err and "line 2" not in err
    assert err.strip().endswith("6 error(s), nothing imported")
    assert json.loads(cli(config_file, "device", "list", "--json").stdout) == {"devices": []}

    corrected = tmp_path / "tournee-corrigee.csv"
    corrected.write_text(
        "\n".join(
            [
                HEADER + PARAMS,
                abp(1, EM310, "aix/a1", "1800;300;;"),
                abp(2, EM310, "aix/a2", "1800;300;;"),
                abp(3, EM310, "aix/a3", "1800,5;300;;"),
                abp(6, "acme/bin-1", "aix/b1", ";;;1500"),
            ]
        )
        + "\n"
    )
    imported = cli(config_file, "device", "import", str(corrected), "--json")
    assert imported.returncode == 0, imported.stderr
    assert len(json.loads(imported.stdout)["added"]) == 4
    devices = {
        d["dev_eui"]: d for d in json.loads(cli(config_file, "device", "list", "--json").stdout)["devices"]
    }
    assert devices["70b3d57ed0000003"]["params"] == {"empty_distance_mm": 1800.5, "full_distance_mm": 300.0}
    assert devices["70b3d57ed0000003"]["lat"] == 43.5263

    swapped = cli(config_file, "device", "set", "70b3d57ed0000002", "--param", "empty_distance_mm=200")
    assert swapped.returncode == 2 and "must be less than empty_distance_mm (200 mm)" in swapped.stderr
    moved = cli(config_file, "device", "set", "70b3d57ed0000002", "--param", "empty_distance_mm=2400")
    assert moved.returncode == 0 and "empty_distance_mm=2400" in moved.stdout

    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "schema_version: 1\nrules:\n"
        "  - id: bin-full\n    devices: {profiles: [milesight/em310udl]}\n"
        "    when: {threshold: {value: fill_levl, above: 80}}\n"
        "  - id: own-bin-low\n    devices: {profiles: [acme/bin-1]}\n"
        "    when: {threshold: {value: distance, below: 200}}\n"
    )
    checked = cli(config_file, "rules", "test", "--rules", str(rules))
    assert checked.returncode == 2
    assert "unknown profile 'milesight/em310udl' (did you mean 'milesight/em310-udl'?)" in checked.stderr
    assert (
        "field 'fill_levl' is not an output of any known profile (did you mean 'fill_level'?)"
        in checked.stderr
    )
    assert "own-bin-low" not in checked.stderr  # the site's own profile is known, its field too
    rules.write_text(rules.read_text().replace("em310udl", "em310-udl").replace("fill_levl", "fill_level"))
    readings = tmp_path / "readings.jsonl"
    readings.write_text(
        json.dumps(
            {
                "dev_eui": "70b3d57ed0000001",
                "profile": EM310,
                "at": "2026-05-04T08:00:00Z",
                "data": {"distance": 500},
            }
        )
        + "\n"
    )
    traced = cli(config_file, "rules", "test", "--rules", str(rules), "--readings", str(readings), "--trace")
    assert traced.returncode == 0, traced.stderr
    assert "bin-full 70b3d57ed0000001 skipped (no fill_level in the reading)" in traced.stdout
