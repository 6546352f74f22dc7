"""Gateway provisioning: identity, MQTT client key and CSR, certificate, pinned platform key, systemd unit.

Owns the files an installer creates once per gateway, under the data directory::

    <data_dir>/                   0750
      identity.json               {"gateway_id": ...}
      tls/client.key              ECDSA P-256 private key, PKCS#8 PEM, 0600, never printed
      tls/client.csr              the request to send to the platform's CA
      tls/seal.key                X25519 private key, PKCS#8 PEM, 0600: opens the registry keys the
                                  platform seals to this gateway (gateway.fleet.seal); never printed
      tls/client.crt              the certificate the platform returned (checked against the key)
      platform-ed25519.pub        the platform's signing key (ARCHITECTURE.md §3.5), pinned

and the text of a hardened systemd unit. The private key is generated on the
gateway and never leaves it. It does not own the MQTT connection (``uplink``)
nor signature checks on commands (``fleet``, issue 8): they read these files.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.x509.oid import NameOID

from gateway import textfile
from gateway.errors import ConfigError, ProvisioningError
from gateway.fsutil import write_atomic

GATEWAY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
IDENTITY_FILE = "identity.json"
KEY_FILE = "tls/client.key"
CSR_FILE = "tls/client.csr"
CERT_FILE = "tls/client.crt"
SEAL_KEY_FILE = "tls/seal.key"
PLATFORM_KEY_FILE = "platform-ed25519.pub"


@dataclass(frozen=True, slots=True)
class GatewayFiles:
    data_dir: Path

    @property
    def identity(self) -> Path:
        return self.data_dir / IDENTITY_FILE

    @property
    def key(self) -> Path:
        return self.data_dir / KEY_FILE

    @property
    def csr(self) -> Path:
        return self.data_dir / CSR_FILE

    @property
    def cert(self) -> Path:
        return self.data_dir / CERT_FILE

    @property
    def platform_key(self) -> Path:
        return self.data_dir / PLATFORM_KEY_FILE

    @property
    def seal_key(self) -> Path:
        return self.data_dir / SEAL_KEY_FILE


def check_gateway_id(gateway_id: str) -> str:
    if not GATEWAY_ID.fullmatch(gateway_id):
        raise ProvisioningError(
            f"gateway id {gateway_id!r}: use 1-64 letters, digits, '-' or '_' (it is part of MQTT topics)"
        )
    return gateway_id


def prepare_data_dir(data_dir: Path) -> None:
    """Create the data directory (0750) and its tls/ subdirectory (0700)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o750)
    (data_dir / "tls").mkdir(exist_ok=True)
    (data_dir / "tls").chmod(0o700)


def provision_identity(data_dir: Path, gateway_id: str) -> tuple[GatewayFiles, bool]:
    """Write the identity, create the client key if absent, and (re)write the CSR.

    Returns the files and whether a new key was generated. An existing key is
    kept (running this twice gives a new CSR for the same key); a different id
    than the recorded one is refused.
    """
    check_gateway_id(gateway_id)
    files = GatewayFiles(data_dir)
    prepare_data_dir(data_dir)
    if files.identity.exists():
        recorded = _recorded_id(files.identity)
        if recorded != gateway_id:
            raise ProvisioningError(
                f"this gateway is already provisioned as {recorded!r} ({files.identity}); "
                "move the data directory away to start over"
            )
    else:
        write_atomic(files.identity, json.dumps({"gateway_id": gateway_id}).encode() + b"\n", 0o640)
    created = False
    if files.key.exists():
        key = _load_private_key(files.key)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_atomic(files.key, pem, 0o600)
        created = True
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, gateway_id)]))
        .sign(key, hashes.SHA256())
    )
    write_atomic(files.csr, csr.public_bytes(serialization.Encoding.PEM), 0o644)
    ensure_seal_key(data_dir)
    return files, created


def ensure_seal_key(data_dir: Path) -> tuple[x25519.X25519PublicKey, bool]:
    """The gateway's X25519 public key, creating the private key (0600) if absent; and whether it is new.

    Kept once created: the platform seals each registry push to the public key it last read, and a
    new key would leave the retained registry unreadable until the platform pushes again."""
    path = GatewayFiles(data_dir).seal_key
    key = load_seal_key(data_dir)
    if key is not None:
        return key.public_key(), False
    key = x25519.X25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_atomic(path, pem, 0o600)
    return key.public_key(), True


def load_seal_key(data_dir: Path) -> x25519.X25519PrivateKey | None:
    """The gateway's X25519 private key; None when it has none (provisioned before the key existed:
    `edgegw provision gateway --id ...` again creates it); ProvisioningError when it is unreadable."""
    path = GatewayFiles(data_dir).seal_key
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ProvisioningError(f"cannot read the seal key {path}: {exc}") from exc
    if not isinstance(key, x25519.X25519PrivateKey):
        raise ProvisioningError(f"{path} is not an X25519 private key")
    return key


def _recorded_id(path: Path) -> object:
    """The gateway id in the identity file; ProvisioningError (one line) if it is unreadable or damaged."""
    try:
        doc = json.loads(textfile.read_text(path))
    except (ConfigError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, ConfigError) else exc
        raise ProvisioningError(f"{path} is not an identity file ({reason}); move it away") from exc
    return doc.get("gateway_id") if isinstance(doc, dict) else None


def _load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ProvisioningError(f"cannot read the client key {path}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ProvisioningError(f"{path} is not an EC private key")
    return key


def install_certificate(data_dir: Path, cert_path: Path, *, now: datetime | None = None) -> x509.Certificate:
    """Install the certificate the platform issued for our CSR; it must match our key and be valid now."""
    files = GatewayFiles(data_dir)
    if not files.key.exists():
        raise ProvisioningError(f"no client key in {data_dir}: run `edgegw provision gateway --id ...` first")
    try:
        pem = cert_path.read_bytes()
        cert = x509.load_pem_x509_certificate(pem)
    except (OSError, ValueError) as exc:
        raise ProvisioningError(f"{cert_path}: not a PEM certificate ({exc})") from exc
    ours = (
        _load_private_key(files.key)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    theirs = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if ours != theirs:
        raise ProvisioningError(
            f"{cert_path} was issued for another key than this gateway's ({files.key}); "
            "send the CSR from this gateway to the platform"
        )
    moment = now or datetime.now(UTC)
    if not cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc:
        raise ProvisioningError(
            f"{cert_path} is valid from {cert.not_valid_before_utc:%Y-%m-%d} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d}, not now ({moment:%Y-%m-%d}; check the clock)"
        )
    write_atomic(files.cert, pem, 0o644)
    return cert


def installed_certificate(data_dir: Path) -> x509.Certificate | None:
    """The client certificate installed earlier, if any."""
    path = GatewayFiles(data_dir).cert
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ProvisioningError(f"{path}: not a PEM certificate ({exc})") from exc


def pin_platform_key(data_dir: Path, key_path: Path) -> str:
    """Pin the platform's Ed25519 public key (PEM); returns its SHA-256 fingerprint (hex)."""
    try:
        key = serialization.load_pem_public_key(key_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ProvisioningError(f"{key_path}: not a PEM public key ({exc})") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ProvisioningError(f"{key_path}: the platform signing key must be Ed25519")
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    write_atomic(GatewayFiles(data_dir).platform_key, pem, 0o644)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    return digest.finalize().hex()


def render_unit(
    *,
    exec_path: str,
    config_path: str,
    data_dir: str,
    user: str = "edgegw",
) -> str:
    """A hardened systemd unit for the agent (see contrib/systemd/edgegw.service for the reference)."""
    for name, value in (("exec_path", exec_path), ("config_path", config_path), ("data_dir", data_dir)):
        if not value.startswith("/") or any(c.isspace() for c in value):
            raise ProvisioningError(f"{name} must be an absolute path without spaces, got {value!r}")
    if not GATEWAY_ID.fullmatch(user):
        raise ProvisioningError(f"user {user!r} is not a valid user name")
    return f"""# systemd unit for the edgegw agent, written by `edgegw provision gateway`.
[Unit]
Description=edgegw LoRaWAN edge-gateway agent
After=network-online.target time-sync.target
Wants=network-online.target

[Service]
Type=simple
User={user}
Group={user}
ExecStart={exec_path} run --config {config_path}
# SIGTERM: the agent commits what it accepted, waits for in-flight PUBACKs, publishes 'offline'.
KillSignal=SIGTERM
TimeoutStopSec=20
# Exit code 75 (EX_TEMPFAIL) is the agent asking to be started again: a pushed configuration or an
# agent update (docs/fleet.md). on-failure covers it; RestartForceExitStatus says so explicitly.
Restart=on-failure
RestartForceExitStatus=75
RestartSec=5
UMask=0027
NoNewPrivileges=true
ProtectSystem=strict
ProtectHome=true
PrivateTmp=true
# No PrivateDevices: the SX127x (SPI/GPIO) and serial-modem backends need /dev.
ProtectKernelTunables=true
ProtectKernelModules=true
ProtectControlGroups=true
RestrictSUIDSGID=true
LockPersonality=true
CapabilityBoundingSet=
# ProtectSystem=strict makes everything else read-only; the data directory holds the
# database, the key files and the control socket.
ReadWritePaths={data_dir}

[Install]
WantedBy=multi-user.target
"""
