"""MicroPython scenario (run_micropython.mjs): a class C lamp controller joins, obeys MAC commands and a dim.

The radio is ``shims/classc_radio.py``: every transmission, class A window and class C listen
goes to the host test, which plays the gateway (tests/firmware/test_class_c_lamp.py). Events the
test asserts on are JSON lines: {"event": ...}.
"""

import json

import host
import hostradio
import sim
from classc_radio import ClassCRadio
from lorawan import region
from lorawan.device import Device
from lorawan.storage import FileStorage
from nodes.lamp_controller import LampControllerNode
from sensors.lamp_output import LampOutput
from sensors.pulse_counter import PulseCounter

args = json.loads(host.arg())


def event(name, **fields):
    fields["event"] = name
    host.send(json.dumps(fields))


def down_info(down):
    if down is None:
        return None
    return {
        "fport": down.fport,
        "payload": down.payload.hex(),
        "fopts": down.fopts.hex(),
        "fcnt": down.fcnt32,
    }


RELAY, DIM, METER = 25, 27, 32  # lamp-controller wiring of firmware/README.md (ESP32)
clock = hostradio.VirtualClock()
radio = ClassCRadio(clock, region.airtime_us)
device = Device(
    radio,
    FileStorage("/state.json"),
    otaa=args["otaa"],
    dr=5,
    sleep_ms=clock.sleep_ms,
    ticks_ms=clock.ticks_ms,
    battery_level=lambda: 0,  # mains powered: DevStatusAns Battery 0 = external power (§5.5)
)
joined = device.join(attempts=1)
event("joined", ok=joined)

meter = PulseCounter(METER, ticks_ms=clock.ticks_ms)
node = LampControllerNode(device, LampOutput(RELAY, DIM), meter, {"report_interval_s": 900})

# Class A: the first report; the gateway's answer in RX1 carries MAC commands in FOpts.
_, reason, down = node.cycle(0)
event(
    "first",
    reason=reason,
    down=down_info(down),
    dr=device.dr,
    power_dbm=device.power_dbm,
    rx1_dr_offset=device.rx1_dr_offset,
    rx2_dr=device.rx2_dr,
    channels_hz=device.channels_hz,
)

# Class C: the receiver stays on RX2 until the gateway's command arrives; the node obeys it.
got = device.listen_class_c(args["listen_ms"])
obeyed = node.on_downlink(got.fport, got.payload) if got is not None and got.fport else False
event("class_c", down=down_info(got), obeyed=obeyed, relay=sim.levels.get(RELAY), duty=sim.pwm.get(DIM))

# The next report shows the new state, with the MAC answers in its FOpts.
reading, reason, _ = node.cycle(60)
event("report", reason=reason, reading=reading)

# Nothing more on the air: the call ends at its deadline.
got = device.listen_class_c(1000)
event("done", quiet=got is None, now_ms=clock.now_ms)
