"""``edgegw config template | check PATH | show [--effective]``.

``show`` prints the local file as loaded; ``show --effective`` the configuration in effect: the
running agent's (local file + the pushed overlay it applied, with the pushed version, its state
and the keys it sets), or, when no agent answers, what ``edgegw run`` would start with from the
files (``gateway.fleet.remote_config.effective_view``). ``mqtt.password`` is never printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gateway import config, preflight
from gateway.cli.common import CheckFailed, add_config_option, config_path, print_json
from gateway.control import SOCKET_NAME, client
from gateway.errors import ConfigError


def add_arguments(p: argparse.ArgumentParser) -> None:
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    t = csub.add_parser("template", help="print the whole commented default configuration")
    t.set_defaults(handler=template)
    c = csub.add_parser(
        "check",
        help="run every start-up check on a config file; exit 2 listing every problem with its key path",
    )
    c.add_argument("path", metavar="PATH")
    c.add_argument(
        "--json", action="store_true", help="print the effective configuration, or the problems, as JSON"
    )
    c.set_defaults(handler=check)
    s = csub.add_parser("show", help="the local configuration, or with --effective the one in effect")
    s.add_argument(
        "--effective",
        action="store_true",
        help="with the pushed overlay the agent applied: version, state (applied/trial/reverted), keys",
    )
    s.add_argument("--json", action="store_true")
    add_config_option(s)
    s.set_defaults(handler=show)


def template(_args: argparse.Namespace) -> int:
    sys.stdout.write(config.template())
    return 0


def check(args: argparse.Namespace) -> int:
    errors = preflight.check_all(args.path)
    if errors:
        if args.json:
            print_json({"ok": False, "errors": [_as_json(error) for error in errors]})
        for error in errors:
            print(f"edgegw: {error}", file=sys.stderr)
        return 2
    cfg = config.load(args.path)
    if args.json:
        print_json({"ok": True, "config": config.redacted(cfg)})
    else:
        broker = f"{cfg.mqtt.host}:{cfg.mqtt.port}"
        print(f"{args.path}: OK (gateway {cfg.gateway.id}, radio {cfg.radio.url}, broker {broker})")
    return 0


def _as_json(error: ConfigError) -> dict[str, Any]:
    return {"file": error.file, "key_path": error.key_path, "reason": error.reason, "message": str(error)}


def show(args: argparse.Namespace) -> int:
    local = config.load(config_path(args))
    if not args.effective:
        doc: dict[str, Any] = {"source": "local file", "file": local.source, "config": config.redacted(local)}
    else:
        doc = effective(local)
    if args.json:
        print_json(doc)
        return 0
    for line in show_lines(doc):
        print(line)
    return 0


def effective(local: config.Config) -> dict[str, Any]:
    """What the running agent applies, or (no agent) what the files say it would start with."""
    try:
        answer = client.request(local.data_path / SOCKET_NAME, "config")
    except client.AgentUnreachable:
        # Here, not at the top: only this case reads the fleet's state files itself, and the fleet
        # package would cost every other `config` command its start-up time.
        from gateway.fleet.remote_config import effective_view

        try:
            return {"source": "files (the agent is not running)", **effective_view(local.source)}
        except ConfigError as exc:
            raise CheckFailed(f"the pushed configuration on file is not valid now: {exc}") from exc
    answer.pop("ok", None)
    return {**answer, "source": "running agent"}


def show_lines(doc: dict[str, Any]) -> list[str]:
    """A head saying where the configuration comes from, then one ``key = value`` per setting;
    the keys a push set are marked ``# pushed``."""
    lines = [f"# {doc['source']}"]
    if "state" in doc:
        if doc["version"] is None:
            lines.append("# local file only: no pushed configuration in effect")
        else:
            lines.append(f"# pushed configuration {doc['version']}: {doc['state']}")
        reverted = doc.get("reverted")
        if reverted:
            lines.append(f"# last reverted: {reverted['version']} at {reverted['at']}: {reverted['reason']}")
    pushed = set(doc.get("overlay_keys") or [])
    for key, value in _leaves(doc["config"]):
        mark = "  # pushed" if key in pushed or any(key.startswith(p + ".") for p in pushed) else ""
        lines.append(f"{key} = {json.dumps(value)}{mark}")
    return lines


def _leaves(doc: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in doc.items():
        if isinstance(value, dict) and value:
            out.extend(_leaves(value, f"{prefix}{key}."))
        else:
            out.append((f"{prefix}{key}", value))
    return out


