"""`edgegw fleet keygen | sign`: argv → files, output, exit code; the signed output verifies on a gateway
that pinned the generated key (ARCHITECTURE.md §3.5, docs/fleet.md). Everything under tmp_path."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.fleet.trust import Trust
from gateway.provisioning.gateway_setup import pin_platform_key


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_keygen_then_sign_verifies_on_the_gateway(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "platform.key"
    code, out, _ = run(capsys, "fleet", "keygen", "--out", str(key))
    assert code == 0
    made = json.loads(out)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert run(capsys, "fleet", "keygen", "--out", str(key))[0] == 2  # never overwrites a key

    data = tmp_path / "data"
    data.mkdir()
    assert pin_platform_key(data, Path(made["public_key"])) == made["sha256"]

    cmd = tmp_path / "dl.json"
    cmd.write_text(json.dumps({"cmd": "flush", "params": {"reason": "test"}}))
    argv = ["fleet", "sign", str(cmd), "--key", str(key), "--target", "gw-7", "--seq", "12"]
    code, out, err = run(capsys, *argv, "--issued-at", "1764000000", "--ttl-s", "60")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert (doc["seq"], doc["target"], doc["expires_at"]) == (12, "gw-7", 1764000060)
    assert doc["payload"] == {"cmd": "flush", "params": {"reason": "test"}}
    env = Trust(data, gateway_id="gw-7").verify(out.encode(), 1764000010)
    assert env.seq == 12


@pytest.mark.parametrize(
    "content", ["not json", "[]", '{"params": {}}', '{"cmd": "x", "params": []}', '{"cmd": "x", "shell": 1}']
)
def test_sign_refuses_bad_command_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    key = tmp_path / "k"
    assert run(capsys, "fleet", "keygen", "--out", str(key))[0] == 0
    cmd = tmp_path / "c.json"
    cmd.write_text(content)
    code, out, err = run(capsys, "fleet", "sign", str(cmd), "--key", str(key), "--target", "gw-7")
    assert code == 2 and out == "" and err.startswith("edgegw: ")


def test_sign_refuses_a_non_ed25519_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cmd = tmp_path / "c.json"
    cmd.write_text('{"cmd": "flush"}')
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    code, _, err = run(capsys, "fleet", "sign", str(cmd), "--key", str(bad), "--target", "gw-7")
    assert code == 2 and "bad.pem" in err


def test_reference_signer_runs_as_a_standalone_script(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/fleet.md: the platform may copy sign.py alone; run it outside the package, as a script."""
    key = tmp_path / "k"
    assert run(capsys, "fleet", "keygen", "--out", str(key))[0] == 0
    copy = tmp_path / "sign.py"
    copy.write_text((Path(__file__).resolve().parents[2] / "gateway/fleet/sign.py").read_text())
    proc = subprocess.run(
        [sys.executable, str(copy), str(key), "gw-7", "set_log_level", '{"level": "DEBUG"}'],
        capture_output=True,
        timeout=30,
        check=True,
        cwd=tmp_path,
    )
    data = tmp_path / "data"
    data.mkdir()
    pin_platform_key(data, Path(f"{key}.pub"))
    env = Trust(data, gateway_id="gw-7").verify(proc.stdout, time.time())
    assert env.payload == {"cmd": "set_log_level", "params": {"level": "DEBUG"}}
