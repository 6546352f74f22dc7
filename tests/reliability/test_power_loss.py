"""Power loss, approximated: a writer process (outbox + group commit, as in the agent) is killed
with SIGKILL at random moments between and during fsyncs, ten times; on every reopen the file
passes ``PRAGMA integrity_check`` and holds every record the writer had reported committed.

A real power cut also loses what the kernel had not written; SQLite's WAL with
``synchronous=FULL`` makes a commit durable when COMMIT returns (sqlite.org/wal.html §"Durability"),
which is what "reported committed" means here. Without root there is no way to drop the page
cache of one file, so this checks the process-crash half; docs/outbox.md says so.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gateway import db
from tests.reliability.conftest import integrity

pytestmark = pytest.mark.timeout(60)
REPO_ROOT = Path(__file__).resolve().parents[2]

WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from gateway.db.commit import Database, GroupCommitter
    from gateway.messages import Record
    from gateway.outbox import Outbox

    class Reporting(Outbox):
        def committed(self, taken):
            super().committed(taken)
            # Printed only after COMMIT returned: these ids are accepted.
            sys.stdout.write("".join("C " + r.record_id + "\\n" for r, _c in taken.records))
            sys.stdout.flush()

    async def main(path, start):
        database = Database(Path(path))
        outbox = Reporting(database)
        committer = GroupCommitter(database, [outbox], interval_s=0.005, max_pending=200)
        outbox.committer_notify = committer.notify
        task = asyncio.create_task(committer.run())
        i = start
        leased_total = 0
        while True:
            for _ in range(50):
                body = {"id": f"r-{i:08d}", "kind": "reading", "data": {"v": i, "pad": "x" * 150}}
                outbox.put(Record(record_id=body["id"], kind="reading", priority=50, body=body))
                i += 1
            await asyncio.sleep(0)
            leased = (await outbox.lease(40))[::2]
            # Announced before the delete: only these may be missing from the file later.
            sys.stdout.write("".join("D " + x.record_id + "\\n" for x in leased))
            sys.stdout.flush()
            await outbox.ack([x.seq for x in leased])  # deletes interleave with inserts

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


def test_killed_writer_leaves_a_sound_file_with_every_committed_record(tmp_path: Path) -> None:
    db_file = db.db_path(tmp_path)
    rng = random.Random(3)
    committed: set[str] = set()
    deleting: set[str] = set()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    for round_ in range(10):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db_file), str(round_ * 1_000_000)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()  # wait until it has committed once
        assert first, "the writer did not start"
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        # Not communicate(timeout=...): it reads the raw pipe and would skip what readline() buffered.
        rest = proc.stdout.read()
        proc.wait(10)
        for line in [first, *rest.splitlines()]:
            tag, _, record_id = line.strip().partition(" ")
            (committed if tag == "C" else deleting).add(record_id)

        assert integrity(db_file) == "ok", f"round {round_}: integrity check failed"
        conn = sqlite3.connect(db_file)
        try:
            in_file = {r[0] for r in conn.execute("SELECT record_id FROM outbox")}
        finally:
            conn.close()
        lost = committed - in_file - deleting
        assert not lost, f"round {round_}: {len(lost)} committed records missing, e.g. {sorted(lost)[:3]}"
        # Rows in the file that were never reported are allowed: the kill can fall between a
        # COMMIT returning and its "C" line being written.
    assert len(committed) > 1000, "too little was written to mean anything"
