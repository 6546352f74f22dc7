"""The control socket's answers (``gateway.app.queries``) in process, over a narrow status source:
a real SQLite registry and outbox, a real reading history, and the counters the agent would give.

What a technician reads must come from what the agent holds: the registry joined with what was
heard, the readings kept, the outbox's committed depth; a bad DevEUI is a clear refusal; a requeue
the disk does not let happen in time says so instead of pretending.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import config, db
from gateway.app import queries
from gateway.app.queries import Queries, StatusSource
from gateway.db.commit import Database, GroupCommitter
from gateway.history import ReadingHistory
from gateway.messages import AesKey, DevAddr, DevEui
from gateway.outbox import Outbox
from gateway.provisioning import registry
from tests.outbox.helpers import committed_outbox
from tests.outbox.test_bounds import rec

EUI = "70b3d5e75f000001"
OTHER = "70b3d5e75f000002"


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    database = Database(db.db_path(tmp_path))
    conn = db.connect(db.db_path(tmp_path))
    for n, eui in enumerate((EUI, OTHER)):
        keys = registry.AbpKeys(DevAddr.from_hex(f"2601100{n}"), AesKey(bytes(16)), AesKey(bytes(16)))
        registry.add_device(
            conn, dev_eui=DevEui.from_hex(eui), profile="milesight/em310-udl", keys=keys, site=f"bins/{n}"
        )
    conn.close()
    yield database
    database.close()


class Agent:
    """The counters and views an agent would give, changed by the tests."""

    def __init__(self) -> None:
        self.flushes = 0
        self.connected = False
        self.heard: dict[str, dict[str, Any]] = {
            EUI: {"last_seen_s": 1_764_000_000.0, "frames": 3, "errors": 1}
        }

    def summary(self) -> dict[str, Any]:
        return {
            "uptime_s": 12.5,
            "radio": {"frames": 4},
            "pipeline": {"accepted": 3},
            "uplink": {"connected": self.connected, "published": 0},
            "forwarder": {},
            "commits": 2,
            "storage": {"disk_full_since": None},
        }


def make(database: Database, outbox: Outbox, agent: Agent, history: ReadingHistory) -> Queries:
    cfg = config.loads("gateway: {id: gw-q}\nmqtt: {host: broker.example, port: 8883}\n", environ={})
    source = StatusSource(
        cfg,
        summary=agent.summary,
        radio_health=lambda: {"duty_cycle": {"868.1": 0.01}},
        frames_per_min=lambda: 6.0,
        time_quality=lambda: "ntp",
        registered=lambda: 2,
        heard=lambda: agent.heard,
        recent_frames=lambda: [],
        rules_status=None,
        connected=lambda: agent.connected,
        run_db=database.run,
    )

    def flush() -> None:
        agent.flushes += 1

    return Queries(source, outbox, history, flush)


async def test_status_is_built_from_the_source_and_the_committed_outbox(database: Database) -> None:
    outbox, agent = Outbox(database), Agent()
    committer = GroupCommitter(database, [outbox], interval_s=0.01, max_pending=100)
    for i in range(3):
        outbox.put(rec(i))
    await committer.flush()
    status = await make(database, outbox, agent, ReadingHistory()).status()
    assert status["gateway_id"] == "gw-q" and status["uplink"]["broker"] == "broker.example:8883"
    assert status["outbox"]["depth"] == 3 and status["outbox"]["commits"] == 2
    assert status["radio"]["frames_per_min"] == 6.0 and status["radio"]["duty_cycle"] == {"868.1": 0.01}
    assert status["devices"] == {"registered": 2, "heard": 1} and status["rules"] is None
    assert status["uplink"]["counters"] == {"published": 0}  # "connected" is its own field


async def test_devices_join_the_registry_with_what_was_heard(database: Database) -> None:
    answer = await make(database, Outbox(database), Agent(), ReadingHistory()).devices()
    rows = {row["dev_eui"]: row for row in answer["devices"]}
    assert rows[EUI]["frames"] == 3 and rows[EUI]["site"] == "bins/0"
    assert rows[OTHER]["frames"] == 0 and rows[OTHER]["last_seen_s"] is None  # registered, never heard


async def test_device_show_gives_the_readings_kept_and_refuses_a_bad_dev_eui(database: Database) -> None:
    history = ReadingHistory()
    history(
        {
            "verdict": "accepted",
            "dev_eui": EUI,
            "at_s": 1_764_000_000.0,
            "data": {"distance_mm": 812},
        }
    )
    q = make(database, Outbox(database), Agent(), history)
    shown = await q.device({"dev_eui": EUI})
    assert shown["device"]["site"] == "bins/0" and shown["heard"]["frames"] == 3
    assert [r.get("data") for r in shown["readings"]] == [{"distance_mm": 812}]
    with pytest.raises(ValueError, match="dev_eui"):
        await q.device({"dev_eui": "not-hex"})
    with pytest.raises(ValueError, match="70b3d5e75f0000ff"):
        await q.device({"dev_eui": "70b3d5e75f0000ff"})  # not registered


async def test_flush_asks_the_agent_and_answers_with_the_backlog(database: Database) -> None:
    agent = Agent()
    answer = await make(database, Outbox(database), agent, ReadingHistory()).flush()
    assert agent.flushes == 1 and answer["depth"] == 0 and answer["connected"] is False


async def test_a_requeue_no_commit_carries_out_in_time_says_not_done(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The outbox is wired to a group committer that does not commit (as on a full disk): the
    # request waits for a group, the answer says it has not happened.
    outbox, _committer = committed_outbox(database)
    monkeypatch.setattr(queries, "REQUEUE_WAIT_S", 0.2)
    answer = await make(database, outbox, Agent(), ReadingHistory()).requeue_quarantined()
    assert answer == {"done": False, "requeued": 0, "quarantined": 0, "connected": False}
