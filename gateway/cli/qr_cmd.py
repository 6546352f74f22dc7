"""``edgegw qr make | sheet | parse``: LoRa Alliance TR005 device QR codes and printable labels.

``make`` reads the device from the registry and writes a label (PNG or SVG) with
the QR symbol and the EUIs in clear; ``sheet`` writes the labels of many devices
(``--all``, a CSV file, or DevEUIs) on A4 pages in one process (issue 19: one
process per label cost about 0.3 s each); ``parse`` reads a string scanned from a
vendor's sticker and checks its checksum (exit 2 when it is wrong).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from gateway import config, db
from gateway.cli import qr_sheet
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

    sh = qsub.add_parser("sheet", help="A4 SVG sheet(s) of labels of many registered devices, one process")
    which = sh.add_mutually_exclusive_group(required=True)
    which.add_argument("dev_euis", nargs="*", default=[], metavar="DEV_EUI")
    which.add_argument("--all", action="store_true", help="every registered device")
    which.add_argument("--csv", metavar="FILE", help="the devices of a CSV file with a dev_eui column")
    sh.add_argument(
        "--out",
        required=True,
        metavar="PATH.svg",
        help="the sheet; more than 30 labels: PATH-1.svg, PATH-2.svg, ... one per page",
    )
    sh.add_argument("--profile-id", default="00000000", metavar="HEX8", help="as for make")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(handler=make_sheet)

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
    join_eui = _join_eui(device)
    text = _code_text(device, args.profile_id)
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


def _join_eui(device: registry.Device) -> JoinEui:
    # ABP devices have no join server: TR005 still needs the field, all zeros says "none".
    return device.join_eui or JoinEui(bytes(8))


def _code_text(device: registry.Device, profile_id: str) -> str:
    code = qr.DeviceQr(join_eui=_join_eui(device), dev_eui=device.dev_eui, profile_id=profile_id.upper())
    return code.to_text()


def make_sheet(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix.lower() != ".svg":
        raise UsageError(
            f"--out {args.out}: the sheet is written as SVG only (print it at 100 % from a browser); "
            "give a name ending in .svg"
        )
    wanted = _csv_dev_euis(Path(args.csv)) if args.csv else [_dev_eui(t, "DEV_EUI") for t in args.dev_euis]
    cfg = config.load(config_path(args))
    conn = db.connect(db.db_path(cfg.data_dir))
    try:
        if args.all:
            devices = registry.list_devices(conn)
        else:
            devices, unknown = [], []
            for dev_eui in dict.fromkeys(wanted):  # a DevEUI listed twice gets one label
                try:
                    devices.append(registry.get_device(conn, dev_eui))
                except RegistryError:
                    unknown.append(str(dev_eui))
            if unknown:
                raise UsageError(f"not registered ({len(unknown)}): {', '.join(unknown)}")
    finally:
        conn.close()
    if not devices:
        raise UsageError("no device to label")
    labels = [
        label.Label(
            qr_text=_code_text(device, args.profile_id),
            lines=(f"DevEUI {str(device.dev_eui).upper()}", *((device.site,) if device.site else ())),
        )
        for device in devices
    ]
    svgs = qr_sheet.pages(labels)
    files = (
        [out]
        if len(svgs) == 1
        else [out.with_name(f"{out.stem}-{n}{out.suffix}") for n in range(1, len(svgs) + 1)]
    )
    try:
        for path, svg in zip(files, svgs, strict=True):
            path.write_text(svg, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write the sheet: {exc}") from exc
    if args.json:
        print_json(
            {
                "files": [str(f) for f in files],
                "labels": [
                    {"dev_eui": str(d.dev_eui), "qr": lb.qr_text}
                    for d, lb in zip(devices, labels, strict=True)
                ],
            }
        )
    else:
        print(f"{len(labels)} labels on {len(files)} page(s): {', '.join(str(f) for f in files)}")
    return 0


def _dev_eui(text: str, what: str) -> DevEui:
    try:
        return DevEui.from_hex(text)
    except ValueError as exc:
        raise UsageError(f"{what}: {exc}") from exc


def _csv_dev_euis(path: Path) -> list[DevEui]:
    """The ``dev_eui`` column of a CSV file (the import format: ``,`` or ``;``, ``#`` lines skipped)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise UsageError(f"{path}: empty file")
    delimiter = ";" if ";" in lines[0] and "," not in lines[0] else ","
    reader = csv.DictReader(lines, delimiter=delimiter)
    fields = {name.strip().lower(): name for name in reader.fieldnames or ()}
    if "dev_eui" not in fields:
        raise UsageError(f"{path}: no dev_eui column in the header row")
    return [
        _dev_eui((row.get(fields["dev_eui"]) or "").strip(), f"{path} line {n}")
        for n, row in enumerate(reader, start=2)
    ]


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
