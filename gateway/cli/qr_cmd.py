"""``edgegw qr make | parse``: LoRa Alliance TR005 device QR codes and printable labels.

``make`` reads the device from the registry and writes a label (PNG or SVG) with
the QR symbol and the EUIs in clear; ``parse`` reads a string scanned from a
vendor's sticker and checks its checksum (exit 2 when it is wrong).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway import config, db
from gateway.cli.common import UsageError, add_config_option, config_path, print_json
from gateway.errors import RegistryError
from gateway.messages import DevEui, JoinEui
from gateway.provisioning import label, qr, registry


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_option(p)
    qsub = p.add_subparsers(dest="qr_command", metavar="ACTION", required=True)

    mk = qsub.add_parser("make", help="QR label of a registered device")
    mk.add_argument("dev_eui", metavar="DEV_EUI")
    out = mk.add_mutually_exclusive_group()
    out.add_argument("--png", metavar="PATH", help="write a PNG label")
    out.add_argument("--svg", metavar="PATH", help="write an SVG label (prints at size, in mm)")
    mk.add_argument(
        "--profile-id",
        default="00000000",
        metavar="HEX8",
        help="TR005 ProfileID: LoRa Alliance VendorID + vendor profile id (default 00000000: none)",
    )
    mk.add_argument("--json", action="store_true")
    mk.set_defaults(handler=make_label)

    ps = qsub.add_parser("parse", help="read a scanned LW:D0:... string and check its checksum")
    ps.add_argument("text", metavar="STRING")
    ps.add_argument("--json", action="store_true")
    ps.set_defaults(handler=parse_code)


def make_label(args: argparse.Namespace) -> int:
    try:
        dev_eui = DevEui.from_hex(args.dev_eui)
    except ValueError as exc:
        raise UsageError(f"DEV_EUI: {exc}") from exc
    cfg = config.load(config_path(args))
    conn = db.connect(db.db_path(cfg.data_dir))
    try:
        device = registry.get_device(conn, dev_eui)
    except RegistryError as exc:
        raise UsageError(str(exc)) from exc
    finally:
        conn.close()
    # ABP devices have no join server: TR005 still needs the field, all zeros says "none".
    join_eui = device.join_eui or JoinEui(bytes(8))
    code = qr.DeviceQr(join_eui=join_eui, dev_eui=dev_eui, profile_id=args.profile_id.upper())
    text = code.to_text()
    lines: tuple[str, ...] = (f"DevEUI {str(dev_eui).upper()}", f"JoinEUI {str(join_eui).upper()}")
    if device.site:
        lines = (*lines, device.site)
    drawing = label.Label(qr_text=text, lines=lines)
    written = None
    try:
        if args.png:
            Path(args.png).write_bytes(label.to_png(drawing))
            written = args.png
        elif args.svg:
            Path(args.svg).write_text(label.to_svg(drawing), encoding="utf-8")
            written = args.svg
    except OSError as exc:
        raise UsageError(f"cannot write the label: {exc}") from exc
    if args.json:
        print_json({"qr": text, "lines": list(lines), "file": written, **qr.parse(text).as_json()})
    else:
        print(text)
        for line in lines:
            print(line)
        if written:
            print(f"label written to {written}")
    return 0


def parse_code(args: argparse.Namespace) -> int:
    code = qr.parse(args.text)  # QrCodeError → exit 2 with its message
    doc = code.as_json()
    if args.json:
        print_json(doc)
    else:
        width = max(len(k) for k in doc)
        for key, value in doc.items():
            if value is not None:
                print(f"{key:<{width}}  {value}")
    return 0
