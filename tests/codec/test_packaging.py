"""Every vendor folder of device_profiles/ is installed with the package (setup.cfg data_files)."""

from __future__ import annotations

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_vendor_folder_is_in_data_files() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    targets = set(cfg["options.data_files"])
    vendors = {p.name for p in (ROOT / "device_profiles").iterdir() if p.is_dir()}
    missing = {v for v in vendors if f"share/edgegw/device_profiles/{v}" not in targets}
    assert not missing, f"add these vendor folders to [options.data_files] in setup.cfg: {sorted(missing)}"
