"""`edgegw demo` (make demo): the demo scenario through a local mosquitto and the real agent, the
broker stopped and the agent killed on the way, checked against the ground truth at the end.
The demo starts its own mosquitto (simulator.broker), as a newcomer's machine would."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.demo import run_demo


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_the_demo_plays_its_day_and_matches_the_truth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_demo(duration_s=8, workdir=str(tmp_path / "demo"))
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert "RESULT: what reached the broker matches the ground truth" in out
    # The faults of the scenario happened and were announced.
    assert "fault | broker_outage: mosquitto stopped" in out and "fault | gateway_kill: kill -9" in out
    assert "alert | river-flood raised" in out
    assert "check: OK" in out and '"fcnt"' in out  # the summary and one record as the platform sees it
