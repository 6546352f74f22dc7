"""The start-up checks of a configuration, all at once: what ``edgegw config check`` runs.

Owns the list of what must hold before ``edgegw run`` can start with a config file, beyond its
schema (``gateway.config``): the radio URL names a known backend that accepts it (the same
``gateway.radio.check_url`` that ``run`` opens the radio with), the TLS files load, ``data_dir``
exists or can be created and is writable, the rules file and the profiles directory load.
Each check gives its own error, so one run lists every problem of the file rather than the
first (an installer fixing them one restart at a time is a systemd restart loop).

It changes nothing: it opens no socket or device, and ``data_dir`` is probed with a temporary
directory removed at once. Files are checked as the user running the check (run it as the
agent's user to check the agent's rights).
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from gateway import config
from gateway.codec import load_profiles
from gateway.config import Config
from gateway.errors import ConfigError, GatewayError
from gateway.radio import check_url
from gateway.rules.loader import load_rules


def check_all(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> list[ConfigError]:
    """Every problem that would stop ``edgegw run`` with this config file (empty: none).

    ``environ`` defaults to ``os.environ`` (``EDGEGW_*`` overrides apply, as they do for ``run``).
    """
    env = os.environ if environ is None else environ
    file = str(path)
    cfg, errors = config.load_all(path, env)
    if cfg is None:  # unreadable, not UTF-8, not YAML: nothing more can be said
        return errors
    # A key already reported holds its default now: checking that default would say nothing true.
    reported = {error.key_path for error in errors}
    found: list[ConfigError] = []
    for key_path, check in _checks(cfg):
        if key_path in reported:
            continue
        try:
            check()
        except ConfigError as exc:
            # The radio backends name the key, not the config file.
            if exc.file is None:
                exc = ConfigError(exc.reason, file=file, key_path=exc.key_path or key_path)
            found.append(exc)
            reported.add(key_path)  # one error per key: an unreadable file is not also "not PEM"
        except GatewayError as exc:
            found.append(ConfigError(str(exc), file=file, key_path=key_path))
            reported.add(key_path)
    return errors + config.name_overrides(found, env, file)


def _checks(cfg: Config) -> list[tuple[str, Callable[[], None]]]:
    """(key path, check) in the order ``run`` meets them (``gateway.app.build``)."""
    checks: list[tuple[str, Callable[[], None]]] = [
        ("profiles_dir", lambda: _profiles(cfg)),
        ("data_dir", lambda: _data_dir(cfg)),
    ]
    if cfg.mqtt.tls:  # without TLS the agent does not read these files
        for key in ("ca_file", "cert_file", "key_file"):
            checks.append((f"mqtt.{key}", _readable(cfg, f"mqtt.{key}", getattr(cfg.mqtt, key))))
        checks.append(("mqtt.ca_file", lambda: _ca_bundle(cfg)))
        checks.append(("mqtt.cert_file", lambda: _client_certificate(cfg)))
    checks.append(("radio.url", lambda: check_url(cfg.radio.url)))
    if cfg.rules.path:
        checks.append(("rules.path", _readable(cfg, "rules.path", cfg.rules.path)))
        checks.append(("rules.path", lambda: _rules(cfg)))
    return checks


def _fail(cfg: Config, key_path: str, reason: str) -> ConfigError:
    return ConfigError(reason, file=cfg.source, key_path=key_path)


def _readable(cfg: Config, key_path: str, name: str) -> Callable[[], None]:
    def check() -> None:
        if not name:
            return
        try:
            with open(name, "rb") as f:
                f.read(1)
        except OSError as exc:
            raise _fail(cfg, key_path, f"cannot read {name}: {exc.strerror or exc}") from exc

    return check


def _ca_bundle(cfg: Config) -> None:
    """What paho's ``tls_set`` does with ``ca_file`` at start-up."""
    if cfg.mqtt.ca_file:
        try:
            ssl.create_default_context(ssl.Purpose.SERVER_AUTH).load_verify_locations(cafile=cfg.mqtt.ca_file)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise _fail(cfg, "mqtt.ca_file", f"{cfg.mqtt.ca_file} is not a PEM CA bundle: {exc}") from exc


def _client_certificate(cfg: Config) -> None:
    """What paho's ``tls_set`` does with ``cert_file`` and ``key_file``: they load and belong together."""
    cert, key = cfg.mqtt.cert_file, cfg.mqtt.key_file
    if not cert or not all(os.access(name, os.R_OK) for name in (cert, key) if name):
        return  # none, or unreadable: already reported
    try:
        ssl.create_default_context(ssl.Purpose.SERVER_AUTH).load_cert_chain(cert, key or None)
    except (OSError, ValueError) as exc:
        reason = f"{cert} and {key} are not a PEM certificate and its private key: {exc}"
        raise _fail(cfg, "mqtt.cert_file", reason) from exc


def _data_dir(cfg: Config) -> None:
    """Exists and writable, or can be created: the database opens it with ``mkdir(parents=True)``.

    Probed for real (a temporary file or directory, removed at once): permission bits do not say
    that a file system is read-only, or that /proc takes no directory even from root.
    """
    path = Path(cfg.data_dir)
    if path.exists() and not path.is_dir():
        raise _fail(cfg, "data_dir", f"{path} is not a directory")
    where = path
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        raise _fail(cfg, "data_dir", f"{path} cannot be created: {where} is not a directory")
    try:
        # A directory in the nearest existing one: mkdir is what the database will do there.
        tempfile.TemporaryDirectory(dir=where, prefix=".edgegw-check-").cleanup()
    except OSError as exc:
        verb = "is not writable" if where == path else f"cannot be created in {where}"
        raise _fail(cfg, "data_dir", f"{path} {verb}: {exc.strerror or exc}") from exc


def _rules(cfg: Config) -> None:
    """``run`` starts without rules when this fails (the uplink matters more); the check says so."""
    load_rules(cfg.rules.path)


def _profiles(cfg: Config) -> None:
    load_profiles(cfg.profiles_dir)
