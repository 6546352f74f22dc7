"""A registry change while the agent runs: read on the database thread, applied on the loop.

The rule "threads only at adapters, hand data to the loop" (docs/architecture.md): the registry
is read by the database thread, but the pipeline's device table and the rule engine belong to
the event loop. Registering a device with the engine from the database thread raced the group
commit's ``RuleEngine.take_changes`` (a set iterated on the loop while another thread added to
it: "set changed size during iteration"). The agent here is the real one (``gateway.app.build``)
on a real SQLite file; devices are added from a second connection, as `edgegw device add` does.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

from gateway import app, config, db
from gateway.messages import AesKey, DevAddr, DevEui
from gateway.provisioning import keystore, registry

BATCHES = 10
PER_BATCH = 20


def _config(tmp_path: Path) -> config.Config:
    rules = tmp_path / "rules.yaml"
    rules.write_text("schema_version: 1\nrules: []\n")
    return config.loads(
        "gateway: {id: gw-registry-test}\n"
        'radio: {url: "semtech-udp://127.0.0.1:0"}\n'
        "mqtt: {host: 127.0.0.1, port: 1, tls: false}\n"
        f"data_dir: {tmp_path / 'data'}\n"
        f"rules: {{path: {rules}}}\n"
    )


def _add(conn: sqlite3.Connection, keys: keystore.KeyStore, n: int) -> None:
    registry.add_device(
        conn,
        dev_eui=DevEui.from_hex(f"70b3d5e75f{n:06x}"),
        profile="milesight/em310-udl",
        keys=registry.AbpKeys(
            DevAddr.from_hex(f"26{n:06x}"), AesKey(bytes(range(16))), AesKey(bytes(range(1, 17)))
        ),
        site=f"containers/{n}",
        keystore=keys if keys.enabled else None,
    )


async def test_a_registry_change_under_load_is_applied_on_the_loop(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    agent = app.build(cfg)
    engine = agent.rules
    assert engine is not None
    loop_thread = threading.get_ident()
    threads: set[int] = set()
    register = engine.register_device

    def spy(*args: Any, **kwargs: Any) -> None:
        threads.add(threading.get_ident())
        register(*args, **kwargs)

    engine.register_device = spy  # type: ignore[method-assign]
    stop = asyncio.Event()
    takes = 0

    async def group_commits() -> None:
        # What the committer does on the loop at every group: take the engine's changed state.
        nonlocal takes
        while not stop.is_set():
            engine.take_changes()
            takes += 1
            await asyncio.sleep(0)

    committing = asyncio.create_task(group_commits())
    conn = db.connect(db.db_path(cfg.data_dir))
    keys = keystore.open_key(cfg.data_dir)
    try:
        for batch in range(BATCHES):
            for i in range(PER_BATCH):
                _add(conn, keys, batch * PER_BATCH + i)
            await agent.registry.refresh()  # what the agent's "sessions" task does
    finally:
        stop.set()
        await committing
        conn.close()
        agent.database.close()
    assert threads == {loop_thread}, "the registry must be applied on the event loop, not the database thread"
    assert len(agent.pipeline.devices) == BATCHES * PER_BATCH and takes > BATCHES
    assert agent.pipeline.devices["70b3d5e75f000005"].site == "containers/5"
