"""Radio front ends (stage ①): hear LoRa frames and hand them to the pipeline.

Owns the choice of backend by URL scheme (``radio.url`` in the config). Each
backend lives in its own module and is imported only when chosen, so hardware
libraries stay out of the process unless that backend is used. Third-party
backends register under the ``edgegw.radio_backends`` entry-point group with a
value in the same ``"module:Class"`` form.

It owns no wire format and no LoRaWAN: see ``base.py`` for the backend contract.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import socket
from typing import Final
from urllib.parse import SplitResult, urlsplit

from gateway.errors import ConfigError
from gateway.radio.base import RadioBackend, RecentFrame

__all__ = ["BACKENDS", "RadioBackend", "RecentFrame", "check_url", "open_backend", "parse_url"]

ENTRY_POINT_GROUP: Final = "edgegw.radio_backends"
_KEY_PATH: Final = "radio.url"

# scheme → "module:Class", imported lazily by open_backend.
BACKENDS: Final[dict[str, str]] = {
    "semtech-udp": "gateway.radio.semtech_udp.backend:SemtechUdpBackend",
    "sx127x": "gateway.radio.sx127x:Sx127xBackend",
    "serial": "gateway.radio.serial_modem.backend:SerialModemBackend",
}


def _target(scheme: str) -> str:
    target = BACKENDS.get(scheme)
    if target is not None:
        return target
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == scheme:
            return entry.value
    known = ", ".join(sorted(BACKENDS))
    raise ConfigError(f"unknown radio backend {scheme!r} (known: {known})", key_path=_KEY_PATH)


def _load(scheme: str, target: str) -> type[RadioBackend]:
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        # A backend whose optional dependency is missing says which extra to install.
        raise ConfigError(f"radio backend {scheme!r} cannot be loaded: {exc}", key_path=_KEY_PATH) from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, RadioBackend)):
        raise ConfigError(f"radio backend {scheme!r}: {target} is not a RadioBackend", key_path=_KEY_PATH)
    return cls


def parse_url(url: str) -> tuple[str, SplitResult]:
    """The backend scheme (lower case) and the parts of ``radio.url``; ConfigError if it is not a URL.

    Pure: no import, no I/O. ``check_url`` and ``open_backend`` start here.
    """
    try:
        parts: SplitResult = urlsplit(url.strip())
    except ValueError as exc:
        raise ConfigError(f"not a valid URL: {url!r} ({exc})", key_path=_KEY_PATH) from exc
    if not parts.scheme or "://" not in url:
        raise ConfigError(
            f"expected a URL such as semtech-udp://127.0.0.1:1700, got {url!r}", key_path=_KEY_PATH
        )
    return parts.scheme.lower(), parts


def check_url(url: str) -> None:
    """Everything ``open_backend`` checks, for ``edgegw config check``: a known backend that can be
    loaded (its optional dependencies installed) and a URL it accepts (host, port, parameters).
    Builds the backend and drops it. For Semtech UDP it also binds the address on a free port
    and closes it at once: an address this host does not have fails here, not after ``run`` has
    opened the database (the port itself may be in use by the running agent, so it is not tried)."""
    open_backend(url)
    scheme, parts = parse_url(url)
    if scheme == "semtech-udp" and parts.hostname:
        try:
            family = socket.AF_INET6 if ":" in parts.hostname else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.bind((parts.hostname, 0))
        except OSError as exc:
            raise ConfigError(
                f"cannot bind {parts.hostname}: {exc.strerror or exc} (not an address of this host?)",
                key_path=_KEY_PATH,
            ) from exc


def open_backend(url: str) -> RadioBackend:
    """Build (not start) the radio backend named by ``url``, e.g. ``semtech-udp://127.0.0.1:1700``.

    Raises ConfigError(key_path="radio.url") for an unknown scheme or a URL the
    backend cannot use.
    """
    scheme, parts = parse_url(url)
    return _load(scheme, _target(scheme)).from_url(parts)
