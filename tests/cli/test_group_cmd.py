"""`edgegw group ...` and the multicast cost of `edgegw rules test`, in process on a real SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import views_cmd
from gateway.lorawan.multicast import McGroup, MulticastScheduler
from gateway.messages import AesKey, DevAddr
from gateway.pipeline import downlink_event
from tests.cli.helpers import abp_argv, run_with_config

LAMP = "nasys/ul20xx"
EUIS = [f"0004a30b00f0000{n}" for n in range(1, 4)]


def lamps(capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    for n, eui in enumerate(EUIS, start=1):
        code, _, err = run_with_config(
            capsys, cfg, "device", "add", *abp_argv(eui, f"2601100{n}", LAMP), "--class", "C"
        )
        assert code == 0, err


def test_add_prints_the_keys_once_then_members_list_and_show(
    capsys: pytest.CaptureFixture[str], cfg: Path
) -> None:
    lamps(capsys, cfg)
    code, out, _ = run_with_config(capsys, cfg, "group", "add", "district-north", "--mc-addr", "01ab23cd")
    assert code == 0
    assert "McAddr 01ab23cd" in out and "869.525 MHz (RX2)" in out
    nwk = next(line.split()[1] for line in out.splitlines() if line.startswith("McNwkSKey "))
    assert len(nwk) == 32
    code, out, _ = run_with_config(capsys, cfg, "group", "add-member", "district-north", *EUIS)
    assert code == 0 and "3 member(s) now" in out
    code, out, _ = run_with_config(capsys, cfg, "group", "list")
    assert "district-north" in out and LAMP in out
    code, out, _ = run_with_config(capsys, cfg, "group", "show", "district-north")
    assert nwk not in out and all(eui in out for eui in EUIS)
    code, out, _ = run_with_config(capsys, cfg, "group", "show", "district-north", "--show-keys", "--json")
    assert json.loads(out)["mc_nwk_s_key"] == nwk
    code, out, _ = run_with_config(capsys, cfg, "group", "remove-member", "district-north", EUIS[0], "--json")
    assert json.loads(out)["members"] == EUIS[1:]
    assert run_with_config(capsys, cfg, "group", "remove", "district-north")[0] == 0
    assert "no multicast groups" in run_with_config(capsys, cfg, "group", "list")[1]


def test_a_member_of_another_profile_or_class_is_refused_with_exit_2(
    capsys: pytest.CaptureFixture[str], cfg: Path
) -> None:
    lamps(capsys, cfg)
    assert run_with_config(capsys, cfg, "device", "add", *abp_argv("0004a30b00f00009", "26011009"))[0] == 0
    run_with_config(capsys, cfg, "group", "add", "district-north")
    run_with_config(capsys, cfg, "group", "add-member", "district-north", EUIS[0])
    code, _, err = run_with_config(capsys, cfg, "group", "add-member", "district-north", "0004a30b00f00009")
    assert code == 2 and "class A" in err
    code, _, err = run_with_config(capsys, cfg, "group", "add", "district-north")
    assert code == 2 and "exists already" in err


RULES = """\
schema_version: 1
location: {lat: 43.2965, lon: 5.3698, timezone: Europe/Paris}
lighting:
  - {id: north, group: district-north, command: set_dim, level_param: percent, preset: abaissement-22h-05h}
"""


def test_rules_test_prints_each_group_step_against_unicast_to_every_member(
    capsys: pytest.CaptureFixture[str], cfg: Path, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    argv = [
        "rules",
        "test",
        "--rules",
        str(rules),
        "--start",
        "2024-01-15T20:00:00",
        "--until",
        "2024-01-15T22:30:00",
    ]
    # Planned before any registry: 200 UL20xx controllers, set_dim is 3 bytes (01 fe level) at SF12.
    code, out, err = run_with_config(capsys, cfg, *argv, "--group", "district-north=nasys/ul20xx:200")
    assert code == 0, err
    assert out.count("group district-north set_dim") == 2  # 21:00 -> 100 %, 22:00 -> 50 %
    assert (
        "one 16-byte frame at DR0 of 1155 ms instead of 200 = 231.0 s: 0.32 % of the 869.525 MHz"
        " sub-band's hourly budget instead of 64.2 %"
    ) in out
    # From the registry of the config's gateway: its 3 members.
    lamps(capsys, cfg)
    run_with_config(capsys, cfg, "group", "add", "district-north", "--dr", "5")
    run_with_config(capsys, cfg, "group", "add-member", "district-north", *EUIS)
    code, out, _ = run_with_config(capsys, cfg, *argv, "--json")
    costs = [e["cost"] for e in json.loads(out)["events"] if e.get("group")]
    assert [(c["members"], c["dr"], c["phy_bytes"]) for c in costs] == [(3, 5, 16)] * 2
    assert costs[0]["unicast_ms"] == pytest.approx(3 * costs[0]["multicast_ms"], abs=0.2)


def test_tail_names_the_group_of_a_multicast_frame() -> None:
    mc = MulticastScheduler(rx2_dr=0, rx2_freq_hz=869_525_000, power_dbm=27.0)
    mc.merge([McGroup("district-north", DevAddr.from_hex("01ab23cd"), AesKey(bytes(16)), AesKey(bytes(16)))])
    mc.enqueue("district-north", 60, b"\x01\xfe\x32")
    mc.ready()
    taken = mc.take()
    assert taken is not None
    mc.committed(taken)
    (request,) = mc.ready()
    event = downlink_event(request, "sent", "multicast", "", 0.0, group=mc.group_of(request))
    assert event["group"] == "district-north" and event["dev_eui"] is None and event["fcnt_down"] == 0
    line = views_cmd._tail_line(event, raw=False)
    assert "[bold]DOWN[/] [cyan]sent[/] group district-north fcnt 0 port 60 869.5 MHz SF12 MULTICAST" in line
