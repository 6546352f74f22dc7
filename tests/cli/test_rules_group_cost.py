"""`edgegw rules test`'s multicast cost for a registered group with no member, or with members set
back to class A (issue 20 review): a group frame reaches its class C members only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import run_with_config
from tests.cli.test_group_cmd import EUIS, RULES, lamps


def _costs(capsys: pytest.CaptureFixture[str], cfg: Path, tmp_path: Path) -> list[dict[str, Any]]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    argv = ["rules", "test", "--rules", str(rules), "--start", "2024-01-15T20:00:00"]
    code, out, err = run_with_config(capsys, cfg, *argv, "--until", "2024-01-15T22:30:00", "--json")
    assert code == 0, err
    return [e["cost"] for e in json.loads(out)["events"] if e.get("group")]


def test_a_registered_group_without_members_says_so_and_how_to_add_them(
    capsys: pytest.CaptureFixture[str], cfg: Path, tmp_path: Path
) -> None:
    lamps(capsys, cfg)
    assert run_with_config(capsys, cfg, "group", "add", "district-north")[0] == 0
    texts = [c["text"] for c in _costs(capsys, cfg, tmp_path)]
    assert texts == ["group district-north: no member (edgegw group add-member)"] * 2


def test_only_class_c_members_count_in_the_cost(
    capsys: pytest.CaptureFixture[str], cfg: Path, tmp_path: Path
) -> None:
    lamps(capsys, cfg)
    run_with_config(capsys, cfg, "group", "add", "district-north")
    assert run_with_config(capsys, cfg, "group", "add-member", "district-north", *EUIS)[0] == 0
    assert run_with_config(capsys, cfg, "device", "set", EUIS[0], "--class", "A")[0] == 0
    assert [c["members"] for c in _costs(capsys, cfg, tmp_path)] == [2, 2]
    for eui in EUIS[1:]:
        assert run_with_config(capsys, cfg, "device", "set", eui, "--class", "A")[0] == 0
    texts = [c["text"] for c in _costs(capsys, cfg, tmp_path)]
    assert texts == ["group district-north: no class C member (3 set back to class A)"] * 2
