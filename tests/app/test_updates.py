"""Agent updates in process (``gateway.app.updates``): chunks reassembled in any order, before or
after their announcement, bounded; a package that is not the one announced refused and reported;
a good one installed, activated on trial and followed by a restart request; the trial's health
check confirming or rolling back. The files are real (``gateway.fleet.updates.Updates`` on a temp
dir); the package is a real zip with a ``gateway/__init__.py`` of the announced version.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from gateway import __version__
from gateway.app.updates import MAX_PACKAGES_HELD, AgentUpdater, UpdateLinks
from gateway.fleet.updates import Updates

NOW_S = 1_764_000_000.0
ROOT = "edgegw/gw-1"


def package(version: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("gateway/__init__.py", f'__version__ = "{version}"\n')
        zf.writestr("gateway/app/__init__.py", "")
    return buf.getvalue()


class Links:
    """What the updater sees of the agent, recorded."""

    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []
        self.restarts = 0
        self.connected = True
        self.accepted = 0
        self.heard_s: list[float] = [NOW_S - 10]

    def links(self, check_s: float = 1.0) -> UpdateLinks:
        async def publish(data: bytes) -> None:
            self.published.append(json.loads(data))

        def restart() -> None:
            self.restarts += 1

        return UpdateLinks(
            chunks_root=ROOT,
            publish_state=publish,
            connected=lambda: self.connected,
            accepted_frames=lambda: self.accepted,
            last_heard_s=lambda: self.heard_s,
            request_restart=restart,
            check_s=check_s,
        )


@pytest.fixture
def links() -> Links:
    return Links()


def updater(tmp_path: Path, links: Links, check_s: float = 1.0) -> AgentUpdater:
    return AgentUpdater(Updates(tmp_path), links.links(check_s), clock=lambda: NOW_S)


def chunks(data: bytes, n: int) -> list[bytes]:
    size = -(-len(data) // n)
    return [data[i * size : (i + 1) * size] for i in range(n)]


def announce(up: AgentUpdater, version: str, data: bytes) -> dict[str, Any]:
    sha = hashlib.sha256(data).hexdigest()
    return up.announce({"version": version, "sha256": sha.upper(), "size_bytes": len(data)})


async def test_chunks_out_of_order_after_the_announcement_install_and_restart(
    tmp_path: Path, links: Links
) -> None:
    up = updater(tmp_path, links)
    data = package("9.0.0")
    sha = hashlib.sha256(data).hexdigest()
    answer = announce(up, "9.0.0", data)
    assert answer["send_chunks_to"] == f"{ROOT}/update/{sha}/<index>/<count>"
    parts = chunks(data, 5)
    for i in (3, 0, 4, 1):
        up.on_chunk(f"{ROOT}/update/{sha}/{i}/5", parts[i])
    assert links.restarts == 0  # one chunk still missing
    up.on_chunk(f"{ROOT}/update/{sha}/2/5", parts[2])
    assert links.restarts == 1 and up.counters["installed"] == 1
    trial = up.updates.trial()
    assert trial is not None and trial.version == "9.0.0" and trial.frames_flowing  # heard 10 s ago
    assert (up.updates.versions / "9.0.0" / "gateway" / "__init__.py").is_file()


async def test_chunks_that_overtake_their_announcement_are_kept_and_completed_by_it(
    tmp_path: Path, links: Links
) -> None:
    up = updater(tmp_path, links)
    data = package("9.0.1")
    sha = hashlib.sha256(data).hexdigest()
    for i, part in enumerate(chunks(data, 3)):
        up.on_chunk(f"{ROOT}/update/{sha}/{i}/3", part)
    assert up.counters["chunks_unannounced"] == 3 and links.restarts == 0
    announce(up, "9.0.1", data)
    await asyncio.sleep(0)  # completion runs after the command's answer
    assert links.restarts == 1 and up.counters["installed"] == 1


async def test_a_package_that_is_not_the_one_announced_is_refused_and_reported(
    tmp_path: Path, links: Links
) -> None:
    up = updater(tmp_path, links)
    data = package("9.0.2")
    sha = hashlib.sha256(data).hexdigest()
    announce(up, "9.0.2", data)
    tampered = bytearray(data)
    tampered[-1] ^= 0xFF
    for i, part in enumerate(chunks(bytes(tampered), 2)):
        up.on_chunk(f"{ROOT}/update/{sha}/{i}/2", part)
    await asyncio.sleep(0.05)  # the report is published by a task
    assert links.restarts == 0 and up.counters["refused"] == 1 and up.updates.trial() is None
    (state,) = links.published
    assert state["status"] == "refused" and state["version"] == "9.0.2" and state["running"] == __version__


async def test_malformed_and_excess_chunks_are_refused_and_memory_stays_bounded(
    tmp_path: Path, links: Links
) -> None:
    up = updater(tmp_path, links)
    for topic in (f"{ROOT}/update/x/1/1", f"{ROOT}/update/x/a/2", f"{ROOT}/update/x/0/99999"):
        up.on_chunk(topic, b"x")
    assert up.counters["chunks_refused"] == 3
    for n in range(MAX_PACKAGES_HELD + 3):  # chunks of unannounced packages: a few kept, then refused
        up.on_chunk(f"{ROOT}/update/{n:064x}/0/2", b"x" * 10)
    assert up.counters["chunks_unannounced"] == MAX_PACKAGES_HELD
    assert up.counters["chunks_refused"] == 3 + 3


def test_the_running_version_cannot_be_announced(tmp_path: Path, links: Links) -> None:
    with pytest.raises(ValueError, match="is the one running"):
        updater(tmp_path, links).announce({"version": __version__, "sha256": "0" * 64, "size_bytes": 1})


async def _trial_of_this_version(tmp_path: Path, frames_flowing: bool) -> Updates:
    updates = Updates(tmp_path)
    updates.install(__version__, package(__version__), hashlib.sha256(package(__version__)).hexdigest())
    updates.activate(__version__, frames_flowing=frames_flowing)
    return updates


async def test_a_trial_with_the_broker_and_new_frames_is_confirmed_and_reported(
    tmp_path: Path, links: Links
) -> None:
    await _trial_of_this_version(tmp_path, frames_flowing=True)
    up = updater(tmp_path, links, check_s=2.0)
    task = asyncio.create_task(up.run())
    await asyncio.sleep(0.3)
    assert up.counters.get("confirmed") is None  # no frame accepted yet
    links.accepted = 1
    await asyncio.sleep(0.5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert up.counters["confirmed"] == 1 and links.restarts == 0 and up.updates.trial() is None
    assert links.published[-1]["status"] == "applied"


async def test_a_trial_without_the_broker_rolls_back_and_restarts(tmp_path: Path, links: Links) -> None:
    await _trial_of_this_version(tmp_path, frames_flowing=False)
    links.connected = False
    up = updater(tmp_path, links, check_s=0.5)
    task = asyncio.create_task(up.run())
    await asyncio.sleep(0.9)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert up.counters["rolled_back"] == 1 and links.restarts == 1
    assert up.updates.unreported() is not None  # reported at the next connection
    assert "no broker connection within 0.5 s" in json.dumps(up.updates.unreported())
