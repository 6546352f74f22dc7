"""`fleet watch` for a person: one line per gateway report (gateway.fleet.reports), never a crash."""

from __future__ import annotations

from gateway.fleet.reports import MAX_RAW_CHARS, describe


def test_each_report_in_one_line() -> None:
    ok = {"v": 1, "cmd": "flush", "seq": 7, "ok": True, "reason": None, "result": {"flushing": True}}
    assert describe("cmd-result", ok) == 'flush (seq 7): ok {"flushing":true}'
    refused = {
        "v": 1,
        "cmd": "flush",
        "seq": 7,
        "ok": False,
        "reason": "replayed",
        "result": {"error": "seq 7"},
    }
    assert describe("cmd-result", refused) == "flush (seq 7): REFUSED replayed: seq 7"
    state = {
        "v": 1,
        "status": "rejected",
        "version": "c2",
        "reason": "bad key",
        "code": "invalid",
        "in_effect": None,
    }
    assert describe("config-state", state) == (
        "configuration c2: rejected (invalid: bad key); in effect: the local file alone"
    )
    update = {"v": 1, "running": "9.0.1", "status": "rolled_back", "version": "9.0.2", "previous": "9.0.1",
              "reason": "no broker connection within 300 s"}  # fmt: skip
    assert describe("update-state", update) == (
        "agent update 9.0.2: rolled_back (running 9.0.1, previous 9.0.1): no broker connection within 300 s"
    )
    assert describe("state", {"v": 1, "state": "online", "version": "0.1.0"}) == "online (agent 0.1.0)"
    health = {
        "buffer": {"depth": 12, "oldest_age_s": 30.0, "evicted": {"evicted.event": 2}},
        "uplink": {"state": "connected", "lag_s": 30.0},
        "agent": {"config_version": None},
        "fleet": {
            "accepted": 3,
            "rejected_bad_signature": 4,
            "rejected_replayed": 1,
            "config": {},
            "update": {},
        },
        "host": {"cpu_pct": 3.7, "disk": {"used_pct": 25.1}},
    }
    assert describe("health", health) == (
        "uplink connected, 12 waiting, lag 30 s, 2 EVICTED, config local, 5 commands refused, "
        "cpu 4%, disk 25% used"
    )


def test_an_unknown_shape_is_shown_raw_and_cut() -> None:
    assert describe("health", {"v": 2}) == '{"v":2}'
    assert describe("state", "offline") == "offline"
    long = describe("cmd-result", "x" * 500)
    assert len(long) == MAX_RAW_CHARS and long.endswith("…")
