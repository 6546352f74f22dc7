"""What an ``edgegw`` call imports (issue 17): the chosen command's module, not the whole agent.

A behavioural guard for the lazy loading, not a timing test (bench/bench_cli_start.py times it).
The call runs in a fresh interpreter, this checkout first on its path, and reports ``sys.modules``
at exit. This file imports nothing of ``gateway.cli``, so that it runs against any checkout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Runs argv through the CLI's main (argparse exits on --help) and prints its exit code and every
# module loaded by then.
REPORT_MODULES = """
import json, sys
from gateway.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""
# The agent, its stages and the heavy libraries: none is needed to find that no agent answers.
NOT_FOR_STATUS = (
    "gateway.app",
    "gateway.db",
    "gateway.outbox",
    "gateway.uplink",
    "gateway.radio",
    "gateway.lorawan",
    "gateway.codec",
    "gateway.rules",
    "gateway.fleet",
    "gateway.provisioning",
    "paho",
    "cryptography",
    "sqlite3",
    "rich",
    "jsonschema",
    "asyncio",
    "logging",
)


def edgegw_modules(tmp_path: Path, *argv: str) -> tuple[int, set[str], str]:
    """Exit code, loaded module names and stderr of one ``edgegw`` call in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEGW_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    done = subprocess.run(
        [sys.executable, "-c", REPORT_MODULES, *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr  # the wrapper itself; the CLI's code is in the report
    report = json.loads(done.stdout.splitlines()[-1])
    return report["code"], set(report["modules"]), done.stderr


def loaded_under(modules: set[str], package: str) -> list[str]:
    return sorted(m for m in modules if m == package or m.startswith(package + "."))


def test_status_json_against_a_stopped_agent_imports_only_its_command(tmp_path: Path) -> None:
    config = tmp_path / "edgegw.yaml"
    config.write_text(
        f"gateway: {{id: gw-test-1}}\nmqtt: {{host: 127.0.0.1, tls: false}}\ndata_dir: {tmp_path / 'data'}\n"
    )
    code, modules, err = edgegw_modules(tmp_path, "--config", str(config), "status", "--json")
    assert code == 1 and "the agent is not running" in err  # the call did what is measured
    assert {m: loaded_under(modules, m) for m in NOT_FOR_STATUS if loaded_under(modules, m)} == {}
    commands = {m for m in loaded_under(modules, "gateway.cli") if m.endswith("_cmd") or "views" in m}
    assert commands == {"gateway.cli.views_cmd"}


def test_help_imports_no_command_module(tmp_path: Path) -> None:
    code, modules, _err = edgegw_modules(tmp_path, "--help")
    assert code == 0
    assert loaded_under(modules, "gateway.cli") == ["gateway.cli", "gateway.cli.common", "gateway.cli.main"]
    assert loaded_under(modules, "gateway.config") == []
