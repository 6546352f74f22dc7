"""A LoRaWAN 1.0.x end device (EU868), class A and C: join, uplinks, RX windows, MAC commands.

Owns the device's state machine: OTAA join (DevNonce counted up and stored *before* the
join-request goes out, so a reset can never reuse one: LoRaWAN 1.0.4 §6.2.5) or ABP, the
uplink frame counter (stored every ``fcnt_save_every`` frames and resumed at the stored
ceiling, so counters never repeat and flash is written 1 in N uplinks), channel choice among
the enabled channels whose sub-band is free, the RX1/RX2 windows, class C listening on RX2,
NbTrans repetitions and bounded confirmed-uplink retransmissions (§4.3.1.3, with the
retransmission back-off of LoRaWAN 1.0.3 §7), ADR acknowledgement requests and back-off (§4.3.1.1),
the duty cycle per sub-band, and the MAC commands of each verified downlink (``lorawan.mac``:
applied, answered in the next uplink's FOpts, persisted with the session). In class C it hands a
frame addressed to one of its multicast groups to ``lorawan.multicast`` (checked, decrypted,
its counter stored in the same state file) and listens on the groups' channel.

It does not own the radio. ``radio`` is any object with

* ``transmit(phy, freq_hz, sf, bw_hz, power_dbm) -> tx_end_ms`` (``time.ticks_ms`` at the end
  of the transmission),
* ``receive(freq_hz, sf, bw_hz, open_at_ms, timeout_ms) -> bytes or None`` (a downlink
  received with inverted IQ in the window opening at ``open_at_ms``; the driver waits for it),
* for class C only: ``listen(freq_hz, sf, bw_hz, until_ms) -> bytes or None`` (receiver kept
  open on RX2 until a frame arrives or ``until_ms``),

so the SX127x driver (``drivers.sx127x``), a test shim or the simulator can stand behind it.
"""

import binascii
import random

from lorawan import frames, mac, region
from lorawan import multicast as _multicast
from lorawan.aes import Aes
from lorawan.clock import sleep_ms as _sleep_ms
from lorawan.clock import ticks_add as _ticks_add
from lorawan.clock import ticks_diff as _ticks_diff
from lorawan.clock import ticks_ms as _ticks_ms

RX_WINDOW_TIMEOUT_MS = 100
"""How long a window stays open waiting for a preamble; the driver may use symbol timeouts instead."""
ADR_ACK_LIMIT = 64  # RP002-1.0.3 EU868 defaults (§2.1.9)
ADR_ACK_DELAY = 32
RETRANSMIT_TIMEOUT_MS = (1000, 3000)  # RP002 §2.1.9: 2 s ± 1 s, random
CONFIRMED_ATTEMPTS = 4
"""Transmissions of a confirmed uplink when NbTrans is lower (a device choice: §4.3.1.3 leaves it open)."""
MAX_LISTEN_FRAMES = 32
"""Frames one ``listen_class_c`` call looks at before giving up (others' frames, replays): bounds the loop."""
# Retransmission back-off (LoRaWAN 1.0.3 §7, kept in 1.0.4 and TR007): aggregated retransmission airtime.
BACKOFF_LIMITS_MS = ((3600000, 36000), (39600000, 36000), (86400000, 8700))


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
    ``battery_level`` (callable, optional) gives DevStatusAns's Battery: 0 on external power,
    1..254 from empty to full, 255 unknown (§5.5). ``adr`` sets the ADR bit and follows the
    network's LinkADRReq (ADRACKReq and back-off when it goes quiet). ``multicast`` is the
    ``config.json`` list of multicast groups (``lorawan.multicast``; up to 4) class C listens for.
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
        adr=False,
        battery_level=None,
        confirmed_attempts=CONFIRMED_ATTEMPTS,
        multicast=None,
    ):
        if (otaa is None) == (abp is None):
            raise ValueError("give exactly one of otaa= and abp=")
        if not 0 <= dr < len(region.DATA_RATES):
            raise ValueError("dr out of range")
        self.radio = radio
        self.storage = storage
        self._default_dr = dr
        self._default_power_dbm = power_dbm
        self.fcnt_save_every = fcnt_save_every
        self.adr = adr
        self.battery_level = battery_level
        self.confirmed_attempts = confirmed_attempts
        self._sleep_ms = sleep_ms or _sleep_ms
        self._ticks_ms = ticks_ms or _ticks_ms
        self._started_ms = self._ticks_ms()
        self._band_free_at_ms = {}  # sub-band index -> ticks_ms when it may transmit again
        self._retx_airtime_ms = 0
        self._ack_due = False
        self.adr_ack_cnt = 0
        self.last_uplink = None
        self.last_downlink = None
        self.last_ack = False
        self.transmissions = 0
        self.mac = mac.MacState(dr, power_dbm)
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
        self.multicast = _multicast.Multicast.from_config(multicast)
        self.multicast.load(self._state.get("multicast", {}))

    # --- state ---------------------------------------------------------------------------

    def _load_session(self):
        session = self._state.get("session")
        if session is None:
            self._keys = None
            self.mac = mac.MacState(self._default_dr, self._default_power_dbm)
            return
        self.dev_addr = binascii.unhexlify(session["dev_addr"])
        self._keys = frames.new_keys(
            binascii.unhexlify(session["nwk_s_key"]), binascii.unhexlify(session["app_s_key"])
        )
        # Resume at the stored ceiling: counters used since the last write are skipped, never repeated.
        self.fcnt_up = session.get("fcnt_up", 0)
        self._fcnt_ceiling = self.fcnt_up
        self.fcnt_down = session.get("fcnt_down", -1)
        state = mac.MacState(self._default_dr, self._default_power_dbm, session.get("cflist_hz", []))
        state.rx1_dr_offset = session.get("rx1_dr_offset", 0)
        state.rx2_dr = session.get("rx2_dr", region.RX2_DR)
        state.rx_delay_s = session.get("rx_delay_s", region.RECEIVE_DELAY1_S)
        # What MAC commands changed since the join (saved with the downlink that carried them).
        state.load(session.get("mac", {}))
        self.mac = state

    @property
    def joined(self):
        return self._keys is not None

    @property
    def next_dev_nonce(self):
        return self._state.get("dev_nonce", 0)

    # The radio settings live in the MAC state (the network may change them).
    @property
    def dr(self):
        return self.mac.dr

    @dr.setter
    def dr(self, value):
        self.mac.dr = value

    @property
    def power_dbm(self):
        return self.mac.power_dbm

    @property
    def channels_hz(self):
        return [f for _, f in self.mac.enabled_channels()]

    @property
    def rx1_dr_offset(self):
        return self.mac.rx1_dr_offset

    @property
    def rx2_dr(self):
        return self.mac.rx2_dr

    @property
    def rx_delay_s(self):
        return self.mac.rx_delay_s

    def volatile_state(self):
        """What RAM holds that must survive a deep sleep (RTC memory, ``main``): JSON-able.

        Band busy times are kept as milliseconds still to wait, since ``ticks_ms`` restarts.
        """
        now = self._ticks_ms()
        bands = {}
        for band, free_at in self._band_free_at_ms.items():
            wait = _ticks_diff(free_at, now)
            if wait > 0:
                bands[str(band)] = wait
        return {
            "band_wait_ms": bands,
            "ack_due": self._ack_due,
            "adr_ack_cnt": self.adr_ack_cnt,
            "mac_pending": _hex(self.mac.pending),
            "retx_airtime_ms": self._retx_airtime_ms,
        }

    def restore_volatile(self, saved, slept_ms):
        """Take back ``volatile_state()`` after ``slept_ms`` of deep sleep."""
        now = self._ticks_ms()
        for band, wait in saved.get("band_wait_ms", {}).items():
            left = wait - slept_ms
            if left > 0:
                self._band_free_at_ms[int(band)] = _ticks_add(now, left)
        self._ack_due = saved.get("ack_due", False)
        self.adr_ack_cnt = saved.get("adr_ack_cnt", 0)
        self.mac.pending = binascii.unhexlify(saved.get("mac_pending", ""))
        self._retx_airtime_ms = saved.get("retx_airtime_ms", 0)

    # --- radio helpers -------------------------------------------------------------------

    def _pick_channel(self):
        """(index, freq_hz): a random enabled channel whose sub-band is free, else the one free soonest."""
        channels = self.mac.enabled_channels()
        if not channels:
            # A mask cannot be empty (LinkADRReq refuses it); the DR may fit no channel: use DR-agnostic.
            channels = [(i, f) for i, f in enumerate(region.DEFAULT_CHANNELS_HZ)]
        now = self._ticks_ms()
        free = [c for c in channels if self._band_wait_ms(c[1], now) <= 0]
        if free:
            return free[random.getrandbits(8) % len(free)]
        best = channels[0]
        for c in channels:
            if self._band_wait_ms(c[1], now) < self._band_wait_ms(best[1], now):
                best = c
        return best

    def _band_wait_ms(self, freq_hz, now):
        free_at = self._band_free_at_ms.get(region.sub_band(freq_hz))
        return 0 if free_at is None else _ticks_diff(free_at, now)

    def _transmit(self, phy, freq_hz, dr):
        sf, bw_hz = region.DATA_RATES[dr]
        wait = self._band_wait_ms(freq_hz, self._ticks_ms())
        if wait > 0:
            self._sleep_ms(wait)
        tx_end = self.radio.transmit(phy, freq_hz, sf, bw_hz, self.power_dbm)
        self.transmissions += 1
        airtime_ms = region.airtime_us(sf, bw_hz, len(phy)) // 1000 + 1
        band = region.sub_band(freq_hz)
        divisor = region.SUB_BANDS[band][2] if band is not None else region.DUTY_CYCLE_DIVISOR
        # The network's DutyCycleReq can only make it stricter (§5.3).
        divisor = max(divisor, self.mac.duty_cycle_divisor())
        self._band_free_at_ms[band] = _ticks_add(tx_end, airtime_ms * (divisor - 1))
        return tx_end, airtime_ms

    def _windows(self, tx_end, freq_hz, dr, delay1_s, delay2_s, rx1_dr_offset, rx2_freq_hz, rx2_dr):
        """What RX1 then RX2 received (class A: RX2 only opens when RX1 got nothing)."""
        sf, bw = region.DATA_RATES[region.rx1_dr(dr, rx1_dr_offset)]
        got = self.radio.receive(freq_hz, sf, bw, _ticks_add(tx_end, 1000 * delay1_s), RX_WINDOW_TIMEOUT_MS)
        if got is not None:
            return got
        sf, bw = region.DATA_RATES[rx2_dr]
        return self.radio.receive(
            rx2_freq_hz, sf, bw, _ticks_add(tx_end, 1000 * delay2_s), RX_WINDOW_TIMEOUT_MS
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
            # Join-requests use the default channels and RX settings (RP002 §2.1.2, §2.1.7).
            dr = self._default_dr
            freq_hz = region.DEFAULT_CHANNELS_HZ[random.getrandbits(8) % len(region.DEFAULT_CHANNELS_HZ)]
            tx_end, _ = self._transmit(phy, freq_hz, dr)
            answer = self._windows(
                tx_end,
                freq_hz,
                dr,
                region.JOIN_ACCEPT_DELAY1_S,
                region.JOIN_ACCEPT_DELAY2_S,
                0,
                region.RX2_FREQ_HZ,
                region.RX2_DR,
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
            self._ack_due = False
            self.adr_ack_cnt = 0
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

    def _adr_ack_req(self):
        """ADRACKReq and the data-rate back-off of §4.3.1.1 (RP002 ADR_ACK_LIMIT/ADR_ACK_DELAY)."""
        if not self.adr:
            return False
        cnt = self.adr_ack_cnt
        self.adr_ack_cnt = cnt + 1
        if cnt < ADR_ACK_LIMIT:
            return False
        beyond = cnt - ADR_ACK_LIMIT
        if beyond >= ADR_ACK_DELAY and beyond % ADR_ACK_DELAY == 0:
            # No downlink for ADR_ACK_DELAY more uplinks: regain link budget step by step.
            if self.mac.power_dbm < self.mac.max_power_dbm:
                self.mac.power_dbm = self.mac.max_power_dbm
            elif self.mac.dr > 0:
                self.mac.dr -= 1
            else:
                for i in range(len(region.DEFAULT_CHANNELS_HZ)):
                    self.mac.ch_mask |= 1 << i
                self.mac.nb_trans = mac.DEFAULT_NB_TRANS
        # Not set at the lowest DR and full power: nothing left to improve (§4.3.1.1).
        return self.mac.dr > 0 or self.mac.power_dbm < self.mac.max_power_dbm

    def _backoff_allows(self, airtime_ms):
        """Retransmission back-off (1.0.3 §7): aggregated retransmission airtime since start-up."""
        up_ms = _ticks_diff(self._ticks_ms(), self._started_ms)
        for period_end_ms, limit_ms in BACKOFF_LIMITS_MS:
            if up_ms < period_end_ms:
                return self._retx_airtime_ms + airtime_ms <= limit_ms
        return self._retx_airtime_ms + airtime_ms <= BACKOFF_LIMITS_MS[-1][1]

    def send(self, fport, payload, confirmed=False, attempts=None):
        """Send one uplink (repeated as needed), listen in RX1/RX2; the verified ``frames.Downlink`` or None.

        The frame goes out NbTrans times (set by LinkADRReq; 1 by default), a confirmed one up to
        ``attempts`` (default max(NbTrans, ``confirmed_attempts``)) times, each on a new random
        channel, with the same FCnt, until a class A downlink verifies (1.0.4 §4.3.1.3).
        ``last_ack`` says whether that downlink acknowledged a confirmed uplink. A frame that does
        not verify (another device's, a replay) is ignored (§4.4). ``fport=0`` with an empty
        payload sends only the MAC answers (in FOpts).
        """
        if self._keys is None:
            raise ValueError("not joined")
        nwk_aes, app_aes = self._keys
        fcnt = self._reserve_fcnt()
        fopts = self.mac.uplink_fopts()
        if fport == 0 and not payload:
            fport = None  # an empty frame that carries only FOpts
        adr_ack_req = self._adr_ack_req()
        phy = frames.build_uplink(
            nwk_aes,
            app_aes,
            self.dev_addr,
            fcnt,
            fport,
            payload,
            confirmed,
            fopts=fopts,
            adr=self.adr,
            ack=self._ack_due,
            adr_ack_req=adr_ack_req,
        )
        self.mac.uplink_sent()
        self._ack_due = False
        self.last_uplink = phy
        self.last_ack = False
        if attempts is None:
            attempts = max(self.mac.nb_trans, self.confirmed_attempts) if confirmed else self.mac.nb_trans
        for attempt in range(max(1, attempts)):
            dr = self.mac.dr
            index, freq_hz = self._pick_channel()
            if attempt > 0 and confirmed:
                sf, bw_hz = region.DATA_RATES[dr]
                airtime_ms = region.airtime_us(sf, bw_hz, len(phy)) // 1000 + 1
                if not self._backoff_allows(airtime_ms):
                    return None
                # RETRANSMIT_TIMEOUT after RX2 before a repetition of an unacknowledged frame (§4.3.1.3).
                lo, hi = RETRANSMIT_TIMEOUT_MS
                self._sleep_ms(lo + random.getrandbits(16) % (hi - lo + 1))
                self._retx_airtime_ms += airtime_ms
            tx_end, _ = self._transmit(phy, freq_hz, dr)
            m = self.mac
            answer = self._windows(
                tx_end,
                m.rx1_freq_hz(index) or freq_hz,
                dr,
                m.rx_delay_s,
                m.rx_delay_s + 1,
                m.rx1_dr_offset,
                m.rx2_freq_hz,
                m.rx2_dr,
            )
            if answer is None:
                continue
            down = self._accept_downlink(answer, True)
            if down is not None:
                self.last_ack = down.ack
                return down
        return None

    # --- downlinks -----------------------------------------------------------------------

    def _accept_downlink(self, answer, class_a):
        """Verify, decrypt and act on a downlink (MAC commands, ACK owed); None when it does not verify."""
        if self._keys is None:
            return None
        nwk_aes, app_aes = self._keys
        try:
            down = frames.open_downlink(nwk_aes, app_aes, self.dev_addr, self.fcnt_down, answer)
        except frames.FrameError:
            return None
        self.fcnt_down = down.fcnt32
        self.adr_ack_cnt = 0
        if down.confirmed:
            self._ack_due = True  # the next uplink carries ACK (§4.3.1.2)
        commands = down.fopts
        if down.fport == 0:
            # MAC commands in FRMPayload; FOpts and FPort 0 together are not allowed (§4.3.1.6): ignore both.
            commands = b"" if down.fopts else down.payload
        if class_a:
            self.mac.downlink_received()
        snr = getattr(self.radio, "last_snr_db", None)
        battery = self.battery_level() if self.battery_level is not None else 255
        self.mac.handle(commands, battery, snr if snr is not None else 0)
        session = self._state["session"]
        session["fcnt_down"] = down.fcnt32
        session["mac"] = self.mac.to_dict()
        self.storage.save(self._state)
        self.last_downlink = down
        return down

    # --- class C -------------------------------------------------------------------------

    def listen_class_c(self, duration_ms):
        """Class C: keep RX2 open for ``duration_ms``; the first verified downlink, or None.

        Call it after ``send`` (the class A windows are over) and between uplinks; frames that
        do not verify are skipped and listening goes on until the deadline. Needs a radio with
        ``listen``.
        """
        if self._keys is None:
            raise ValueError("not joined")
        until = _ticks_add(self._ticks_ms(), duration_ms)
        freq_hz, dr = self.class_c_channel()
        sf, bw = region.DATA_RATES[dr]
        for _ in range(MAX_LISTEN_FRAMES):
            if _ticks_diff(until, self._ticks_ms()) <= 0:
                return None
            phy = self.radio.listen(freq_hz, sf, bw, until)
            if phy is None:
                return None
            group = self.multicast.group_of(phy)
            if group is not None:
                down = self._accept_multicast(group, phy)
            else:
                down = self._accept_downlink(phy, False)
            if down is not None:
                return down
        return None

    def class_c_channel(self):
        """(freq_hz, dr) class C listens on: the multicast groups' channel if any, else RX2.

        With groups on another channel than RX2 the device hears only the groups while it
        listens (one radio, one channel), as in a TS005 class C session (McClassCSessionReq
        gives its own frequency and DR): give the groups the RX2 parameters (their default) to
        hear both.
        """
        channel = self.multicast.channel()
        return channel if channel is not None else (self.mac.rx2_freq_hz, self.mac.rx2_dr)

    def _accept_multicast(self, group, phy):
        """A group frame checked and decrypted (``lorawan.multicast``), its counter stored; None if refused.

        Nothing else changes: no ACK owed, no MAC command, ADR_ACK_CNT kept (a frame every
        member receives says nothing about this device's uplinks being heard).
        """
        try:
            down = self.multicast.accept(group, phy)
        except frames.FrameError:
            return None
        # Stored before the node acts on it, as FCntDown is: a reset must not take the frame twice.
        self._state["multicast"] = self.multicast.to_dict()
        self.storage.save(self._state)
        return down
