"""Device profiles: load ``<vendor>/<model>.yaml`` files into compiled ``Profile`` objects.

Owns the profile file format (``schema_version: 1``): identity (``id``, ``vendor``,
``model``, ``description``, ``sources``, ``compatible_with``: the published vendor decoder
whose output the profile reproduces, with its listed corrections), LoRaWAN facts (``lorawan``), the uplink
``decoder`` section (handed to ``decode.compile_decoder``), ``derived`` values
(``derive.py``), the installation ``parameters`` a device of the model takes (their type, unit,
bounds and one cross-parameter constraint, ``less_than``; checked per device by
``gateway.provisioning.parameters``), ``downlink`` commands (``encode.py``) and the embedded ``examples``
that tests and ``edgegw profile test`` run. Validation stops at the first problem
with a ``ConfigError`` naming the file, the key path and the reason: the compiler's
own checks first (precise messages), then the JSON Schema ``gateway/schemas/profile-v1.json``
(the published contract, used by editors and CI), so a file both accept is valid.

Owns also ``ProfileStore`` (every profile under a directory, by id), ``default_profiles_dir()``
and ``load_profiles``: the shipped profiles plus those of the configured ``profiles_dir``
(a search path that adds to them; a custom profile with a shipped id replaces it, logged).

It does not own field types (``fields.py``) or payload layouts (``decode.py``), and
it never runs code from a profile: YAML is read with a safe loader that also
rejects duplicate keys, and every transform is a named, built-in one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final, Protocol

import jsonschema

import gateway
from gateway import textfile
from gateway.codec.decode import Decoded, compile_decoder
from gateway.codec.derive import Derivation, compile_derived
from gateway.codec.encode import Downlink, Downlinks, EncodeExample, compile_downlink
from gateway.codec.fields import Output, Spec
from gateway.errors import ConfigError, DecodeError, EncodeError

logger = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
PROFILE_SUFFIX: Final = ".yaml"

_ID_PART: Final = r"[a-z0-9]+(?:-[a-z0-9]+)*"
_ID_RE: Final = re.compile(rf"{_ID_PART}/{_ID_PART}")
_TOP_KEYS: Final = ("schema_version", "id", "vendor", "model", "description", "lorawan", "decoder")
_MAC_VERSIONS: Final = ("1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4", "1.1")
# Region names as in LoRaWAN Regional Parameters RP002-1.0.x §2 (short form).
_REGIONS: Final = ("EU868", "US915", "CN779", "EU433", "AU915", "CN470", "AS923", "KR920", "IN865", "RU864")
_CLASSES: Final = ("A", "B", "C")
_ACTIVATIONS: Final = ("otaa", "abp")
# FPort 1..223 carry application data; 0 is MAC-only and 224.. are reserved (LoRaWAN 1.0.4 §4.3.2).
_APP_FPORT_MAX: Final = 223
# compatible_with: a GitHub "owner/name", a full commit id, a correction id like "region-bit-test".
_REPOSITORY_RE: Final = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_COMMIT_RE: Final = re.compile(r"[0-9a-f]{40}")
_CORRECTION_ID_RE: Final = re.compile(_ID_PART)
# As the registry's parameter names (gateway/provisioning/registry.py), so every declared one is storable.
_PARAMETER_NAME_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,39}")


@dataclass(frozen=True, slots=True)
class Correction:
    """A listed, reasoned place where the profile's output differs from its vendor decoder's."""

    id: str
    reason: str


@dataclass(frozen=True, slots=True)
class CompatibleWith:
    """The published decoder a profile's output equals (key names included), pinned to a commit.

    On every payload that decoder accepts the profile outputs what it outputs, except where one
    of ``corrections`` says otherwise and why.
    """

    repository: str
    """GitHub ``owner/name``."""
    path: str
    commit: str
    corrections: tuple[Correction, ...] = ()


PARAMETER_TYPES: Final = ("number", "text")


@dataclass(frozen=True, slots=True)
class Parameter:
    """One installation parameter a device of this model takes (``empty_distance_mm``, ...).

    The profile declares it; the registry holds each device's value; the installer's commands
    check a value against this (``gateway.provisioning.parameters``).
    """

    name: str
    type: str = "number"
    """``number`` or ``text``."""
    unit: str = ""
    required: bool = False
    """A device of this model is refused by CSV import without it (derived values need it)."""
    min: float | None = None
    max: float | None = None
    less_than: str | None = None
    """Another number parameter of the profile this one must be strictly less than."""
    description: str = ""


@dataclass(frozen=True, slots=True)
class Example:
    """One payload of a profile with the output its decoder must produce."""

    fport: int
    payload: bytes
    expected: dict[str, Any]
    source: str
    description: str = ""
    params: Mapping[str, float] | None = None
    """Installation parameters the example is decoded with (for derived values)."""


class DecodeFunction(Protocol):
    """``Profile.decode(fport, payload, params=None, *, recv_time_s=0.0) -> Decoded``.

    ``params`` are the device's installation parameters (``empty_distance_mm``, ...) from
    the registry; derived values that need a missing one are left out. ``recv_time_s``
    (Unix time) is the only clock a JavaScript codec sees. Raises ``DecodeError`` (reason
    ``unexpected_fport``, ``truncated``, ...) and nothing else.
    """

    def __call__(
        self,
        fport: int,
        payload: bytes,
        params: Mapping[str, float] | None = None,
        *,
        recv_time_s: float = 0.0,
    ) -> Decoded: ...


@dataclass(frozen=True, slots=True)
class LorawanFacts:
    """What the network side needs to know about the device's LoRaWAN behaviour."""

    mac_version: str
    regions: tuple[str, ...]
    classes: tuple[str, ...]
    activation: tuple[str, ...]
    uplink_fports: tuple[int, ...]
    downlink_fport: int | None = None
    regional_parameters: str | None = None
    max_eirp_dbm: float | None = None
    supports_32bit_fcnt: bool = True


@dataclass(frozen=True, slots=True)
class Profile:
    """A device model's profile, compiled: identity, LoRaWAN facts, decoder, examples."""

    id: str
    vendor: str
    model: str
    description: str
    lorawan: LorawanFacts
    outputs: tuple[Output, ...]
    examples: tuple[Example, ...]
    _decode: Callable[[bytes], Decoded] = field(repr=False, compare=False)
    sources: tuple[str, ...] = ()
    compatible_with: CompatibleWith | None = None
    """The vendor decoder the output follows; None for formats edgegw defines itself."""
    file: Path | None = None
    family: str = "channel_tlv"
    derived: tuple[Derivation, ...] = ()
    downlinks: Downlinks | None = None
    main: str | None = None
    """The quantity `edgegw device show` charts (LAeq for a noise sensor); None: the first output
    that is not battery, signal or status (gateway.cli.device_views.main_field)."""
    parameters: tuple[Parameter, ...] | None = None
    """The declared installation parameters; None when the profile has no ``parameters`` section
    (then a device's parameters are not checked: profiles written before the section existed)."""
    _decode_js: Callable[[int, bytes, float], Decoded] | None = field(default=None, repr=False, compare=False)
    _decode_port: Callable[[int, bytes], Decoded] | None = field(default=None, repr=False, compare=False)
    decode: DecodeFunction = field(init=False, repr=False, compare=False)
    """Decode one application payload received on ``fport`` (see ``DecodeFunction``)."""

    def __post_init__(self) -> None:
        # Built once: decode() is on the per-frame path, so it is the closure itself, not a
        # method that calls one (one Python frame less per payload).
        object.__setattr__(self, "decode", _runner(self))

    @property
    def uplink_fports(self) -> tuple[int, ...]:
        return self.lorawan.uplink_fports

    @property
    def installation_params(self) -> tuple[str, ...]:
        """Names of the per-device installation parameters the derived values read."""
        names = {name for derivation in self.derived for name in derivation.params.values()}
        return tuple(sorted(names))

    def encode(self, command: str, values: Mapping[str, object]) -> Downlink:
        """Encode a named downlink command; EncodeError (reason ``bad_command``) if it does not fit."""
        if self.downlinks is None or command not in self.downlinks.commands:
            known = ", ".join(self.downlinks.commands) if self.downlinks is not None else "none"
            raise EncodeError(f"{self.id} has no downlink command {command!r} (known: {known})")
        return Downlink(self.downlinks.fport, self.downlinks.commands[command].encode(values))

    def check_encode_example(self, example: EncodeExample) -> str | None:
        """None when the command encodes to exactly the example's bytes, else a one-line reason."""
        try:
            got = self.encode(example.command, example.params).payload
        except EncodeError as exc:
            return f"EncodeError: {exc}"
        if got != example.payload:
            return f"encoded {got.hex()}, expected {example.payload.hex()}"
        return None

    def check_example(self, example: Example) -> str | None:
        """None when ``example`` decodes to exactly its expected output, else a one-line reason.

        Compared as canonical JSON, so ``2116`` and ``2116.0`` differ as they do on the wire.
        """
        try:
            decoded = self.decode(example.fport, example.payload, example.params)
        except DecodeError as exc:
            return f"DecodeError ({exc.reason}): {exc}"
        got = json.dumps(decoded.data, sort_keys=True)
        want = json.dumps(example.expected, sort_keys=True)
        if got != want:
            return f"decoded {got}, expected {want}"
        if decoded.warnings:
            return f"unexpected warnings: {'; '.join(decoded.warnings)}"
        return None


def _runner(profile: Profile) -> DecodeFunction:
    """The decode path of ``profile`` as one closure, with the common case (no JS, no params) shortest."""
    fports = frozenset(profile.lorawan.uplink_fports)
    decode = profile._decode
    decode_js = profile._decode_js
    decode_port = profile._decode_port
    if decode_js is None and decode_port is not None:

        def decode_js(fport: int, payload: bytes, recv_time_s: float) -> Decoded:
            return decode_port(fport, payload)  # fPort-selected layouts (IMBuildings)

    derived = profile.derived
    # Derivations without installation parameters (DALI %) run on every payload.
    unconditional = tuple(d for d in derived if not d.params)
    empty: Mapping[str, float] = {}

    listed = "/".join(map(str, profile.lorawan.uplink_fports))

    def wrong_port(fport: int) -> DecodeError:
        return DecodeError(
            f"{profile.id} sends data on fport {listed}, not {fport}",
            reason="unexpected_fport",
        )

    def run(
        fport: int, payload: bytes, params: Mapping[str, float] | None = None, *, recv_time_s: float = 0.0
    ) -> Decoded:
        """Decode one application payload received on ``fport`` (``DecodeFunction``)."""
        if fport not in fports:
            raise wrong_port(fport)
        decoded = decode(payload) if decode_js is None else decode_js(fport, payload, recv_time_s)
        if not derived:
            return decoded
        if params:
            for derivation in derived:
                derivation.apply(decoded.data, params)
        else:
            for derivation in unconditional:
                derivation.apply(decoded.data, empty)
        return decoded

    return run


# ------------------------------------------------------------------------ loading


def _read_yaml(path: Path) -> object:
    # UTF-8 or a one-line error naming the byte and the line; a repeated key is refused.
    return textfile.load_yaml(path)


def load_profile(path: Path, *, expected_id: str | None = None) -> Profile:
    """Read, validate and compile one profile file.

    ``expected_id`` is the id implied by the file's place under the profiles
    directory; the file's ``id`` must equal it.
    """
    top = Spec(_read_yaml(path), file=str(path))
    if not isinstance(top.value, dict):
        raise top.fail("a profile must be a YAML mapping")
    # schema_version first, so a newer file gets "unsupported version", not "unknown key".
    version = top["schema_version"].as_int(0, 1 << 31)
    if version != SCHEMA_VERSION:
        raise top["schema_version"].fail(
            f"unsupported schema_version {version} (this edgegw reads {SCHEMA_VERSION})"
        )
    top.mapping(
        required=_TOP_KEYS,
        optional=("sources", "compatible_with", "examples", "derived", "downlink", "parameters", "main"),
    )

    profile_id = top["id"].as_str(pattern=_ID_RE, hint="vendor/model, lowercase letters, digits and hyphens")
    if expected_id is not None and profile_id != expected_id:
        raise top["id"].fail(f"id {profile_id!r} does not match the file's path (expected {expected_id!r})")

    lorawan = _load_lorawan(top["lorawan"])
    decode_js: Callable[[int, bytes, float], Decoded] | None = None
    decoder_spec = top["decoder"]
    if decoder_spec.has("family") and decoder_spec["family"].value == "javascript":
        from gateway.codec.js import compile_javascript

        compiled, decode_js = compile_javascript(decoder_spec)
    else:
        compiled = compile_decoder(decoder_spec)
    output_names = {output.name for output in compiled.outputs}
    # A JavaScript codec may declare no outputs; then example keys cannot be checked.
    check_keys = bool(output_names) or decode_js is None
    derived_spec = top.get("derived")
    derived = compile_derived(derived_spec, output_names) if derived_spec is not None else ()
    parameters_spec = top.get("parameters")
    parameters = _load_parameters(parameters_spec, derived) if parameters_spec is not None else None
    downlink_spec = top.get("downlink")
    downlinks = compile_downlink(downlink_spec, lorawan.downlink_fport) if downlink_spec is not None else None
    templates = [
        re.compile("".join(".+" if part.startswith("{") else re.escape(part) for part in _split(name)))
        for name in output_names
        if "{" in name
    ]
    main = top["main"].as_str(non_empty=True) if top.has("main") else None
    if main is not None and check_keys:
        known = output_names | {d.output.name for d in derived}
        if main not in known and not any(t.fullmatch(main) for t in templates):
            raise top["main"].fail(f"{main!r} is not one of the profile's outputs")
    examples_spec = top.get("examples")
    examples = (
        tuple(
            _load_example(item, lorawan, output_names if check_keys else None, templates)
            for item in examples_spec.items()
        )
        if examples_spec is not None
        else ()
    )
    sources_spec = top.get("sources")
    sources = tuple(item.as_str() for item in sources_spec.items()) if sources_spec is not None else ()
    compatible_spec = top.get("compatible_with")
    compatible_with = _load_compatible_with(compatible_spec) if compatible_spec is not None else None
    _check_schema(top.value, str(path))
    profile = Profile(
        id=profile_id,
        vendor=top["vendor"].as_str(),
        model=top["model"].as_str(),
        description=top["description"].as_str(),
        lorawan=lorawan,
        outputs=compiled.outputs,
        examples=examples,
        sources=sources,
        compatible_with=compatible_with,
        file=path,
        _decode=compiled.decode,
        family=compiled.family,
        derived=derived,
        downlinks=downlinks,
        parameters=parameters,
        main=main,
        _decode_js=decode_js,
        _decode_port=compiled.decode_port,
    )
    return profile


def _split(name: str) -> list[str]:
    return [part for part in re.split(r"(\{[a-z_][a-z0-9_]*\})", name) if part]


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    text = resources.files("gateway").joinpath("schemas/profile-v1.json").read_text(encoding="utf-8")
    schema = json.loads(text)
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator: jsonschema.protocols.Validator = validator_class(schema)
    return validator


_SCHEMA_PASSED_MAX = 256
_schema_passed: set[bytes] = set()
"""Digests of the documents that passed the schema in this process: every `edgegw` command reads
all the profiles, and validating one costs more than parsing it (the tests run hundreds)."""


def _check_schema(document: Any, file: str) -> None:
    """Validate against gateway/schemas/profile-v1.json; the first error names its key path."""
    digest = hashlib.sha256(json.dumps(document, sort_keys=True, default=repr).encode()).digest()
    if digest in _schema_passed:
        return
    errors = sorted(_validator().iter_errors(document), key=lambda error: list(map(str, error.path)))
    if not errors:
        if len(_schema_passed) >= _SCHEMA_PASSED_MAX:
            _schema_passed.clear()
        _schema_passed.add(digest)
        return
    error = errors[0]
    key_path = ""
    for part in error.path:
        key_path += f"[{part}]" if isinstance(part, int) else (f".{part}" if key_path else str(part))
    raise ConfigError(f"schema profile-v1: {error.message}", file=file, key_path=key_path or "<top>")


def _choices(spec: Spec, choices: tuple[str, ...]) -> tuple[str, ...]:
    values = tuple(item.as_choice(choices) for item in spec.items())
    if not values:
        raise spec.fail("must not be empty")
    if len(set(values)) != len(values):
        raise spec.fail("lists a value twice")
    return values


def _load_lorawan(spec: Spec) -> LorawanFacts:
    spec.mapping(
        required=("mac_version", "regions", "classes", "activation", "uplink_fports"),
        optional=("downlink_fport", "regional_parameters", "max_eirp_dbm", "supports_32bit_fcnt"),
    )
    fports = tuple(item.as_int(1, _APP_FPORT_MAX) for item in spec["uplink_fports"].items())
    if not fports:
        raise spec["uplink_fports"].fail("must list at least one fport")
    if len(set(fports)) != len(fports):
        raise spec["uplink_fports"].fail("lists an fport twice")
    downlink = spec.get("downlink_fport")
    regional = spec.get("regional_parameters")
    eirp = spec.get("max_eirp_dbm")
    fcnt32 = spec.get("supports_32bit_fcnt")
    return LorawanFacts(
        mac_version=spec["mac_version"].as_choice(_MAC_VERSIONS),
        regions=_choices(spec["regions"], _REGIONS),
        classes=_choices(spec["classes"], _CLASSES),
        activation=_choices(spec["activation"], _ACTIVATIONS),
        uplink_fports=fports,
        downlink_fport=downlink.as_int(1, _APP_FPORT_MAX) if downlink is not None else None,
        regional_parameters=regional.as_str() if regional is not None else None,
        max_eirp_dbm=float(eirp.as_number()) if eirp is not None else None,
        supports_32bit_fcnt=fcnt32.as_bool() if fcnt32 is not None else True,
    )


def _load_parameters(spec: Spec, derived: tuple[Derivation, ...]) -> tuple[Parameter, ...]:
    """The ``parameters`` mapping (name → type, unit, required, min, max, less_than, description).

    Every installation parameter a derived value reads must be declared, so that the checks at
    registration cover what the decoder needs.
    """
    if not isinstance(spec.value, dict):
        raise spec.fail("must be a mapping of parameter name → its declaration")
    parameters: list[Parameter] = []
    for name, item in spec.entries():
        if not _PARAMETER_NAME_RE.fullmatch(name):
            raise item.fail(f"parameter name {name!r} must be lowercase snake_case (a-z, 0-9, _), <= 40")
        item.mapping(optional=("type", "unit", "required", "min", "max", "less_than", "description"))
        kind = item["type"].as_choice(PARAMETER_TYPES) if item.has("type") else "number"
        bounds = {key: float(item[key].as_number()) if item.has(key) else None for key in ("min", "max")}
        if kind == "text" and any(item.has(key) for key in ("min", "max", "less_than", "unit")):
            raise item.fail("a text parameter takes no unit, min, max nor less_than")
        low, high = bounds["min"], bounds["max"]
        if low is not None and high is not None and low > high:
            raise item["min"].fail(f"min {low:g} is greater than max {high:g}")
        parameters.append(
            Parameter(
                name=name,
                type=kind,
                unit=item["unit"].as_str() if item.has("unit") else "",
                required=item["required"].as_bool() if item.has("required") else False,
                min=low,
                max=high,
                less_than=item["less_than"].as_str() if item.has("less_than") else None,
                description=item["description"].as_str() if item.has("description") else "",
            )
        )
    numbers = {p.name for p in parameters if p.type == "number"}
    for parameter in parameters:
        if parameter.less_than is not None and (
            parameter.less_than not in numbers or parameter.less_than == parameter.name
        ):
            raise spec[parameter.name]["less_than"].fail(
                f"{parameter.less_than!r} is not another number parameter of this profile"
            )
    for derivation in derived:
        for param in derivation.params.values():
            if param not in numbers:
                raise spec.fail(
                    f"derived {derivation.output.name} reads the installation parameter {param!r}:"
                    " declare it here"
                )
    return tuple(parameters)


def _load_compatible_with(spec: Spec) -> CompatibleWith:
    spec.mapping(required=("repository", "path", "commit"), optional=("corrections",))
    corrections: list[Correction] = []
    corrections_spec = spec.get("corrections")
    for item in corrections_spec.items() if corrections_spec is not None else ():
        item.mapping(required=("id", "reason"))
        correction = Correction(
            id=item["id"].as_str(pattern=_CORRECTION_ID_RE, hint="lowercase words joined by hyphens"),
            reason=item["reason"].as_str(),
        )
        if not correction.reason.strip():
            raise item["reason"].fail("must say why the output differs from the vendor decoder's")
        if any(known.id == correction.id for known in corrections):
            raise item["id"].fail(f"correction {correction.id!r} is listed twice")
        corrections.append(correction)
    path = spec["path"].as_str()
    if not path or path.startswith("/"):
        raise spec["path"].fail("must be a file path inside the repository")
    return CompatibleWith(
        repository=spec["repository"].as_str(pattern=_REPOSITORY_RE, hint="GitHub owner/name"),
        path=path,
        commit=spec["commit"].as_str(pattern=_COMMIT_RE, hint="the full 40-digit lowercase commit id"),
        corrections=tuple(corrections),
    )


def _load_example(
    spec: Spec, lorawan: LorawanFacts, output_names: set[str] | None, templates: list[re.Pattern[str]]
) -> Example:
    spec.mapping(required=("source", "fport", "payload", "expected"), optional=("description", "params"))
    fport = spec["fport"].as_int(1, _APP_FPORT_MAX)
    if fport not in lorawan.uplink_fports:
        raise spec["fport"].fail(
            f"fport {fport} is not one of lorawan.uplink_fports {list(lorawan.uplink_fports)}"
        )
    payload_spec = spec["payload"]
    if not isinstance(payload_spec.value, str):
        raise payload_spec.fail("must be a quoted hex string (unquoted digits are read as a number)")
    try:
        payload = bytes.fromhex(payload_spec.value)
    except ValueError as exc:
        raise payload_spec.fail(f"is not hex: {payload_spec.value!r}") from exc
    expected_spec = spec["expected"]
    if not isinstance(expected_spec.value, dict):
        raise expected_spec.fail("must be a mapping of output key → value")
    expected: dict[str, Any] = expected_spec.value
    known = output_names if output_names is not None else set(expected)
    for key in expected:
        if key not in known and not any(template.fullmatch(key) for template in templates):
            raise ConfigError(
                f"{key!r} is not an output of this profile's decoder",
                file=spec.file,
                key_path=f"{expected_spec.path}.{key}",
            )
    try:
        json.dumps(expected, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise expected_spec.fail(f"must hold JSON values only (quote dates and times): {exc}") from exc
    description = spec.get("description")
    params_spec = spec.get("params")
    params: dict[str, float] | None = None
    if params_spec is not None:
        if not isinstance(params_spec.value, dict):
            raise params_spec.fail("must be a mapping of installation parameter → number")
        params = {str(key): float(params_spec[str(key)].as_number()) for key in params_spec.value}
    return Example(
        fport=fport,
        payload=payload,
        expected=expected,
        source=spec["source"].as_str(),
        description=description.as_str() if description is not None else "",
        params=params,
    )


# -------------------------------------------------------------------------- store


class ProfileStore:
    """The profiles of one directory tree, by id (``vendor/model``)."""

    __slots__ = ("_profiles",)

    def __init__(self, profiles: Iterable[Profile] = ()) -> None:
        self._profiles: dict[str, Profile] = {}
        for profile in profiles:
            if profile.id in self._profiles:
                raise ConfigError(f"duplicate profile id {profile.id!r}", file=str(profile.file))
            self._profiles[profile.id] = profile

    @classmethod
    def load_dir(cls, root: Path) -> ProfileStore:
        """Load every ``<vendor>/<model>.yaml`` under ``root``; ConfigError on the first invalid file."""
        if not root.is_dir():
            raise ConfigError("profiles directory does not exist", file=str(root))
        stray = sorted(root.glob(f"*{PROFILE_SUFFIX}"))
        if stray:
            raise ConfigError(
                f"profiles live in <vendor>/<model>{PROFILE_SUFFIX}, not at the top", file=str(stray[0])
            )
        profiles = [
            load_profile(path, expected_id=f"{path.parent.name}/{path.stem}")
            for path in sorted(root.glob(f"*/*{PROFILE_SUFFIX}"))
        ]
        logger.debug("loaded %d device profiles from %s", len(profiles), root)
        return cls(profiles)

    def get(self, profile_id: str) -> Profile:
        """The profile ``profile_id``; KeyError if there is none."""
        return self._profiles[profile_id]

    def ids(self) -> list[str]:
        return sorted(self._profiles)

    def __contains__(self, profile_id: object) -> bool:
        return profile_id in self._profiles

    def __iter__(self) -> Iterator[Profile]:
        return iter(self._profiles[profile_id] for profile_id in self.ids())

    def __len__(self) -> int:
        return len(self._profiles)


def default_profiles_dir() -> Path:
    """The repository's ``device_profiles/`` in a checkout, else the installed copy under ``sys.prefix``."""
    in_checkout = Path(gateway.__file__).resolve().parent.parent / "device_profiles"
    if in_checkout.is_dir():
        return in_checkout
    return Path(sys.prefix) / "share" / "edgegw" / "device_profiles"


def load_profiles(profiles_dir: str | None) -> ProfileStore:
    """The shipped profiles plus those of ``profiles_dir`` (a config value or a CLI option), if any.

    ``profiles_dir`` is a search path that adds to the shipped profiles, so a site's own model
    does not hide the 19 shipped ones; a custom profile with a shipped profile's id replaces it,
    and says so in the log. ConfigError on the first invalid file of either directory.
    """
    shipped_dir = default_profiles_dir()
    if not profiles_dir:
        return ProfileStore.load_dir(shipped_dir)
    custom_dir = Path(profiles_dir)
    custom = ProfileStore.load_dir(custom_dir)
    if not shipped_dir.is_dir():  # an installation without the shared copy: the custom ones only
        logger.warning("shipped device profiles not found at %s: using %s only", shipped_dir, custom_dir)
        return custom
    if custom_dir.resolve() == shipped_dir.resolve():
        return custom
    merged = {profile.id: profile for profile in ProfileStore.load_dir(shipped_dir)}
    for profile in custom:
        if profile.id in merged:
            logger.info(
                "device profile %s from %s replaces the shipped one (%s)",
                profile.id, profile.file, merged[profile.id].file,
            )  # fmt: skip
        merged[profile.id] = profile
    return ProfileStore(merged.values())
