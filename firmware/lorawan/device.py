"""A LoRaWAN 1.0.x class A end device (EU868): join, uplink, RX1/RX2, persisted counters.

Owns the device's state machine: OTAA join (DevNonce counted up and stored *before* the
join-request goes out, so a reset can never reuse one: LoRaWAN 1.0.4 §6.2.5) or ABP, the
uplink frame counter (stored every ``fcnt_save_every`` frames and resumed at the stored
ceiling, so counters never repeat and flash is written 1 in N uplinks), channel choice among
the default and CFList channels, the RX1/RX2 windows, and the 1 % duty cycle of the sub-band.

It does not own the radio. ``radio`` is any object with

* ``transmit(phy, freq_hz, sf, bw_hz, power_dbm) -> tx_end_ms`` (``time.ticks_ms`` at the end
  of the transmission), and
* ``receive(freq_hz, sf, bw_hz, open_at_ms, timeout_ms) -> bytes or None`` (a downlink
  received with inverted IQ in the window opening at ``open_at_ms``; the driver waits for it),

so the SX127x driver, a test shim or the simulator can stand behind it. Not handled yet:
MAC commands (received FOpts are kept in ``last_downlink`` but not answered), ADR,
confirmed-uplink retransmission, class C.
"""

import binascii
import random

from lorawan import frames, region
from lorawan.aes import Aes

try:
    import time

    _ticks_ms = time.ticks_ms  # type: ignore[attr-defined]
    _ticks_diff = time.ticks_diff  # type: ignore[attr-defined]
    _sleep_ms = time.sleep_ms  # type: ignore[attr-defined]
    _ticks_add = time.ticks_add  # type: ignore[attr-defined]
except AttributeError:  # CPython tooling
    import time

    def _ticks_ms():
        return int(time.monotonic() * 1000)

    def _ticks_diff(a, b):
        return a - b

    def _sleep_ms(ms):
        time.sleep(ms / 1000)

    def _ticks_add(a, b):
        return a + b


RX_WINDOW_TIMEOUT_MS = 100
"""How long a window stays open waiting for a preamble; the driver may use symbol timeouts instead."""


def _unhex(text, size, what):
    raw = binascii.unhexlify(text)
    if len(raw) != size:
        raise ValueError(what + " must be " + str(size) + " bytes")
    return raw


def _hex(raw):
    return binascii.hexlify(raw).decode()


class Device:
    """One end device, keys in hex.

    ``otaa={"dev_eui", "join_eui", "app_key"}`` or ``abp={"dev_addr", "nwk_s_key", "app_s_key"}``.
    """

    def __init__(
        self,
        radio,
        storage,
        otaa=None,
        abp=None,
        dr=5,
        power_dbm=region.DEFAULT_TX_POWER_DBM,
        fcnt_save_every=16,
        sleep_ms=None,
        ticks_ms=None,
    ):
        if (otaa is None) == (abp is None):
            raise ValueError("give exactly one of otaa= and abp=")
        if not 0 <= dr < len(region.DATA_RATES):
            raise ValueError("dr out of range")
        self.radio = radio
        self.storage = storage
        self.dr = dr
        self.power_dbm = power_dbm
        self.fcnt_save_every = fcnt_save_every
        self._sleep_ms = sleep_ms or _sleep_ms
        self._ticks_ms = ticks_ms or _ticks_ms
        self._band_free_at_ms = None
        self.last_uplink = None
        self.last_downlink = None
        self.channels_hz = list(region.DEFAULT_CHANNELS_HZ)
        self.rx1_dr_offset = 0
        self.rx2_dr = region.RX2_DR
        self.rx_delay_s = region.RECEIVE_DELAY1_S
        self._state = storage.load()
        self._otaa = None
        if otaa is not None:
            self._otaa = (
                _unhex(otaa["dev_eui"], 8, "dev_eui"),
                _unhex(otaa["join_eui"], 8, "join_eui"),
                Aes(_unhex(otaa["app_key"], 16, "app_key")),
            )
        else:
            session = {
                "dev_addr": _hex(_unhex(abp["dev_addr"], 4, "dev_addr")),
                "nwk_s_key": _hex(_unhex(abp["nwk_s_key"], 16, "nwk_s_key")),
                "app_s_key": _hex(_unhex(abp["app_s_key"], 16, "app_s_key")),
            }
            old = self._state.get("session")
            if (
                old is None
                or old.get("dev_addr") != session["dev_addr"]
                or old.get("nwk_s_key") != session["nwk_s_key"]
            ):
                session["fcnt_up"] = 0
                session["fcnt_down"] = -1
                self._state["session"] = session
        self._load_session()

    # --- state ---------------------------------------------------------------------------

    def _load_session(self):
        session = self._state.get("session")
        if session is None:
            self._keys = None
            return
        self.dev_addr = binascii.unhexlify(session["dev_addr"])
        self._keys = frames.new_keys(
            binascii.unhexlify(session["nwk_s_key"]), binascii.unhexlify(session["app_s_key"])
        )
        # Resume at the stored ceiling: counters used since the last write are skipped, never repeated.
        self.fcnt_up = session.get("fcnt_up", 0)
        self._fcnt_ceiling = self.fcnt_up
        self.fcnt_down = session.get("fcnt_down", -1)
        self.rx1_dr_offset = session.get("rx1_dr_offset", 0)
        self.rx2_dr = session.get("rx2_dr", region.RX2_DR)
        self.rx_delay_s = session.get("rx_delay_s", region.RECEIVE_DELAY1_S)
        self.channels_hz = list(region.DEFAULT_CHANNELS_HZ) + session.get("cflist_hz", [])

    @property
    def joined(self):
        return self._keys is not None

    @property
    def next_dev_nonce(self):
        return self._state.get("dev_nonce", 0)

    # --- radio helpers -------------------------------------------------------------------

    def _pick_channel(self):
        return self.channels_hz[random.getrandbits(8) % len(self.channels_hz)]

    def _wait_duty_cycle(self):
        if self._band_free_at_ms is None:
            return
        wait = _ticks_diff_safe(self._ticks_ms, self._band_free_at_ms)
        if wait > 0:
            self._sleep_ms(wait)

    def _transmit(self, phy, freq_hz, dr):
        sf, bw_hz = region.DATA_RATES[dr]
        self._wait_duty_cycle()
        tx_end = self.radio.transmit(phy, freq_hz, sf, bw_hz, self.power_dbm)
        airtime_ms = region.airtime_us(sf, bw_hz, len(phy)) // 1000 + 1
        self._band_free_at_ms = _ticks_add(tx_end, airtime_ms * (region.DUTY_CYCLE_DIVISOR - 1))
        return tx_end

    def _windows(self, tx_end, freq_hz, dr, delay1_s, delay2_s):
        """Yield what RX1 then RX2 received (class A: RX2 only opens when RX1 got nothing)."""
        sf, bw = region.DATA_RATES[region.rx1_dr(dr, self.rx1_dr_offset)]
        got = self.radio.receive(freq_hz, sf, bw, _ticks_add(tx_end, 1000 * delay1_s), RX_WINDOW_TIMEOUT_MS)
        if got is not None:
            return got
        sf, bw = region.DATA_RATES[self.rx2_dr]
        return self.radio.receive(
            region.RX2_FREQ_HZ, sf, bw, _ticks_add(tx_end, 1000 * delay2_s), RX_WINDOW_TIMEOUT_MS
        )

    # --- OTAA ----------------------------------------------------------------------------

    def join(self, attempts=1):
        """Send up to ``attempts`` join-requests; True once a join-accept verified (the session is stored)."""
        if self._otaa is None:
            raise ValueError("an ABP device does not join")
        dev_eui, join_eui, app_aes = self._otaa
        for _ in range(attempts):
            dev_nonce = self.next_dev_nonce
            if dev_nonce > 0xFFFF:
                raise ValueError("DevNonce space exhausted: the device needs a new AppKey")
            # Stored before sending: a reset after the request must not send the same nonce again.
            self._state["dev_nonce"] = dev_nonce + 1
            self.storage.save(self._state)
            phy = frames.build_join_request(app_aes, join_eui, dev_eui, dev_nonce)
            dr = self.dr
            freq_hz = self._pick_channel()
            tx_end = self._transmit(phy, freq_hz, dr)
            self.rx1_dr_offset = 0
            self.rx2_dr = region.RX2_DR
            answer = self._windows(
                tx_end, freq_hz, dr, region.JOIN_ACCEPT_DELAY1_S, region.JOIN_ACCEPT_DELAY2_S
            )
            if answer is None:
                continue
            try:
                accept = frames.open_join_accept(app_aes, answer)
            except frames.FrameError:
                continue
            nwk, app = frames.derive_session_keys(app_aes, accept, dev_nonce)
            self._state["session"] = {
                "dev_addr": _hex(accept.dev_addr),
                "nwk_s_key": _hex(nwk),
                "app_s_key": _hex(app),
                "fcnt_up": 0,
                "fcnt_down": -1,
                "rx1_dr_offset": accept.rx1_dr_offset,
                "rx2_dr": accept.rx2_dr,
                "rx_delay_s": accept.rx_delay_s,
                "cflist_hz": accept.cflist_hz,
            }
            self.storage.save(self._state)
            self._load_session()
            return True
        return False

    # --- uplinks -------------------------------------------------------------------------

    def _reserve_fcnt(self):
        fcnt = self.fcnt_up
        if fcnt > 0xFFFFFFFF:
            raise ValueError("FCntUp exhausted: the device must rejoin")
        if fcnt >= self._fcnt_ceiling:
            # Wear-aware: one flash write per fcnt_save_every uplinks (the ceiling is the resume point).
            self._fcnt_ceiling = fcnt + self.fcnt_save_every
            self._state["session"]["fcnt_up"] = self._fcnt_ceiling
            self.storage.save(self._state)
        self.fcnt_up = fcnt + 1
        return fcnt

    def send(self, fport, payload, confirmed=False):
        """Send one uplink and listen in RX1/RX2; returns the verified ``frames.Downlink`` or None.

        A frame received in a window that does not verify (another device's, a replay) is
        ignored, as the specification asks (§4.4).
        """
        if self._keys is None:
            raise ValueError("not joined")
        nwk_aes, app_aes = self._keys
        fcnt = self._reserve_fcnt()
        phy = frames.build_uplink(nwk_aes, app_aes, self.dev_addr, fcnt, fport, payload, confirmed)
        freq_hz = self._pick_channel()
        tx_end = self._transmit(phy, freq_hz, self.dr)
        self.last_uplink = phy
        answer = self._windows(tx_end, freq_hz, self.dr, self.rx_delay_s, self.rx_delay_s + 1)
        if answer is None:
            return None
        try:
            down = frames.open_downlink(nwk_aes, app_aes, self.dev_addr, self.fcnt_down, answer)
        except frames.FrameError:
            return None
        self.fcnt_down = down.fcnt32
        self._state["session"]["fcnt_down"] = down.fcnt32
        self.storage.save(self._state)
        self.last_downlink = down
        return down


def _ticks_diff_safe(ticks_ms, deadline_ms):
    return _ticks_diff(deadline_ms, ticks_ms())
