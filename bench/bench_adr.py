"""ADR convergence, airtime and device energy over a simulated week of the first deployment (issue 20).

The fleet of ``simulator/scenarios/first-deployment-week.yaml`` (``simulator.city.build_fleet``:
~100 containers, river probes, noise sites, counters, totems, cabinets and lamps, their positions
and two roof-top gateways) is placed in the simulator's radio model (``simulator.radio``: log-distance
path loss with the scenario's exponent and per-link shadowing, 2 dB fading per frame, the 125 kHz
noise floor, loss as the SNR nears each SF's demodulation floor, the scenario's 0.5 % extra loss).
Every device starts at SF12 / DR0, 14 dBm, NbTrans 1, and reports at its own interval for a week.

Three runs, same fleet, same payloads (each device's model), same seed:

* **before**: nobody drives the devices (the agent as it was): all stay at SF12;
* **after**: the gateway's ADR peer (``gateway.lorawan.adr.AdrPeer``: history 20, installation margin
  10 dB, ``decide``, asking again after 3 unanswered uplinks, the agent's default channel plan: the
  3 EU868 channels and the 5 of ``lorawan.cflist_hz``, ChMask 0x00FF) answers each uplink as the
  downlink scheduler calls it; its LinkADRReq goes in the class A downlink after the uplink, lost
  with ``--downlink-loss`` (default 10 %); the device applies it with the firmware's own MAC
  (``firmware/lorawan/mac.py`` via ``simulator.device_mac``) and answers LinkADRAns in the FOpts of
  its next uplink; NbTrans copies are sent and counted (``simulator.adr_fleet``). Every device knows
  the 8 channels (OTAA: from the join-accept's CFList; ABP: provisioned with them);
* **after, ABP: 3 channels**: the same, but the ABP devices know only the 3 default channels (a
  factory ABP device nobody gave the CFList): they refuse a ChMask that enables channels they do not
  have (LoRaWAN 1.0.4 §5.3, channel mask NACK); the agent then asks once more with the 3 default
  channels only (``gateway.lorawan.adr``), which costs them one round trip.

Reported: uplinks until each device's DR settled and until DR and TX power settled (median, p95,
max over the devices ADR moved), the final DR distribution, airtime per device-day and in total,
TX energy per frame and per device-week (the first week, convergence included, and the steady state
after it), and uplinks lost (no copy heard by any gateway).

Sources of the numbers:
* Time on air: ``gateway.radio.airtime`` (Semtech AN1200.13, the project's own formula, checked
  against LoRa Calculator figures in tests/radio/).
* TX current: Semtech SX1276/77/78/79 datasheet rev. 7 (May 2020), Table 6 "Power Consumption",
  IDDT on the RFO_HF pin: 20 mA at +7 dBm, 29 mA at +13 dBm; other powers on the same line (1.5 mA
  per dB: 30.5 mA at +14 dBm, 12.5 mA at +2 dBm). Supply 3.3 V. Only the radio's TX is counted (no
  receive windows, no MCU): the part ADR changes.
* Demodulation floors -7.5 dB (SF7) to -20 dB (SF12): SX1276 datasheet Table 13 (``simulator.radio``).
* The ADR algorithm: Semtech's recommended network-side ADR, as ChirpStack's default
  (``gateway.lorawan.adr.decide``); TXPower steps of 2 dB from 16 dBm EIRP: RP002-1.0.3 EU868.

    .venv/bin/python bench/bench_adr.py [--seed 2026] [--downlink-loss 0.1] [--days 7] [--json]

Prints a table and writes bench/results/adr.json (results are not committed). Deterministic for a
seed; 10-30 s.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from gateway.config import LorawanSection
from gateway.lorawan.adr import AdrSettings
from simulator.adr_fleet import AdrRun, run_fleet, summary
from simulator.city import build_fleet
from simulator.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "simulator" / "scenarios" / "first-deployment-week.yaml"
RESULTS = Path(__file__).parent / "results" / "adr.json"
CASES = (("before", False, True), ("after", True, True), ("after_abp_3_channels", True, False))
"""(name, ADR on, ABP devices provisioned with the CFList channels)."""


def measure(seed: int, downlink_loss: float, days: float) -> dict[str, Any]:
    scenario = load_scenario(SCENARIO)
    settings = AdrSettings(installation_margin_db=10.0, history=20)
    out: dict[str, Any] = {
        "scenario": scenario.name,
        "seed": seed,
        "days": days,
        "downlink_loss": downlink_loss,
        "installation_margin_db": settings.installation_margin_db,
        "history": settings.history,
    }
    cflist_hz = LorawanSection().cflist  # the agent's default channel plan: ChMask 0x00FF
    out["cflist_hz"] = list(cflist_hz)
    for case, adr, abp_knows_cflist in CASES:
        fleet = build_fleet(scenario, scenario.seed)  # the same fleet for each: positions, models
        run = AdrRun(
            duration_s=days * 86_400.0,
            adr=adr,
            settings=settings,
            downlink_loss=downlink_loss,
            extra_loss=scenario.radio.loss,
            seed=seed,
            cflist_hz=cflist_hz,
            abp_knows_cflist=abp_knows_cflist,
        )
        out[case] = summary(run_fleet(fleet, run), run.duration_s)
    return out


def _table(r: dict[str, Any]) -> str:
    cases = [r[name] for name, _, _ in CASES]

    def row(name: str, show: Any, before: Any = None) -> tuple[str, ...]:
        first = show(cases[0]) if before is None else before
        return (name, str(first), *(str(show(c)) for c in cases[1:]))

    def spread(key: str) -> Any:
        return lambda c: "{median:g} / {p95:g} / {max:g}".format(**c[key])

    rows = [
        row("devices", lambda c: c["devices"]),
        row("uplinks / transmissions", lambda c: f"{c['uplinks']} / {c['transmissions']}"),
        row("uplinks lost", lambda c: f"{c['lost']} ({c['lost_pct']} %)"),
        row("final DR", lambda c: _dr(c["final_dr"])),
        row("devices moved / refusing", lambda c: f"{c['devices_moved']} / {c['devices_refusing']}", "-"),
        row("uplinks until DR settled (med/p95/max)", spread("dr_settled_after_uplinks"), "-"),
        row("uplinks until DR+power settled", spread("converged_after_uplinks"), "-"),
        row("airtime total (s)", lambda c: c["airtime_s_total"]),
        row("airtime per device-day (s), week 1", lambda c: c["airtime_s_per_device_day"]),
        row("airtime per device-day (s), settled", lambda c: c["steady_airtime_s_per_device_day"]),
        row("TX energy per frame (mJ)", lambda c: c["tx_energy_mj_per_frame"]),
        row("TX energy per device-week (J), week 1", lambda c: c["tx_energy_j_per_device_week"]),
        row("TX energy per device-week (J), settled", lambda c: c["steady_tx_energy_j_per_device_week"]),
        row("TX energy total (J)", lambda c: c["tx_energy_j_total"]),
    ]
    heads = ("", "before (SF12)", "after (ADR)", "after, ABP: 3 channels")
    widths = [max(len(x[k]) for x in [heads, *rows]) for k in range(len(heads))]
    lines = ["  ".join(x[k].rjust(widths[k]) if k else x[k].ljust(widths[k]) for k in range(len(x)))
             for x in [heads, *rows]]  # fmt: skip
    return "\n".join(lines)


def _dr(counts: dict[str, int]) -> str:
    return " ".join(f"{k}:{v}" for k, v in counts.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seed", type=int, default=2026, help="radio draws (fading, losses); default 2026")
    parser.add_argument("--downlink-loss", type=float, default=0.1, help="share of downlinks lost (0.1)")
    parser.add_argument("--days", type=float, default=7.0, help="simulated days (7)")
    parser.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    args = parser.parse_args()
    # The peer warns once per device that refuses a LinkADRReq; the table counts them instead.
    logging.getLogger("gateway.lorawan.adr").setLevel(logging.ERROR)
    started = time.monotonic()
    result = measure(args.seed, args.downlink_loss, args.days)
    result["wall_s"] = round(time.monotonic() - started, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"ADR over {args.days:g} simulated days of {result['scenario']} (seed {args.seed}, downlink loss "
        f"{args.downlink_loss:.0%}, margin {result['installation_margin_db']:g} dB, "
        f"history {result['history']})"
    )
    print(_table(result))
    print(f"wrote {RESULTS.relative_to(ROOT)} in {result['wall_s']} s")


if __name__ == "__main__":
    main()
