"""Coverage: where a city's gateways stand and which of them hear each device.

Owns the gateway sites of a multi-gateway scenario (listed in its ``gateways`` key, or N
roof-top sites derived around its ``location``), each gateway's packet-forwarder EUI, and the
coverage picture of a fleet: per device, each gateway's mean link (``simulator.radio``: path
loss with the link's fixed shadowing) and whether that link is above the demodulation floor of
the spreading factor the device settled on. A gateway above the floor hears the device; the
others do not.

Per-frame hearing stays in ``simulator.radio.hear`` (fading, loss as the SNR nears the floor,
CRC-error copies): with ``gateways`` in a scenario there is one forwarder per gateway, so a
``Reception.forwarder`` is the index of the gateway here, and each gateway reports its own
RSSI and SNR. A frame is heard by a subset of the gateways above the floor (those near it miss
some frames, as in the field); the truth records which (``rx`` of each frame).

It starts no agent (``simulator.gatewaylab``) and sends nothing (``simulator.transports``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from simulator import radio

if TYPE_CHECKING:
    from simulator.city import SimDevice

GATEWAY_EUI_BASE: Final = 0xB827EBFFFE000100
"""Gateway N (0-based, scenario order) has the EUI ``b827ebfffe000100 + N`` (its forwarder's)."""
ROOF_SPACING_M: Final = 3000.0
"""Derived roof-top sites: the first at the scenario's location, the others on a ring this far out
(urban LoRaWAN gateways stand 2-5 km apart where coverage overlaps)."""
MAX_GATEWAYS: Final = 16
GATEWAY_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""What a gateway id may be: it is an MQTT topic level (``edgegw/<id>/up``) and a directory name."""


@dataclass(frozen=True, slots=True)
class GatewaySite:
    """One gateway of the city: its id (``gateway.id`` of its agent), position and forwarder EUI."""

    gateway_id: str
    lat_deg: float
    lon_deg: float
    eui: bytes


def gateway_eui(index: int) -> bytes:
    return (GATEWAY_EUI_BASE + index).to_bytes(8, "big")


def site(index: int, gateway_id: str, lat_deg: float, lon_deg: float) -> GatewaySite:
    if not GATEWAY_ID.match(gateway_id):
        raise ValueError(f"a gateway id is letters, digits, '_', '.', '-' (at most 64), got {gateway_id!r}")
    return GatewaySite(gateway_id, lat_deg, lon_deg, gateway_eui(index))


def roof_sites(
    count: int, lat_deg: float, lon_deg: float, spacing_m: float = ROOF_SPACING_M
) -> tuple[GatewaySite, ...]:
    """``count`` sites ``gw-1`` .. ``gw-N``: the first at (lat, lon), the others evenly on a ring of
    ``spacing_m`` around it (north first, clockwise)."""
    if not 1 <= count <= MAX_GATEWAYS:
        raise ValueError(f"between 1 and {MAX_GATEWAYS} gateways, got {count}")
    sites = [site(0, "gw-1", lat_deg, lon_deg)]
    ring = count - 1
    for k in range(ring):
        bearing = 2 * math.pi * k / ring
        lat = lat_deg + spacing_m * math.cos(bearing) / 111_320.0
        lon = lon_deg + spacing_m * math.sin(bearing) / (111_320.0 * math.cos(math.radians(lat_deg)))
        sites.append(site(k + 1, f"gw-{k + 2}", round(lat, 6), round(lon, 6)))
    return tuple(sites)


def mean_loss_db(lat_deg: float, lon_deg: float, where: GatewaySite, exponent: float) -> float:
    """Path loss from a device at (lat, lon) to a gateway, without shadowing (``simulator.radio``)."""
    return radio.path_loss_db(radio.distance_m(lat_deg, lon_deg, where.lat_deg, where.lon_deg), exponent)


def hears(link: radio.Link, sf: int) -> bool:
    """A gateway hears a device when its mean SNR is above the demodulation floor of the device's SF
    (SX1276 table 13); fading then decides frame by frame near that floor (``radio.hear``)."""
    return link.snr_db >= radio.SNR_LIMIT_DB[sf]


@dataclass(frozen=True, slots=True)
class DeviceCoverage:
    """Which gateways hear one device, with each one's mean SNR (all gateways, scenario order)."""

    device: str
    sf: int
    snr_db: tuple[float, ...]
    heard_by: tuple[str, ...]


def coverage(fleet: Iterable[SimDevice], sites: tuple[GatewaySite, ...]) -> list[DeviceCoverage]:
    """The coverage picture of a fleet built with these gateway sites (``city.build_fleet``)."""
    out: list[DeviceCoverage] = []
    for d in fleet:
        links = d.tx_links()
        if len(links) != len(sites):
            raise ValueError(f"{d.name} has {len(links)} links for {len(sites)} gateways")
        heard = tuple(s.gateway_id for s, link in zip(sites, links, strict=True) if hears(link, d.tx_sf))
        out.append(DeviceCoverage(d.name, d.tx_sf, tuple(round(link.snr_db, 1) for link in links), heard))
    return out


def overlap_counts(picture: Iterable[DeviceCoverage]) -> dict[int, int]:
    """How many devices are heard by 0, 1, 2, ... gateways."""
    counts: dict[int, int] = {}
    for entry in picture:
        counts[len(entry.heard_by)] = counts.get(len(entry.heard_by), 0) + 1
    return dict(sorted(counts.items()))
