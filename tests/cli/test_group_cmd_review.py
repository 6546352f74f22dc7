"""Review of `edgegw group` (issue 20): what a hostile tester found misleading, in process on a real
SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.helpers import abp_argv, run_with_config
from tests.cli.test_group_cmd import EUIS, lamps


def test_add_member_with_one_refused_device_adds_none(capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    # Before: the devices before the refused one were added (each in its own transaction) while the
    # command failed with exit 2 and named only the refused one: an installer who fixed the list and
    # ran it again could not tell what the first run had changed. Now it is all or nothing.
    lamps(capsys, cfg)
    assert run_with_config(capsys, cfg, "device", "add", *abp_argv("0004a30b00f00009", "26011009"))[0] == 0
    assert run_with_config(capsys, cfg, "group", "add", "district-north")[0] == 0
    code, _, err = run_with_config(
        capsys, cfg, "group", "add-member", "district-north", EUIS[0], EUIS[1], "0004a30b00f00009"
    )
    assert code == 2 and "class A" in err and "no device added" in err
    code, out, _ = run_with_config(capsys, cfg, "group", "show", "district-north", "--json")
    assert json.loads(out)["members"] == []


def test_remove_member_with_one_non_member_removes_none(
    capsys: pytest.CaptureFixture[str], cfg: Path
) -> None:
    lamps(capsys, cfg)
    assert run_with_config(capsys, cfg, "group", "add", "district-north")[0] == 0
    assert run_with_config(capsys, cfg, "group", "add-member", "district-north", *EUIS[:2])[0] == 0
    code, _, err = run_with_config(capsys, cfg, "group", "remove-member", "district-north", EUIS[0], EUIS[2])
    assert code == 2 and "not a member" in err and "no device removed" in err
    code, out, _ = run_with_config(capsys, cfg, "group", "show", "district-north", "--json")
    assert json.loads(out)["members"] == EUIS[:2]


def test_group_show_names_a_member_set_back_to_class_a(capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    lamps(capsys, cfg)
    assert run_with_config(capsys, cfg, "group", "add", "district-north")[0] == 0
    assert run_with_config(capsys, cfg, "group", "add-member", "district-north", *EUIS)[0] == 0
    code, _, err = run_with_config(capsys, cfg, "device", "set", EUIS[1], "--class", "A")
    assert code == 0, err
    code, out, _ = run_with_config(capsys, cfg, "group", "show", "district-north")
    assert code == 0
    marked = [line for line in out.splitlines() if "does not receive multicast" in line]
    assert len(marked) == 1 and EUIS[1] in marked[0]
    code, out, _ = run_with_config(capsys, cfg, "group", "show", "district-north", "--json")
    assert json.loads(out)["not_class_c"] == [EUIS[1]]


def test_a_group_off_the_rx2_channel_says_its_members_stop_hearing_unicast(
    capsys: pytest.CaptureFixture[str], cfg: Path
) -> None:
    # The lamp firmware has one receiver: with a group on another channel than RX2 it listens on
    # the group's only (firmware/lorawan/device.py class_c_channel), and the agent's class C unicast
    # downlinks, sent on RX2, no longer reach its members. `group add --dr 5` said nothing of it.
    code, out, err = run_with_config(capsys, cfg, "group", "add", "district-north", "--dr", "5")
    assert code == 0, err
    assert "unicast" in err and "869.525 MHz DR0" in err
    code, out, err = run_with_config(capsys, cfg, "group", "add", "district-south")
    assert code == 0 and "unicast" not in err + out
