"""A device's registry entry and keys for the commands that work on one device (`provision node`,
`lorawan decode --dev-eui`): the DevEUI argument checked, the database opened from the config, the
keys decrypted with the gateway's key store, the connection closed. Keys stay in memory: the
commands decide what they print (never the keys).
"""

from __future__ import annotations

import argparse

from gateway import config, db
from gateway.messages import DevEui
from gateway.provisioning import keystore, registry

from .common import UsageError, config_path


def device_and_keys(args: argparse.Namespace, dev_eui_text: str) -> tuple[registry.Device, dict[str, str]]:
    """The registered device and its keys as hex; UsageError for a malformed DevEUI.

    ``RegistryError`` (not registered) and ``StorageError`` (key file missing) reach ``main``,
    which exits 2 with their one-line reason.
    """
    try:
        dev_eui = DevEui.from_hex(dev_eui_text)
    except ValueError as exc:
        raise UsageError(f"--dev-eui: {exc}") from exc
    cfg = config.load(config_path(args))
    conn = db.connect(db.db_path(cfg.data_dir))
    try:
        return registry.get_device(conn, dev_eui), registry.device_keys(
            conn, dev_eui, keystore.open_key(cfg.data_dir)
        )
    finally:
        conn.close()
