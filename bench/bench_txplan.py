"""What yielding to class A receive windows costs a class C command, and what it saves (issue 20).

A concentrator has one transmit path: an immediate (class C) frame on the air when a class A device
opens its receive window takes that device's only chance until its next uplink. The radio layer's
plan (``gateway.radio.txplan``) makes an immediate frame wait for the windows it knows of, up to a
bound (``max_yield_s``, 4 s), and refuses it when booked windows still fill the bound. This bench
measures, through the real ``RadioBackend.transmit`` (duty cycle, plan, bound) on a fake clock with
a radio that always sends, the delay of one class C command and how often it still overlaps a class
A downlink, for five plans:

* **no plan** (before): the command goes when asked (the plan always answers "now");
* **booked only**: only timed downlinks already accepted by the radio count;
* **shipped rule**: ``answer_expected`` also reserves the RX1/RX2 starts of uplinks the server may
  answer (confirmed, ADRACKReq, MAC commands, join-requests) until they are booked or lapse;
* **shipped + queued hint**: the same, plus ``extra_answer`` for devices with a queued downlink
  (the hint the radio layer lacks; here an oracle: exactly the devices that will get one);
* **all uplinks**: every uplink reserves its windows.

Traffic model, one trial (drawn once and replayed for the five plans, so they are compared on the
same air): uplinks arrive as a Poisson process at the given rate per hour from ``LEAD_S`` before
the command to ``TAIL_S`` after it; spreading factors 7..12 in the shares of ``SF_SHARES`` (a city
fleet, mostly SF7); 5 % confirmed (answered: an ACK), 3 % carry MAC commands (half answered), and
2 % of the rest come from a device with a queued downlink (answered). An answer is decided
``DECIDE_S`` (100 ms) after its uplink (de-duplication window, commit) and sent in RX1 (1 s after the
uplink, RECEIVE_DELAY1, LoRaWAN 1.0.4 §3.3): 14 bytes at the uplink's SF, 868.1 MHz. The class C
command: 20 bytes at SF12 / 125 kHz (RX2 DR0, 869.525 MHz: 1.32 s of airtime), asked at a random
moment. Airtimes: ``gateway.radio.airtime`` (Semtech AN1200.13).

Reported per rate and plan, over ``--trials`` trials: mean, p95 and max delay of the command (over
those sent), the share delayed at all, the share refused at the bound (``COLLISION_PACKET``: its
scheduler sends it again at its next opportunity), and "hits": the share of commands whose airtime
overlaps a class A downlink that was actually sent for an uplink heard before the command started
(an uplink heard while the command is on the air would not be heard at all: the radio is deaf
while it sends). Not modelled: join-requests (windows at 5 s / 6 s), RX2 answers, several gateways,
the forwarder's own latency (covered by ``guard_s``).

    .venv/bin/python bench/bench_txplan.py [--seed 2026] [--trials 5000] [--json]

Prints a table and writes bench/results/txplan.json (results are not committed). Deterministic for
a seed and a number of trials; ~35 s with the default trials on the reference machine.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import json
import logging
import math
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gateway.messages import RadioFrame, RxInfo, TxRequest, TxResult, TxStatus
from gateway.radio.airtime import LoraParams, airtime_s
from gateway.radio.base import RadioBackend
from gateway.radio.txplan import DEFAULT_MAX_YIELD_S, TxPlan, all_uplinks, answer_expected

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "txplan.json"

RATES_PER_HOUR: Final = (1_000, 5_000, 20_000)
SF_SHARES: Final = {7: 0.40, 8: 0.15, 9: 0.15, 10: 0.10, 11: 0.10, 12: 0.10}
CONFIRMED_SHARE: Final = 0.05
MAC_SHARE: Final = 0.03
MAC_ANSWERED_SHARE: Final = 0.5
QUEUED_SHARE: Final = 0.02
"""Of the plain unconfirmed uplinks: the device has a downlink queued, answered in RX1."""
DECIDE_S: Final = 0.1
RX1_DELAY_S: Final = 1.0
LEAD_S: Final = 4.0
"""Uplinks before the command: an uplink heard earlier has its RX2 start and its SF12 RX1 answer
(1 s + 1.15 s) behind it when the command is asked, so it cannot change the outcome."""
TAIL_S: Final = DEFAULT_MAX_YIELD_S + 0.5
"""Uplinks after the command: past the bound, the latest it can start."""
ANSWER_BYTES: Final = 14
COMMAND_BYTES: Final = 20
COMMAND_SF: Final = 12
UPLINK_FREQ_HZ: Final = 868_100_000
CLASS_C_FREQ_HZ: Final = 869_525_000
START_S: Final = 1000.0
US: Final = 1_000_000
TMST_WRAP: Final = 1 << 32

# LoRaWAN 1.0.4 §4: MHDR, DevAddr (4, little-endian), FCtrl, FCnt (2), [FOpts], FPort, payload, MIC.
PLAIN: Final = bytes.fromhex("40 04030201 00 0100 01 aabb 11223344")
CONFIRMED: Final = bytes.fromhex("80 04030201 00 0100 01 aabb 11223344")
WITH_MAC: Final = bytes.fromhex("40 04030201 01 0100 02 01 aabb 11223344")  # FOpts: LinkCheckReq
QUEUED_DEVADDR: Final = bytes.fromhex("0a0b0c0d")
QUEUED: Final = b"\x40" + QUEUED_DEVADDR + PLAIN[5:]
"""A plain uplink of the device with a downlink queued (the hint recognises its DevAddr)."""


class NoPlan(TxPlan):
    """The radio before the plan: an immediate frame never waits for class A windows."""

    def wait_s(self, key: str, now_s: float, airtime_s: float, *, reserved: bool = True) -> float:
        return 0.0


def _queued_hint(phy_payload: bytes) -> bool:
    return phy_payload[1:5] == QUEUED_DEVADDR


PLANS: Final[dict[str, Callable[[], TxPlan]]] = {
    "no plan (before)": NoPlan,
    "booked only": lambda: TxPlan(expects_answer=lambda _phy: False),
    "shipped rule": lambda: TxPlan(expects_answer=answer_expected),
    "shipped + queued hint": lambda: TxPlan(extra_answer=_queued_hint),
    "all uplinks": lambda: TxPlan(expects_answer=all_uplinks),
}


@dataclass(frozen=True, slots=True)
class Uplink:
    at_s: float
    sf: int
    phy_payload: bytes
    answered: bool


@dataclass(frozen=True, slots=True)
class Trial:
    command_at_s: float
    uplinks: tuple[Uplink, ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    delay_s: float | None
    """None: refused at the bound."""
    hit: bool


def draw_trial(rng: random.Random, per_hour: int) -> Trial:
    """One trial's air: the command's moment and the uplinks around it (see the module docstring)."""
    command_at = START_S + LEAD_S + rng.random()
    sfs, weights = list(SF_SHARES), list(SF_SHARES.values())
    uplinks: list[Uplink] = []
    t = START_S
    while True:
        t += rng.expovariate(per_hour / 3600.0)
        if t >= command_at + TAIL_S:
            break
        kind = rng.random()
        if kind < CONFIRMED_SHARE:
            phy, answered = CONFIRMED, True
        elif kind < CONFIRMED_SHARE + MAC_SHARE:
            phy, answered = WITH_MAC, rng.random() < MAC_ANSWERED_SHARE
        elif rng.random() < QUEUED_SHARE:
            phy, answered = QUEUED, True
        else:
            phy, answered = PLAIN, False
        uplinks.append(Uplink(t, rng.choices(sfs, weights)[0], phy, answered))
    return Trial(command_at, tuple(uplinks))


class FakeTime:
    """A clock that moves only when the code under test sleeps, running what fell due meanwhile."""

    def __init__(self, now_s: float) -> None:
        self.now_s = now_s
        self._due: list[tuple[float, int, Callable[[], Awaitable[None]]]] = []
        self._order = itertools.count()  # ties run in the order they were scheduled

    def clock(self) -> float:
        return self.now_s

    def at(self, when_s: float, action: Callable[[], Awaitable[None]]) -> None:
        heapq.heappush(self._due, (when_s, next(self._order), action))

    async def sleep(self, seconds: float) -> None:
        until = self.now_s + seconds
        while self._due and self._due[0][0] <= until:
            when_s, _, action = heapq.heappop(self._due)
            self.now_s = max(self.now_s, when_s)
            await action()
        self.now_s = max(self.now_s, until)


class BenchRadio(RadioBackend):
    """A transmitter that always sends; it records what it sent and when."""

    def __init__(self, fake: FakeTime, plan: TxPlan) -> None:
        super().__init__("bench", clock=fake.clock, sleep=fake.sleep)
        self.tx_plan = plan
        self.fake = fake
        self.sent: list[tuple[float, TxRequest]] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def _transmit(self, request: TxRequest, airtime_s: float) -> TxResult:
        self.sent.append((self.fake.now_s, request))
        return TxResult(TxStatus.SENT)

    def hear(self, phy_payload: bytes, sf: int) -> int:
        """Deliver an uplink heard now (the concentrator stamps its tmst); return the tmst."""
        tmst = round(self.fake.now_s * US) % TMST_WRAP
        rx = RxInfo(UPLINK_FREQ_HZ, -100.0, 0.0, sf, 125_000, "4/5", True, "bench", concentrator_tmst_us=tmst)
        self._deliver(RadioFrame(phy_payload, rx, 0.0, self.fake.now_s))
        return tmst


def _airtime(size: int, sf: int) -> float:
    return airtime_s(size, LoraParams(sf=sf, crc=False))  # downlinks carry no PHY CRC


COMMAND_AIRTIME_S: Final = _airtime(COMMAND_BYTES, COMMAND_SF)


async def run_trial(trial: Trial, plan: TxPlan) -> Outcome:
    fake = FakeTime(START_S)
    radio = BenchRadio(fake, plan)
    answers: list[tuple[float, float, float]] = []  # (start, end, uplink heard at) of frames sent

    def schedule(uplink: Uplink) -> Callable[[], Awaitable[None]]:
        async def heard() -> None:
            tmst = radio.hear(uplink.phy_payload, uplink.sf)
            if uplink.answered:
                fake.at(uplink.at_s + DECIDE_S, answer(tmst))

        def answer(tmst: int) -> Callable[[], Awaitable[None]]:
            async def send() -> None:
                request = TxRequest(
                    bytes(ANSWER_BYTES), UPLINK_FREQ_HZ, uplink.sf, send_at_tmst_us=(tmst + US) % TMST_WRAP
                )
                result = await radio.transmit(request)
                if result.status is TxStatus.SENT:  # a refused answer never took the air
                    start = uplink.at_s + RX1_DELAY_S
                    answers.append((start, start + _airtime(ANSWER_BYTES, uplink.sf), uplink.at_s))

            return send

        return heard

    for uplink in trial.uplinks:
        fake.at(uplink.at_s, schedule(uplink))
    await fake.sleep(trial.command_at_s - fake.now_s)
    result = await radio.transmit(TxRequest(bytes(COMMAND_BYTES), CLASS_C_FREQ_HZ, COMMAND_SF))
    # Let the answers of the uplinks heard before the command went be decided (and sent: the fake
    # radio sends a timed frame when it accepts it); later uplinks cannot collide with it.
    await fake.sleep(DECIDE_S * 1.5)
    if result.status is not TxStatus.SENT:
        return Outcome(None, False)
    sent_at = next(at for at, request in radio.sent if request.send_at_tmst_us is None)
    end = sent_at + COMMAND_AIRTIME_S
    hit = any(start < end and sent_at < stop and heard < sent_at for start, stop, heard in answers)
    return Outcome(sent_at - trial.command_at_s, hit)


def summarise(outcomes: list[Outcome]) -> dict[str, Any]:
    delays = sorted(o.delay_s for o in outcomes if o.delay_s is not None)
    n = len(outcomes)
    hits = sum(o.hit for o in outcomes)
    refused = n - len(delays)
    p95 = delays[max(math.ceil(0.95 * len(delays)) - 1, 0)] if delays else math.nan  # nearest rank
    return {
        "trials": n,
        "mean_ms": round(statistics.fmean(delays) * 1000.0, 1) if delays else None,
        "p95_ms": round(p95 * 1000.0, 1) if delays else None,
        "max_ms": round(delays[-1] * 1000.0, 1) if delays else None,
        "delayed_pct": round(100.0 * sum(d > 0.0 for d in delays) / n, 2),
        "refused": refused,
        "refused_pct": round(100.0 * refused / n, 3),
        "hits": hits,
        "hits_pct": round(100.0 * hits / n, 3),
    }


def expected_baseline_hit_pct(per_hour: int) -> float:
    """The "no plan" hit share from the model alone, a check of the simulation: answers form a
    thinned Poisson process, and the answer to an uplink heard at ``u`` (RX1 at ``u + 1`` s, ``a`` s
    long) overlaps a command started at ``c`` when ``c - 1 - a < u < c`` (heard before it started)
    and ``u + 1 < c + A``: a stretch of ``min(1 + a, A + a)`` seconds per answer's SF."""
    answered = (
        CONFIRMED_SHARE + MAC_SHARE * MAC_ANSWERED_SHARE + (1.0 - CONFIRMED_SHARE - MAC_SHARE) * QUEUED_SHARE
    )
    stretch_s = sum(
        share * min(RX1_DELAY_S + _airtime(ANSWER_BYTES, sf), COMMAND_AIRTIME_S + _airtime(ANSWER_BYTES, sf))
        for sf, share in SF_SHARES.items()
    )
    return 100.0 * -math.expm1(-per_hour / 3600.0 * answered * stretch_s)


async def measure(seed: int, trials: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "seed": seed,
        "trials": trials,
        "command": {
            "bytes": COMMAND_BYTES,
            "sf": COMMAND_SF,
            "airtime_ms": round(COMMAND_AIRTIME_S * 1000, 3),
        },
        "traffic": {
            "sf_shares": {str(sf): share for sf, share in SF_SHARES.items()},
            "confirmed": CONFIRMED_SHARE,
            "mac_commands": MAC_SHARE,
            "mac_answered": MAC_ANSWERED_SHARE,
            "queued_of_plain": QUEUED_SHARE,
            "decide_s": DECIDE_S,
            "answer_bytes": ANSWER_BYTES,
        },
        "rates": {},
    }
    for per_hour in RATES_PER_HOUR:
        # One stream per rate: a rate's figures do not depend on the others or on their order.
        rng = random.Random(f"{seed}/{per_hour}")
        outcomes: dict[str, list[Outcome]] = {name: [] for name in PLANS}
        for _ in range(trials):
            trial = draw_trial(rng, per_hour)
            for name, make_plan in PLANS.items():
                outcomes[name].append(await run_trial(trial, make_plan()))
        out["rates"][str(per_hour)] = {name: summarise(found) for name, found in outcomes.items()}
        out["rates"][str(per_hour)]["no plan (before)"]["hits_pct_expected"] = round(
            expected_baseline_hit_pct(per_hour), 3
        )
    return out


def _table(result: dict[str, Any]) -> str:
    heads = ("uplinks/h", "plan", "mean ms", "p95 ms", "max ms", "delayed", "refused", "hits")
    rows: list[tuple[str, ...]] = []
    for per_hour, plans in result["rates"].items():
        for name, s in plans.items():
            rows.append(
                (
                    f"{int(per_hour):,}",
                    name,
                    f"{s['mean_ms']:.0f}",
                    f"{s['p95_ms']:.0f}",
                    f"{s['max_ms']:.0f}",
                    f"{s['delayed_pct']:.1f} %",
                    f"{s['refused_pct']:.2f} % ({s['refused']})",
                    f"{s['hits_pct']:.2f} % ({s['hits']})",
                )
            )
    widths = [max(len(row[k]) for row in [heads, *rows]) for k in range(len(heads))]
    return "\n".join(
        "  ".join(cell.ljust(widths[k]) if k == 1 else cell.rjust(widths[k]) for k, cell in enumerate(row))
        for row in [heads, *rows]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--seed", type=int, default=2026, help="traffic draws; default 2026")
    parser.add_argument("--trials", type=int, default=5000, help="class C commands per rate (5000)")
    parser.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    args = parser.parse_args()
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    # Refusals and yields are logged once a minute per kind; the table counts them instead.
    logging.getLogger("gateway.radio").setLevel(logging.ERROR)
    started = time.monotonic()
    result = asyncio.run(measure(args.seed, args.trials))
    result["wall_s"] = round(time.monotonic() - started, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"class C SF{COMMAND_SF} {COMMAND_BYTES}-byte command ({COMMAND_AIRTIME_S * 1000:.0f} ms) against "
        f"class A windows, {args.trials} trials per rate, seed {args.seed}"
    )
    print(_table(result))
    expected = ", ".join(
        f"{int(rate):,}/h {plans['no plan (before)']['hits_pct_expected']:.2f} %"
        for rate, plans in result["rates"].items()
    )
    print(f"no plan hits expected from the model alone (Poisson): {expected}")
    print(f"wrote {RESULTS.relative_to(ROOT)} in {result['wall_s']} s")


if __name__ == "__main__":
    main()
