"""What systemd does for the agent in the fleet tests: start it again when it exits 75 (a restart
it asked for: a pushed configuration, an agent update, a rollback), a bounded number of times."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.fleet.remote_config import EXIT_RESTART
from tests.e2e.harness import AgentProcess

MAX_RESTARTS = 4


class Supervisor:
    """What systemd does with ``Restart=always``: start the agent again when it exits 75, a few times."""

    def __init__(self, config_file: Path) -> None:
        self.config_file = config_file
        self.agent = AgentProcess(config_file)
        self.pids = [self.agent.proc.pid]
        self.exit_codes: list[int] = []
        self.lines: list[str] = []

    def poll(self) -> None:
        code = self.agent.proc.poll()
        if code is None:
            return
        self.agent._reader.join(5)
        self.lines += self.agent.lines
        self.exit_codes.append(code)
        if code != EXIT_RESTART or len(self.exit_codes) > MAX_RESTARTS:
            pytest.fail(f"agent exited {code} (exits {self.exit_codes}):\n" + "\n".join(self.lines[-30:]))
        self.agent = AgentProcess(self.config_file)
        self.pids.append(self.agent.proc.pid)

    def wait_until(self, predicate: Callable[[], object], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            self.poll()
            if time.monotonic() > deadline:
                pytest.fail(
                    f"timed out after {timeout_s} s waiting for {what}:\n" + "\n".join(self.log()[-30:])
                )
            time.sleep(0.05)

    def log(self) -> list[str]:
        return self.lines + self.agent.lines

    def stop(self) -> dict[str, Any]:
        """SIGTERM, like ``systemctl stop``; returns the final counters of the last process."""
        assert self.agent.stop() == 0
        return self.agent.final_counters()
