"""The pushed registry in the running agent: received, verified, opened, applied, reported.

Owns the life of a message on the retained ``<prefix>/<id>/registry`` (docs/fleet.md "Registry
push"): parse, the platform's signature and address, the sealed keys opened with this gateway's
X25519 key (off the event loop: 10,000 devices are a few MiB of JSON), the apply in one
transaction on the database thread (``gateway.provisioning.pushed_registry``), the running
stages given the new registry at once (``RegistryWatcher.refresh(force=True)``), and the retained
``registry-state`` report. It also publishes the gateway's public key on the retained ``seal-key``
at each connection. The message format is ``gateway.fleet.registry_push``'s.

``registry-state`` (retained, JSON)::

    {"v": 1, "version": 42 | null, "target": "gw-17", "applied_at": "...Z" | null,
     "devices": 10000, "groups": 2,
     "refused": [{"dev_eui": ..., "reason": ..., "detail": ...},    # of the applied version
                 {"version": 43 | null, "reason": "bad_signature", "detail": ...}],  # the last message
     "at": "...Z"}
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gateway.errors import CommandRejected, GatewayError, RegistryError, StorageError
from gateway.fleet import registry_push
from gateway.fleet.registry_push import Refusal, RegistryMessage, SealKey, Secrets
from gateway.provisioning import pushed_registry
from gateway.provisioning.keystore import KeyStore

log = logging.getLogger(__name__)

STATE_VERSION = 1


def _iso(now_s: float) -> str:
    return datetime.fromtimestamp(now_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RegistryPushApplier:
    """Applies the pushed registry of one gateway.

    ``keys()`` are the trusted platform keys (``Trust.keys``); ``groups()`` the gateway's groups;
    ``seal_key`` its X25519 key (None: every push refused ``no_seal_key``); ``run_db(fn, *args)``
    runs on the database thread; ``refresh_registry()`` makes the stages adopt the registry now;
    ``publish_state`` / ``publish_seal_key`` publish retained on ``registry-state`` / ``seal-key``;
    ``applied`` is the version the database holds at start.
    """

    def __init__(
        self,
        *,
        gateway_id: str,
        keys: Callable[[], list[Ed25519PublicKey]],
        groups: Callable[[], frozenset[str]],
        seal_key: X25519PrivateKey | None,
        run_db: Callable[..., Awaitable[Any]],
        keystore: KeyStore,
        profile_ids: Callable[[], Collection[str]],
        refresh_registry: Callable[[], Awaitable[None]],
        publish_state: Callable[[bytes], Awaitable[None]],
        publish_seal_key: Callable[[bytes], Awaitable[None]],
        connected: Callable[[], bool],
        applied: pushed_registry.PushState | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.gateway_id = gateway_id
        self._keys, self._groups, self._seal_key = keys, groups, seal_key
        self._run_db, self._keystore, self._profile_ids = run_db, keystore, profile_ids
        self._refresh, self._publish_state, self._publish_seal_key = (
            refresh_registry,
            publish_state,
            publish_seal_key,
        )
        self._connected, self._clock = connected, clock
        self.counters: Counter[str] = Counter()
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[object]] = set()
        self._state = applied
        """The applied version as the database holds it (``pushed_registry.state`` at start)."""
        self._last_refusal: dict[str, Any] | None = None
        self._last_digest: str | None = None
        # Said again at the first connection when a version is applied (the broker may have lost its
        # retained messages); a gateway that never had a push has nothing to say.
        self._pending: bytes | None = self._report() if applied is not None else None

    @property
    def applied_version(self) -> int | None:
        return self._state.version if self._state is not None else None

    # --- reports ---------------------------------------------------------------------------

    def _report(self) -> bytes:
        st = self._state
        refused = list(st.refused) if st is not None else []
        if self._last_refusal is not None:
            refused.append(self._last_refusal)
        doc = {
            "v": STATE_VERSION,
            "version": st.version if st else None,
            "target": st.target if st else None,
            "applied_at": st.applied_at if st else None,
            "devices": st.devices if st else 0,
            "groups": st.groups if st else 0,
            "refused": refused,
            "at": _iso(self._clock()),
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    async def _flush(self) -> None:
        data = self._pending
        if data is None or not self._connected():
            return
        try:
            await self._publish_state(data)
        except GatewayError as exc:
            log.warning("registry-state not published (sent after the next connection): %s", exc)
            return
        if self._pending is data:
            self._pending = None

    def on_connect(self) -> None:
        """Connect hook: the seal key (retained) and a report the broker has not seen yet."""
        self._spawn(self._on_connect())

    async def _on_connect(self) -> None:
        if self._seal_key is not None:
            doc = SealKey(self.gateway_id, self._seal_key.public_key(), self._groups())
            try:
                await self._publish_seal_key(doc.to_bytes())
            except GatewayError as exc:
                log.warning("seal-key not published (again at the next connection): %s", exc)
        await self._flush()

    def _spawn(self, coro: Awaitable[object]) -> None:
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- received registries ---------------------------------------------------------------

    def mqtt_handler(self) -> Callable[[str, bytes], None]:
        """A handler for ``MqttUplink.subscribe(topics.registry, ...)``."""

        def on_message(_topic: str, data: bytes) -> None:
            self._spawn(self.handle(data))

        return on_message

    async def handle(self, data: bytes) -> pushed_registry.ApplyResult | None:
        """Check and apply one registry message; None when it was refused or is the same as the last."""
        async with self._lock:
            self.counters["received"] += 1
            if not data:  # the platform cleared the retained message: the registry stays as it is
                self.counters["cleared"] += 1
                return None
            digest = hashlib.sha256(data).hexdigest()
            if digest == self._last_digest:
                self.counters["unchanged"] += 1  # the retained message again, after a reconnection
                return None
            self._last_digest = digest
            return await self._handle(data)

    async def _handle(self, data: bytes) -> pushed_registry.ApplyResult | None:
        started_s = time.monotonic()
        version: int | None = None
        try:
            message = await asyncio.to_thread(registry_push.parse, data)
            version = message.version  # echoed on registry-state, so the platform pairs the answer
            # The trusted keys and groups are read here, on the loop that changes them (key rotation).
            secrets = await asyncio.to_thread(self._open, message, self._keys(), self._groups())
            if self._state is not None and message.version <= self._state.version:
                # Not newer than the applied one: an older message re-published, or the same again.
                self.counters["ignored_older"] += 1
                log.info(
                    "registry version %d ignored: version %d is applied", message.version, self._state.version
                )
                return pushed_registry.ApplyResult("ignored", message.version, self._state.version)
            result: pushed_registry.ApplyResult = await self._run_db(
                _apply, message, secrets, self._keystore, self._profile_ids()
            )
        except CommandRejected as exc:
            await self._refused(version, exc.reason, str(exc))
            return None
        except (StorageError, RegistryError) as exc:
            self._last_digest = None  # not the message's fault: the retained copy is tried again
            await self._refused(version, Refusal.FAILED.value, str(exc))
            return None
        if result.status == "ignored":
            self.counters["ignored_older"] += 1
            return result
        await self._refresh()
        self._state = await self._run_db(pushed_registry.state)
        self._last_refusal = None
        self.counters["applied"] += 1
        log.warning(
            "registry version %d applied in %.2f s: %d added, %d updated, %d replaced, %d removed,"
            " %d unchanged, %d group(s), %d refused",
            result.version, time.monotonic() - started_s, result.added, result.updated, result.replaced,
            result.removed, result.unchanged, result.groups, len(result.refused),
        )  # fmt: skip
        self._pending = self._report()
        await self._flush()
        return result

    def _open(
        self, message: RegistryMessage, keys: list[Ed25519PublicKey], groups: frozenset[str]
    ) -> Secrets:
        """Verify and open (in a worker thread, as the parse: the JSON and the signature are CPU work)."""
        registry_push.verify(message, keys, gateway_id=self.gateway_id, groups=groups)
        if self._seal_key is None:
            raise registry_push.refuse(
                Refusal.NO_SEAL_KEY,
                "this gateway has no seal key: run `edgegw provision gateway --id ...` again",
            )
        return registry_push.open_secrets(message, self._seal_key)

    async def _refused(self, version: int | None, reason: str, detail: str) -> None:
        self.counters[f"refused_{reason}"] += 1
        log.warning("registry version %s refused (%s): %s", version, reason, detail)
        self._last_refusal = {
            "version": version,
            "reason": reason,
            "detail": detail,
            "at": _iso(self._clock()),
        }
        self._pending = self._report()
        await self._flush()


def _apply(conn: Any, message: RegistryMessage, secrets: Secrets, keystore: KeyStore,
           profile_ids: Collection[str]) -> pushed_registry.ApplyResult:  # fmt: skip
    """On the database thread."""
    return pushed_registry.apply(conn, message, secrets, keystore=keystore, profile_ids=profile_ids)
