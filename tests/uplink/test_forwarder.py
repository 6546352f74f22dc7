"""Outbox → MQTT forwarding end to end: real SQLite file, real group commit, real mosquitto.

Checks ARCHITECTURE.md §3.3 (every accepted record is delivered at least once,
across a broker outage, and deleted only after the PUBACK) and the ``up`` batch
envelope of §3.2 against ``gateway/schemas/up-v1.json``. Record values are made up.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gateway import db
from gateway.clock import iso_utc
from gateway.config import MqttSection
from gateway.db.commit import Database, GroupCommitter
from gateway.messages import Record
from gateway.outbox import Leased, Outbox
from gateway.uplink import envelope
from gateway.uplink.forwarder import Forwarder, ForwarderSettings
from gateway.uplink.mqtt import MqttUplink
from gateway.uplink.topics import Topics

GATEWAY_ID = "gw-fwd"
TOPICS = Topics("edgegw", GATEWAY_ID)
UP_SCHEMA = json.loads(resources.files("gateway").joinpath("schemas/up-v1.json").read_text())


def record_body(i: int) -> dict[str, Any]:
    return {
        "id": f"70b3d57ed0000001-a1b2-{i:08x}",
        "kind": "reading",
        "dev_eui": "70b3d57ed0000001",
        "profile": "acme/noise-1",
        "received_at": "2024-05-01T12:00:00.125Z",
        "time_quality": "ntp",
        "fcnt": i,
        "fport": 2,
        "rx": {
            "rssi_dbm": -101.5,
            "snr_db": -3.25,
            "freq_hz": 868300000,
            "sf": 9,
            "bw_hz": 125000,
            "backend": "semtech-udp",
            "gateway_eui": None,
        },
        "data": {"laeq_db": 61.2, "lamax_db": 70.0},
        "raw": "0a1b2c",
    }


def make_record(i: int) -> Record:
    body = record_body(i)
    return Record(record_id=body["id"], kind=body["kind"], priority=0, body=body)


# --- the envelope (pure) -------------------------------------------------------------------


def test_up_batch_joins_the_stored_json_verbatim() -> None:
    bodies = ['{"id":"a","x":1}', '{"id":"b","x":[1,2]}']

    payload = envelope.up_batch("gw-1", bodies, "2024-05-01T12:00:00.250Z")

    assert payload == (
        b'{"v":1,"gateway_id":"gw-1","sent_at":"2024-05-01T12:00:00.250Z",'
        b'"records":[{"id":"a","x":1},{"id":"b","x":[1,2]}]}'
    )


def test_up_batch_of_real_records_matches_the_schema() -> None:
    bodies = [json.dumps(record_body(i), separators=(",", ":")) for i in range(3)]
    message = json.loads(envelope.up_batch(GATEWAY_ID, bodies, iso_utc(1714564800.25)))

    jsonschema.validate(message, UP_SCHEMA)
    assert message["records"] == [record_body(i) for i in range(3)]
    broken = dict(message, records=[{**record_body(1), "rx": {"rssi": -90}}])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, UP_SCHEMA)


@pytest.mark.parametrize(
    ("t_s", "text"),
    [(0.0, "1970-01-01T00:00:00.000Z"), (1714564800.25, "2024-05-01T12:00:00.250Z")],
)
def test_utc_iso(t_s: float, text: str) -> None:
    assert iso_utc(t_s) == text


# --- end to end ------------------------------------------------------------------------------


@dataclass
class Agent:
    database: Database
    outbox: Outbox
    uplink: MqttUplink
    forwarder: Forwarder
    tasks: list[asyncio.Task[None]]


class GatedOutbox:
    """The real outbox, with a gate in front of ``lease`` so a test can hold new batches back."""

    def __init__(self, inner: Outbox) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.gate.set()

    async def wait_records(self, min_priority: int = 0, max_priority: int = 1 << 30) -> None:
        await self.inner.wait_records(min_priority, max_priority)

    async def lease(self, n: int, *, min_priority: int = 0, max_priority: int = 1 << 30) -> list[Leased]:
        await self.gate.wait()
        return await self.inner.lease(n, min_priority=min_priority, max_priority=max_priority)

    async def ack(self, seqs: Sequence[int]) -> None:
        await self.inner.ack(seqs)

    def release(self, seqs: Sequence[int]) -> None:
        self.inner.release(seqs)

    def quarantine(self, seqs: Sequence[int], reason: str) -> None:
        self.inner.quarantine(seqs, reason)

    def may_have(self, min_priority: int = 0, max_priority: int = 1 << 30) -> bool:
        return self.inner.may_have(min_priority, max_priority)


@pytest.fixture
async def agent_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Builds outbox + group commit + uplink + forwarder like the app does; tears them down."""
    made: list[Agent] = []

    async def make(
        broker: Any,
        *,
        batch_max_records: int,
        max_inflight_batches: int,
        gated: bool = False,
        drain_rate_records_s: float = 0.0,
    ) -> Any:
        database = Database(db.db_path(tmp_path))
        outbox = Outbox(database)
        committer = GroupCommitter(database, [outbox], interval_s=0.02, max_pending=200)
        outbox.committer_notify = committer.notify
        settings = MqttSection(
            host=broker.host, port=broker.port, tls=False, keepalive_s=10, reconnect_max_s=2.0
        )
        uplink = MqttUplink(settings, client_id="edgegw-fwd", will=None)
        source = GatedOutbox(outbox) if gated else outbox
        forwarder = Forwarder(
            source,
            uplink,
            TOPICS,
            GATEWAY_ID,
            ForwarderSettings(
                batch_max_records=batch_max_records,
                batch_linger_ms=20,
                max_inflight_batches=max_inflight_batches,
                drain_rate_records_s=drain_rate_records_s,
            ),
        )
        await uplink.start()
        tasks = [asyncio.create_task(committer.run()), asyncio.create_task(forwarder.run())]
        made.append(Agent(database, outbox, uplink, forwarder, tasks))
        return made[-1], source

    yield make
    for agent in made:
        await agent.forwarder.drain(2.0)
        for task in agent.tasks:
            task.cancel()
        await asyncio.wait(agent.tasks, timeout=5.0)
        await agent.uplink.stop()
        agent.database.close()


def received_ids(messages: list[Any]) -> list[str]:
    return [record["id"] for m in messages for record in json.loads(m.payload)["records"]]


async def wait_for_ids(sub: Any, expected: set[str], timeout_s: float = 30.0) -> list[Any]:
    """Wait (in a thread, the loop keeps running) until ``sub`` has seen every id in ``expected``."""

    def all_there(messages: list[Any]) -> bool:
        return expected <= set(received_ids(messages))

    result: list[Any] = await asyncio.to_thread(sub.wait_for, all_there, timeout_s)
    return result


async def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if await predicate():
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


async def test_thousand_records_arrive_once_in_bounded_batches(
    mosquitto: Any, subscribe: Any, agent_factory: Any
) -> None:
    sub = subscribe(TOPICS.up)
    agent, _ = await agent_factory(mosquitto, batch_max_records=50, max_inflight_batches=4)
    expected = [make_record(i) for i in range(1000)]

    for record in expected:
        agent.outbox.put(record)
    messages = await wait_for_ids(sub, {r.record_id for r in expected})

    ids = received_ids(messages)
    assert Counter(ids) == Counter(r.record_id for r in expected), "each record exactly once"
    sizes = [len(json.loads(m.payload)["records"]) for m in messages]
    assert max(sizes) <= 50
    assert len(messages) <= 40, f"records were not batched: {len(messages)} messages"
    for message in messages:
        assert message.qos == 1 and not message.retain
        jsonschema.validate(json.loads(message.payload), UP_SCHEMA)
    by_id = {record["id"]: record for m in messages for record in json.loads(m.payload)["records"]}
    assert by_id[expected[97].record_id] == expected[97].body

    async def drained() -> bool:
        return bool((await agent.outbox.stats()).depth == 0)

    await wait_until(drained, 10.0, "the outbox to be empty")
    assert agent.forwarder.counters["records_acked"] == 1000
    assert agent.forwarder.counters["publish_failures"] == 0
    assert agent.outbox.counters["acked"] == 1000


async def test_broker_outage_midway_every_record_arrives_at_least_once(
    mosquitto: Any, subscribe: Any, agent_factory: Any
) -> None:
    sub_before = subscribe(TOPICS.up)
    agent, gated = await agent_factory(mosquitto, batch_max_records=20, max_inflight_batches=2, gated=True)
    records = [make_record(i) for i in range(800)]

    # 1. Steady state: the first 300 go through.
    for record in records[:300]:
        agent.outbox.put(record)
    await wait_for_ids(sub_before, {r.record_id for r in records[:300]})

    # 2. The broker freezes with batches in flight (published, no PUBACK), then dies.
    mosquitto.proc.send_signal(signal.SIGSTOP)
    published_before = agent.uplink.counters["published"]
    for record in records[300:600]:
        agent.outbox.put(record)

    async def two_in_flight() -> bool:
        return bool(agent.uplink.counters["published"] >= published_before + 2)

    await wait_until(two_in_flight, 10.0, "two batches in flight")
    gated.gate.clear()  # hold new batches until a subscriber listens to the restarted broker
    mosquitto.proc.kill()
    mosquitto.proc.wait(5)
    mosquitto.stop()

    async def failed() -> bool:
        return bool(agent.forwarder.counters["publish_failures"] >= 2)

    await wait_until(failed, 10.0, "the in-flight batches to fail")
    for record in records[600:]:  # accepted while the broker is down
        agent.outbox.put(record)

    # 3. The broker comes back; the uplink reconnects by itself and the backlog drains.
    await asyncio.sleep(0.5)
    mosquitto.start()
    sub_after = subscribe(TOPICS.up)
    gated.gate.set()
    wanted = {r.record_id for r in records}
    await wait_for_ids(sub_after, wanted - set(received_ids(sub_before.messages)), timeout_s=30.0)

    got = set(received_ids(sub_before.messages)) | set(received_ids(sub_after.messages))
    assert wanted <= got

    async def drained() -> bool:
        return bool((await agent.outbox.stats()).depth == 0)

    await wait_until(drained, 10.0, "the outbox to be empty")
    assert agent.outbox.counters["released"] >= 2 * 20  # the two full batches in flight came back
    assert agent.forwarder.counters["records_acked"] >= 800
    assert agent.uplink.counters["connects"] == 2


async def test_drain_waits_for_in_flight_batches_and_leases_no_more(
    mosquitto: Any, subscribe: Any, agent_factory: Any
) -> None:
    sub = subscribe(TOPICS.up)
    agent, _ = await agent_factory(mosquitto, batch_max_records=10, max_inflight_batches=2)
    assert await agent.uplink.wait_connected(5.0)
    mosquitto.proc.send_signal(signal.SIGSTOP)  # PUBACKs cannot come while frozen
    for i in range(25):
        agent.outbox.put(make_record(i))

    async def in_flight() -> bool:
        return bool(agent.uplink.counters["published"] >= 2)

    await wait_until(in_flight, 10.0, "two batches in flight")
    drain = asyncio.create_task(agent.forwarder.drain(10.0))
    await asyncio.sleep(0.3)
    assert not drain.done(), "drain must wait for the PUBACKs"
    mosquitto.proc.send_signal(signal.SIGCONT)
    await asyncio.wait_for(drain, timeout=10.0)

    assert agent.forwarder.counters["records_acked"] == 20
    await wait_for_ids(sub, {make_record(i).record_id for i in range(20)})
    await asyncio.sleep(0.2)
    assert agent.forwarder.counters["batches_sent"] == 2, "no batch may be leased once drain started"
    assert (await agent.outbox.stats()).depth == 5


async def test_flush_lifts_the_drain_rate_until_the_backlog_is_empty(
    mosquitto: Any, subscribe: Any, agent_factory: Any
) -> None:
    sub = subscribe(TOPICS.up)
    agent, _ = await agent_factory(
        mosquitto, batch_max_records=50, max_inflight_batches=4, drain_rate_records_s=50.0
    )
    backlog = [make_record(i) for i in range(1000)]
    for record in backlog:
        agent.outbox.put(record)
    await asyncio.sleep(0.5)
    # At 50 records/s (burst: one batch of 50) the backlog would take ~20 s.
    assert agent.outbox.counters["acked"] <= 150
    assert agent.forwarder.counters["rate_limited"] >= 1

    agent.forwarder.flush()

    assert agent.forwarder.flushing
    await wait_for_ids(sub, {r.record_id for r in backlog}, timeout_s=5.0)

    async def flush_over() -> bool:
        return not agent.forwarder.flushing

    await wait_until(flush_over, 5.0, "the flush to end on an empty backlog")
    assert agent.forwarder.counters["flushes"] == 1
    # The limit applies again: a new backlog is paced once more.
    limited = agent.forwarder.counters["rate_limited"]
    for i in range(1000, 1200):
        agent.outbox.put(make_record(i))
    await asyncio.sleep(0.5)
    assert agent.forwarder.counters["rate_limited"] > limited
    assert agent.outbox.counters["acked"] < 1200
