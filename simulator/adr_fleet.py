"""A fleet under the gateway's ADR in the simulator's radio model, without an agent process (issue 20).

Owns the loop that puts the network server's own ADR peer (``gateway.lorawan.adr.AdrPeer``: the
history of the last uplinks, ``decide``, asking again an unanswered LinkADRReq, NACKs) in front of
devices that follow it (``simulator.device_mac``: the firmware's MAC) over the radio model
(``simulator.radio``): each device reports at its interval, sends each uplink NbTrans times
(stopping once a downlink came, LoRaWAN 1.0.4 §4.3.1.3 / §5.3), the LinkADRReq rides in the class A
downlink after an uplink and is lost with ``downlink_loss``, the LinkADRAns rides in the FOpts of
the next uplink. It counts what each device spent: uplinks, transmissions, airtime, TX energy,
uplinks lost, and the uplink after which its data rate and TX power stopped changing.

The frames are real (the devices' session keys, FCtrl ADR, FOpts); the agent's other stages (MIC,
counters, de-duplication across forwarders: here the best reception is the one kept) are left out,
as are the duty-cycle waits and joins (a week at a report interval of 15 min or more stays far
inside 1 %). It keeps no clock: times are simulated seconds.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from gateway.lorawan import mac, phy
from gateway.lorawan.adr import MAX_EIRP_DBM, AdrPeer, AdrSettings, LinkSettings, required_snr_db
from gateway.lorawan.sessions import session_tag
from gateway.messages import AesKey, DevAddr, DevEui, RadioFrame, RxInfo, UplinkData
from gateway.radio.airtime import LoraParams, airtime_s
from simulator import radio
from simulator.city import SimDevice
from simulator.device_mac import DeviceMac

FOPTS_MAX_BYTES: Final = 15
SUPPLY_V: Final = 3.3
"""A lithium-thionyl or 2 x AA node's radio supply."""
_TX_CURRENT_A: Final = ((7.0, 0.020), (13.0, 0.029))
"""SX1276 IDDT on the RFO_HF pin (Semtech SX1276/77/78/79 datasheet rev. 7, Table 6): +7 dBm
20 mA, +13 dBm 29 mA. EU868 end devices send at most +14 dBm conducted (RP002 MaxEIRP 16 dBm, a
2 dBi antenna), the RFO pin's range; other powers on the same line (1.5 mA/dB)."""


def tx_current_a(power_dbm: float) -> float:
    """SX1276 supply current while sending at ``power_dbm`` on RFO_HF (datasheet points, linear in dB)."""
    (p0, i0), (p1, i1) = _TX_CURRENT_A
    return i0 + (power_dbm - p0) * (i1 - i0) / (p1 - p0)


def tx_energy_j(airtime: float, power_dbm: float) -> float:
    """Energy the radio draws to send one frame: supply voltage x TX current x time on air."""
    return SUPPLY_V * tx_current_a(power_dbm) * airtime


@dataclass(frozen=True, slots=True)
class Decision:
    """A LinkADRReq the network sent after an uplink, with the history it decided on."""

    uplink: int
    """The device's uplink (1-based) whose downlink carried the request."""
    max_snr_db: float
    """The best SNR of the ``history`` uplinks the decision looked at."""
    current: LinkSettings
    """What the network knew the device used (its DR, the TX power it acknowledged; its NbTrans)."""
    wanted: LinkSettings
    delivered: bool
    again: bool = False
    """The same request sent again (the last one went unanswered), not a new decision."""


@dataclass
class DeviceRun:
    """What one device did and spent over the run."""

    name: str
    best_link_snr_db: float
    """Mean SNR of its best link at 14 dBm, before fading."""
    uplinks: int = 0
    transmissions: int = 0
    lost: int = 0
    """Uplinks of which no copy was heard."""
    airtime_s: float = 0.0
    energy_j: float = 0.0
    converged_after: int = 0
    """Uplinks sent before the first one at its final DR and TX power (0: it never moved)."""
    dr_settled_after: int = 0
    """Uplinks sent before the first one at its final DR (ADR raises the DR first, then lowers power)."""
    changes: int = 0
    """LinkADRReq the device applied."""
    refusals: int = 0
    """LinkADRReq the device refused (a NACK bit in its LinkADRAns)."""
    decisions: list[Decision] = field(default_factory=list)
    settings: list[tuple[int, int, int]] = field(default_factory=list)
    """(DR, TX power dBm, NbTrans) of each uplink, in order."""
    costs: list[tuple[float, float]] = field(default_factory=list)
    """(airtime s, TX energy J) of each uplink, its NbTrans copies included."""
    snrs_db: list[float | None] = field(default_factory=list)
    """Best SNR the network heard of each uplink (its first copy heard); None: lost."""

    @property
    def final_dr(self) -> int:
        return self.settings[-1][0] if self.settings else 0


@dataclass(frozen=True, slots=True)
class AdrRun:
    """How the run is played: ADR on or off, the network's settings, the losses."""

    duration_s: float = 7 * 86_400.0
    adr: bool = True
    """False: the "before" case, every device stays where it starts."""
    start_dr: int = 0
    settings: AdrSettings = field(default_factory=AdrSettings)
    downlink_loss: float = 0.1
    """Probability that the class A downlink after an uplink never reaches the device."""
    extra_loss: float = 0.0
    """Loss on top of the radio model's (interference, collisions), per forwarder."""
    seed: int = 1
    cflist_hz: tuple[int, ...] = ()
    """The gateway's extra channels (``lorawan.cflist_hz``): the ChMask of its LinkADRReq covers them."""
    abp_knows_cflist: bool = True
    """An OTAA device learns ``cflist_hz`` from its join-accept; an ABP device knows them only when it
    was provisioned with them. False: ABP devices know the 3 default channels only."""


def run_fleet(
    fleet: Sequence[SimDevice],
    run: AdrRun,
    *,
    payload: Callable[[SimDevice, float], bytes | None] | None = None,
) -> list[DeviceRun]:
    """Every device of ``fleet`` for ``run.duration_s`` behind one network ADR peer; a report per device.

    ``payload(device, t_s)`` is what it reports at ``t_s`` (None: nothing at that wake-up); by default
    its model's measurement, and nothing while its cabinet is off (as ``simulator.city.schedule``).
    """
    peer = AdrPeer(run.settings, cflist_hz=run.cflist_hz, enabled=run.adr)
    measure = payload or _measured
    return [_run_device(d, peer, run, measure) for d in fleet]


def _measured(d: SimDevice, t_s: float) -> bytes | None:
    if d.silent(t_s):
        return None
    m = d.model.measure(t_s)
    return None if m is None else m.payload


def _run_device(
    d: SimDevice, peer: AdrPeer, run: AdrRun, payload: Callable[[SimDevice, float], bytes | None]
) -> DeviceRun:
    # One generator per device, seeded by its name: a device's draws do not depend on the others.
    rng = random.Random(f"{run.seed}:{d.name}")
    knows = d.otaa is not None or run.abp_knows_cflist
    d.mac = DeviceMac(dr=run.start_dr, cflist_hz=run.cflist_hz if knows else ())
    eui, addr = DevEui(d.device.dev_eui), DevAddr(d.device.dev_addr)
    tag = session_tag(addr, AesKey(d.device.nwk_s_key))
    out = DeviceRun(d.name, max(link.snr_db for link in d.links))
    t_s = rng.uniform(0.0, d.report_interval_s)
    for _ in range(1_000_000):
        if t_s >= run.duration_s:
            break
        plain = payload(d, t_s)
        t_next = t_s + d.interval_at(t_s)
        if plain is not None:
            _uplink(d, d.mac, peer, run, rng, out, plain, eui, addr, tag)
        t_s = t_next
    out.converged_after = _settled_after([s[:2] for s in out.settings])
    out.dr_settled_after = _settled_after([s[:1] for s in out.settings])
    return out


def _uplink(
    d: SimDevice,
    device: DeviceMac,
    peer: AdrPeer,
    run: AdrRun,
    rng: random.Random,
    out: DeviceRun,
    plain: bytes,
    eui: DevEui,
    addr: DevAddr,
    tag: str,
) -> None:
    """One application uplink: its NbTrans copies on the air, the network's answer, the device's."""
    out.uplinks += 1
    fcnt = d.device.fcnt_up
    frame = d.device.uplink(plain, 1, fopts=device.uplink_fopts(), adr=True)
    out.settings.append((device.dr, device.tx_power_dbm, device.nb_trans))
    out.snrs_db.append(None)
    on_air_s = airtime_s(len(frame), LoraParams(sf=device.sf))
    heard = processed = False
    spent_s = spent_j = 0.0
    for _ in range(device.nb_trans):
        out.transmissions += 1
        spent_s += on_air_s
        spent_j += tx_energy_j(on_air_s, device.tx_power_dbm)
        receptions = radio.hear(rng, device.links_at_power(d.links), device.sf, run.extra_loss, 0.0)
        if not receptions:
            continue
        heard = True
        if processed:
            continue  # a copy of an uplink the network already has: not processed twice
        processed = True
        best = max(receptions, key=lambda r: r.snr_db)  # the copy de-duplication keeps
        out.snrs_db[-1] = best.snr_db
        rx = RxInfo(868_100_000, best.rssi_dbm, best.snr_db, best.sf, 125_000, "4/5", True, "sim")
        up = UplinkData(
            eui, addr, tag, d.device.profile, fcnt, 1, plain, False, RadioFrame(frame, rx, 0.0, 0.0)
        )
        asked_again = peer.counters["adr.asked_again"]
        request = _network(peer, up, frame)
        if not request:
            continue  # nothing to say: no downlink, the device sends its other copies
        delivered = rng.random() >= run.downlink_loss
        wanted = _asked(request)
        if wanted is not None:
            out.decisions.append(
                _decision(peer, str(eui), out.uplinks, device.nb_trans, wanted, delivered, asked_again)
            )
        if delivered:
            answered = len(device.link_adr_answers)
            device.downlink(request, snr_db=best.snr_db)
            for status in device.link_adr_answers[answered:]:
                out.changes += status == 0b111
                out.refusals += status != 0b111
            break  # a downlink came: the device stops repeating this uplink (1.0.4 §4.3.1.3)
    out.airtime_s += spent_s
    out.energy_j += spent_j
    out.costs.append((spent_s, spent_j))
    if not heard:
        out.lost += 1


def _decision(
    peer: AdrPeer, eui: str, uplink: int, nb_trans: int, wanted: LinkSettings, delivered: bool, again: int
) -> Decision:
    """The request just made, with the history's best SNR as the peer shows it (``link``)."""
    link = peer.link(eui)
    max_snr_db = link["link_margin_db"] + required_snr_db(link["dr"])
    current = LinkSettings(link["dr"], (MAX_EIRP_DBM - link["tx_power_dbm"]) // 2, nb_trans)
    return Decision(uplink, max_snr_db, current, wanted, delivered, peer.counters["adr.asked_again"] > again)


def _network(peer: AdrPeer, up: UplinkData, frame: bytes) -> bytes:
    """What the downlink scheduler does after an accepted uplink: FOpts answers, then the peer's requests."""
    parsed = phy.parse(frame)
    assert isinstance(parsed, phy.DataFrame)
    commands, _ = mac.parse_commands(parsed.fopts, uplink=True)
    for command in commands:
        peer.answer(up, command)
    return peer.requests(up, FOPTS_MAX_BYTES)


def _asked(request: bytes) -> LinkSettings | None:
    commands, _ = mac.parse_commands(request, uplink=False)
    for c in commands:
        if c.name == "LinkADRReq":
            return LinkSettings(c.payload[0] >> 4, c.payload[0] & 0x0F, c.payload[3] & 0x0F)
    return None


def _settled_after(settings: Sequence[tuple[int, ...]]) -> int:
    """Uplinks sent before the last run of the final settings (NbTrans left out: it follows the losses)."""
    if not settings:
        return 0
    k = len(settings)
    while k > 0 and settings[k - 1] == settings[-1]:
        k -= 1
    return k


# --- summaries ---------------------------------------------------------------------------------------


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (``share`` 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(share * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


def _spread(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"median": 0, "p95": 0, "max": 0}
    return {"median": statistics.median(values), "p95": percentile(values, 0.95), "max": max(values)}


def summary(runs: Sequence[DeviceRun], duration_s: float) -> dict[str, object]:
    """The figures of one run: convergence, DR distribution, airtime, energy, losses.

    ``steady_*``: per device-day once its DR and power settled (its uplinks after ``converged_after``
    at its own rate), i.e. the weeks after the first.
    """
    days = duration_s / 86_400.0
    uplinks = sum(r.uplinks for r in runs)
    airtime = sum(r.airtime_s for r in runs)
    energy = sum(r.energy_j for r in runs)
    transmissions = sum(r.transmissions for r in runs)
    steady_s = steady_j = 0.0
    for r in runs:
        tail = r.costs[r.converged_after :] or r.costs
        per_day = r.uplinks / days
        steady_s += per_day * sum(c[0] for c in tail) / max(1, len(tail))
        steady_j += per_day * sum(c[1] for c in tail) / max(1, len(tail))
    devices = max(1, len(runs))
    return {
        "devices": len(runs),
        "uplinks": uplinks,
        "transmissions": transmissions,
        "lost": sum(r.lost for r in runs),
        "lost_pct": round(100.0 * sum(r.lost for r in runs) / max(1, uplinks), 3),
        "devices_moved": sum(1 for r in runs if r.changes),
        "devices_refusing": sum(1 for r in runs if r.refusals),
        "dr_settled_after_uplinks": _spread([r.dr_settled_after for r in runs if r.changes]),
        "converged_after_uplinks": _spread([r.converged_after for r in runs if r.changes]),
        "final_dr": {f"DR{dr}": n for dr, n in sorted(Counter(r.final_dr for r in runs).items())},
        "airtime_s_total": round(airtime, 1),
        "airtime_s_per_device_day": round(airtime / devices / days, 3),
        "steady_airtime_s_per_device_day": round(steady_s / devices, 3),
        "tx_energy_j_total": round(energy, 2),
        "tx_energy_mj_per_frame": round(1000.0 * energy / max(1, transmissions), 3),
        "tx_energy_j_per_device_week": round(energy / devices / days * 7, 3),
        "steady_tx_energy_j_per_device_week": round(steady_j / devices * 7, 3),
    }
