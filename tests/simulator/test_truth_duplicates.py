"""The truth's duplicate rule: a record delivered again with the same id and the same body is what
docs/outbox.md allows after a kill -9 (counted, not a failure); the same id with a different
body is a broken stable id (a failure)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from simulator.truth import Expected, compare

DEV = "70b3d5e75f000001"


def _record(rid: str, fcnt: int) -> dict[str, Any]:
    return {"id": rid, "dev_eui": DEV, "fcnt": fcnt, "data": {"level": fcnt}}


def _expected(n: int) -> Expected:
    return Expected(epoch_s=0.0, devices={DEV: "river-1"}, counts=Counter({DEV: n}))


def test_a_redelivery_with_the_same_body_is_counted_and_the_run_passes() -> None:
    records = [_record("a", 1), _record("b", 2), _record("a", 1)]
    check = compare(_expected(2), records, [])
    assert check.duplicates == 1 and check.conflicting_ids == []
    assert check.frames_received == 2 and check.ok


def test_the_same_id_with_a_different_body_fails_the_run() -> None:
    records = [_record("a", 1), _record("b", 2), _record("a", 3)]
    check = compare(_expected(2), records, [])
    assert check.conflicting_ids == ["a"] and check.duplicates == 0
    assert not check.ok and check.as_json()["conflicting_ids"] == ["a"]


def test_a_lost_record_still_fails_whatever_the_duplicates() -> None:
    records = [_record("a", 1), _record("a", 1)]
    check = compare(_expected(2), records, [])
    assert not check.ok and check.count_mismatches[0]["received"] == 1
