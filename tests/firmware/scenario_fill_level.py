"""MicroPython scenario run by run_micropython.mjs: a fill-level node joins, reports, resets, rejoins.

Every frame goes through ``hostradio`` to the host test, which plays the gateway. Events the
test asserts on are sent as JSON lines: {"event": ...}.
"""

import json
import sys

import host
import hostradio
import sim
from lorawan import aes, region
from lorawan.device import Device
from lorawan.storage import FileStorage
from nodes.fill_level import FillLevelNode
from sensors.battery import Battery
from sensors.ds18b20 import Ds18b20
from sensors.tilt import TiltSwitch
from sensors.ultrasonic import Ultrasonic

args = json.loads(host.arg())


def event(name, **fields):
    fields["event"] = name
    host.send(json.dumps(fields))


TRIG, ECHO, ONEWIRE, TILT, VBAT = 25, 33, 4, 27, 34  # the ESP32 wiring of firmware/README.md
sim.pins[TILT] = lambda: 1 if sim.state["tilt"] else 0
# The divider halves the battery; the ADC reads 0..65535 over 3.3 V.
sim.pins[("adc", VBAT)] = lambda: int(sim.state["battery_mv"] / 2 * 65535 / 3300 + 0.5)

clock = hostradio.VirtualClock()
radio = hostradio.HostRadio(clock, region.airtime_us)
storage = FileStorage("/state.json")


def new_device():
    return Device(
        radio,
        storage,
        otaa=args["otaa"],
        dr=args["dr"],
        fcnt_save_every=args["fcnt_save_every"],
        sleep_ms=clock.sleep_ms,
        ticks_ms=clock.ticks_ms,
    )


def no_wait(ms):
    pass


event("runtime", implementation=sys.implementation.name, platform=sys.platform, aes=aes.backend())
device = new_device()
joined = device.join(attempts=args["join_attempts"])
event(
    "joined", ok=joined, dev_addr=device.dev_addr.hex() if joined else None, dev_nonce=device.next_dev_nonce
)

node = FillLevelNode(
    device,
    Ultrasonic(TRIG, ECHO, sleep_ms=no_wait),
    Ds18b20(ONEWIRE, sleep_ms=no_wait),
    TiltSwitch(TILT),
    Battery(VBAT),
    args["config"],
)
for step in args["steps"]:
    sim.state.update(step["sim"])
    del sim.echoes_us[:]
    reading, reason, down = node.cycle(step["elapsed_s"])
    event(
        "cycle",
        reading=reading,
        reason=reason,
        fcnt=device.fcnt_up - 1,
        echoes_us=list(sim.echoes_us),
        downlink=None
        if down is None
        else {"fport": down.fport, "payload": down.payload.hex(), "fcnt": down.fcnt32},
    )

# A reset: a new Device from the same flash file resumes the counter at the stored ceiling.
writes_before = storage.writes
device = new_device()
event("reset", fcnt_up=device.fcnt_up, joined=device.joined, dev_nonce=device.next_dev_nonce)
node.device = device
node.last_report = None
_, reason, _ = node.cycle(0)
event("after_reset", reason=reason, fcnt=device.fcnt_up - 1)
# Rejoin: the DevNonce goes on counting from flash, never reused.
joined = device.join(attempts=1)
event("rejoined", ok=joined, dev_addr=device.dev_addr.hex(), fcnt_up=device.fcnt_up)
node.last_report = None
node.cycle(0)
event("done", storage_writes=storage.writes, writes_during_cycles=writes_before, slept_ms=clock.slept_ms)
