"""The project's own nodes, simulated by their own firmware (``firmware/nodes/``).

Owns running a node application's MicroPython code under CPython with its sensors replaced by
a physics model and its LoRaWAN device by a capture of what it sends: the node's own policy
decides when to report and its own ``encode`` makes the bytes, so what the simulator sends is
what a node on a container would send (issue 10). Today: the fill-level node over the
waste-container physics of ``simulator.models.waste`` (fill, tilts, the temperature under the lid
and its fires).

It does not own LoRaWAN framing (the simulator's devices wrap the payload) nor the physics.
The firmware is read from the source checkout (``firmware/`` beside ``simulator/``; it is not
installed by pip): ``FirmwareNotFound`` when it is not there.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from simulator.models.base import Measurement
from simulator.models.waste import ContainerModel, ContainerTemperature

FIRMWARE_DIR = Path(__file__).resolve().parents[2] / "firmware"


class FirmwareNotFound(RuntimeError):
    """No ``firmware/`` checkout beside the simulator."""


def firmware_module(name: str, firmware_dir: Path = FIRMWARE_DIR) -> ModuleType:
    """``nodes.<name>`` of the firmware, imported the way the board imports it (``/lib`` on the path)."""
    if not (firmware_dir / "nodes" / f"{name}.py").is_file():
        raise FirmwareNotFound(f"no firmware node {name!r} in {firmware_dir}")
    if str(firmware_dir) not in sys.path:
        sys.path.append(str(firmware_dir))  # appended: never shadows a module of the simulator
    return importlib.import_module(f"nodes.{name}")


class _Capture:
    """The part of ``lorawan.device.Device`` a node uses: ``send`` (no downlink comes back here)."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes]] = []

    def send(self, fport: int, payload: bytes, confirmed: bool = False) -> None:
        self.sent.append((fport, bytes(payload)))


@dataclass
class _Physics:
    """The sensors of the node (the firmware drivers' methods), read from the physics of this wake-up."""

    distance: int | None = None
    tilt: bool = False
    temperature: float | None = 18.0
    battery: int = 3000

    def distance_mm(self, _air_temperature_c: float) -> int | None:
        return self.distance

    def temperature_c(self) -> float | None:
        return self.temperature

    def tilted(self) -> bool:
        return self.tilt

    def voltage_mv(self) -> int:
        return self.battery


class FirmwareFillLevel:
    """A container with the project's fill-level node: ``wake(t_s)`` every measure interval.

    Returns the Measurement the node sent at that wake-up (FPort 10, the firmware's bytes, the
    ``edgegw/fill-level`` profile's output keys), or None when its policy sent nothing.
    ``measure(t_s)`` is the same wake-up with the temperature of ``temperature`` (the model
    interface of the city's schedule, which wakes it every ``measure_interval_s``).

    The node deep-sleeps between timer wake-ups and reads its tilt switch only then
    (firmware/main.py): a tilt shorter than ``measure_interval_s`` (a 2-min collection lift in a
    15-min cycle) is seen only when a wake-up falls inside it.
    """

    def __init__(
        self,
        container: ContainerModel,
        config: dict[str, Any] | None = None,
        temperature: ContainerTemperature | None = None,
    ) -> None:
        module = firmware_module("fill_level")
        self._centi_c = module.centi_c
        self.container = container
        self.temperature = temperature or ContainerTemperature()
        self.sensors = _Physics()
        self.device = _Capture()
        s = self.sensors
        self.node: Any = module.FillLevelNode(self.device, s, s, s, s, config)
        self._last_t_s: float | None = None

    @property
    def measure_interval_s(self) -> float:
        return float(self.node.config["measure_interval_s"])

    def measure(self, t_s: float) -> Measurement | None:
        return self.wake(t_s, self.temperature.at(t_s))

    def wake(self, t_s: float, temperature_c: float | None = 18.0) -> Measurement | None:
        physics = self.container.measure(t_s).values
        self.sensors.distance = int(physics["distance"])
        self.sensors.tilt = physics["position"] == "tilt"
        self.sensors.temperature = temperature_c
        self.sensors.battery = 2000 + 12 * int(physics["battery"])  # 2 x AA: 2.0 V empty .. 3.2 V full
        elapsed_s = 0.0 if self._last_t_s is None else t_s - self._last_t_s
        self._last_t_s = t_s
        reading, reason, _downlink = self.node.cycle(elapsed_s)
        if reason is None:
            return None
        fport, payload = self.device.sent[-1]
        values = {
            "tilt": reading["tilt"],
            "fire_alarm": reading["fire_alarm"],
            "echo_missing": reading["distance_mm"] is None,
            "distance": 0xFFFF if reading["distance_mm"] is None else reading["distance_mm"],
            # What the int16 field carries: the firmware's own rounding to 0.01 °C.
            "temperature": None if temperature_c is None else self._centi_c(temperature_c) / 100,
            "battery_voltage": reading["battery_mv"],
        }
        return Measurement(values, payload, fport)
