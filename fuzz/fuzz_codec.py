"""atheris harness: every shipped profile's compiled decoder (``Profile.decode``); only DecodeError.

Input: mode byte, profile index byte, fport byte, then the payload (RAW), or decisions that
mutate one of the profiles' own examples (STRUCTURED).
"""

from __future__ import annotations

import _common
import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["gateway"]):
    from tests.fuzz import mutate, targets

PROFILES = targets.profiles()
SEEDS = targets.codec_seeds()


def test_one_input(data: bytes) -> None:
    mode, rest = _common.split_mode(data)
    if mode == _common.RAW:
        if len(rest) < 3:
            return
        profile = PROFILES[rest[0] % len(PROFILES)]
        fport = profile.uplink_fports[rest[1] % len(profile.uplink_fports)] if rest[1] < 0x80 else rest[1]
        params = targets.profile_params(profile) if rest[0] & 0x80 else None
        targets.check_codec(profile, fport, rest[2:], params)
        return
    ch = _common.FdpChooser(rest)
    index, fport, payload = mutate.pick(ch, SEEDS)
    profile = PROFILES[index]
    params = targets.any_params(profile, lambda n: ch.integer(0, n - 1)) if ch.integer(0, 1) else None
    targets.check_codec(profile, fport, mutate.mutate_bytes(ch, payload), params)


def _raw_seed(index: int, fport: int, payload: bytes) -> bytes:
    ports = PROFILES[index].uplink_fports
    return _common.raw_seed(bytes((index | 0x80, ports.index(fport))) + payload)


if __name__ == "__main__":
    _common.main(test_one_input, [_raw_seed(*seed) for seed in SEEDS])
