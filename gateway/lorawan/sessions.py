"""LoRaWAN sessions at the edge: which DevAddr is which device, and what its frames may be.

Owns the in-memory session table (DevAddr → keys, profile, last accepted uplink
counter), the acceptance of a data uplink (parse, counter reconstruction, MIC,
decryption) and the persistence of the new counters through the group commit
(``CommitSink``), so that a record and the counter that accepted it are durable
together and no crash can reopen a replay window.

A session created by an OTAA join is ``install``-ed at once (the join server
has already committed it), and survives a concurrent ``merge`` of a registry read
that started before the join committed. The downlink counter (``fcnt_down``)
lives on the session too; the downlink scheduler moves and persists it.

A frame that repeats the last accepted one (same FCnt, same MIC: a device with NbTrans > 1
sends each uplink several times, LoRaWAN 1.0.4 §5.3 LinkADRReq) is a retransmission, told
apart from a replay by ``retransmission_of``; only the last accepted MIC is kept for it
(4 bytes and a time per session, in memory).

It does not own the ``devices`` table (the registry does), joins (``join``) nor
downlinks (``downlink``).
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from gateway.errors import FrameError, MicMismatch, UnknownDevice
from gateway.lorawan import fcnt, phy
from gateway.lorawan.crypto import SessionKeys
from gateway.messages import AesKey, DevAddr, DevEui, RadioFrame, SessionCounter, UplinkData

RETRANSMISSION_WINDOW_S: Final = 300.0
"""How long after a frame its NbTrans repeats may arrive: the device repeats after RX2 and a
RETRANSMIT_TIMEOUT of 1-3 s (LoRaWAN 1.0.4 §4.3.1.3), later when its duty cycle holds it back (an
SF12 frame of 2.5 s in the 1 % sub-band of the default channels waits up to about 4 min)."""


@dataclass(slots=True)
class Session:
    """One device's current session; ``fcnt_up`` moves forward as frames are accepted."""

    dev_eui: DevEui
    dev_addr: DevAddr
    profile: str
    session_tag: str
    keys: SessionKeys
    fcnt_up: int | None
    fcnt_down: int = 0
    """The next downlink FCnt to use (LoRaWAN 1.0.4 §4.3.1.5: starts at 0 with the session)."""
    last_mic: bytes | None = None
    """The MIC of the frame that set ``fcnt_up`` (None until one is accepted by this process)."""
    last_at_s: float = 0.0
    """When that frame was received (Unix seconds): repeats come within ``RETRANSMISSION_WINDOW_S``.
    The wall clock, not the monotonic one: a clock step only changes how a refused frame is
    counted (a repeat or a replay), and the simulator compresses time on the wall clock."""


_LOAD = (
    "SELECT s.dev_eui, s.dev_addr, d.profile, s.session_tag, s.nwk_s_key, s.app_s_key, s.fcnt_up,"
    " s.fcnt_down"
    " FROM sessions s JOIN devices d ON d.dev_eui = s.dev_eui"
)


def session_tag(dev_addr: DevAddr, nwk_s_key: AesKey) -> str:
    """A short tag that changes with every session of a device (new DevAddr or keys).

    Part of record ids (ARCHITECTURE.md §3.4): the same frame always gets the same
    id, and a device that restarts its counters in a new session gets new ids.
    Derived by a one-way hash, 32 bits of which reveal nothing usable about the key.
    """
    digest = hashlib.sha256(b"edgegw-session" + dev_addr.value + nwk_s_key.value).digest()
    return digest[:4].hex()


def plain(text: str) -> str:
    """The identity key codec: keys stored as plain hex (no key file on this gateway)."""
    return text


def load_sessions(conn: sqlite3.Connection, decrypt: Callable[[str], str] = plain) -> list[Session]:
    """Read every session from the database (on the database thread).

    ``decrypt`` turns a stored key column into hex: keys may be encrypted at rest
    (``gateway.provisioning.keystore``); this stage only receives the function.
    """
    sessions = []
    for dev_eui, dev_addr, profile, tag, nwk_s_key, app_s_key, fcnt_up, fcnt_down in conn.execute(_LOAD):
        sessions.append(
            Session(
                dev_eui=DevEui.from_hex(dev_eui),
                dev_addr=DevAddr.from_hex(dev_addr),
                profile=profile,
                session_tag=tag,
                keys=SessionKeys(bytes.fromhex(decrypt(nwk_s_key)), bytes.fromhex(decrypt(app_s_key))),
                fcnt_up=fcnt_up,
                fcnt_down=fcnt_down,
            )
        )
    return sessions


class SessionTable:
    """Accepts data uplinks of known sessions; a ``CommitSink`` for their counters."""

    _INSTALL_GRACE_MERGES = 2
    """An installed session not yet seen in the registry survives this many merges (a read that started
    before its join committed); after that the registry wins (the device was removed)."""

    def __init__(self, sessions: Iterable[Session] = ()) -> None:
        self._by_addr: dict[bytes, Session] = {}
        self._by_eui: dict[bytes, Session] = {}
        self._pending: dict[str, SessionCounter] = {}
        self._installed: dict[bytes, tuple[Session, int]] = {}
        self.merge(list(sessions))

    def __len__(self) -> int:
        return len(self._by_addr)

    def by_dev_eui(self, dev_eui: DevEui) -> Session | None:
        return self._by_eui.get(dev_eui.value)

    def addr_in_use(self, dev_addr: bytes) -> bool:
        return dev_addr in self._by_addr

    def install(self, session: Session) -> None:
        """Serve a new session of a device at once, replacing its previous one (after an OTAA join).

        The caller has made it durable first; the old session's uncommitted counter
        is dropped (its tag guard would refuse it anyway).
        """
        old = self._by_eui.get(session.dev_eui.value)
        if old is not None:
            self._by_addr.pop(old.dev_addr.value, None)
            pending = self._pending.get(str(session.dev_eui))
            if pending is not None and pending.session_tag != session.session_tag:
                del self._pending[str(session.dev_eui)]
        self._by_addr[session.dev_addr.value] = session
        self._by_eui[session.dev_eui.value] = session
        self._installed[session.dev_eui.value] = (session, 0)

    def merge(self, fresh: list[Session]) -> None:
        """Adopt the registry's current sessions, keeping counters accepted since they were read.

        A session that is still the same (same tag) keeps the higher of the two
        counters: the in-memory one may be ahead of the database by one group commit.
        """
        by_eui: dict[bytes, Session] = {}
        for session in fresh:
            current = self._by_eui.get(session.dev_eui.value)
            if current is not None and current.session_tag == session.session_tag:
                if session.fcnt_up is None or (
                    current.fcnt_up is not None and current.fcnt_up > session.fcnt_up
                ):
                    session.fcnt_up = current.fcnt_up
                if session.fcnt_up == current.fcnt_up:
                    session.last_mic = current.last_mic  # still the frame that set this counter
                    session.last_at_s = current.last_at_s
                session.fcnt_down = max(session.fcnt_down, current.fcnt_down)
            by_eui[session.dev_eui.value] = session
        # A session installed by a join wins over a registry read that does not show it yet.
        installed: dict[bytes, tuple[Session, int]] = {}
        for eui, (session, merges) in self._installed.items():
            seen = by_eui.get(eui)
            if seen is not None and seen.session_tag == session.session_tag:
                continue  # the registry has caught up
            if merges + 1 < self._INSTALL_GRACE_MERGES:
                by_eui[eui] = session
                installed[eui] = (session, merges + 1)
        self._installed = installed
        self._by_eui = by_eui
        self._by_addr = {session.dev_addr.value: session for session in by_eui.values()}

    def accept(self, frame: RadioFrame) -> UplinkData:
        """Authenticate and decrypt one frame, or raise a ``FrameError`` saying why not.

        The order matters: the 32-bit counter is reconstructed first because the
        MIC covers it (LoRaWAN 1.0.4 §4.4); the counter advances only after the MIC
        verified, so a forged frame cannot push a session's counter forward.
        """
        parsed = phy.parse(frame.phy_payload)
        if not isinstance(parsed, phy.DataFrame):
            kind = type(parsed).__name__
            raise FrameError(f"{kind} is not handled at the edge yet", reason="unsupported_mtype")
        if not parsed.uplink:
            raise FrameError("a downlink frame was received on the uplink path", reason="downlink_on_uplink")
        session = self._by_addr.get(parsed.dev_addr)
        if session is None:
            raise UnknownDevice(f"no session for DevAddr {parsed.dev_addr.hex()}")
        fcnt32 = fcnt.full_fcnt(parsed.fcnt16, session.fcnt_up)
        mic = session.keys.data_mic(parsed.mic_input, parsed.dev_addr, fcnt32, True)
        if not hmac.compare_digest(mic, parsed.mic):
            raise MicMismatch(f"MIC mismatch for DevAddr {parsed.dev_addr.hex()} FCnt {fcnt32}")
        payload = b""
        if parsed.fport is not None and parsed.frm_payload:
            payload = session.keys.crypt_frm_payload(
                parsed.frm_payload, parsed.dev_addr, fcnt32, True, parsed.fport
            )
        session.fcnt_up = fcnt32
        session.last_mic, session.last_at_s = parsed.mic, frame.received_at_s
        self._pending[str(session.dev_eui)] = SessionCounter(session.dev_eui, session.session_tag, fcnt32)
        return UplinkData(
            dev_eui=session.dev_eui,
            dev_addr=session.dev_addr,
            session_tag=session.session_tag,
            profile=session.profile,
            fcnt=fcnt32,
            fport=parsed.fport,
            payload=payload,
            confirmed=parsed.confirmed,
            frame=frame,
        )

    def retransmission_of(self, frame: RadioFrame) -> Session | None:
        """The session whose last accepted frame ``frame`` repeats, or None (then a refused old
        counter is a replay: a device that reset its counter, or an attacker).

        With NbTrans > 1 (LoRaWAN 1.0.4 §5.3, LinkADRReq) a device sends the same uplink, same
        FCnt and payload and so the same MIC, several times; a network server must neither take
        the repeats as new frames nor as attacks. A repeat is the same FCnt and the same MIC as
        the last accepted frame, received within ``RETRANSMISSION_WINDOW_S`` of it, and its MIC
        verifies: a copy of that MIC on other bytes (a forgery) stays a replay, and so does the
        same frame played back later (a captured frame is byte-identical to a repeat; only its time
        tells them apart). Called only for a frame ``accept`` refused as ``replayed_fcnt``.
        """
        try:
            parsed = phy.parse(frame.phy_payload)
        except FrameError:
            return None
        if not isinstance(parsed, phy.DataFrame) or not parsed.uplink:
            return None
        session = self._by_addr.get(parsed.dev_addr)
        if session is None or session.fcnt_up is None or session.last_mic is None:
            return None
        if parsed.fcnt16 != session.fcnt_up & 0xFFFF or not hmac.compare_digest(parsed.mic, session.last_mic):
            return None
        if not 0.0 <= frame.received_at_s - session.last_at_s <= RETRANSMISSION_WINDOW_S:
            return None
        mic = session.keys.data_mic(parsed.mic_input, parsed.dev_addr, session.fcnt_up, True)
        return session if hmac.compare_digest(mic, parsed.mic) else None

    # CommitSink: the counters accepted since the last group commit.

    def take(self) -> list[SessionCounter] | None:
        if not self._pending:
            return None
        taken = list(self._pending.values())
        self._pending = {}
        return taken

    def write(self, conn: sqlite3.Connection, taken: list[SessionCounter]) -> None:
        # The session_tag guard: a counter of a replaced session must not land on the new one.
        conn.executemany(
            "UPDATE sessions SET fcnt_up = ? WHERE dev_eui = ? AND session_tag = ?"
            " AND (fcnt_up IS NULL OR fcnt_up < ?)",
            [(c.fcnt_up, str(c.dev_eui), c.session_tag, c.fcnt_up) for c in taken],
        )

    def committed(self, taken: list[SessionCounter]) -> None:
        """Nothing to do: the in-memory counters are already ahead."""

    def give_back(self, taken: list[SessionCounter]) -> None:
        """The group failed (a full disk): these counters go with the next one, unless a later
        frame of the same device already queued a higher one."""
        for counter in taken:
            self._pending.setdefault(str(counter.dev_eui), counter)
