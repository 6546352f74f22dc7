"""RateLimitedLog: one line per reason per interval, counted summaries, bounded memory."""

from __future__ import annotations

import logging

import pytest

from gateway.loglimit import OTHER_REASON, RateLimitedLog


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def logger() -> logging.Logger:
    lg = logging.getLogger("tests.loglimit")
    lg.setLevel(logging.DEBUG)
    return lg


def _lines(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tests.loglimit" and r.levelno >= level]


def test_first_occurrence_logged_rest_counted(
    caplog: pytest.LogCaptureFixture, clock: FakeClock, logger: logging.Logger
) -> None:
    rl = RateLimitedLog(logger, interval_s=60.0, clock=clock)
    with caplog.at_level(logging.DEBUG, logger="tests.loglimit"):
        assert rl.warn("bad_sig", "refused %s", "cmd-1") is True
        for i in range(999):
            clock.now_s += 0.01
            assert rl.warn("bad_sig", "refused %s", f"cmd-{i}") is False
    assert _lines(caplog) == ["refused cmd-1"]
    # suppressed occurrences still go to DEBUG (the quiet logger)
    assert len(_lines(caplog, logging.DEBUG)) == 1000
    assert rl.total("bad_sig") == 1000


def test_summary_after_interval(
    caplog: pytest.LogCaptureFixture, clock: FakeClock, logger: logging.Logger
) -> None:
    rl = RateLimitedLog(logger, interval_s=60.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="tests.loglimit"):
        rl.warn("bad_sig", "refused a")
        for _ in range(41):
            rl.warn("bad_sig", "refused b")
        clock.now_s += 60.0
        assert rl.warn("bad_sig", "refused c") is True
    assert _lines(caplog) == ["refused a", "... and 41 more bad_sig in the last 60 s", "refused c"]


def test_no_summary_when_nothing_suppressed(
    caplog: pytest.LogCaptureFixture, clock: FakeClock, logger: logging.Logger
) -> None:
    rl = RateLimitedLog(logger, interval_s=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="tests.loglimit"):
        rl.warn("r", "one")
        clock.now_s += 11
        rl.warn("r", "two")
    assert _lines(caplog) == ["one", "two"]


def test_reasons_are_independent(
    caplog: pytest.LogCaptureFixture, clock: FakeClock, logger: logging.Logger
) -> None:
    rl = RateLimitedLog(logger, clock=clock)
    with caplog.at_level(logging.WARNING, logger="tests.loglimit"):
        for _ in range(5):
            rl.warn("a", "A")
            rl.error("b", "B")
    assert _lines(caplog) == ["A", "B"]
    assert [r.levelno for r in caplog.records if r.name == "tests.loglimit"] == [
        logging.WARNING,
        logging.ERROR,
    ]


def test_flush_writes_pending_summaries_once(
    caplog: pytest.LogCaptureFixture, clock: FakeClock, logger: logging.Logger
) -> None:
    rl = RateLimitedLog(logger, clock=clock)
    with caplog.at_level(logging.WARNING, logger="tests.loglimit"):
        for _ in range(3):
            rl.warn("a", "A")
        rl.warn("b", "B")
        clock.now_s += 5
        assert rl.flush() == 1
        assert rl.flush() == 0
        # the interval was not restarted by flush: still suppressed
        assert rl.warn("a", "A") is False
    assert _lines(caplog) == ["A", "B", "... and 2 more a in the last 5 s"]


def test_distinct_reasons_capped(
    clock: FakeClock, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    rl = RateLimitedLog(logger, clock=clock, max_reasons=4)
    with caplog.at_level(logging.WARNING, logger="tests.loglimit"):
        for i in range(10_000):
            rl.warn(f"reason-{i}", "refused %d", i)
    totals = rl.totals()
    assert len(totals) == 5  # four real reasons and "other"
    assert totals[OTHER_REASON] == 10_000 - 4
    # the overflow is logged once per interval, not once per new reason
    assert len(_lines(caplog)) == 5


def test_rejects_bad_parameters(logger: logging.Logger) -> None:
    with pytest.raises(ValueError):
        RateLimitedLog(logger, interval_s=0)
    with pytest.raises(ValueError):
        RateLimitedLog(logger, max_reasons=0)
