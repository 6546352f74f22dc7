"""MicroPython scenario (run_micropython.mjs): the lamp as ``main`` builds it from its config.json
listens in class C while the gateway's own multicast code sends it the district's dimming steps.

The host test (tests/firmware/test_multicast_gateway_to_lamp.py) passes the node's ``config.json``
document in ``host.arg()`` (``config``) and how many class C listens to open (``listens``). The
file is written to ``/config.json`` and read back with ``main.load_config``; the ``Device`` and the
lamp controller come from ``main.make_device`` and ``main.make_node`` as at power-up. Each listen
goes to the host (``shims/classc_radio.py``), which answers with the frame its
``MulticastScheduler`` released, or nothing. Events are JSON lines: {"event": ...}.
"""

import json

import host
import hostradio
import main
import sim
from classc_radio import ClassCRadio
from lorawan import region
from lorawan.storage import FileStorage

args = json.loads(host.arg())
LISTEN_MS = 60000


def event(kind, **fields):
    fields["event"] = kind
    host.send(json.dumps(fields))


with open(main.CONFIG_PATH, "w") as f:
    f.write(json.dumps(args["config"]))
cfg = main.load_config()
pins = cfg["pins"]["lamp"]

clock = hostradio.VirtualClock()
radio = ClassCRadio(clock, region.airtime_us)
device = main.make_device(
    cfg,
    radio,
    FileStorage("/state.json"),
    sleep_ms=clock.sleep_ms,
    ticks_ms=clock.ticks_ms,
    battery_level=lambda: 0,
)
node = main.make_node(cfg, device, None)
event("booted", channel=list(device.class_c_channel()), groups=len(device.multicast.groups))

for n in range(args["listens"]):
    got = device.listen_class_c(LISTEN_MS)
    obeyed = node.on_downlink(got.fport, got.payload) if got is not None and got.fport else False
    event(
        "listen",
        n=n,
        down=None
        if got is None
        else {
            "fport": got.fport,
            "payload": got.payload.hex(),
            "fcnt": got.fcnt32,
            "mc_addr": None if got.mc_addr is None else got.mc_addr.hex(),
        },
        obeyed=obeyed,
        relay=sim.levels.get(pins["relay"]),
        duty=sim.pwm.get(pins["pwm"]),
        counters=device.multicast.to_dict(),
    )
