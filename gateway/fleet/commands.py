"""Platform commands: the allow-list, parameter checks, dispatch, and the ``cmd-result`` message.

Owns what a command envelope's payload means (``{"cmd": <name>, "params": {...}}``),
the registry of allowed commands (name → handler and parameter specs — there is no
remote shell: a name not registered is refused), the order of checks, and the result
``{"v": 1, "cmd", "seq", "ok", "reason", "result"}`` published on ``cmd-result``; a command
that ends later (a ``downlink``: acknowledged or not) publishes a second result with the same
seq and a ``state`` (docs/fleet.md).
It does not own signatures, addresses or replay (``gateway.fleet.trust``) nor what
the handlers do (the app registers them; the key-rotation commands are built in).

Order: envelope checks (signature first), then the topic must name the payload's
command, then the allow-list and the parameters, then the seq is persisted, and only
then the handler runs. A refused command does not consume its seq.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import CommandRejected, GatewayError
from gateway.fleet import signed_envelope
from gateway.fleet.signed_envelope import Rejection, reject
from gateway.fleet.trust import Trust
from gateway.loglimit import RateLimitedLog

log = logging.getLogger(__name__)

RESULT_VERSION = 1
COMMAND_NAME = re.compile(r"[a-z][a-z0-9_]{0,47}")

# A handler gets the checked parameters and returns a JSON value (or an awaitable of one).
Handler = Callable[[dict[str, Any]], Any]
# The same, also given the envelope's seq (a command whose end is reported later under it).
SeqHandler = Callable[[dict[str, Any], int], Any]
_KINDS: dict[type, str] = {int: "integer", float: "number", str: "string", bool: "boolean", dict: "object"}


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a command: JSON type, required or default, and bounds."""

    name: str
    kind: type
    required: bool = True
    default: Any = None
    choices: tuple[Any, ...] = ()
    min_value: float | None = None
    max_value: float | None = None
    pattern: str | None = None  # full match, strings only

    def check(self, value: Any) -> Any:
        """The value if it fits, else ``ValueError`` with a message for the platform."""
        ok = isinstance(value, self.kind) and not (isinstance(value, bool) and self.kind is not bool)
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            try:
                ok, value = True, float(value)
            except OverflowError as exc:  # JSON integers have no size limit; floats do
                raise ValueError(f"{self.name} is out of range") from exc
        if not ok:
            raise ValueError(f"{self.name} must be a JSON {_KINDS.get(self.kind, self.kind.__name__)}")
        if self.choices and value not in self.choices:
            raise ValueError(f"{self.name} must be one of {list(self.choices)}")
        if self.min_value is not None and value < self.min_value:
            raise ValueError(f"{self.name} must be ≥ {self.min_value}")
        if self.max_value is not None and value > self.max_value:
            raise ValueError(f"{self.name} must be ≤ {self.max_value}")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise ValueError(f"{self.name} must match {self.pattern}")
        return value


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    handler: SeqHandler
    params: tuple[Param, ...] = ()
    doc: str = ""

    def validate(self, params: Any) -> dict[str, Any]:
        """Checked parameters with defaults filled in; ``CommandRejected`` (bad_params) otherwise."""
        if not isinstance(params, dict):
            raise reject(Rejection.BAD_PARAMS, "params must be a JSON object")
        known = {p.name for p in self.params}
        unknown = sorted(set(params) - known)
        if unknown:
            raise reject(Rejection.BAD_PARAMS, f"{self.name}: unknown parameters {unknown}")
        checked: dict[str, Any] = {}
        for param in self.params:
            if param.name not in params:
                if param.required:
                    raise reject(Rejection.BAD_PARAMS, f"{self.name}: missing parameter {param.name}")
                checked[param.name] = param.default
                continue
            try:
                checked[param.name] = param.check(params[param.name])
            except ValueError as exc:
                raise reject(Rejection.BAD_PARAMS, f"{self.name}: {exc}") from exc
        return checked


@dataclass(frozen=True, slots=True)
class CommandResult:
    cmd: str
    seq: int | None
    ok: bool
    reason: str | None
    result: Any = None
    state: str | None = None
    """Set on the later result of a command that ends after its answer (a downlink's outcome)."""

    def to_dict(self) -> dict[str, Any]:
        doc = {
            "v": RESULT_VERSION,
            "cmd": self.cmd,
            "seq": self.seq,
            "ok": self.ok,
            "reason": self.reason,
            "result": self.result,
        }
        if self.state is not None:
            doc["state"] = self.state
        return doc

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), default=str).encode()


def command_name(topic: str) -> str:
    """The last topic level: ``edgegw/gw-1/cmd/flush`` → ``flush``."""
    return topic.rsplit("/", 1)[-1]


@dataclass
class CommandDispatcher:
    """The allow-list of one gateway; ``handle`` turns an envelope into a ``CommandResult``."""

    trust: Trust
    clock: Callable[[], float] = time.time
    counters: Counter[str] = field(default_factory=Counter)
    _specs: dict[str, CommandSpec] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # Refusals come from whoever can publish on cmd/...: one WARNING per reason per minute,
    # with the count of the others (20,000 forged commands must not mean 20,000 log lines).
    _refusal_log: RateLimitedLog = field(default_factory=lambda: RateLimitedLog(log, interval_s=60.0))

    def __post_init__(self) -> None:
        pem = Param(
            "public_key_pem", str, pattern=r"(?s)-----BEGIN PUBLIC KEY-----.*-----END PUBLIC KEY-----\s*"
        )
        self.register("add_platform_key", self._add_key, (pem,), "trust one more platform key (rotation)")
        fp = Param("sha256", str, pattern=r"[0-9a-f]{64}")
        self.register("retire_platform_key", self._retire_key, (fp,), "stop trusting a platform key")

    def register(self, name: str, handler: Handler, params: Iterable[Param] = (), doc: str = "") -> None:
        """Allow command ``name``; ``handler(params)`` runs once its envelope and parameters passed."""
        self.register_with_seq(name, lambda params, _seq: handler(params), params, doc)

    def register_with_seq(
        self, name: str, handler: SeqHandler, params: Iterable[Param] = (), doc: str = ""
    ) -> None:
        """As ``register``, the handler also given the envelope's seq (to report a later end under it)."""
        if not COMMAND_NAME.fullmatch(name):
            raise ValueError(f"command name {name!r}: use a-z, 0-9 and '_' (it is an MQTT topic level)")
        if name in self._specs:
            raise ValueError(f"command {name!r} is registered already")
        self._specs[name] = CommandSpec(name, handler, tuple(params), doc)

    @property
    def names(self) -> list[str]:
        return sorted(self._specs)

    async def handle(self, name: str, data: bytes) -> CommandResult:
        """Check and run the command envelope ``data`` received on topic ``.../cmd/<name>``."""
        seq: int | None = None
        try:
            env = signed_envelope.parse(data)
            seq = env.seq  # echoed in the answer so the platform can match it, even when refused
            self.trust.check(env, self.clock())
            payload_cmd = env.payload.get("cmd")
            if payload_cmd != name:
                raise reject(
                    Rejection.WRONG_TOPIC, f"payload is command {payload_cmd!r}, topic says {name!r}"
                )
            spec = self._specs.get(name)
            if spec is None:
                raise reject(Rejection.UNKNOWN_COMMAND, f"command {name!r} is not allowed on this gateway")
            params = spec.validate(env.payload.get("params", {}))
            self.trust.consume(env)
        except CommandRejected as exc:
            self.counters[f"rejected_{exc.reason}"] += 1
            self._refusal_log.warn(
                f"refused.{exc.reason}", "platform command %r refused (%s): %s", name[:64], exc.reason, exc
            )
            return CommandResult(name, seq, False, exc.reason, {"error": str(exc)})
        self.counters["accepted"] += 1
        log.info("platform command %s (seq %d) accepted", name, env.seq)
        try:
            outcome = spec.handler(params, env.seq)
            if inspect.isawaitable(outcome):
                outcome = await outcome
        except (GatewayError, ValueError, OSError) as exc:
            self.counters["failed"] += 1
            log.warning("platform command %s (seq %d) failed: %s", name, env.seq, exc)
            return CommandResult(name, env.seq, False, Rejection.FAILED.value, {"error": str(exc)})
        return CommandResult(name, env.seq, True, None, outcome)

    def mqtt_handler(
        self, publish_result: Callable[[bytes], Awaitable[None]]
    ) -> Callable[[str, bytes], None]:
        """A handler for ``MqttUplink.subscribe(topics.cmd_filter, ...)``: runs each command in a
        task and publishes its result with ``publish_result(bytes)`` (to ``topics.cmd_result``)."""

        async def run(topic: str, data: bytes) -> None:
            result = await self.handle(command_name(topic), data)
            try:
                await publish_result(result.to_bytes())
            except GatewayError as exc:
                # The command ran (or was refused); only its answer is lost. The platform asks again.
                self._refusal_log.warn(
                    "result_not_published", "cannot publish the result of %s: %s", topic, exc
                )

        def on_message(topic: str, data: bytes) -> None:
            task = asyncio.get_running_loop().create_task(run(topic, data), name=f"fleet-cmd {topic}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return on_message

    def _add_key(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"sha256": self.trust.add_key(params["public_key_pem"]), "trusted": self.trust.fingerprints()}

    def _retire_key(self, params: dict[str, Any]) -> dict[str, Any]:
        self.trust.retire_key(params["sha256"])
        return {"trusted": self.trust.fingerprints()}
