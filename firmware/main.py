"""Node start-up (MicroPython ``main.py``): read ``/config.json``, build radio, device and node, run, sleep.

Owns the wiring of one node from its configuration (the document ``edgegw provision node``
writes: ``application``, ``otaa``/``abp``, ``dr``, ``settings``, ``pins``), the choice of node
class by ``application`` (modules under ``nodes/`` are imported lazily, by name, so a board
only loads what it runs), and the life cycle:

* battery nodes (class A): one ``cycle`` per wake-up, then ``machine.deepsleep`` for
  ``measure_interval_s`` (or ``report_interval_s``); what must survive the sleep (the node's
  report state, the duty-cycle busy times, pending MAC answers, ADR counter) goes to RTC memory
  (ESP32: 8 KB RTC slow memory, ``machine.RTC().memory``) or, where there is none (RP2040), to
  a small flash file. Counters and keys are in ``/state.json`` (``lorawan.storage``) anyway.
* the counter node keeps counting pulses by IRQ and the noise node samples the sound level every
  ``sample_period_s``, so both use ``machine.lightsleep`` (RAM and IRQs kept) instead.
* mains nodes (class C: lamp controller, display): never sleep; between reports the receiver
  stays open on RX2 (``Device.listen_class_c``) and every command is obeyed at once, then
  reported in the next uplink; a command to a multicast group (``config.json`` ``multicast``)
  is obeyed at once too, but reported at the next scheduled report: every member heard the same
  frame, and their answers at once would collide (a device never answers a multicast frame).

It does not own LoRaWAN (``lorawan``), the radio (``drivers.sx127x``) nor the applications.
"""

import json

import machine
from lorawan.clock import sleep_ms as _sleep_ms
from lorawan.clock import ticks_add as _ticks_add
from lorawan.clock import ticks_diff as _ticks_diff
from lorawan.clock import ticks_ms as _ticks_ms

CONFIG_PATH = "/config.json"
STATE_PATH = "/state.json"
SLEEP_PATH = "/sleep.json"
SPI_BAUDRATE = 5000000  # SX1276 accepts up to 10 MHz (datasheet Table 10)
JOIN_ATTEMPTS = 3
JOIN_RETRY_S = 3600
"""Sleep after a failed join before trying again (1.0.3 §7 back-off: at most 36 s on air per hour)."""
CLASS_C_APPS = ("lamp_controller", "display")
LIGHT_SLEEP_APPS = ("counter", "noise")
BATTERY_EMPTY_MV = 2000  # 2 x AA alkaline at end of life (1.0 V per cell)
BATTERY_FULL_MV = 3200


# --- configuration ---------------------------------------------------------------------


def load_config(path=CONFIG_PATH):
    with open(path) as f:
        cfg = json.load(f)
    if not isinstance(cfg, dict):
        raise ValueError("config.json must hold an object")
    if application(cfg) is None:
        raise ValueError("config.json names no application")
    if ("otaa" in cfg) == ("abp" in cfg):
        raise ValueError("config.json needs exactly one of otaa and abp")
    return cfg


def application(cfg):
    """The node module name (``fill_level``, ...): ``application`` as provisioning writes it, or ``node``."""
    name = cfg.get("application") or cfg.get("node")
    return name.replace("-", "_") if name else None


def _pin(value):
    return machine.Pin(value)


# --- radio, device ---------------------------------------------------------------------


def make_spi(cfg):
    spi = cfg["pins"]["spi"]
    return machine.SPI(
        spi["id"],
        baudrate=SPI_BAUDRATE,
        polarity=0,
        phase=0,
        sck=_pin(spi["sck"]),
        mosi=_pin(spi["mosi"]),
        miso=_pin(spi["miso"]),
    )


def make_radio(cfg, spi):
    from drivers.sx127x import SX127x

    pins = cfg["pins"]["sx127x"]
    nss = machine.Pin(pins["nss"], machine.Pin.OUT, value=1)
    reset = machine.Pin(pins["reset"], machine.Pin.OUT, value=1)
    dio0 = machine.Pin(pins["dio0"], machine.Pin.IN) if pins.get("dio0") is not None else None
    sleep_ms = _light_sleep_ms if cfg.get("light_sleep_waits") else None
    return SX127x(spi, nss, reset=reset, dio0=dio0, sleep_ms=sleep_ms)


def _light_sleep_ms(ms):
    """The radio's waits (RX delays: ~2 s per uplink) in light sleep, 0.8 mA instead of ~40 mA (ESP32).

    Opt-in (``"light_sleep_waits": true``): not yet tried on hardware; short waits stay busy.
    """
    if ms >= 10:
        machine.lightsleep(ms)
    else:
        _sleep_ms(ms)


def battery_level(battery):
    """DevStatusAns Battery (§5.5) from a ``sensors.battery.Battery``: 1 (empty) .. 254 (full)."""

    def level():
        mv = battery.voltage_mv()
        return max(1, min(254, (mv - BATTERY_EMPTY_MV) * 254 // (BATTERY_FULL_MV - BATTERY_EMPTY_MV)))

    return level


def make_device(cfg, radio, storage, **kw):
    from lorawan.device import Device

    keys = {"otaa": cfg["otaa"]} if "otaa" in cfg else {"abp": cfg["abp"]}
    return Device(
        radio,
        storage,
        dr=cfg.get("dr", 5),
        adr=cfg.get("adr", False),
        multicast=cfg.get("multicast"),
        **keys,
        **kw,
    )


# --- nodes -----------------------------------------------------------------------------


def _battery(pins):
    from sensors.battery import Battery

    b = pins.get("battery")
    if b is None:
        return None
    return Battery(b["adc"], b.get("divider_ratio", 2.0))


def _fill_level(cfg, device, spi):
    from nodes.fill_level import FillLevelNode
    from sensors.ds18b20 import Ds18b20
    from sensors.tilt import TiltSwitch
    from sensors.ultrasonic import Ultrasonic

    p = cfg["pins"]
    ranger = Ultrasonic(p["ultrasonic"]["trig"], p["ultrasonic"]["echo"])
    return FillLevelNode(
        device, ranger, Ds18b20(p["ds18b20"]), TiltSwitch(p["tilt"]), _battery(p), cfg.get("settings")
    )


def _noise(cfg, device, spi):
    from nodes.noise import NoiseNode
    from sensors.sound_level import SoundLevelMeter

    p = cfg["pins"]
    s = p["sound_level"]
    meter = SoundLevelMeter(s["adc"], s.get("offset_db", 0.0), s.get("db_per_v", 50.0))
    return NoiseNode(device, meter, _battery(p), cfg.get("settings"))


def _water_level(cfg, device, spi):
    from nodes.water_level import WaterLevelNode
    from sensors.current_loop import LevelTransmitter
    from sensors.ds18b20 import Ds18b20

    p = cfg["pins"]
    t = p["current_loop"]
    probe = LevelTransmitter(t["adc"], t["range_mm"], t.get("shunt_ohm", 150.0), power_pin=t.get("power"))
    thermometer = Ds18b20(p["ds18b20"]) if p.get("ds18b20") is not None else None
    return WaterLevelNode(device, probe, thermometer, _battery(p), cfg.get("settings"))


def _counter(cfg, device, spi):
    from nodes.counter import CounterNode
    from sensors.pulse_counter import PulseCounter

    p = cfg["pins"]
    return CounterNode(
        device, PulseCounter(p["pulse_in"]), PulseCounter(p["pulse_out"]), _battery(p), cfg.get("settings")
    )


def _lamp_controller(cfg, device, spi):
    from nodes.lamp_controller import LampControllerNode
    from sensors.lamp_output import LampOutput
    from sensors.pulse_counter import PulseCounter

    p = cfg["pins"]
    lamp = p["lamp"]
    output = LampOutput(lamp["relay"], lamp["pwm"], relay_active_low=lamp.get("relay_active_low", False))
    return LampControllerNode(device, output, PulseCounter(p["meter"]), cfg.get("settings"))


def _display(cfg, device, spi):
    from nodes.display import DisplayNode
    from sensors.mains import MainsSense
    from sensors.max7219 import Max7219

    p = cfg["pins"]
    screen = Max7219(spi, p["max7219"]["cs"], p["max7219"].get("chips", 2))
    return DisplayNode(device, screen, MainsSense(p["mains"]), _battery(p), cfg.get("settings"))


BUILDERS = {
    "fill_level": _fill_level,
    "noise": _noise,
    "water_level": _water_level,
    "counter": _counter,
    "lamp_controller": _lamp_controller,
    "display": _display,
}


def make_node(cfg, device, spi):
    builder = BUILDERS.get(application(cfg))
    if builder is None:
        raise ValueError("no node application " + str(application(cfg)))
    return builder(cfg, device, spi)


# --- state across deep sleep -----------------------------------------------------------

_PLAIN = (int, float, str, bool, list, tuple, dict, type(None))


def node_state(node):
    """The node's plain attributes (report state, counters), not its device, sensors or config."""
    out = {}
    for key, value in node.__dict__.items():
        if key in ("device", "config") or not isinstance(value, _PLAIN):
            continue
        out[key] = value
    return out


def restore_node(node, saved):
    for key, value in saved.items():
        if key in node.__dict__:
            setattr(node, key, value)


class SleepStore:
    """RTC memory where the port has it (ESP32: survives deep sleep, not power loss), else a flash file."""

    def __init__(self, path=SLEEP_PATH):
        self._path = path
        self._rtc = None
        try:
            rtc = machine.RTC()
            rtc.memory()
            self._rtc = rtc
        except (AttributeError, TypeError, OSError):
            pass

    def load(self):
        try:
            if self._rtc is not None:
                raw = self._rtc.memory()
                return json.loads(raw) if raw else {}
            with open(self._path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def save(self, state):
        raw = json.dumps(state)
        if self._rtc is not None:
            self._rtc.memory(raw.encode())
            return
        with open(self._path, "w") as f:
            f.write(raw)


def sleep_interval_s(node):
    if hasattr(node, "sleep_s"):
        return node.sleep_s()
    cfg = getattr(node, "config", {})
    return cfg.get("measure_interval_s") or cfg.get("report_interval_s") or 900


# --- life cycle ------------------------------------------------------------------------


def wake(cfg, radio, storage, sleep_store, woke_from_sleep, spi=None):
    """Build device and node, take back what the last sleep kept; (device, node, slept_s)."""
    device = make_device(cfg, radio, storage)
    node = make_node(cfg, device, spi)
    saved = sleep_store.load() if woke_from_sleep else {}
    slept_s = saved.get("sleep_s", 0)
    if saved:
        device.restore_volatile(saved.get("device", {}), slept_s * 1000)
        restore_node(node, saved.get("node", {}))
    battery = getattr(node, "battery", None)
    if application(cfg) in CLASS_C_APPS:
        device.battery_level = lambda: 0  # external power (§5.5)
    elif battery is not None:
        device.battery_level = battery_level(battery)
    return device, node, slept_s


def run_class_a(cfg, device, node, sleep_store, slept_s):
    """One wake-up of a battery node: join if needed, one cycle; returns the seconds to sleep."""
    if not device.joined and not device.join(cfg.get("join_attempts", JOIN_ATTEMPTS)):
        sleep_s = JOIN_RETRY_S
    else:
        node.cycle(slept_s)
        sleep_s = sleep_interval_s(node)
    sleep_store.save({"sleep_s": sleep_s, "device": device.volatile_state(), "node": node_state(node)})
    return sleep_s


def run_class_c(cfg, device, node, rounds=None, ticks_ms=None):
    """A mains node: cycle, then listen on RX2 until the next report or until a command was obeyed.

    ``rounds`` bounds the number of cycles (tests: it returns after the last one); None runs for ever.
    """
    ticks_ms = ticks_ms or _ticks_ms
    while not device.joined:
        if device.join(cfg.get("join_attempts", JOIN_ATTEMPTS)):
            break
        if rounds is not None:
            return
    last = ticks_ms()
    n = 0
    while rounds is None or n < rounds:
        n += 1
        now = ticks_ms()
        node.cycle(_ticks_diff(now, last) // 1000)
        last = now
        if rounds is not None and n >= rounds:
            return
        # The interval counts from after the uplink and its class A windows.
        until = _ticks_add(ticks_ms(), 1000 * node.config.get("report_interval_s", 900))
        # Bounded: each listen returns at a frame or at the deadline.
        for _ in range(64):
            left = _ticks_diff(until, ticks_ms())
            if left <= 0:
                break
            down = device.listen_class_c(left)
            if down is None or not down.fport or not node.on_downlink(down.fport, down.payload):
                continue
            if down.mc_addr is None:
                break  # report the new state now (a multicast command waits for the next report)


def main():
    from lorawan.storage import FileStorage

    cfg = load_config()
    if cfg.get("cpu_hz"):
        machine.freq(cfg["cpu_hz"])  # 80 MHz: ~25 mA instead of ~40 mA awake (energy budget)
    spi = make_spi(cfg)
    radio = make_radio(cfg, spi)
    woke = machine.reset_cause() == machine.DEEPSLEEP_RESET
    sleep_store = SleepStore()
    device, node, slept_s = wake(cfg, radio, FileStorage(STATE_PATH), sleep_store, woke, spi)
    app = application(cfg)
    if app in CLASS_C_APPS:
        run_class_c(cfg, device, node)
        return
    if app == "noise":
        # One sample per period between light sleeps; the node reports when its policy says so.
        period_s = node.config["sample_period_s"]
        n = 0
        while True:
            if not device.joined and n % max(1, int(JOIN_RETRY_S // period_s)) == 0:
                device.join(cfg.get("join_attempts", JOIN_ATTEMPTS))
            n += 1
            node.sample()
            if device.joined:
                node.cycle()
            machine.lightsleep(int(period_s * 1000))
    if app in LIGHT_SLEEP_APPS:
        # RAM (and the pulse counts the IRQs keep) survive a light sleep; state stays in RAM.
        while True:
            sleep_s = run_class_a(cfg, device, node, sleep_store, slept_s)
            radio.sleep()
            machine.lightsleep(sleep_s * 1000)
            slept_s = sleep_s
    sleep_s = run_class_a(cfg, device, node, sleep_store, slept_s)
    radio.sleep()  # 0.2 µA instead of 1.6 mA in standby (SX1276 datasheet Table 6)
    machine.deepsleep(sleep_s * 1000)


if __name__ == "__main__":
    main()
