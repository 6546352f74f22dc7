"""Answers of the control socket's queries, from the running agent's stages.

Owns what `edgegw status`, `devices`, `device show` and `diag` show, which only read the stages,
and the two technician actions the socket carries: `flush` (drain the outbox now) and
`requeue_quarantined` (put quarantined records back in the outbox).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING, Any

from gateway import __version__
from gateway.errors import RegistryError
from gateway.messages import DevEui
from gateway.provisioning import registry

if TYPE_CHECKING:
    from gateway.app import Agent
    from gateway.history import ReadingHistory


def sample_rates(agent: Agent) -> None:
    """Called every few seconds: keeps the recent frame counts for frames/min."""
    agent.frame_samples.append((time.monotonic(), agent.radio.counters.get("frames", 0)))


def frames_per_min(agent: Agent) -> float:
    now, frames = time.monotonic(), agent.radio.counters.get("frames", 0)
    since_mono, since_frames = agent.frame_samples[0] if agent.frame_samples else (agent.started_mono, 0)
    elapsed_s = now - since_mono
    return round(60.0 * (frames - since_frames) / elapsed_s, 1) if elapsed_s > 0 else 0.0


async def status(agent: Agent) -> dict[str, Any]:
    """`edgegw status`: one screen of what a technician checks first."""
    stats = await agent.outbox.stats()
    summary = agent.summary()
    radio_health = agent.radio.health()
    return {
        "version": __version__,
        "gateway_id": agent.config.gateway.id,
        "uptime_s": summary["uptime_s"],
        "radio": {
            "url": agent.config.radio.url,
            "frames_per_min": frames_per_min(agent),
            "counters": summary["radio"],
            "duty_cycle": radio_health.get("duty_cycle", {}),
        },
        "pipeline": summary["pipeline"],
        "uplink": {
            "broker": f"{agent.config.mqtt.host}:{agent.config.mqtt.port}",
            "connected": agent.uplink.connected,
            "counters": {k: v for k, v in summary["uplink"].items() if k != "connected"},
            "forwarder": summary["forwarder"],
        },
        "outbox": {
            "depth": stats.depth,
            "bytes": stats.bytes,
            "max_bytes": stats.max_bytes,
            "oldest_age_s": stats.oldest_age_s,
            "depth_by_class": stats.depth_by_class,
            "evicted": stats.evicted_total,
            "commits": summary["commits"],
        },
        "storage": summary["storage"],
        "salvage": summary.get("salvage"),
        "control": summary.get("control"),
        "clock": {"time_quality": agent.clock.quality(None)},
        "devices": {"registered": len(agent.sessions), "heard": len(agent.inventory.snapshot())},
        "rules": agent.rules.status() if agent.rules is not None else None,
    }


async def devices(agent: Agent) -> dict[str, Any]:
    """`edgegw devices`: the registry joined with what was heard."""
    registered = await agent.database.run(registry.list_devices)
    heard = agent.inventory.snapshot()
    rows = []
    for device in registered:
        row = device.as_json()
        row.update(heard.get(str(device.dev_eui), {"last_seen_s": None, "frames": 0, "errors": 0}))
        rows.append(row)
    return {"devices": rows}


async def device(agent: Agent, history: ReadingHistory, request: dict[str, Any]) -> dict[str, Any]:
    """`edgegw device show`: the registry entry, what was heard, and the last readings."""
    try:
        dev_eui = DevEui.from_hex(str(request.get("dev_eui", "")))
    except ValueError as exc:
        raise ValueError(f"dev_eui: {exc}") from exc
    try:
        entry = await agent.database.run(registry.get_device, dev_eui)
    except RegistryError as exc:
        raise ValueError(str(exc)) from exc
    since_s = request.get("since_s")
    heard = agent.inventory.snapshot().get(str(dev_eui))
    return {
        "device": entry.as_json(),
        "heard": heard,
        "readings": history.readings(str(dev_eui), float(since_s) if since_s is not None else None),
    }


async def recent_frames(agent: Agent) -> dict[str, Any]:
    """`edgegw diag`: the radio's ring of raw frames (PHYPayload hex and RF metadata)."""
    return {
        "frames": [
            {"received_at_s": f.received_at_s, "phy_hex": f.phy_payload_hex, "rx": dataclasses.asdict(f.rx)}
            for f in agent.radio.recent
        ]
    }


async def rules(agent: Agent) -> dict[str, Any]:
    """`edgegw rules`: loaded rules, live state (episodes, disabled rules), next lighting change."""
    if agent.rules is None:
        return {"enabled": False, "path": agent.config.rules.path}
    return {"enabled": True, "path": agent.config.rules.path, **agent.rules.status(time.time())}


async def flush(agent: Agent) -> dict[str, Any]:
    """`edgegw buffer flush`: commit what is pending and drain the backlog now.

    "Now" means: the pending group commit happens at once, the forwarder's wait after a
    failed publish is cut short, and the drain-rate limit is lifted until the backlog is
    empty (``Forwarder.flush``). It cannot reach a broker that is down: then the backlog
    drains without the limit as soon as the connection is back.
    """
    agent.committer.notify(0, urgent=True)
    agent.forwarder.flush()
    stats = await agent.outbox.stats()
    return {
        "depth": stats.depth,
        "depth_by_class": stats.depth_by_class,
        "connected": agent.uplink.connected,
        "drain_rate_records_s": agent.config.mqtt.drain_rate_records_s,
    }


REQUEUE_WAIT_S = 3.0
"""How long ``requeue_quarantined`` waits for its group commit (under the CLI's 5 s timeout)."""


async def requeue_quarantined(agent: Agent) -> dict[str, Any]:
    """`edgegw buffer quarantine --requeue`: every quarantined record back into the outbox.

    The move is the next group commit's (``Outbox.requeue_quarantined``, asked at once); the rows
    are then leased like new ones. ``done`` is False when that commit has not happened within
    ``REQUEUE_WAIT_S`` (a full disk): the request stays and a later group carries it out.
    """
    done, moved = True, 0
    try:
        moved = await asyncio.wait_for(agent.outbox.requeue_quarantined(), REQUEUE_WAIT_S)
    except TimeoutError:
        done = False
    return {
        "done": done,
        "requeued": moved,
        "quarantined": agent.outbox.quarantined_total,
        "connected": agent.uplink.connected,
    }
