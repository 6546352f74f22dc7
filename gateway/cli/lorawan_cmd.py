"""``edgegw lorawan decode PHY_HEX ...``: parse one LoRaWAN frame and, given keys, verify and decrypt it.

For technicians who paste a frame from a packet capture. The output is the
contract of ARCHITECTURE.md §3.1: lowercase hex, identifiers most-significant
byte first. Exit codes: 0 decoded (and the MIC verified, when a key was given),
1 the MIC did not verify, 2 bad input (not hex, not a LoRaWAN frame, bad key).

``--dev-eui X`` takes the keys from the registry instead of the command line (issue 19):
a data frame gets the device's current session keys (ABP, or the OTAA session of its last
join), a join frame its AppKey. Registered keys are only used, never printed: with
``--dev-eui`` the derivation of session keys from a join-accept (``--dev-nonce``) is refused,
since it would print them.
"""

from __future__ import annotations

import argparse
import hmac
from typing import Any

from gateway.cli.common import CheckFailed, UsageError, add_config_option, print_json
from gateway.cli.registry_read import device_and_keys
from gateway.errors import FrameError, MicMismatch
from gateway.lorawan import phy
from gateway.lorawan.crypto import SessionKeys, derive_session_keys, join_request_mic
from gateway.messages import MType

_MTYPE_NAMES = {
    MType.JOIN_REQUEST: "JoinRequest",
    MType.JOIN_ACCEPT: "JoinAccept",
    MType.UNCONFIRMED_DATA_UP: "UnconfirmedDataUp",
    MType.UNCONFIRMED_DATA_DOWN: "UnconfirmedDataDown",
    MType.CONFIRMED_DATA_UP: "ConfirmedDataUp",
    MType.CONFIRMED_DATA_DOWN: "ConfirmedDataDown",
    MType.REJOIN_REQUEST: "RejoinRequest",
    MType.PROPRIETARY: "Proprietary",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    lsub = p.add_subparsers(dest="lorawan_command", metavar="SUBCOMMAND", required=True)
    d = lsub.add_parser("decode", help="parse one PHYPayload; with keys, verify its MIC and decrypt it")
    add_config_option(d)
    d.add_argument("phy_hex", metavar="PHY_HEX", help="the PHYPayload as hex (spaces and colons allowed)")
    d.add_argument(
        "--dev-eui",
        metavar="HEX",
        help="use this registered device's keys (its session, or its AppKey for a join frame)",
    )
    d.add_argument("--nwkskey", metavar="HEX", help="NwkSKey: verifies a data frame's MIC (and FPort 0)")
    d.add_argument("--appskey", metavar="HEX", help="AppSKey: decrypts a data frame's FRMPayload")
    d.add_argument("--appkey", metavar="HEX", help="AppKey: join-request MIC, join-accept decryption")
    d.add_argument(
        "--dev-nonce", metavar="HEX", help="with --appkey on a join-accept: derive the session keys"
    )
    d.add_argument("--last-fcnt", type=int, metavar="N", help="last 32-bit FCnt, to rebuild this frame's")
    d.add_argument("--json", action="store_true", help="print one JSON document")
    d.set_defaults(handler=handle)


def _hex(text: str, what: str, size: int | None = None) -> bytes:
    cleaned = text.strip().replace(" ", "").replace(":", "")
    try:
        raw = bytes.fromhex(cleaned)
    except ValueError as exc:
        raise UsageError(f"{what} is not hex: {text!r}") from exc
    if size is not None and len(raw) != size:
        raise UsageError(f"{what} must be {size} bytes ({2 * size} hex digits), got {len(raw)}")
    return raw


def handle(args: argparse.Namespace) -> int:
    frame = _hex(args.phy_hex, "PHY_HEX")
    nwk = _hex(args.nwkskey, "--nwkskey", 16) if args.nwkskey else None
    app = _hex(args.appskey, "--appskey", 16) if args.appskey else None
    app_key = _hex(args.appkey, "--appkey", 16) if args.appkey else None
    dev_nonce = _hex(args.dev_nonce, "--dev-nonce", 2) if args.dev_nonce else None
    if dev_nonce is not None and app_key is None:
        raise UsageError("--dev-nonce needs --appkey")
    if args.last_fcnt is not None and not 0 <= args.last_fcnt <= 0xFFFFFFFF:
        raise UsageError(f"--last-fcnt must be 0..4294967295, got {args.last_fcnt}")
    key_source = "the given key"
    if args.dev_eui is not None:
        if nwk is not None or app is not None or app_key is not None or dev_nonce is not None:
            raise UsageError("--dev-eui takes the keys from the registry: give no key options with it")
        nwk, app, app_key = registered_keys(args, frame)
        key_source = f"the registered keys of {args.dev_eui.lower()}"
    try:
        doc = describe(
            frame,
            nwk_s_key=nwk,
            app_s_key=app,
            app_key=app_key,
            dev_nonce=dev_nonce,
            last_fcnt=args.last_fcnt,
        )
    except FrameError as exc:
        raise UsageError(f"not a LoRaWAN frame ({exc.reason}): {exc}") from exc
    if args.json:
        print_json(doc)
    else:
        for key, value in doc.items():
            print(f"{key}: {plain(value)}")
    if doc.get("mic_ok") is False:
        raise CheckFailed(f"MIC does not verify with {key_source}")
    return 0


def registered_keys(
    args: argparse.Namespace, frame: bytes
) -> tuple[bytes | None, bytes | None, bytes | None]:
    """(NwkSKey, AppSKey, AppKey) of ``--dev-eui`` for this frame: the session keys for a data
    frame, the AppKey for a join frame; UsageError when the device has none of them."""
    device, keys = device_and_keys(args, args.dev_eui)
    dev_eui = device.dev_eui
    # The frame type decides which keys apply; a frame too short to tell fails later in describe.
    mtype = MType(frame[0] >> 5) if frame else None
    if mtype in (MType.JOIN_REQUEST, MType.JOIN_ACCEPT):
        if "app_key" not in keys:
            raise UsageError(f"device {dev_eui} has no AppKey (it is an ABP device): no join to check")
        return None, None, bytes.fromhex(keys["app_key"])
    if "nwk_s_key" not in keys or "app_s_key" not in keys:
        raise UsageError(f"device {dev_eui} has no session yet (an OTAA device that has not joined)")
    return bytes.fromhex(keys["nwk_s_key"]), bytes.fromhex(keys["app_s_key"]), None


def plain(value: Any) -> str:
    """A value as a technician reads it, not as Python prints it: ``adr=yes ack=no fopts_len=0``
    for FCtrl, ``yes``/``no``, ``-`` for none, a list's items separated by commas."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "-"
    if isinstance(value, dict):
        return " ".join(f"{k}={plain(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(plain(v) for v in value)
    return str(value)


def rebuild_fcnt(fcnt16: int, last: int | None) -> int:
    """The 32-bit counter closest at or after ``last`` whose low 16 bits are ``fcnt16``."""
    if last is None:
        return fcnt16
    candidate = (last & 0xFFFF0000) | fcnt16
    if candidate < last and candidate + 0x10000 <= 0xFFFFFFFF:
        candidate += 0x10000
    return candidate


def describe(
    frame: bytes,
    *,
    nwk_s_key: bytes | None = None,
    app_s_key: bytes | None = None,
    app_key: bytes | None = None,
    dev_nonce: bytes | None = None,
    last_fcnt: int | None = None,
) -> dict[str, Any]:
    """The §3.1 JSON document of one frame; ``FrameError`` if it is not a LoRaWAN frame."""
    parsed = phy.parse(frame)
    mtype = MType(frame[0] >> 5)
    doc: dict[str, Any] = {"mtype": _MTYPE_NAMES[mtype]}
    if isinstance(parsed, phy.DataFrame):
        fcnt = rebuild_fcnt(parsed.fcnt16, last_fcnt)
        uplink = parsed.uplink
        payload = parsed.frm_payload
        key_for_payload = nwk_s_key if parsed.fport == 0 else app_s_key
        if key_for_payload is not None and payload:
            keys = SessionKeys(nwk_s_key or key_for_payload, key_for_payload)
            payload = keys.crypt_frm_payload(payload, parsed.dev_addr, fcnt, uplink, parsed.fport or 0)
        mic_ok: bool | None = None
        if nwk_s_key is not None:
            expected = SessionKeys(nwk_s_key, nwk_s_key).data_mic(
                parsed.mic_input, parsed.dev_addr, fcnt, uplink
            )
            mic_ok = hmac.compare_digest(expected, parsed.mic)
        fctrl = parsed.fctrl
        doc.update(
            dev_addr=parsed.dev_addr.hex(),
            fctrl={
                "adr": fctrl.adr,
                "adr_ack_req": fctrl.adr_ack_req,
                "ack": fctrl.ack,
                "fpending": fctrl.fpending,
                "fopts_len": fctrl.fopts_len,
            },
            fcnt=fcnt,
            fopts=parsed.fopts.hex(),
            fport=parsed.fport,
            frm_payload=payload.hex(),
            mic=parsed.mic.hex(),
            mic_ok=mic_ok,
        )
    elif isinstance(parsed, phy.JoinRequest):
        doc.update(
            join_eui=parsed.join_eui.hex(),
            dev_eui=parsed.dev_eui.hex(),
            dev_nonce=parsed.dev_nonce.hex(),
            mic=parsed.mic.hex(),
            mic_ok=(
                hmac.compare_digest(join_request_mic(app_key, parsed.mic_input), parsed.mic)
                if app_key is not None
                else None
            ),
        )
    elif isinstance(parsed, phy.JoinAccept):
        doc.update(_join_accept(parsed, app_key, dev_nonce))
    elif isinstance(parsed, phy.RejoinRequest):
        doc.update(mic=parsed.mic.hex(), mic_ok=None)
    else:
        doc.update(frm_payload=parsed.payload.hex(), mic=None, mic_ok=None)
    return doc


def _join_accept(parsed: phy.JoinAccept, app_key: bytes | None, dev_nonce: bytes | None) -> dict[str, Any]:
    fields: dict[str, Any] = dict.fromkeys(
        ("join_nonce", "net_id", "dev_addr", "rx1_dr_offset", "rx2_dr", "rx_delay", "cflist", "mic"),
    )
    fields["mic_ok"] = None
    if app_key is None:
        return fields
    try:
        opened = phy.open_join_accept(parsed, app_key)
    except MicMismatch:
        fields["mic_ok"] = False
        return fields
    fields.update(
        join_nonce=opened.join_nonce.hex(),
        net_id=opened.net_id.hex(),
        dev_addr=opened.dev_addr.hex(),
        rx1_dr_offset=opened.rx1_dr_offset,
        rx2_dr=opened.rx2_dr,
        rx_delay=opened.rx_delay,
        cflist=list(opened.cflist) if opened.cflist is not None else None,
        mic=opened.mic.hex(),
        mic_ok=True,
    )
    if dev_nonce is not None:
        nwk, app = derive_session_keys(app_key, opened.join_nonce, opened.net_id, dev_nonce)
        fields.update(nwk_s_key=nwk.hex(), app_s_key=app.hex())
    return fields
