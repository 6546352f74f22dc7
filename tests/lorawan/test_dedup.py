"""De-duplication: one uplink heard by several forwarders within the window is processed once."""

from __future__ import annotations

import pytest

from gateway.lorawan.dedup import Deduplicator
from gateway.messages import RadioFrame, RxInfo


def heard(payload: bytes, rssi_dbm: float, snr_db: float, gateway: str) -> RadioFrame:
    return RadioFrame(
        payload, RxInfo(868_100_000, rssi_dbm, snr_db, 7, 125_000, "4/5", True, "t", gateway), 0.0, 0.0
    )


def test_keeps_the_best_copy_and_counts_gateways() -> None:
    d = Deduplicator(0.2)
    d.add(heard(b"warm-up", -100, 0, "g2"), 9.0)  # a second forwarder was heard: the window applies
    d.due(9.9)
    a, b, c = heard(b"x", -110, 1, "g1"), heard(b"x", -90, -2, "g2"), heard(b"x", -90, 5, "g3")
    assert d.add(a, 10.0) == [] and d.add(b, 10.05) == [] and d.add(c, 10.1) == []
    assert d.add(heard(b"y", -100, 0, "g1"), 10.15) == []
    assert d.next_due_s() == pytest.approx(10.2)
    assert d.due(10.19) == []
    (first,) = d.due(10.2)
    assert first.frame is c and first.copies == 3 and first.gateways == 3  # RSSI tie broken by SNR
    (second,) = d.due(11.0)
    assert second.frame.phy_payload == b"y" and second.copies == 1
    assert d.next_due_s() is None and len(d) == 0
    assert d.counters["duplicates"] == 2 and d.counters["frames"] == 3


def test_a_copy_after_the_window_is_a_new_frame() -> None:
    d = Deduplicator(0.2)
    d.add(heard(b"warm-up", -100, 0, "g2"), -1.0)
    d.due(-0.5)
    d.add(heard(b"x", -100, 0, "g1"), 0.0)
    assert len(d.due(0.3)) == 1
    d.add(heard(b"x", -100, 0, "g2"), 0.31)
    assert len(d.due(1.0)) == 1


def test_zero_window_releases_at_once_and_memory_is_bounded() -> None:
    assert len(Deduplicator(0).add(heard(b"x", -100, 0, "g"), 0.0)) == 1
    d = Deduplicator(1.0, max_open=2)
    d.add(heard(b"warm-up", -100, 0, "other"), -5.0)
    d.due(-3.0)
    assert d.add(heard(b"1", -100, 0, "g"), 0.0) == [] and d.add(heard(b"2", -100, 0, "g"), 0.0) == []
    (early,) = d.add(heard(b"3", -100, 0, "g"), 0.0)
    assert early.frame.phy_payload == b"1" and len(d) == 2 and d.counters["released_early"] == 1


def test_with_a_single_forwarder_every_frame_is_released_at_once() -> None:
    # One concentrator never repeats an uplink: waiting the window would only delay alerts.
    d = Deduplicator(0.2)
    (first,) = d.add(heard(b"x", -100, 0, "g1"), 0.0)
    assert first.frame.phy_payload == b"x" and len(d) == 0
    (second,) = d.add(heard(b"y", -100, 0, "g1"), 0.01)
    assert second.copies == 1 and d.counters["released_single_source"] == 2
    # A second forwarder appears: from then on copies are grouped for the window.
    assert d.add(heard(b"z", -100, 0, "g2"), 1.0) == []
    assert d.add(heard(b"z", -90, 0, "g1"), 1.05) == []
    (grouped,) = d.due(1.2)
    assert grouped.copies == 2 and grouped.gateways == 2 and grouped.frame.rx.gateway_eui == "g1"
    # ...until the other forwarder has been silent for the memory period (an hour by default).
    (alone,) = d.add(heard(b"w", -100, 0, "g1"), 1.2 + 3601)
    assert alone.frame.phy_payload == b"w"


def test_a_flood_of_gateway_euis_stays_bounded_and_cheap_per_frame() -> None:
    # The review's case: 20,000 frames from as many EUIs took 29 s (each frame scanned every EUI
    # heard in the last hour). Bounded to MAX_SOURCES, oldest first: a constant cost per frame.
    import time

    from gateway.lorawan.dedup import MAX_SOURCES

    d = Deduplicator(0.2)
    started = time.perf_counter()
    for i in range(20_000):
        d.add(heard(i.to_bytes(4, "big"), -100, 0, f"{i:016x}"), 1.0 + i * 1e-4)
    elapsed_s = time.perf_counter() - started
    assert len(d._sources) <= MAX_SOURCES
    assert elapsed_s < 2.0, f"{elapsed_s:.1f} s for 20,000 frames"
