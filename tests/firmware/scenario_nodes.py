"""MicroPython scenario run by run_micropython.mjs: the noise, water-level, counter, lamp and display nodes.

One process, five boards in turn: each node gets its own Device (own keys), joins through the
host test (which plays the gateway), then runs the steps the test passed in ``host.arg()``.
Sensors are the firmware's drivers over the ``machine`` shim; the simulated world is
``sim``. Events the test asserts on are JSON lines: {"event": ..., "node": ...}. Pins are
the ESP32 wiring of firmware/README.md (each board has its own, so pins repeat across nodes:
the scenario rewires ``sim`` before each board).
"""

import json

import host
import hostradio
import machine
import max7219_sim
import sim
from lorawan import region
from lorawan.device import Device
from lorawan.storage import MemoryStorage
from nodes.counter import CounterNode
from nodes.display import DisplayNode
from nodes.lamp_controller import LampControllerNode
from nodes.noise import NoiseNode
from nodes.water_level import WaterLevelNode
from sensors.battery import Battery
from sensors.current_loop import LevelTransmitter
from sensors.ds18b20 import Ds18b20
from sensors.lamp_output import LampOutput
from sensors.mains import MainsSense
from sensors.max7219 import Max7219
from sensors.pulse_counter import MASK, PulseCounter
from sensors.sound_level import SoundLevelMeter

args = json.loads(host.arg())
clock = hostradio.VirtualClock()
radio = hostradio.HostRadio(clock, region.airtime_us)
VBAT = 34
ADC_FULL_MV = 3300


def event(name, **fields):
    fields["event"] = name
    host.send(json.dumps(fields))


def no_wait(ms):
    pass


def adc_of_mv(mv):
    return max(0, min(65535, int(mv * 65535 / ADC_FULL_MV + 0.5)))


def board(name):
    """A fresh board: its own sim wiring, device and join. Returns the joined Device."""
    sim.pins.clear()
    sim.irqs.clear()
    sim.on_rising.clear()
    sim.levels.clear()
    sim.pwm.clear()
    sim.state["battery_mv"] = args[name]["battery_mv"]
    sim.pins[("adc", VBAT)] = lambda: adc_of_mv(sim.state["battery_mv"] / 2)  # 1:1 divider
    device = Device(
        radio,
        MemoryStorage(),
        otaa=args[name]["otaa"],
        dr=5,
        sleep_ms=clock.sleep_ms,
        ticks_ms=clock.ticks_ms,
    )
    ok = device.join(attempts=1)
    event("joined", node=name, ok=ok, dev_addr=device.dev_addr.hex() if ok else None)
    return device


def sent(name, device, reading, reason, down, **extra):
    event(
        "report",
        node=name,
        reason=reason,
        fcnt=device.fcnt_up - 1,
        reading=reading,
        downlink=None if down is None else {"fport": down.fport, "payload": down.payload.hex()},
        **extra,
    )


# --- noise: SEN0232-class module on GPIO36, dB(A) = 50 x V ------------------------------------
SOUND = 36
device = board("noise")
sim.pins[("adc", SOUND)] = lambda: adc_of_mv(sim.state["sound_db"] / 50.0 * 1000)
node = NoiseNode(device, SoundLevelMeter(SOUND), Battery(VBAT), args["noise"]["config"])
index = 0
for step in args["noise"]["steps"]:
    pattern = step["levels_db"]
    for i in range(step["samples"]):
        sim.state["sound_db"] = pattern[i % len(pattern)]
        node.sample()
        reading, reason, down = node.cycle()
        if reason is not None:
            sent("noise", device, reading, reason, down, last_sample=index)
        index += 1
event("config", node="noise", config=node.config)

# --- water level: 4-20 mA probe on GPIO36 (150 ohm shunt), DS18B20 on GPIO4 ------------------
LOOP, ONEWIRE, LOOP_POWER = 36, 4, 25
device = board("water_level")
sim.pins[("adc", LOOP)] = lambda: adc_of_mv(sim.state["loop_ma"] * 150.0)
probe = LevelTransmitter(LOOP, args["water_level"]["range_mm"], power_pin=LOOP_POWER, sleep_ms=no_wait)
node = WaterLevelNode(
    device, probe, Ds18b20(ONEWIRE, sleep_ms=no_wait), Battery(VBAT), args["water_level"]["config"]
)
for step in args["water_level"]["steps"]:
    sim.state.update(step["sim"])
    reading, reason, down = node.cycle(step["elapsed_s"])
    sent("water_level", device, reading, reason, down, loop_power=sim.levels.get(LOOP_POWER))
event("config", node="water_level", config=node.config, sleep_s=node.sleep_s())

# --- counter: loop-detector contacts on GPIO32 (in) and GPIO33 (out) --------------------------
IN, OUT = 32, 33
device = board("counter")
counter_in = PulseCounter(IN, holdoff_ms=50, ticks_ms=clock.ticks_ms)
counter_out = PulseCounter(OUT, holdoff_ms=50, ticks_ms=clock.ticks_ms)
node = CounterNode(device, counter_in, counter_out, Battery(VBAT), args["counter"]["config"])


def passages(pin, n, bounces):
    for k in range(n):
        clock.now_ms += 200
        sim.edge(pin)
        if k < bounces:  # contact bounce 5 ms later: inside the hold-off, not a passage
            clock.now_ms += 5
            sim.edge(pin)


for step in args["counter"]["steps"]:
    if step.get("near_wrap"):
        # A counter that ran for ages: the IRQ count about to wrap at 2^30, the total at 2^32.
        for counter in (counter_in, counter_out):
            counter._count = MASK - 2
            counter._taken = MASK - 2
        node.total_in = 0x100000000 - 4
    passages(IN, step["in"], step.get("bounces", 0))
    passages(OUT, step["out"], step.get("bounces", 0))
    reading, reason, down = node.cycle(step["elapsed_s"])
    sent("counter", device, reading, reason, down)
event("config", node="counter", config=node.config)

# --- lamp controller: relay GPIO25, PWM GPIO27, S0 meter GPIO32 -------------------------------
RELAY, DIM, METER = 25, 27, 32
device = board("lamp")
meter = PulseCounter(METER, holdoff_ms=50, ticks_ms=clock.ticks_ms)
node = LampControllerNode(device, LampOutput(RELAY, DIM), meter, args["lamp"]["config"])
for step in args["lamp"]["steps"]:
    for _ in range(step["meter_pulses"]):
        clock.now_ms += 1000
        sim.edge(METER)
    reading, reason, down = node.cycle(step["elapsed_s"])
    sent("lamp", device, reading, reason, down, relay=sim.levels.get(RELAY), duty=sim.pwm.get(DIM))
event("config", node="lamp", config=node.config)

# --- display: two MAX7219 on the radio's VSPI bus, LOAD on GPIO27; mains sense GPIO33 ---------
LOAD, MAINS = 27, 33
device = board("display")
chain = max7219_sim.Max7219Chain(LOAD, 2)
sim.pins[MAINS] = lambda: 0 if sim.state["mains"] else 1  # the optocoupler pulls low on mains
spi = machine.SPI(2, baudrate=1000000, sck=machine.Pin(18), mosi=machine.Pin(23))
node = DisplayNode(
    device, Max7219(spi, LOAD, chips=2), MainsSense(MAINS), Battery(VBAT), args["display"]["config"]
)
event("display_ready", node="display", lines=[chain.text(0), chain.text(1)])
for step in args["display"]["steps"]:
    sim.state.update(step["sim"])
    reading, reason, down = node.cycle(step["elapsed_s"])
    sent("display", device, reading, reason, down, lines=[chain.text(0), chain.text(1)])
event("done", slept_ms=clock.slept_ms)
