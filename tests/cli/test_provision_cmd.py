"""`edgegw provision gateway`: argv → files, output and exit code (everything under tmp_path, never /etc)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.cli.helpers import clear_edgegw_env, run_with_config
from tests.provisioning.test_gateway_setup import issue


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_edgegw_env(monkeypatch)


def provision(
    capsys: pytest.CaptureFixture[str], cfg: Path, gw_id: str, data: Path, *extra: str
) -> tuple[int, str, str]:
    argv = ["provision", "gateway", "--id", gw_id, "--data-dir", str(data), *extra]
    return run_with_config(capsys, cfg, *argv)


def test_provision_gateway_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    cfg = tmp_path / "edgegw.yaml"  # absent: --data-dir decides
    code, out, err = provision(capsys, cfg, "gw-aix-01", data, "--json")
    doc = json.loads(out)
    assert code == 0 and err == "" and doc["client_key_created"] is True and doc["certificate"] is None
    key_pem = Path(doc["client_key"]).read_bytes()
    assert stat.S_IMODE(Path(doc["client_key"]).stat().st_mode) == 0o600
    assert b"PRIVATE KEY" not in out.encode() and key_pem.decode() not in out

    cert = tmp_path / "issued.pem"
    cert.write_bytes(issue(Path(doc["csr"]).read_bytes()))
    platform = tmp_path / "platform.pem"
    platform.write_bytes(
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    unit = tmp_path / "edgegw.service"
    code, out, _ = provision(
        capsys,
        cfg,
        "gw-aix-01",
        data,
        "--install-cert",
        str(cert),
        "--platform-key",
        str(platform),
        "--unit-out",
        str(unit),
        "--exec-path",
        "/opt/edgegw/.venv/bin/edgegw",
        "--json",
    )
    doc = json.loads(out)
    assert (
        code == 0 and doc["client_key_created"] is False and "CN=gw-aix-01" in doc["certificate"]["subject"]
    )
    assert len(doc["platform_key_sha256"]) == 64 and Path(doc["client_key"]).read_bytes() == key_pem
    text = unit.read_text()
    assert "ExecStart=/opt/edgegw/.venv/bin/edgegw run --config " + str(cfg) in text
    assert f"ReadWritePaths={data}" in text and "NoNewPrivileges=true" in text

    code, out, _ = provision(capsys, cfg, "gw-aix-01", data)
    assert code == 0 and "kept" in out and "valid until" in out


def test_provision_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "none.yaml"
    code, _, err = provision(capsys, cfg, "bad id", tmp_path / "d")
    assert code == 2 and "letters, digits" in err
    other = tmp_path / "other.pem"
    other.write_text("not a cert")
    code, _, err = provision(capsys, cfg, "gw1", tmp_path / "d", "--install-cert", str(other))
    assert code == 2 and "not a PEM certificate" in err
    code, _, err = provision(capsys, cfg, "gw2", tmp_path / "d")
    assert code == 2 and "already provisioned as 'gw1'" in err


def test_an_id_the_config_does_not_say_is_refused_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    cfg = tmp_path / "edgegw.yaml"
    cfg.write_text(f"gateway: {{id: gw-walk-1}}\ndata_dir: {data}\n")
    code, out, err = provision(capsys, cfg, "gw-aix-01", data)
    assert code == 2 and out == ""
    assert "gw-aix-01" in err and "gateway.id: gw-walk-1" in err and str(cfg) in err and "--force" in err
    assert not (data / "identity.json").exists() and not (data / "tls" / "client.csr").exists()

    code, out, err = provision(capsys, cfg, "gw-aix-01", data, "--force", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["gateway_id"] == "gw-aix-01" and doc["config_gateway_id"] == "gw-walk-1"

    cfg.write_text(f"gateway: {{id: gw-aix-01}}\ndata_dir: {data}\n")  # the file fixed: no --force needed
    code, out, err = provision(capsys, cfg, "gw-aix-01", data)
    assert code == 0 and err == "" and "change it" not in out
