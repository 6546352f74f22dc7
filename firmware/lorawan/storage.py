"""Where a node keeps what must survive a reset: next DevNonce, session keys, frame counters.

Owns two stores with one interface, ``load() -> dict`` and ``save(dict)``: ``FileStorage``
(a JSON file on the board's flash, replaced atomically by write-then-rename so a reset during
a write leaves the old state) and ``MemoryStorage`` (tests; RTC memory on boards that have it
could implement the same two methods). It does not decide *when* to write: ``device`` writes
the frame counter only every ``fcnt_save_every`` uplinks to spare the flash.
"""

import json

try:
    import os
except ImportError:  # pragma: no cover - every MicroPython port has os
    os = None  # type: ignore[assignment]


class MemoryStorage:
    """State in RAM: survives nothing; counts its writes so tests can check flash wear."""

    def __init__(self, state=None):
        self._state = json.loads(json.dumps(state or {}))
        self.writes = 0

    def load(self):
        return json.loads(json.dumps(self._state))

    def save(self, state):
        self._state = json.loads(json.dumps(state))
        self.writes += 1


class FileStorage:
    """State in one JSON file; a missing or unreadable file is an empty state."""

    def __init__(self, path):
        self._path = path
        self.writes = 0

    def load(self):
        try:
            with open(self._path) as f:
                state = json.load(f)
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def save(self, state):
        tmp = self._path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        try:
            os.rename(tmp, self._path)
        except OSError:
            # FAT (some RP2040 builds) refuses to rename over an existing file; littlefs does not.
            os.remove(self._path)
            os.rename(tmp, self._path)
        self.writes += 1
