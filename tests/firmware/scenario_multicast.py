"""MicroPython scenario (run_micropython.mjs): a class C lamp controller in multicast groups obeys them.

The host test (tests/firmware/test_multicast_lamp.py) builds every frame on the air with the
gateway's code and passes them in ``host.arg()``: ``steps`` (one class C listen each), ``run``
(frames for ``main.run_class_c``) and ``after_reboot``. The class C receiver is ``QueueRadio``:
``shims/classc_radio.py`` whose ``listen`` takes the next frame of the current step instead of
asking the host (the frames are known beforehand); uplinks and class A windows still go to the
host, which accepts the uplinks with its ``SessionTable``. Events are JSON lines: {"event": ...}.
"""

import json

import host
import hostradio
import main
import sim
from classc_radio import ClassCRadio
from lorawan import region
from lorawan.device import Device
from lorawan.storage import FileStorage
from nodes.lamp_controller import LampControllerNode
from sensors.lamp_output import LampOutput
from sensors.pulse_counter import PulseCounter

args = json.loads(host.arg())
RELAY, DIM, METER = 25, 27, 32  # lamp-controller wiring of firmware/README.md (ESP32)
FRAME_GAP_MS = 1000  # virtual time between two frames heard on the channel


class QueueRadio(ClassCRadio):
    """Class C frames from ``queue`` (hex), one per ``listen``; every listen's channel in ``listens``."""

    def __init__(self, clock, airtime):
        ClassCRadio.__init__(self, clock, airtime)
        self.queue = []
        self.listens = []

    def listen(self, freq_hz, sf, bw_hz, until_ms):
        self.listens.append([freq_hz, sf, bw_hz])
        if not self.queue:
            self.clock.now_ms = max(self.clock.now_ms, until_ms)
            return None
        self.clock.now_ms += FRAME_GAP_MS
        return bytes.fromhex(self.queue.pop(0))


def event(kind, **fields):
    fields["event"] = kind
    host.send(json.dumps(fields))


def down_info(down):
    if down is None:
        return None
    return {
        "fport": down.fport,
        "payload": down.payload.hex(),
        "fcnt": down.fcnt32,
        "mc_addr": None if down.mc_addr is None else down.mc_addr.hex(),
    }


clock = hostradio.VirtualClock()
radio = QueueRadio(clock, region.airtime_us)


def boot():
    """Device and lamp as ``main`` builds them at power-up: state from /state.json, groups from the config."""
    device = Device(
        radio,
        FileStorage("/state.json"),
        abp=args["abp"],
        dr=5,
        sleep_ms=clock.sleep_ms,
        ticks_ms=clock.ticks_ms,
        battery_level=lambda: 0,
        multicast=args["multicast"],
    )
    meter = PulseCounter(METER, ticks_ms=clock.ticks_ms)
    node = LampControllerNode(
        device, LampOutput(RELAY, DIM), meter, {"report_interval_s": args["interval_s"]}
    )
    return device, node


def listen_steps(device, node, steps, phase):
    """One class C listen per step, the step's frames on the air; the node obeys what verified."""
    for step in steps:
        radio.queue = list(step["frames"])
        started = clock.now_ms
        got = device.listen_class_c(60000)
        obeyed = node.on_downlink(got.fport, got.payload) if got is not None and got.fport else False
        event(
            "step",
            phase=phase,
            name=step["name"],
            down=down_info(got),
            obeyed=obeyed,
            relay=sim.levels.get(RELAY),
            duty=sim.pwm.get(DIM),
            counters=device.multicast.to_dict(),
            channel=radio.listens[-1],
            listened_ms=clock.now_ms - started,
        )


device, node = boot()
event("booted", phase="first", counters=device.multicast.to_dict(), channel=list(device.class_c_channel()))
listen_steps(device, node, args["steps"], "first")

# main's class C loop: report, listen until the next report; a multicast command does not cut it short.
radio.queue = list(args["run"])
cfg = {"application": "lamp_controller", "abp": args["abp"], "multicast": args["multicast"]}
main.run_class_c(cfg, device, node, rounds=2, ticks_ms=clock.ticks_ms)
event("run", relay=sim.levels.get(RELAY), duty=sim.pwm.get(DIM), counters=device.multicast.to_dict())

# Power cut: RAM is gone, /state.json stays; the groups' counters come back from it.
device, node = boot()
event("booted", phase="reboot", counters=device.multicast.to_dict(), channel=list(device.class_c_channel()))
listen_steps(device, node, args["after_reboot"], "reboot")
