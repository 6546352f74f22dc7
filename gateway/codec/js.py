"""Vendor JavaScript codecs (TTN / ChirpStack style) run in a QuickJS sandbox.

Owns ``JsCodec``: one vendor codec file loaded into its own QuickJS context (the
``quickjs`` package, extra ``js``) and called as ``decodeUplink({bytes, fPort,
recvTime})`` → ``{data, warnings, errors}`` or, for older files, ``Decoder(bytes,
port)`` → data. Every call runs under a time budget (default 100 ms) and the
context under a memory cap; a codec that loops, exhausts memory or throws yields a
``DecodeError`` and its context is rebuilt, so the agent keeps running. The time a
codec sees (``recvTime``, ``Date.now()``, ``new Date()``) is the time the caller
passes in, never the clock. The context has no module loader, no ``std``/``os``
modules and no host functions: the codec can compute and nothing else.

It does not own profile loading (``profile.py`` compiles ``family: javascript``
decoders through ``compile_javascript``) and ships no vendor code.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from gateway import textfile
from gateway.codec.decode import CompiledDecoder, Decoded
from gateway.codec.fields import Output, Spec
from gateway.errors import ConfigError, DecodeError

logger = logging.getLogger(__name__)

DEFAULT_TIME_BUDGET_S: Final = 0.1
DEFAULT_MEMORY_LIMIT_BYTES: Final = 16 * 1024 * 1024
_MAX_STACK_BYTES: Final = 256 * 1024

# Runs before the vendor file: pins the clock to the caller's time and defines the
# entry point. Date keeps its prototype so `instanceof Date` and date methods work.
_PRELUDE: Final = r"""
(function () {
  var RealDate = Date;
  var fixedMs = 0;
  function FixedDate() {
    if (!(this instanceof FixedDate)) { return new RealDate(fixedMs).toString(); }
    if (arguments.length === 0) { return new RealDate(fixedMs); }
    var args = Array.prototype.slice.call(arguments);
    return new (Function.prototype.bind.apply(RealDate, [null].concat(args)))();
  }
  FixedDate.prototype = RealDate.prototype;
  FixedDate.now = function () { return fixedMs; };
  FixedDate.UTC = RealDate.UTC;
  FixedDate.parse = RealDate.parse;
  globalThis.Date = FixedDate;
  globalThis.__edgegw_decode = function (fport, bytes, timeMs) {
    fixedMs = timeMs;
    var result;
    if (typeof decodeUplink === "function") {
      result = decodeUplink({ bytes: bytes, fPort: fport, recvTime: new RealDate(timeMs) });
    } else if (typeof Decoder === "function") {
      result = { data: Decoder(bytes, fport) };
    } else {
      throw new Error("the codec defines neither decodeUplink nor Decoder");
    }
    return JSON.stringify(result === undefined ? null : result);
  };
})();
"""


def _quickjs() -> Any:
    try:
        import quickjs  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ConfigError("JavaScript codecs need the quickjs package: pip install 'edgegw[js]'") from exc
    return quickjs


class JsCodec:
    """One vendor JavaScript codec in its own sandboxed QuickJS context."""

    def __init__(
        self,
        source: str,
        *,
        name: str = "codec.js",
        time_budget_s: float = DEFAULT_TIME_BUDGET_S,
        memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES,
    ) -> None:
        self._quickjs = _quickjs()
        self.name = name
        self.time_budget_s = time_budget_s
        self.memory_limit_bytes = memory_limit_bytes
        self._source = source
        self.resets = 0
        self._context: Any = None
        self._context = self._new_context()  # a file that loops at top level fails here

    def _new_context(self) -> Any:
        context = self._quickjs.Context()
        context.set_memory_limit(self.memory_limit_bytes)
        context.set_max_stack_size(_MAX_STACK_BYTES)
        context.set_time_limit(self.time_budget_s)
        try:
            context.eval(_PRELUDE)
            context.eval(self._source)
        except self._quickjs.JSException as exc:
            raise DecodeError(f"{self.name} does not load: {_first_line(exc)}", reason="codec_error") from exc
        return context

    def decode(self, fport: int, payload: bytes, recv_time_s: float) -> Decoded:
        """Run the codec on one payload; DecodeError (reason ``codec_error``) when it fails or overruns."""
        call = f"__edgegw_decode({int(fport)}, {json.dumps(list(payload))}, {float(recv_time_s) * 1000.0!r})"
        try:
            if self._context is None:
                self._context = self._new_context()
            text = self._context.eval(call)
        except self._quickjs.JSException as exc:
            message = _first_line(exc)
            if "interrupted" in message or "out of memory" in message or "stack overflow" in message:
                # The context may be half-way through anything: start afresh next time.
                self._context = None
                self.resets += 1
                message = {
                    "interrupted": f"exceeded its {self.time_budget_s * 1000:g} ms budget",
                    "out of memory": f"exceeded its {self.memory_limit_bytes // 1024} KiB memory cap",
                }.get(next((k for k in ("interrupted", "out of memory") if k in message), ""), message)
            raise DecodeError(f"{self.name}: {message}", reason="codec_error") from exc
        if not isinstance(text, str):
            raise DecodeError(f"{self.name} returned nothing", reason="codec_error")
        result = json.loads(text)
        if isinstance(result, dict) and ("data" in result or "errors" in result):
            errors = result.get("errors") or []
            if errors:
                raise DecodeError(f"{self.name}: {'; '.join(map(str, errors))}", reason="codec_error")
            data = result.get("data")
            warnings = tuple(str(w) for w in result.get("warnings") or ())
        else:
            data, warnings = result, ()
        if not isinstance(data, dict):
            raise DecodeError(
                f"{self.name} returned {type(data).__name__}, not an object", reason="codec_error"
            )
        return Decoded(data, warnings)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def compile_javascript(spec: Spec) -> tuple[CompiledDecoder, Callable[[int, bytes, float], Decoded]]:
    """Compile a ``family: javascript`` decoder section (file next to the profile)."""
    spec.mapping(
        required=("family", "file"), optional=("time_budget_ms", "memory_limit_kib", "outputs", "description")
    )
    file_spec = spec["file"]
    name = file_spec.as_str()
    if "/" in name or "\\" in name or not name.endswith(".js"):
        raise file_spec.fail("must be the name of a .js file in the profile's own folder")
    path = Path(spec.file).parent / name
    try:
        source = textfile.read_text(path)
    except ConfigError as exc:  # missing, or not UTF-8: the reason names the byte and the line
        raise file_spec.fail(f"cannot read {path}: {exc.reason}") from exc
    budget_spec = spec.get("time_budget_ms")
    memory_spec = spec.get("memory_limit_kib")
    try:
        codec = JsCodec(
            source,
            name=name,
            time_budget_s=(budget_spec.as_int(1, 10_000) if budget_spec is not None else 100) / 1000,
            memory_limit_bytes=(memory_spec.as_int(256, 1 << 20) if memory_spec is not None else 16384)
            * 1024,
        )
    except DecodeError as exc:
        raise file_spec.fail(str(exc)) from exc
    outputs: list[Output] = []
    outputs_spec = spec.get("outputs")
    for item in outputs_spec.items() if outputs_spec is not None else ():
        item.mapping(required=("name", "quantity"), optional=("unit", "sdm", "description"))
        unit = item.get("unit")
        sdm = item.get("sdm")
        outputs.append(
            Output(
                name=item["name"].as_str(),
                quantity=item["quantity"].as_str(),
                unit=unit.as_str() if unit is not None else None,
                sdm=sdm.as_str() if sdm is not None else None,
            )
        )

    def decode_without_port(payload: bytes) -> Decoded:
        return codec.decode(0, payload, 0.0)

    compiled = CompiledDecoder(family="javascript", decode=decode_without_port, outputs=tuple(outputs))
    return compiled, codec.decode
