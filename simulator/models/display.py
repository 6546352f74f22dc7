"""Display totems next to the counters (``edgegw/display``), run by the totem's own firmware.

Owns what a totem shows: the downlinks it is sent go to the firmware's own command decoder
(``firmware/nodes/display.py`` ``DisplayNode.on_downlink``, FPort 20: ``11`` show_counts,
``10`` show_count), so the simulator obeys exactly what a totem would obey and refuses what it
would refuse; what the totem showed after each command it obeyed is kept (``history``) for the
ground truth. Its heartbeat (FPort 10, 11 bytes) is the firmware's own ``encode``: on mains,
the values shown (0xFFFFFFFF: nothing yet) and the backup battery in mV.

It does not own when the heartbeat is sent (``simulator.city`` schedules it every
``report_interval_s``, the firmware's ``DEFAULTS``; the firmware sends no report after a
command) nor LoRaWAN (decryption happens in ``simulator.city.apply_downlink``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from simulator.models.base import Measurement
from simulator.models.own_nodes import firmware_module

NOTHING: Final = 0xFFFFFFFF
"""What a heartbeat carries for a line that shows nothing yet (firmware/nodes/display.py)."""
LINES: Final = 2
"""Two MAX7219 8-digit lines: today on line 0, the year to date on line 1."""


class _Screen:
    """The MAX7219 chain the firmware drives (``sensors/max7219.py``): only what it is told."""

    def __init__(self, chips: int) -> None:
        self.chips = chips
        self.lines: list[int | None] = [None] * chips

    def show(self, line: int, value: int) -> None:
        self.lines[line] = value


class _Supply:
    """Mains present and the backup battery's voltage (the totem runs on the mains)."""

    def __init__(self, battery_mv: int) -> None:
        self.mains = True
        self.battery_mv = battery_mv

    def on_mains(self) -> bool:
        return self.mains

    def voltage_mv(self) -> int:
        return self.battery_mv


class _NoRadio:
    """The firmware node's ``device``: unused here (the city's AbpDevice sends the bytes)."""

    def send(self, fport: int, payload: bytes, confirmed: bool = False) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Shown:
    """What a totem showed from simulated second ``t_s`` on (None: nothing on that line yet)."""

    t_s: float
    today: int | None
    year: int | None


@dataclass
class DisplayModel:
    """A class C bike-count totem: obeys show commands, reports what it shows."""

    battery_mv: int = 4100
    report_interval_s: float = 3600.0
    history: list[Shown] = field(default_factory=list)
    refused: int = 0
    """Downlinks on its FPort that the firmware did not obey (wrong length, value too large)."""

    def __post_init__(self) -> None:
        module = firmware_module("display")
        self._encode: Any = module.encode
        self._screen = _Screen(LINES)
        self._supply = _Supply(self.battery_mv)
        self.node: Any = module.DisplayNode(
            _NoRadio(),
            self._screen,
            self._supply,
            self._supply,
            {"report_interval_s": self.report_interval_s},
        )

    @property
    def shown(self) -> tuple[int | None, int | None]:
        line0, line1 = self.node.shown[0], self.node.shown[1]
        return line0, line1

    def command(self, t_s: float, fport: int, payload: bytes) -> bool:
        """A downlink's FRMPayload: True when the firmware obeyed it (and the display changed to it)."""
        if not self.node.on_downlink(fport, bytes(payload)):
            if fport == 20:
                self.refused += 1
            return False
        today, year = self.shown
        self.history.append(Shown(t_s, today, year))
        return True

    def measure(self, t_s: float) -> Measurement:
        """The heartbeat: the firmware's bytes and the ``edgegw/display`` decoder's output keys."""
        today, year = self.shown
        payload = bytes(self._encode(self._supply.on_mains(), [today, year], self._supply.voltage_mv()))
        values = {
            "on_mains": self._supply.on_mains(),
            "shown_line_0": NOTHING if today is None else today,
            "shown_line_1": NOTHING if year is None else year,
            "battery_voltage": self._supply.voltage_mv(),
        }
        return Measurement(values, payload, 10)
