"""gateway.history: the bounded per-device ring of readings behind `edgegw device show`."""

from __future__ import annotations

from typing import Any

from gateway.history import ReadingHistory


def event(dev: str, at_s: float, fcnt: int, verdict: str = "accepted", **extra: Any) -> dict[str, Any]:
    return {
        "dev_eui": dev, "at_s": at_s, "verdict": verdict, "fcnt": fcnt, "fport": 85, "rssi_dbm": -80.0,
        "snr_db": 5.0, "sf": 7, "data": {"distance": fcnt}, **extra,
    }  # fmt: skip


def test_keeps_the_last_readings_per_device_oldest_first() -> None:
    history = ReadingHistory(per_device=3)
    for n in range(5):
        history(event("aa" * 8, 1000.0 + n, n))
    history(event("bb" * 8, 1000.0, 9))
    kept = history.readings("AA" * 8)
    assert [r["fcnt"] for r in kept] == [2, 3, 4]
    assert kept[-1]["data"] == {"distance": 4} and kept[-1]["rssi_dbm"] == -80.0
    assert [r["fcnt"] for r in history.readings("aa" * 8, since_s=1003.0)] == [3, 4]
    assert [r["fcnt"] for r in history.readings("bb" * 8)] == [9]


def test_ignores_rejected_frames_joins_and_unknown_devices() -> None:
    history = ReadingHistory()
    history(event("aa" * 8, 1.0, 1, verdict="rejected"))
    history(event("aa" * 8, 1.0, 1, verdict="joined"))
    history({"verdict": "rejected", "at_s": 1.0, "reason": "unknown_device"})
    assert history.readings("aa" * 8) == []


def test_the_number_of_devices_is_bounded() -> None:
    history = ReadingHistory(per_device=2, max_devices=2)
    for n in range(4):
        history(event(f"{n:016x}", 1.0, n))
    assert history.readings(f"{0:016x}") and history.readings(f"{1:016x}")
    assert history.readings(f"{3:016x}") == []
