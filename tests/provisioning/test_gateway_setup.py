"""Gateway provisioning: key and CSR made here, certificate checked against the key, platform key, unit."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from gateway.errors import ProvisioningError
from gateway.provisioning import gateway_setup

CONTRIB_UNIT = Path(__file__).resolve().parents[2] / "contrib" / "systemd" / "edgegw.service"


def issue(csr_pem: bytes, *, days: int = 365, start: datetime | None = None) -> bytes:
    """What the platform's CA does with our CSR (a throw-away CA made here)."""
    csr = x509.load_pem_x509_csr(csr_pem)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test platform CA")])
    begin = start or datetime.now(UTC) - timedelta(minutes=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca_name)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(begin)
        .not_valid_after(begin + timedelta(days=days))
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_identity_key_and_csr(tmp_path: Path) -> None:
    files, created = gateway_setup.provision_identity(tmp_path / "data", "gw-aix-01")
    assert created and json.loads(files.identity.read_text()) == {"gateway_id": "gw-aix-01"}
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o750
    key = serialization.load_pem_private_key(files.key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    csr = x509.load_pem_x509_csr(files.csr.read_bytes())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gw-aix-01"
    assert b"PRIVATE" not in files.csr.read_bytes()
    before = files.key.read_bytes()
    _, created_again = gateway_setup.provision_identity(tmp_path / "data", "gw-aix-01")
    assert not created_again and files.key.read_bytes() == before
    with pytest.raises(ProvisioningError, match="already provisioned as 'gw-aix-01'"):
        gateway_setup.provision_identity(tmp_path / "data", "gw-other")
    with pytest.raises(ProvisioningError, match="letters, digits"):
        gateway_setup.provision_identity(tmp_path / "x", "bad id/with slash")


def test_certificate_must_match_our_key_and_be_valid(tmp_path: Path) -> None:
    files, _ = gateway_setup.provision_identity(tmp_path, "gw1")
    good = tmp_path / "issued.pem"
    good.write_bytes(issue(files.csr.read_bytes()))
    cert = gateway_setup.install_certificate(tmp_path, good)
    assert files.cert.read_bytes() == good.read_bytes() and "gw1" in cert.subject.rfc4514_string()

    stranger = ec.generate_private_key(ec.SECP256R1())
    other_csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw1")]))
        .sign(stranger, hashes.SHA256())
    )
    wrong = tmp_path / "wrong.pem"
    wrong.write_bytes(issue(other_csr.public_bytes(serialization.Encoding.PEM)))
    with pytest.raises(ProvisioningError, match="issued for another key"):
        gateway_setup.install_certificate(tmp_path, wrong)
    expired = tmp_path / "expired.pem"
    expired.write_bytes(issue(files.csr.read_bytes(), days=1, start=datetime(2020, 1, 1, tzinfo=UTC)))
    with pytest.raises(ProvisioningError, match="not now"):
        gateway_setup.install_certificate(tmp_path, expired)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    with pytest.raises(ProvisioningError, match="not a PEM certificate"):
        gateway_setup.install_certificate(tmp_path, garbage)
    assert files.cert.read_bytes() == good.read_bytes()  # failures leave the installed one alone


def test_platform_key_must_be_ed25519(tmp_path: Path) -> None:
    platform = ed25519.Ed25519PrivateKey.generate().public_key()
    pem = platform.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "p.pem").write_bytes(pem)
    fingerprint = gateway_setup.pin_platform_key(tmp_path, tmp_path / "p.pem")
    raw = platform.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(raw)
    assert fingerprint == digest.finalize().hex()
    assert (tmp_path / gateway_setup.PLATFORM_KEY_FILE).read_bytes() == pem
    ec_pub = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "ec.pem").write_bytes(
        ec_pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ProvisioningError, match="must be Ed25519"):
        gateway_setup.pin_platform_key(tmp_path, tmp_path / "ec.pem")


def _directives(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_unit_is_at_least_as_hardened_as_the_contrib_one() -> None:
    unit = gateway_setup.render_unit(
        exec_path="/opt/edgegw/.venv/bin/edgegw",
        config_path="/etc/edgegw/edgegw.yaml",
        data_dir="/var/lib/gw",
    )
    ours, reference = _directives(unit), _directives(CONTRIB_UNIT.read_text())
    for key in (
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "Restart",
        "RestartForceExitStatus",  # 75: a pushed configuration or an update asks to be started again
        "User",
        "KillSignal",
    ):
        assert ours[key] == reference[key], key
    assert ours["ExecStart"] == "/opt/edgegw/.venv/bin/edgegw run --config /etc/edgegw/edgegw.yaml"
    assert ours["ReadWritePaths"] == "/var/lib/gw" and ours["CapabilityBoundingSet"] == ""
    with pytest.raises(ProvisioningError, match="absolute path"):
        gateway_setup.render_unit(exec_path="edgegw", config_path="/etc/x", data_dir="/var/lib/gw")
