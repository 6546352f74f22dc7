"""``edgegw airtime``: time on air of one LoRa packet (ARCHITECTURE.md §3.1).

Owns the command's arguments and output only; the formula is ``gateway.radio.airtime``.
"""

from __future__ import annotations

import argparse

from gateway.cli.common import UsageError, print_json
from gateway.radio.airtime import LoraParams, airtime_ms, payload_symbols


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sf", required=True, type=int, metavar="N", help="spreading factor, 6..12")
    p.add_argument("--bw-khz", type=float, default=125.0, metavar="KHZ", help="bandwidth (default 125)")
    p.add_argument("--cr", default="4/5", metavar="4/N", help="coding rate 4/5..4/8 (default 4/5)")
    p.add_argument("--payload-bytes", required=True, type=int, metavar="N", help="PHYPayload length")
    p.add_argument("--preamble", type=int, default=8, metavar="N", help="preamble symbols (default 8)")
    p.add_argument("--implicit-header", action="store_true", help="implicit header (LoRaWAN: explicit)")
    p.add_argument("--no-crc", action="store_true", help="no PHY CRC (LoRaWAN downlinks have none)")
    p.add_argument("--ldro", choices=("auto", "on", "off"), default="auto", help="low-data-rate optimisation")
    p.add_argument("--json", action="store_true", help='print {"airtime_ms": ...}')
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    bw_hz = round(args.bw_khz * 1000)
    try:
        params = LoraParams(
            sf=args.sf,
            bw_hz=bw_hz,
            coding_rate=args.cr,
            preamble_symbols=args.preamble,
            implicit_header=args.implicit_header,
            crc=not args.no_crc,
            ldro=args.ldro,
        )
        value_ms = airtime_ms(args.payload_bytes, params)
        symbols = payload_symbols(args.payload_bytes, params)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.json:
        print_json({"airtime_ms": round(value_ms, 3)})
    else:
        ldro = "on" if params.low_data_rate_optimize else "off"
        print(
            f"{value_ms:.3f} ms  (SF{params.sf} BW{bw_hz / 1000:g} kHz CR {params.coding_rate}, "
            f"{args.payload_bytes} bytes, {symbols} payload symbols, symbol {params.symbol_s * 1000:g} ms, "
            f"LDRO {ldro})"
        )
    return 0
