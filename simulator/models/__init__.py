"""Physical models of what field devices measure, and the payload bytes their profiles carry.

One module per use case: ``waste`` (EM310-UDL containers), ``river`` (EM500-SWL probes),
``noise`` (WS302 sites), ``counter`` (IMBuildings bike and pedestrian counters) and
``lighting`` (UL20xx lamps, WS558 cabinets). A model is asked "what do you measure at simulated
second ``t_s``" (never going backwards) and answers a ``Measurement``: the values in its profile
decoder's output keys and the payload that decodes to them. Models own no LoRaWAN, no schedule
and no clock.
"""

from simulator.models.base import SECONDS_PER_DAY, Measurement, hour_of_day, weekday
from simulator.models.counter import CounterModel, people_counter_payload
from simulator.models.lighting import CabinetModel, CircuitLoss, LampModel, SunDay, ws558_payload
from simulator.models.noise import NoiseEvent, NoiseModel, ws302_payload
from simulator.models.river import FloodEvent, RiverModel, em500_swl_payload
from simulator.models.waste import ContainerModel, em310_payload

Model = ContainerModel | RiverModel | NoiseModel | CounterModel | LampModel | CabinetModel

__all__ = [
    "SECONDS_PER_DAY",
    "CabinetModel",
    "CircuitLoss",
    "ContainerModel",
    "CounterModel",
    "FloodEvent",
    "LampModel",
    "Measurement",
    "Model",
    "NoiseEvent",
    "NoiseModel",
    "RiverModel",
    "SunDay",
    "em310_payload",
    "em500_swl_payload",
    "hour_of_day",
    "people_counter_payload",
    "weekday",
    "ws302_payload",
    "ws558_payload",
]
