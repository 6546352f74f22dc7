"""Gateway groups (issue 21): ``fleet.groups`` in the configuration makes signed commands and pushed
configurations addressed to ``group:<name>`` for this gateway; a push may set it where the local file
lets it (``fleet.remote_settable``), and it takes effect with the restart that applies the push.

The agent-side check is ``gateway.fleet.trust.Trust`` (``signed_envelope.check``: target is the
gateway id or one of its groups); docs/fleet.md, "Envelope" and "Gateway groups".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import config
from gateway.errors import CommandRejected, ConfigError
from gateway.fleet import desired
from gateway.fleet.commands import CommandDispatcher
from gateway.fleet.trust import Trust
from tests.fleet.conftest import GATEWAY_ID, NOW_S, Signer


def load(fleet: str, environ: dict[str, str] | None = None) -> config.Config:
    return config.loads(f"gateway: {{id: {GATEWAY_ID}}}\nfleet: {fleet}\n", environ=environ or {})


def test_groups_come_from_the_configuration_space_separated() -> None:
    assert load("{}").fleet.group_names == ()
    assert load('{groups: "north old-port"}').fleet.group_names == ("north", "old-port")
    assert load("{}", {"EDGEGW_FLEET__GROUPS": "south"}).fleet.group_names == ("south",)
    assert "  groups: ''" in config.template()


@pytest.mark.parametrize("bad", ['"group:north"', '"north/east"', '"' + "x" * 65 + '"', "[north]"])
def test_a_group_name_that_cannot_be_a_target_is_refused_with_its_key(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(f"{{groups: {bad}}}")
    assert info.value.key_path == "fleet.groups"


def dispatcher(data_dir: Path, cfg: config.Config) -> CommandDispatcher:
    """The trust as ``gateway.app.build`` makes it from the configuration."""
    trust = Trust(data_dir, gateway_id=cfg.gateway.id, groups=cfg.fleet.group_names)
    d = CommandDispatcher(trust, clock=lambda: float(NOW_S))
    d.register("flush", lambda params: {"flushing": True})
    return d


async def test_a_command_to_a_group_is_run_by_its_members_only(data_dir: Path, signed: Signer) -> None:
    member = dispatcher(data_dir, load('{groups: "north"}'))
    ok = await member.handle("flush", signed("flush", target="group:north", seq=1))
    assert (ok.ok, ok.reason) == (True, None)
    other = await member.handle("flush", signed("flush", target="group:south", seq=2))
    assert (other.ok, other.reason) == (False, "misaddressed")


async def test_without_groups_a_group_command_is_misaddressed(data_dir: Path, signed: Signer) -> None:
    alone = dispatcher(data_dir, load("{}"))
    refused = await alone.handle("flush", signed("flush", target="group:north", seq=1))
    assert (refused.ok, refused.reason) == (False, "misaddressed")


def push_groups(tmp_path: Path, local_fleet: str, groups: str) -> config.Config:
    local = config.loads(
        f"gateway: {{id: {GATEWAY_ID}}}\nfleet: {local_fleet}\ndata_dir: {tmp_path}\n", environ={}
    )
    wanted = desired.DesiredConfig("v1", {"fleet": {"groups": groups}}, None)
    return desired.effective(
        desired.local_raw(local),
        wanted,
        rules_path=tmp_path / "r.yaml",
        file="pushed",
        local=local,
        environ={},
    )


def test_a_push_sets_the_groups_only_where_the_local_file_allows_it(tmp_path: Path) -> None:
    # fleet.* is the local file's by default (docs/fleet.md, "Configuration push").
    with pytest.raises(CommandRejected) as info:
        push_groups(tmp_path, "{}", "north")
    assert info.value.reason == "local_only" and "fleet.groups" in str(info.value)
    cfg = push_groups(tmp_path, '{remote_settable: "fleet.groups"}', "north south")
    assert cfg.fleet.group_names == ("north", "south")
    with pytest.raises(ConfigError) as bad:
        push_groups(tmp_path, '{remote_settable: "fleet.groups"}', "group:north")
    assert bad.value.key_path == "fleet.groups"
