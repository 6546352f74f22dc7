"""The uplink path, as one short readable function: frame → session → profile → record → outbox.

Owns the order of the stages and the shape of a reading record (ARCHITECTURE.md
§3.2), and the per-reason rejection counters. Rejected input is counted, logged
once per reason at WARNING (then at DEBUG) and dropped; it never raises out.
Edge rules (issue 6) will sit between decoding and the outbox.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from gateway.clock import SystemClock, iso_utc
from gateway.codec import ProfileStore
from gateway.errors import DecodeError, InputError
from gateway.messages import RadioFrame, Record, UplinkData

log = logging.getLogger(__name__)

PRIORITY_READING = 50


class Acceptor(Protocol):
    def accept(self, frame: RadioFrame) -> UplinkData: ...


class RecordSink(Protocol):
    def put(self, record: Record) -> None: ...


def record_id(up: UplinkData) -> str:
    """Stable id (ARCHITECTURE.md §3.4): the same frame always gets the same id, new sessions new ids."""
    return f"{up.dev_eui}-{up.session_tag}-{up.fcnt}"


class UplinkPipeline:
    """Runs each received frame through the stages; counts what happens."""

    def __init__(
        self, sessions: Acceptor, profiles: ProfileStore, outbox: RecordSink, clock: SystemClock
    ) -> None:
        self._sessions = sessions
        self._profiles = profiles
        self._outbox = outbox
        self._clock = clock
        self.counters: Counter[str] = Counter()
        self._logged: set[str] = set()
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        """Called with a frame event (verdict, reason, device, signal, data) for every frame:
        the inventory and `edgegw tail` listen here. Listeners must be quick and must not raise."""

    def handle(self, frame: RadioFrame) -> Record | None:
        """The whole uplink path for one frame; returns the record put in the outbox, if any."""
        self.counters["frames"] += 1
        try:
            up = self._sessions.accept(frame)
        except InputError as exc:
            self._reject(exc, frame)
            if self.listeners:
                self._emit(
                    frame, "rejected", reason=exc.reason, detail=str(exc), dev_addr=_dev_addr_hint(frame)
                )
            return None
        self.counters["accepted"] += 1
        data, extra = self._decode(up)
        record = self._record(up, data, extra)
        self._outbox.put(record)
        if self.listeners:
            self._emit(
                frame,
                "accepted",
                dev_eui=str(up.dev_eui),
                fcnt=up.fcnt,
                fport=up.fport,
                data=data,
                decode_error=extra.get("decode_error"),
                record_id=record.record_id,
                payload_hex=up.payload.hex(),
            )
        return record

    def _emit(self, frame: RadioFrame, verdict: str, **facts: Any) -> None:
        rx = frame.rx
        event = {
            "at_s": frame.received_at_s,
            "verdict": verdict,
            "rssi_dbm": rx.rssi_dbm,
            "snr_db": rx.snr_db,
            "freq_hz": rx.freq_hz,
            "sf": rx.sf,
            "gateway_eui": rx.gateway_eui,
            "phy_hex": frame.phy_payload.hex(),
            **facts,
        }
        for listener in self.listeners:
            listener(event)

    def _decode(self, up: UplinkData) -> tuple[dict[str, Any], dict[str, Any]]:
        """Decoded data, and extra record keys (warnings, decode_error). A failure keeps the raw bytes."""
        if up.fport is None or up.fport == 0:
            # No application payload (FPort absent) or MAC commands only (FPort 0).
            return {}, {}
        try:
            profile = self._profiles.get(up.profile)
        except KeyError:
            self.counters["rejected.unknown_profile"] += 1
            return {}, {"decode_error": f"unknown profile {up.profile}"}
        try:
            decoded = profile.decode(up.fport, up.payload)
        except DecodeError as exc:
            self.counters[f"decode_failed.{exc.reason}"] += 1
            self._log_once(
                f"decode.{exc.reason}", "cannot decode %s payload from %s: %s", up.profile, up.dev_eui, exc
            )
            return {}, {"decode_error": str(exc)}
        self.counters["decoded"] += 1
        return decoded.data, ({"warnings": list(decoded.warnings)} if decoded.warnings else {})

    def _record(self, up: UplinkData, data: dict[str, Any], extra: dict[str, Any]) -> Record:
        frame = up.frame
        rx = frame.rx
        body: dict[str, Any] = {
            "id": record_id(up),
            "kind": "reading",
            "dev_eui": str(up.dev_eui),
            "profile": up.profile,
            "received_at": iso_utc(frame.received_at_s) if not rx.gps_time else rx.gps_time,
            "time_quality": self._clock.quality(rx.gps_time),
            "fcnt": up.fcnt,
            "fport": up.fport,
            "rx": {
                "rssi_dbm": rx.rssi_dbm,
                "snr_db": rx.snr_db,
                "freq_hz": rx.freq_hz,
                "sf": rx.sf,
                "bw_hz": rx.bw_hz,
                "backend": rx.backend,
                "gateway_eui": rx.gateway_eui,
            },
            "data": data,
            "raw": up.payload.hex(),
        }
        body.update(extra)
        return Record(record_id=body["id"], kind="reading", priority=PRIORITY_READING, body=body)

    def _reject(self, exc: InputError, frame: RadioFrame) -> None:
        self.counters["rejected"] += 1
        self.counters[f"rejected.{exc.reason}"] += 1
        self._log_once(exc.reason, "frame rejected (%s): %s [%s]", exc.reason, exc, frame.phy_payload.hex())

    def _log_once(self, key: str, msg: str, *args: Any) -> None:
        # zeroconf's quiet logger: the first of each kind at WARNING, the rest at DEBUG.
        level = logging.DEBUG if key in self._logged else logging.WARNING
        self._logged.add(key)
        log.log(level, msg, *args)


def _dev_addr_hint(frame: RadioFrame) -> str | None:
    """The DevAddr of a rejected data frame, for the technician's eyes only (not authenticated)."""
    phy = frame.phy_payload
    if len(phy) >= 5 and 2 <= phy[0] >> 5 <= 5:  # data up/down MTypes (LoRaWAN 1.0.4 §4.2.1)
        return phy[4:0:-1].hex()
    return None
