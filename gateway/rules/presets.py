"""Lighting presets: the French-practice night schedules a lighting group can name.

Owns the table ``PRESETS``: a name (``preset: abaissement-22h-05h`` in a rules file) → its steps,
written in the rules-file syntax and validated by ``loader.py`` like steps a user writes
(research/domain.md §5.2, §5.6).

It does not compute when a step happens (``schedules.py``) nor read rules files (``loader.py``).
"""

from __future__ import annotations

from typing import Final

# Each preset is a list of steps in the rules-file syntax (validated like user steps).
PRESETS: Final[dict[str, list[dict[str, object]]]] = {
    # "Abaissement": -50 % from 22:00, full again from 05:00 (Lille practice; domain.md §5.2, §5.6).
    "abaissement-22h-05h": [
        {"at": "sunset", "level_pct": 100},
        {"at": "22:00", "level_pct": 50},
        {"at": "05:00", "level_pct": 100},
        {"at": "sunrise", "level_pct": 0},
    ],
    # "Extinction en cœur de nuit" 23:00-05:00 (Pasly, Metzeresche; domain.md §5.2).
    "extinction-23h-05h": [
        {"at": "sunset", "level_pct": 100},
        {"at": "23:00", "level_pct": 0},
        {"at": "05:00", "level_pct": 100},
        {"at": "sunrise", "level_pct": 0},
    ],
    # Quimper: off 00:00-06:00 on nights starting Sunday to Thursday, 01:00-06:00 Friday and Saturday.
    "extinction-quimper": [
        {"at": "sunset", "level_pct": 100},
        {"at": "00:00", "level_pct": 0, "days": ["sun", "mon", "tue", "wed", "thu"]},
        {"at": "01:00", "level_pct": 0, "days": ["fri", "sat"]},
        {"at": "06:00", "level_pct": 100},
        {"at": "sunrise", "level_pct": 0},
    ],
    # Limoges LED renovation profile: 3 h at 100 %, then 40 %, the last hour before sunrise at 100 %.
    "limoges-3h-40pct": [
        {"at": "sunset", "level_pct": 100},
        {"at": "sunset+3h", "level_pct": 40},
        {"at": "sunrise-1h", "level_pct": 100},
        {"at": "sunrise", "level_pct": 0},
    ],
}
