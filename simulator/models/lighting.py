"""Street lighting: lamps under a NAS UL20xx controller, cabinets under a Milesight WS558.

Owns the electrical physics (research/domain.md §5.5): a lamp draws its rated power times its
driver curve at the dim level it was last commanded (its own night calendar, or the last
``set_dim`` downlink), plus driver losses; 0.5-2 W standby at 0 %; a failed LED/driver falls
to standby while commanded on (TALQ ``lampFailure``); a whole-circuit loss at a cabinet drops
the cabinet meter to ~0 W while its lamps go silent. Payloads: UL20xx fPort 61 metering alert
(84, alert bits, power W, voltage V, power factor / 100) and fPort 60 manual-dimming answer
(01 fe level), as in device_profiles/nasys/ul20xx.yaml; WS558 voltage, power, power factor,
energy, current and switch states (device_profiles/milesight/ws558.yaml).

It does not know when reports are sent nor receive downlinks itself (the runner calls
``command_dim``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from simulator.models.base import SECONDS_PER_DAY, Measurement

DimProfile = Literal["reduced", "extinction"]
DIM_PROFILES: Final[tuple[DimProfile, ...]] = ("reduced", "extinction")
FPORT_COMMAND_ANSWER: Final = 60
FPORT_ALERT: Final = 61
_STANDBY_W: Final = 0.8
_DRIVER_FLOOR: Final = 0.12
"""Power vs light is roughly linear above 10-20 %, with a driver minimum (domain.md §5.5)."""
_DRIVER_LOSS_W: Final = 1.5
_DRIVER_LOSS_RATIO: Final = 0.06
_CABINET_SELF_W: Final = 0.0
"""The WS558 meters its outgoing circuits only: the cabinet's own use is not on them."""


@dataclass(frozen=True, slots=True)
class SunDay:
    """Sunrise and sunset of one simulated day, in simulated seconds."""

    sunrise_s: float
    sunset_s: float


def calendar_level_pct(profile: DimProfile, t_s: float, sun: list[SunDay]) -> int:
    """The controller's own night calendar (domain.md §5.2): 100 % from sunset to 23 h, then 50 %
    (``reduced``) or off (``extinction``, the 23h-05h cut many communes adopted) until 05 h, 100 %
    until sunrise, off by day."""
    day = int(t_s // SECONDS_PER_DAY)
    today = sun[min(day, len(sun) - 1)]
    midnight = day * SECONDS_PER_DAY
    sunrise, sunset = today.sunrise_s + midnight, today.sunset_s + midnight
    hour = (t_s - midnight) / 3600.0
    if sunrise <= t_s < sunset:
        return 0
    if 5.0 <= hour < 23.0:
        return 100
    return 50 if profile == "reduced" else 0


def ul20xx_metering(lamp_error: bool, power_w: int, voltage_v: int, power_factor: float) -> bytes:
    """UL20xx fPort 61 metering alert: 84, condition bits (bit 0 lamp error), P, V (uint16 LE), PF%."""
    return (
        bytes([0x84, 0x01 if lamp_error else 0x00])
        + power_w.to_bytes(2, "little")
        + voltage_v.to_bytes(2, "little")
        + bytes([round(power_factor * 100)])
    )


def ul20xx_dim_answer(level_pct: int) -> bytes:
    """UL20xx fPort 60 manual-dimming answer, broadcast address: 01 fe level."""
    return bytes([0x01, 0xFE, level_pct])


@dataclass
class LampModel:
    """One LED luminaire with its UL20xx controller."""

    rng: random.Random
    rated_w: float
    profile: DimProfile
    sun: list[SunDay]
    failure_s: float | None = None
    """When the LED driver fails (power falls to standby while commanded on)."""
    commanded: tuple[float, int] | None = None
    """(since_s, level %) of the last downlinked level; it holds until the calendar's next step."""
    answers: list[int] = field(default_factory=list)
    """Dim levels received by downlink and not yet answered on fPort 60."""

    def level_pct(self, t_s: float) -> int:
        own = calendar_level_pct(self.profile, t_s, self.sun)
        if self.commanded is not None:
            since, level = self.commanded
            if calendar_level_pct(self.profile, since, self.sun) == own and t_s - since < 12 * 3600:
                return level
        return own

    def command_dim(self, t_s: float, level_pct: int) -> None:
        self.commanded = (t_s, max(0, min(100, level_pct)))
        self.answers.append(self.commanded[1])

    def failed(self, t_s: float) -> bool:
        return self.failure_s is not None and t_s >= self.failure_s

    def power_w(self, t_s: float) -> float:
        level = self.level_pct(t_s)
        if level == 0 or self.failed(t_s):
            return _STANDBY_W
        light = max(_DRIVER_FLOOR, level / 100.0) * self.rated_w
        return light * (1 + _DRIVER_LOSS_RATIO) + _DRIVER_LOSS_W

    def power_factor(self, t_s: float) -> float:
        level = self.level_pct(t_s)
        if level == 0 or self.failed(t_s):
            return 0.3
        return round(0.55 + 0.41 * min(1.0, level / 60.0), 2)  # > 0.9 at full load (§5.5)

    def measure(self, t_s: float) -> Measurement:
        if self.answers:
            level = self.answers.pop(0)
            return Measurement(
                {
                    "packet_type": "manual_dimming",
                    "destination": [{"address": "dali_broadcast", "dimming_level__percent": level}],
                },
                ul20xx_dim_answer(level),
                FPORT_COMMAND_ANSWER,
            )
        lamp_error = self.failed(t_s) and self.level_pct(t_s) > 0
        power = round(self.power_w(t_s))
        voltage = round(230 + self.rng.gauss(0.0, 2.0))
        pf = self.power_factor(t_s)
        values: dict[str, Any] = {
            "packet_type": "metering_alert",
            "lamp_error_alert": lamp_error,
            "over_current_alert": False,
            "under_voltage_alert": False,
            "over_voltage_alert": False,
            "low_power_factor_alert": False,
            "power__W": power,
            "voltage__V": voltage,
            "power_factor": pf,
        }
        return Measurement(values, ul20xx_metering(lamp_error, power, voltage, pf), FPORT_ALERT)


@dataclass(frozen=True, slots=True)
class CircuitLoss:
    """A cable fault or copper theft on a cabinet's circuit: no supply to its lamps."""

    start_s: float
    duration_s: float

    def covers(self, t_s: float) -> bool:
        return self.start_s <= t_s < self.start_s + self.duration_s


def ws558_payload(
    voltage_v: float, power_w: int, pf_pct: int, energy_wh: int, current_ma: int, on: bool
) -> bytes:
    """WS558 TLV (WS558_Decoder.js): 03 74 V/10, 04 80 W, 05 81 PF %, 06 83 Wh, 07 c9 mA, 08 31 switches."""
    return (
        bytes([0x03, 0x74])
        + round(voltage_v * 10).to_bytes(2, "little")
        + bytes([0x04, 0x80])
        + power_w.to_bytes(4, "little", signed=True)
        + bytes([0x05, 0x81, pf_pct])
        + bytes([0x06, 0x83])
        + energy_wh.to_bytes(4, "little", signed=True)
        + bytes([0x07, 0xC9])
        + current_ma.to_bytes(2, "little")
        + bytes([0x08, 0x31, 0x00, 0x01 if on else 0x00])
    )


@dataclass
class CabinetModel:
    """A lighting cabinet metering the circuit that feeds its lamps (switch 1, always closed)."""

    rng: random.Random
    lamps: list[LampModel]
    losses: list[CircuitLoss] = field(default_factory=list)
    energy_wh: float = 0.0
    _last_t_s: float | None = None

    def supplied(self, t_s: float) -> bool:
        return not any(loss.covers(t_s) for loss in self.losses)

    def circuit_power_w(self, t_s: float) -> float:
        if not self.supplied(t_s):
            return 0.0
        return _CABINET_SELF_W + sum(lamp.power_w(t_s) for lamp in self.lamps)

    def measure(self, t_s: float) -> Measurement:
        if self._last_t_s is not None:
            # Energy by the rectangle rule on one-minute steps since the last report.
            t = self._last_t_s
            for _ in range(10_000):
                if t >= t_s:
                    break
                step = min(60.0, t_s - t)
                self.energy_wh += self.circuit_power_w(t) * step / 3600.0
                t += step
        self._last_t_s = t_s
        voltage = round(231.0 + self.rng.gauss(0.0, 1.5), 1)
        power = round(self.circuit_power_w(t_s))
        pf = 96 if power > 50 else (60 if power > 0 else 0)
        current = min(0xFFFF, round(power / voltage / (pf / 100) * 1000)) if pf else 0
        values: dict[str, Any] = {
            "voltage": voltage,
            "active_power": power,
            "power_factor": pf,
            "power_consumption": int(self.energy_wh),
            "total_current": current,
            "switch_1": "on",
            **{f"switch_{n}": "off" for n in range(2, 9)},
        }
        payload = ws558_payload(voltage, power, pf, int(self.energy_wh), current, True)
        return Measurement(values, payload)
