"""``edgegw profile list | show ID | test [ID...] | import-ttn PATH``: the device profiles.

``test`` runs every example embedded in the profiles (uplink payload → expected output,
command → expected bytes) and exits 1 on any mismatch; CI runs it on the shipped ones.

The profiles are the shipped ones plus a profiles directory: ``--profiles-dir``, else the
config's ``profiles_dir`` when the config file exists (what the agent loads). ``import-ttn``
writes into that directory (``--out`` overrides it), never into the shipped profiles.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gateway import config
from gateway.cli.common import CheckFailed, UsageError, add_config_option, config_path, print_json
from gateway.codec import Profile, ProfileStore, load_profiles
from gateway.codec.ttn_import import import_ttn


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profiles-dir",
        metavar="DIR",
        help="your profiles, added to the shipped ones (default: the config's profiles_dir)",
    )
    add_config_option(p)
    psub = p.add_subparsers(dest="profile_command", metavar="ACTION", required=True)
    ls = psub.add_parser("list", help="one line per profile")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=list_profiles)
    show = psub.add_parser("show", help="a profile's facts, outputs, derived values and commands")
    show.add_argument("profile_id", metavar="ID")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=show_profile)
    test = psub.add_parser("test", help="run the embedded examples; exit 1 on a mismatch")
    test.add_argument("profile_ids", metavar="ID", nargs="*", help="profiles to test (default: all)")
    test.add_argument("--json", action="store_true")
    test.set_defaults(handler=test_profiles)
    imp = psub.add_parser("import-ttn", help="make a profile from a TTN device-repository entry")
    imp.add_argument("path", metavar="PATH", help="the device YAML: vendor/<vendor>/<model>.yaml")
    imp.add_argument(
        "--out",
        metavar="DIR",
        help="profiles directory to write (default: --profiles-dir, else profiles_dir)",
    )
    imp.add_argument("--overwrite", action="store_true")
    imp.add_argument("--json", action="store_true")
    imp.set_defaults(handler=import_profile)


def profiles_dir(args: argparse.Namespace) -> str | None:
    """``--profiles-dir``, else the config's ``profiles_dir`` when the config file exists, else None."""
    if args.profiles_dir:
        return str(args.profiles_dir)
    path = Path(config_path(args))
    return (config.load(str(path)).profiles_dir or None) if path.is_file() else None


def profiles_from_args(args: argparse.Namespace) -> ProfileStore:
    """The shipped profiles plus those of ``profiles_dir(args)``."""
    return load_profiles(profiles_dir(args))


def get_profile(store: ProfileStore, profile_id: str) -> Profile:
    """The profile, or a usage error (exit 2) listing the known ones."""
    try:
        return store.get(profile_id)
    except KeyError as exc:
        raise UsageError(f"unknown profile {profile_id!r} (known: {', '.join(store.ids())})") from exc


def list_profiles(args: argparse.Namespace) -> int:
    store = profiles_from_args(args)
    rows = [
        {
            "id": p.id,
            "vendor": p.vendor,
            "model": p.model,
            "family": p.family,
            "uplink_fports": list(p.uplink_fports),
            "examples": len(p.examples) + (len(p.downlinks.examples) if p.downlinks else 0),
        }
        for p in store
    ]
    if args.json:
        print_json(rows)
    else:
        for row in rows:
            what = f"({row['family']}, {row['examples']} examples)"
            print(f"{row['id']:<28} {row['vendor']} {row['model']}  {what}")
    return 0


def describe(profile: Profile) -> dict[str, Any]:
    """A profile as one JSON-ready object (``profile show --json``)."""
    lorawan = profile.lorawan
    return {
        "id": profile.id,
        "vendor": profile.vendor,
        "model": profile.model,
        "description": profile.description,
        "sources": list(profile.sources),
        "file": str(profile.file) if profile.file else None,
        "family": profile.family,
        "lorawan": {
            "mac_version": lorawan.mac_version,
            "regions": list(lorawan.regions),
            "classes": list(lorawan.classes),
            "activation": list(lorawan.activation),
            "uplink_fports": list(lorawan.uplink_fports),
            "downlink_fport": lorawan.downlink_fport,
        },
        "outputs": [
            {"name": o.name, "quantity": o.quantity, "unit": o.unit, "sdm": o.sdm}
            for o in (*profile.outputs, *(d.output for d in profile.derived))
        ],
        "installation_params": list(profile.installation_params),
        "parameters": None if profile.parameters is None else [asdict(p) for p in profile.parameters],
        "commands": [
            {
                "name": c.name,
                "description": c.description,
                "params": [
                    {
                        "name": p.name,
                        "type": p.kind,
                        "min": p.low,
                        "max": p.high,
                        "values": list(p.choices) or None,
                    }
                    for p in c.params
                ],
            }
            for c in (profile.downlinks.commands.values() if profile.downlinks else ())
        ],
        "examples": len(profile.examples),
    }


def show_profile(args: argparse.Namespace) -> int:
    doc = describe(get_profile(profiles_from_args(args), args.profile_id))
    if args.json:
        print_json(doc)
        return 0
    print(f"{doc['id']}: {doc['vendor']} {doc['model']} ({doc['family']})")
    print(f"  {doc['description']}")
    lw = doc["lorawan"]
    print(
        f"  LoRaWAN {lw['mac_version']} class {'/'.join(lw['classes'])}, uplink fports {lw['uplink_fports']}"
    )
    print("  outputs:")
    for o in doc["outputs"]:
        unit = f" [{o['unit']}]" if o["unit"] else ""
        sdm = f"  → {o['sdm']}" if o["sdm"] else ""
        print(f"    {o['name']}: {o['quantity']}{unit}{sdm}")
    if doc["parameters"] is None:
        print("  installation parameters: not declared (not checked at registration)")
    for param in doc["parameters"] or ():
        print(f"  parameter {_parameter_line(param)}")
    for c in doc["commands"]:
        params = " ".join(f"{p['name']}=<{p['type']}>" for p in c["params"])
        print(f"  command {c['name']} {params}".rstrip())
    return 0


def _parameter_line(param: dict[str, Any]) -> str:
    """``full_distance_mm (mm, required, 0..10000, < empty_distance_mm): sensor to ...``."""
    facts = [param["unit"] or param["type"]]
    if param["required"]:
        facts.append("required")
    if param["min"] is not None or param["max"] is not None:
        low = "" if param["min"] is None else f"{param['min']:g}"
        high = "" if param["max"] is None else f"{param['max']:g}"
        facts.append(f"{low}..{high}")
    if param["less_than"]:
        facts.append(f"< {param['less_than']}")
    text = f"{param['name']} ({', '.join(facts)})"
    return f"{text}: {param['description']}" if param["description"] else text


def run_examples(profile: Profile) -> list[dict[str, Any]]:
    """Every example of ``profile`` with its result: ``{"example", "kind", "ok", "reason"}``."""
    results: list[dict[str, Any]] = []
    for index, example in enumerate(profile.examples):
        reason = profile.check_example(example)
        results.append(
            {"example": f"{profile.id}#{index}", "kind": "uplink", "ok": reason is None, "reason": reason}
        )
    for index, enc in enumerate(profile.downlinks.examples if profile.downlinks else ()):
        reason = profile.check_encode_example(enc)
        results.append(
            {
                "example": f"{profile.id}#cmd{index}",
                "kind": "downlink",
                "ok": reason is None,
                "reason": reason,
            }
        )
    return results


def test_profiles(args: argparse.Namespace) -> int:
    store = profiles_from_args(args)
    profiles = [get_profile(store, pid) for pid in args.profile_ids] if args.profile_ids else list(store)
    results = [result for profile in profiles for result in run_examples(profile)]
    failed = [r for r in results if not r["ok"]]
    if args.json:
        print_json({"ok": not failed, "passed": len(results) - len(failed), "failed": failed})
    else:
        for r in failed:
            print(f"FAIL {r['example']}: {r['reason']}")
        print(f"{len(results) - len(failed)} of {len(results)} examples passed in {len(profiles)} profiles")
    if failed:
        if args.json:
            return 1
        raise CheckFailed(f"{len(failed)} example(s) failed")
    return 0


def import_profile(args: argparse.Namespace) -> int:
    out = args.out or profiles_dir(args)
    if not out:
        raise UsageError(
            "no profiles directory to write to: set profiles_dir in the config (the agent then loads it"
            " beside the shipped profiles), or give --profiles-dir DIR or --out DIR"
        )
    Path(out).mkdir(parents=True, exist_ok=True)
    imported = import_ttn(Path(args.path), Path(out), overwrite=args.overwrite)
    doc = {
        "id": imported.profile_id,
        "profile": str(imported.profile_path),
        "codec": str(imported.codec_path),
        "examples": imported.examples,
    }
    if args.json:
        print_json(doc)
    else:
        print(f"wrote {doc['profile']} and {doc['codec']} ({doc['examples']} examples)")
        print(f"check it with: edgegw profile --profiles-dir {out} test {imported.profile_id}")
    return 0
