"""Pushed configuration at run time: apply as a diff, keep the last known good, revert on its own.

Owns the life cycle of a desired configuration received on the retained ``config`` topic
(docs/fleet.md, "Configuration push"): the start-up choice (``startup_config``: the local
file, then the trial overlay if one waits for confirmation, else the last known good), the
no-op for an identical one, the refusal of one that changes local-only keys or would evict
committed records, the rules-only change (applied in place), the settings change (written as
trial, then a restart with exit code 75), the trial's verdict (confirmed once the broker is
reached and records flow; reverted when the broker is not reached or records do not flow within
``fleet.revert_after_s``, or records are evicted under it), and the ``config-state`` reports.
It does not own the envelope checks (``gateway.fleet.trust``), the payload and its validation
(``gateway.fleet.desired``), the files (``gateway.fleet.config_store``), the MQTT connection nor
the outbox: the app passes callables for publishing, observing the broker and the outbox, and
restarting.

It also answers what is in effect, read-only (``in_effect``, ``effective_view``): the pushed
version, its state (``local``: no push; ``applied``; ``trial``; ``reverted``: the last push was
given up and the one before runs), the keys the overlay sets, and the configuration with its
secret removed (``gateway.config.redacted``) — for `edgegw status`, `config show --effective` and `diag`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from gateway import config
from gateway.errors import CommandRejected, ConfigError, GatewayError, StorageError
from gateway.fleet import desired as desired_mod
from gateway.fleet import signed_envelope
from gateway.fleet.config_store import GOOD_FILE, ConfigStore, FailedConfig
from gateway.fleet.desired import DesiredConfig
from gateway.fleet.trust import Trust

log = logging.getLogger(__name__)

EXIT_RESTART = 75  # EX_TEMPFAIL (sysexits.h): "restart me"; the systemd unit restarts on it
MAX_TRIAL_STARTS = 3
STATE_VERSION = 1
TRIAL_POLL_S = 0.25


class Delivery(NamedTuple):
    """The outbox's delivery counters at one moment (``delivery()``), compared during a trial."""

    acked: int
    """Rows the broker acknowledged since the agent started."""
    waiting: int
    """Committed rows not acknowledged yet."""
    lost: int
    """Committed rows evicted (outbox full) or expired (too old) since the agent started."""


OutboxUsage = Callable[[], Awaitable[tuple[int, float | None]]]
"""``() -> (bytes held, age of the oldest committed record in s or None)``; ``StorageError``."""


def _now_iso(now_s: float) -> str:
    return datetime.fromtimestamp(now_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _effective(local: config.Config, state: DesiredConfig | None, store: ConfigStore,
               environ: Mapping[str, str] | None) -> config.Config:  # fmt: skip
    label = f"pushed configuration {state.version}" if state is not None else local.source
    return desired_mod.effective(
        desired_mod.local_raw(local), state, rules_path=store.rules_path, file=label, local=local,
        environ=environ,
    )  # fmt: skip


def effective_config(
    local_path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> config.Config:
    """The configuration in effect, without side effects: the local file, with the trial overlay
    if one exists, else the last known good one (``ConfigError`` if that is invalid now)."""
    local = config.load(local_path, environ)
    store = ConfigStore(local.data_path)
    return _effective(local, store.trial() or store.good(), store, environ)


def startup_config(
    local_path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> config.Config:
    """The configuration ``edgegw run`` starts with, keeping the books of a trial configuration.

    A trial is given up (recorded as failed, reported after the next connection) when it is
    invalid with today's local file or the agent already started with it ``MAX_TRIAL_STARTS``
    times without confirming it (it crashes, or someone keeps restarting it). A last known good
    that became invalid (the local file changed) is ignored with an error: the local file alone runs.
    """
    local = config.load(local_path, environ)
    store = ConfigStore(local.data_path)
    now = _now_iso(time.time())
    trial = store.trial()
    if trial is not None:
        starts = store.trial_starts()
        try:
            if starts >= MAX_TRIAL_STARTS:
                raise ConfigError(f"the agent started {starts} times with it without reaching the broker")
            cfg = _effective(local, trial, store, environ)
        except (ConfigError, CommandRejected) as exc:  # rejected: the local file no longer allows a key
            log.error("pushed configuration %s given up, back to the last known good: %s", trial.version, exc)
            store.fail_trial(trial, str(exc), "did_not_start", now)
        else:
            store.write_trial(trial, now, starts + 1)
            if trial.rules is not None:
                store.write_rules(trial.rules)
            log.warning("starting with pushed configuration %s on trial", trial.version)
            return cfg
    good = store.good()
    if good is None:
        return local
    try:
        cfg = _effective(local, good, store, environ)
    except (ConfigError, CommandRejected) as exc:
        log.error(
            "last known good configuration %s ignored, the local file alone runs: %s", good.version, exc
        )
        return local
    if good.rules is not None:
        store.write_rules(good.rules)
    return cfg


def overlay_keys(desired: DesiredConfig | None) -> list[str]:
    """The dotted keys a pushed configuration sets over the local file (``rules`` for pushed rules text)."""
    if desired is None:
        return []
    keys: list[str] = []

    def walk(doc: Mapping[str, Any], prefix: str) -> None:
        for key, value in doc.items():
            if isinstance(value, Mapping) and value:
                walk(value, f"{prefix}{key}.")
            else:
                keys.append(f"{prefix}{key}")

    walk(desired.settings, "")
    return sorted(keys) + (["rules"] if desired.rules is not None else [])


def config_state(
    current: DesiredConfig | None, on_trial: bool, failed: FailedConfig | None, good_at: str | None
) -> dict[str, Any]:
    """Version, state and overlay keys of the configuration in effect (see the module docstring).

    ``reverted`` when the last reverted push is newer than the last known good (``good_at``, ISO
    UTC: compared as text); the reverted one is reported either way, as the last push given up.
    """
    if on_trial:
        state = "trial"
    elif failed is not None and (good_at is None or failed.at > good_at):
        state = "reverted"
    else:
        state = "applied" if current is not None else "local"
    return {
        "version": current.version if current is not None else None,
        "state": state,
        "overlay_keys": overlay_keys(current),
        "reverted": (
            {"version": failed.version, "reason": failed.reason, "code": failed.code, "at": failed.at}
            if failed is not None
            else None
        ),
    }


def _good_at(store: ConfigStore) -> str | None:
    """When the last known good was written (its file's ``at``); None without one."""
    try:
        doc = json.loads((store.directory / GOOD_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    at = doc.get("at") if isinstance(doc, dict) else None
    return at if isinstance(at, str) else None


def effective_view(
    local_path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``config_state`` and the redacted configuration, from the files alone (no agent running):
    what ``edgegw run`` would start with, without keeping a trial's books."""
    local = config.load(local_path, environ)
    store = ConfigStore(local.data_path)
    trial, good = store.trial(), store.good()
    return {
        **config_state(trial or good, trial is not None, store.failed(), _good_at(store)),
        "config": config.redacted(effective_config(local_path, environ)),
    }


class ConfigApplier:
    """Receives ``config`` envelopes, applies them, and reports on ``config-state``.

    ``publish_state(bytes)`` publishes on ``config-state`` (retained); ``connected()`` observes
    the uplink; ``request_restart()`` stops the agent gracefully with exit code ``EXIT_RESTART``;
    ``check_rules(text)`` raises ``ConfigError`` for invalid rules; ``reload_rules()`` makes the
    running rule engine read ``rules.yaml`` again; ``delivery()`` samples the outbox's delivery
    counters (a trial is then confirmed only once records flow, and reverted if it evicts);
    ``outbox_usage()`` says what the outbox holds (a lower bound that would evict it is refused).
    """

    def __init__(
        self,
        running: config.Config,
        trust: Trust,
        *,
        publish_state: Callable[[bytes], Awaitable[None]],
        connected: Callable[[], bool],
        request_restart: Callable[[], None],
        check_rules: Callable[[str], None] | None = None,
        reload_rules: Callable[[], None] | None = None,
        delivery: Callable[[], Delivery] | None = None,
        outbox_usage: OutboxUsage | None = None,
        clock: Callable[[], float] = time.time,
        mono_clock: Callable[[], float] = time.monotonic,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.running = running
        self.trust = trust
        self.store = ConfigStore(running.data_path)
        self.counters: Counter[str] = Counter()
        self._publish_state = publish_state
        self._connected = connected
        self._request_restart = request_restart
        self._check_rules = check_rules
        self._reload_rules = reload_rules
        self._delivery = delivery
        self._outbox_usage = outbox_usage
        self._clock = clock
        self._mono_clock = mono_clock
        self._environ = environ
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._good = self.store.good()
        self._trial = self.store.trial()
        self._failed = self.store.failed()
        self._last_rejected: str | None = None
        self._pending: dict[str, Any] | None = None
        self._restarting = False
        self._revert_after_s = running.fleet.revert_after_s
        self._uplink_touched = True
        if self._trial is not None:
            try:  # the good configuration's patience, not the trial's own: a trial cannot disable its revert
                local = config.load(running.source, environ)
                good_cfg = _effective(local, self._good, self.store, environ)
                self._revert_after_s = good_cfg.fleet.revert_after_s
                self._uplink_touched = good_cfg.mqtt != running.mqtt
            except (ConfigError, CommandRejected) as exc:
                log.warning("cannot compare the trial with the last known good configuration: %s", exc)
        if self._failed is not None and not self._failed.reported:
            self._pending = self._state(
                "reverted", self._failed.version, self._failed.reason, self._failed.code
            )

    @property
    def current(self) -> DesiredConfig | None:
        """The pushed configuration in effect (trial or good), None for the local file alone."""
        return self._trial or self._good

    def in_effect(self) -> dict[str, Any]:
        """``config_state`` of the running agent (``config.redacted(running)`` is its configuration)."""
        return config_state(self.current, self._trial is not None, self._failed, _good_at(self.store))

    # --- reports ---------------------------------------------------------------------------

    def _state(self, status: str, version: str | None, reason: str | None = None,
               code: str | None = None) -> dict[str, Any]:  # fmt: skip
        current = self.current
        return {
            "v": STATE_VERSION,
            "status": status,
            "version": version,
            "reason": reason,
            "code": code,
            "in_effect": current.version if current is not None else None,
            "at": _now_iso(self._clock()),
        }

    async def _report(self, doc: dict[str, Any]) -> None:
        self._pending = doc
        await self._flush_report()

    async def _flush_report(self) -> None:
        doc = self._pending
        if doc is None or not self._connected():
            return
        try:
            await self._publish_state(json.dumps(doc, separators=(",", ":")).encode())
        except GatewayError as exc:  # the uplink's errors: sent again after the next connection
            log.warning("config-state not published (sent after the next connection): %s", exc)
            return
        if self._pending is doc:
            self._pending = None
        if doc["status"] == "reverted":
            try:
                self.store.mark_failed_reported()
            except StorageError as exc:
                log.warning("%s", exc)

    def on_connect(self) -> None:
        """Connect hook: publish a report that could not be sent while offline."""
        if self._pending is not None:
            self._spawn(self._flush_report())

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the trial -------------------------------------------------------------------------

    async def run(self) -> None:
        """Confirm or revert a trial configuration, then wait (the app cancels this task)."""
        if self._trial is not None:
            verdict = await self._judge_trial()
            async with self._lock:
                if self._trial is not None and not self._restarting:
                    if verdict is None:
                        await self._confirm()
                    else:
                        self._revert(*verdict)
        await asyncio.get_running_loop().create_future()

    async def _judge_trial(self) -> tuple[str, str] | None:
        """None to confirm the trial, else (reason, code) to revert it.

        Reverted: a trial that changed ``mqtt`` and does not reach the broker within the patience
        (``revert_after_s`` of the last known good); one under which records wait and none is
        acknowledged during the patience counted while connected (a broker outage is not the
        trial's doing); one under which committed records are evicted or expire. Confirmed: once
        connected and a record is acknowledged, or nothing waits at the end of the patience.
        Without ``delivery``, confirmed as soon as the broker is reached (or at once if ``mqtt``
        did not change).
        """
        patience_s = self._revert_after_s
        started_s = last_s = self._mono_clock()
        first = self._delivery() if self._delivery is not None else None
        connected_for_s: float | None = None  # None: not reached yet
        while True:
            now_s = self._mono_clock()
            connected = self._connected()
            if connected:
                connected_for_s = 0.0 if connected_for_s is None else connected_for_s + now_s - last_s
            last_s = now_s
            if first is None or self._delivery is None:
                if connected or not self._uplink_touched:
                    return None
            else:
                sample = self._delivery()
                if sample.lost > first.lost:
                    return (
                        f"{sample.lost - first.lost} committed records evicted or expired under it",
                        "evicted",
                    )
                if connected and sample.acked > first.acked:
                    return None
                if connected_for_s is not None and connected_for_s >= patience_s:
                    if sample.waiting == 0:
                        return None
                    return (
                        f"records did not flow: {sample.waiting} waited and none was acknowledged by the "
                        f"broker within {patience_s:g} s connected",
                        "not_flowing",
                    )
            if connected_for_s is None and self._uplink_touched and now_s - started_s >= patience_s:
                return f"no broker connection within {patience_s:g} s", "no_connection"
            await asyncio.sleep(TRIAL_POLL_S)

    async def _confirm(self) -> None:
        trial = self._trial
        assert trial is not None
        self.store.promote_trial(trial, _now_iso(self._clock()))
        self._good, self._trial = trial, None
        self.counters["confirmed"] += 1
        log.warning("pushed configuration %s confirmed: it is the last known good now", trial.version)
        await self._report(self._state("applied", trial.version))

    def _revert(self, reason: str, code: str) -> None:
        trial = self._trial
        assert trial is not None
        log.error("pushed configuration %s reverted: %s; restarting with %s", trial.version, reason,
                  self._good.version if self._good else "the local file")  # fmt: skip
        self.store.fail_trial(trial, reason, code, _now_iso(self._clock()))
        self._trial = None
        self.counters["reverted"] += 1
        self._restart()

    def _restart(self) -> None:
        self._restarting = True
        self.counters["restarts"] += 1
        self._request_restart()

    # --- received configurations -----------------------------------------------------------

    def mqtt_handler(self) -> Callable[[str, bytes], None]:
        """A handler for ``MqttUplink.subscribe(topics.config, ...)``."""

        def on_message(_topic: str, data: bytes) -> None:
            self._spawn(self.handle(data))

        return on_message

    async def handle(self, data: bytes) -> None:
        """Check and apply (or refuse, or ignore as unchanged) one ``config`` envelope."""
        async with self._lock:
            if self._restarting:
                return
            self.counters["received"] += 1
            if not data:  # the platform cleared the retained message: nothing is desired
                self.counters["cleared"] += 1
                return
            # A message during a trial does not confirm it: reaching the broker is not enough,
            # records must flow (``run``).
            await self._handle(data)

    async def _handle(self, data: bytes) -> None:
        if hashlib.sha256(data).hexdigest() == self._last_rejected:
            self.counters["unchanged"] += 1  # the same refused message, retained, after a reconnect
            return
        try:
            env = signed_envelope.parse(data)
            wanted = desired_mod.from_payload(env.payload)
        except CommandRejected as exc:
            await self._reject(None, hashlib.sha256(data).hexdigest(), exc)
            return
        digest = wanted.hash
        current = self.current
        known = {current.hash if current else None, self._failed.hash if self._failed else None}
        if digest in known or digest == self._last_rejected:
            # The retained message again after a reconnect, or a re-push: change nothing.
            self.counters["unchanged"] += 1
            if self._failed is not None and digest == self._failed.hash:
                log.info("pushed configuration %s was reverted before: not applied again", wanted.version)
            else:
                log.info("pushed configuration %s received again: unchanged, nothing to do", wanted.version)
            return
        try:
            self.trust.check(env, self._clock())
            new_cfg = self._validate(wanted)
            await self._check_evictions(new_cfg)
            self.trust.consume(env)
        except (CommandRejected, ConfigError, StorageError) as exc:
            await self._reject(wanted.version, digest, exc)
            return
        now = _now_iso(self._clock())
        settings_same = wanted.settings == (current.settings if current else {})
        rules_same = wanted.rules == (current.rules if current else None)
        try:
            if self._trial is not None:
                # Anything new while a trial is judged replaces the trial (the last known good stays
                # what it is): a new trial, a new restart.
                self.store.write_trial(wanted, now)
                self._trial = wanted
                log.warning("pushed configuration %s replaces the trial: restarting", wanted.version)
                self._restart()
                return
            if settings_same and rules_same:
                self.store.write_good(wanted, now)
                self.counters["applied"] += 1
            elif settings_same and self._rules_in_place(wanted):
                assert wanted.rules is not None
                self.store.write_rules(wanted.rules)
                self.store.write_good(wanted, now)
                assert self._reload_rules is not None
                self._reload_rules()
                self.counters["applied_rules"] += 1
            else:
                self.store.write_trial(wanted, now)
                self._trial = wanted
                log.warning("pushed configuration %s (%s) written on trial: restarting to apply it",
                            wanted.version, "uplink settings changed" if new_cfg.mqtt != self.running.mqtt
                            else "settings changed")  # fmt: skip
                self._restart()
                return
        except StorageError as exc:
            await self._reject(wanted.version, digest, exc)
            return
        self._good = wanted
        log.warning("pushed configuration %s applied without a restart", wanted.version)
        await self._report(self._state("applied", wanted.version))

    def _rules_in_place(self, wanted: DesiredConfig) -> bool:
        """New rules can replace the running ones without a restart: the rule engine runs on rules.yaml."""
        return (
            wanted.rules is not None
            and self._reload_rules is not None
            and self.running.rules.path == str(self.store.rules_path)
        )

    def _validate(self, wanted: DesiredConfig) -> config.Config:
        local = (
            config.load(self.running.source, self._environ) if os.path.isfile(self.running.source) else None
        )
        base = local if local is not None else self.running
        label = f"pushed configuration {wanted.version}"
        cfg = desired_mod.effective(
            desired_mod.local_raw(base), wanted, rules_path=self.store.rules_path, file=label, local=base,
            environ=self._environ,
        )  # fmt: skip
        if wanted.rules is not None and self._check_rules is not None:
            self._check_rules(wanted.rules)
        return cfg

    async def _check_evictions(self, new_cfg: config.Config) -> None:
        """``CommandRejected`` (``would_evict``) when lower outbox bounds would evict what it holds."""
        if self._outbox_usage is None or not desired_mod.bounds_lowered(self.running.outbox, new_cfg.outbox):
            return
        held_bytes, oldest_age_s = await self._outbox_usage()
        risks = desired_mod.eviction_risks(self.running.outbox, new_cfg.outbox, held_bytes, oldest_age_s)
        if risks:
            raise CommandRejected(
                "; ".join(risks) + ": refused, it would evict committed records",
                reason=desired_mod.WOULD_EVICT_CODE,
            )

    async def _reject(self, version: str | None, digest: str | None,
                      exc: CommandRejected | ConfigError | StorageError) -> None:  # fmt: skip
        code = "failed" if isinstance(exc, StorageError) else desired_mod.rejected_reason(exc)
        self.counters[f"rejected_{code}"] += 1
        self._last_rejected = digest
        log.warning("pushed configuration %s refused (%s): %s", version, code, exc)
        await self._report(self._state("rejected", version, str(exc), code))
