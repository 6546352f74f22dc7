"""Building the agent from its configuration: every stage made and wired, nothing started.

Owns the order in which the stages are built and what each is given: the database and its
reserve first (before anything fills the disk), the registry snapshot, the LoRaWAN stages, the
outbox and the group commit that makes records, counters, joins and rule state durable together,
the uplink and its forwarder, the radio, the rules, the pipeline, then what the technicians and
the platform drive (control socket, signed commands, pushed configuration, agent updates). Read
top to bottom, it is the data flow of docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from gateway import __version__
from gateway.clock import CLOCK_STATE_FILE, SystemClock, iso_utc
from gateway.codec import ProfileStore, load_profiles
from gateway.config import Config
from gateway.control import SOCKET_NAME
from gateway.control.server import ControlServer
from gateway.db import db_path
from gateway.db.commit import Database, GroupCommitter
from gateway.db.reserve import DiskReserve
from gateway.errors import ConfigError, FrameError, GatewayError, ProvisioningError, StorageError
from gateway.fleet import registry_push
from gateway.fleet.trust import Trust
from gateway.fleet.updates import Updates
from gateway.history import ReadingHistory
from gateway.hostinfo import HostInfo
from gateway.inventory import Inventory
from gateway.inventory_state import InventoryStateStore
from gateway.lorawan.adr import AdrPeer, AdrSettings
from gateway.lorawan.dedup import Deduplicator
from gateway.lorawan.devstatus import DevStatus, DevStatusPeer
from gateway.lorawan.downlink import DownlinkRef, DownlinkScheduler
from gateway.lorawan.join import JoinAccepted, JoinCommits, JoinServer, store_join
from gateway.lorawan.join_share import MAX_ANNOUNCEMENT_BYTES, JoinShare, announcement
from gateway.lorawan.multicast import MulticastScheduler
from gateway.lorawan.sessions import SessionTable
from gateway.messages import DevEui
from gateway.outbox import Outbox
from gateway.pipeline import UplinkPipeline
from gateway.provisioning import gateway_setup, keystore, pushed_registry
from gateway.radio import open_backend
from gateway.roles import Roles, load_assignments
from gateway.rules.actions import Output
from gateway.rules.engine import RuleEngine
from gateway.rules.loader import load_rules
from gateway.rules_state import RulesStateStore
from gateway.uplink import envelope
from gateway.uplink.forwarder import Forwarder, ForwarderSettings
from gateway.uplink.mqtt import MqttUplink
from gateway.uplink.topics import Topics

from . import fleet_homes, loops, registry
from .agent import Agent, FrameRate
from .commands import Actions, CommandOutcomes, build_dispatcher
from .queries import Queries, StatusSource
from .registry_push import RegistryPushApplier
from .remote_config import build_config_applier
from .updates import MAX_CHUNK_BYTES, AgentUpdater, UpdateLinks

log = logging.getLogger(__name__)

LEGACY_RULES_STATE_FILE = "rules-state.json"
"""Where agents before the rules_state table saved the rule state (moved into the database once)."""


def build(config: Config) -> Agent:
    """Build every stage from the config (opens the database; starts nothing)."""
    profiles = load_profiles(config.profiles_dir)
    keys = keystore.open_key(config.data_dir)
    encrypt = keys.encrypt_hex  # plain hex until a key file exists (`edgegw device rekey` creates it)
    reserve = DiskReserve(config.data_path, config.outbox.disk_reserve_bytes)
    database = Database(db_path(config.data_dir), reserve=reserve)
    if database.quarantined is not None:
        log.error("the database was damaged: moved to %s, started a fresh one", database.quarantined)
    snapshot = database.run_sync(registry.read, keys.decrypt_hex)
    clock = SystemClock(state_path=config.data_path / CLOCK_STATE_FILE)  # holdover across a restart

    # Roles (issue 21): which devices this gateway answers (home) or only forwards (witness).
    roles = Roles(config.gateway.id)
    roles.restore(database.run_sync(load_assignments))

    # LoRaWAN: sessions, joins (durable with the group commit, then served), downlinks.
    sessions = SessionTable()
    # A device's DevNonce rule comes from its MAC version: the registry's, else its profile's.
    joins = JoinServer(config.lorawan, profile_mac_version=lambda p: profile_mac_version(profiles, p))
    join_commits = JoinCommits(sessions, encrypt)
    # DevStatusReq at lorawan.dev_status_period_s: a MAC peer of the scheduler (its answers reach the
    # inventory below).
    dev_status = DevStatusPeer(config.lorawan.dev_status_period_s)
    # Network-side ADR: a MAC peer too, first in FOpts; its state restored before any uplink.
    adr = AdrPeer(
        AdrSettings(installation_margin_db=config.lorawan.adr_margin_db),
        cflist_hz=config.lorawan.cflist,
        enabled=config.lorawan.adr,
    )
    downlinks = DownlinkScheduler(
        config.lorawan, sessions, clock_synced=clock.synced, peers=[adr, dev_status]
    )
    adr.counters = downlinks.counters  # adr.* next to the MAC counts, in the summary's downlinks
    dev_status.counters = downlinks.counters  # dev_status.* likewise
    database.run_sync(adr.restore)

    # Class C multicast groups: one frame per group command, its McFCntDown durable before it is sent.
    multicast = MulticastScheduler(
        rx2_dr=config.lorawan.rx2_dr, rx2_freq_hz=config.lorawan.rx2_freq_hz,
        power_dbm=config.lorawan.downlink_power_dbm,
    )  # fmt: skip

    # The outbox and the group commit: records, counters, joins, rule state and what was heard of
    # each device in one transaction.
    outbox = Outbox(
        database, max_bytes=config.outbox.max_bytes, max_age_s=config.outbox.max_age_s,
        memory_queue_records=config.outbox.memory_queue_records,
    )  # fmt: skip
    rules_store = RulesStateStore()
    inventory, history = Inventory(), ReadingHistory()
    heard_store = InventoryStateStore(inventory, history)
    reserve.ensure()  # before anything else fills the disk; again after a full disk, once there is room
    committer = GroupCommitter(
        database,
        [join_commits, sessions, downlinks, adr, multicast, outbox, rules_store, heard_store, roles],
        interval_s=config.outbox.commit_interval_ms / 1000,
        max_pending=config.outbox.commit_max_records,
        reserve=reserve,
    )
    outbox.committer_notify = committer.notify
    join_commits.committer_notify = committer.notify
    multicast.committer_notify = committer.notify

    # The uplink: MQTT with its will, and the forwarder that drains the outbox into it.
    topics = Topics(config.mqtt.topic_prefix, config.gateway.id)
    uplink = MqttUplink(
        config.mqtt,
        client_id=config.mqtt_client_id,
        will=(topics.state, envelope.state(False, __version__, iso_utc(time.time()))),
    )
    forwarder = Forwarder(outbox, uplink, topics, config.gateway.id, ForwarderSettings.from_config(config))

    # Radio, rules, pipeline.
    radio = open_backend(config.radio.url)
    radio.antenna_gain_dbi = config.radio.antenna_gain_dbi  # each downlink within its sub-band limit
    radio.tx_plan.rx1_delay_s = float(config.lorawan.rx_delay_s)  # reserve RX1/RX2 where answers go
    rules = _load_rules(config)
    if rules is not None:
        rules_store.attach(database, rules, legacy_file=config.data_path / LEGACY_RULES_STATE_FILE)

    def commit_now() -> None:
        committer.notify(0, urgent=True)

    pipeline = UplinkPipeline(
        sessions, profiles, outbox, clock,
        joins=joins, join_commits=join_commits, downlinks=downlinks, rules=rules, commit_now=commit_now,
    )  # fmt: skip
    # What was heard from each device (`edgegw devices`, `device show`, MQTT inventory), kept across
    # restarts: restored now, then written by the group commit at most every few seconds.
    heard_store.restore(database, registered=snapshot.devices.keys())
    heard_store.committer_notify = committer.notify
    pipeline.listeners += [inventory, history, heard_store]  # the store reads what the two just noted
    pipeline.multicast = multicast  # rule commands to a group, and the class C poll's multicast frames
    # A witness forwards what it hears and never transmits to the device: every downlink path asks.
    pipeline.is_home, pipeline.group_is_home = roles.is_home, roles.group_is_home
    downlinks.is_home = lambda dev_eui: roles.is_home(str(dev_eui))
    multicast.is_home = roles.group_is_home
    if rules is not None:
        roles.listeners.append(_republish_open_alerts(rules, pipeline.route))
    join_share = JoinShare(config.gateway.id, sessions, pipeline.counters)
    inventory.views.append(adr.link)  # each device's DR, TX power and link margin in every view
    _wire_dev_status(dev_status, inventory, heard_store)

    def forget_heard(dev_eui: str) -> None:
        inventory.forget(dev_eui)
        history.forget(dev_eui)
        heard_store.forget(dev_eui)
        dev_status.forget(DevEui.from_hex(dev_eui))
        adr.forget(dev_eui)

    stages = registry.Stages(
        sessions, joins, pipeline.set_devices, rules, forget_heard, set_class_c=downlinks.set_class_c,
        set_adr_off=adr.set_opted_out, set_groups=multicast.merge, share_joins=join_share.merge,
        set_homes=roles.set_registry_homes, set_group_homes=roles.set_group_homes,
    )  # fmt: skip
    registry.apply(snapshot, stages)
    watcher = registry.RegistryWatcher(
        database.run, keys.decrypt_hex, stages, snapshot=snapshot, count_sessions=sessions.__len__
    )
    agent = Agent(
        config, database, profiles, sessions, joins, downlinks,
        Deduplicator(config.lorawan.dedup_window_ms / 1000), outbox, committer, radio, uplink, forwarder,
        pipeline, topics, inventory, rules, keys, watcher, FrameRate(lambda: radio.counters.get("frames", 0)),
        clock=clock, host=HostInfo(config.data_path), heard_store=heard_store,
    )  # fmt: skip
    pipeline.send = lambda first, second: loops.spawn_transmit(agent, first, second)

    def flush() -> None:
        commit_now()
        forwarder.flush()

    # The control socket of the technician commands (read-only views, flush, requeue).
    source = StatusSource(
        config,
        summary=agent.summary,
        radio_health=radio.health,
        frames_per_min=agent.frame_rate.per_min,
        time_quality=lambda: clock.quality(None),
        registered=watcher.registered,
        sessions=sessions.__len__,
        heard=inventory.snapshot,
        recent_frames=lambda: radio.recent,
        rules_status=rules.status if rules is not None else None,
        connected=lambda: uplink.connected,
        run_db=database.run,
        uplink_state=uplink.status,
        # The applier is built below, with the platform's side; the socket serves after the start.
        config_state=lambda: agent.remote_config.in_effect() if agent.remote_config is not None else None,
        profile_outputs=lambda profile_id: profile_outputs(profiles, profile_id),
    )
    agent.control = control = ControlServer(
        config.data_path / SOCKET_NAME, Queries(source, outbox, history, flush).handlers()
    )
    pipeline.listeners.append(lambda event: control.publish("tail", event))
    pipeline.downlink_listeners.append(lambda event: control.publish("tail", event))

    # Agent updates: update_agent announces a package, its chunks come on update/..., update-state answers
    # (subscribed last, after the commands and the pushed configuration, as before).
    agent.updater = updater = AgentUpdater(
        Updates(config.data_path),
        UpdateLinks(
            chunks_root=topics.root,
            publish_state=lambda data: uplink.publish(topics.update_state, data, retain=True),
            connected=lambda: uplink.connected,
            accepted_frames=lambda: pipeline.counters.get("accepted", 0),
            last_heard_s=lambda: [s["last_seen_s"] or 0.0 for s in inventory.snapshot().values()],
            request_restart=agent.restart_requested.set,
            check_s=config.fleet.update_check_s,
        ),
    )

    # Signed platform commands on <prefix>/<id>/cmd/<name>, answers on cmd-result (docs/fleet.md).
    agent.commands = commands = build_dispatcher(
        Trust(config.data_path, gateway_id=config.gateway.id, groups=config.fleet.group_names),
        Actions(
            flush=flush,
            downlinks=downlinks,
            request_restart=agent.restart_requested.set,
            announce_update=updater.announce,
            configured_log_level=config.log.level if config.log.level != "TRACE" else "DEBUG",
            group_downlink=pipeline.queue_group_command,
        ),
    )
    uplink.subscribe(
        topics.cmd_filter, commands.mqtt_handler(lambda data: uplink.publish(topics.cmd_result, data))
    )
    outcomes = CommandOutcomes(lambda data: uplink.publish(topics.cmd_result, data))
    _wire_downlink_outcomes(downlinks, pipeline, outcomes, uplink)
    multicast.on_outcome = loops.group_outcomes(pipeline, outcomes)  # group downlinks end the same way
    _wire_join_share(join_share, pipeline, uplink, topics, database, sessions, encrypt)
    # Failover (issue 21): the coordinator's signed assignments in, this gateway's FCntDown reserve out.
    agent.fleet_homes = fleet_homes.wire(
        roles, downlinks, commands.trust, uplink, topics, database.run_sync(load_assignments)
    )

    # Pushed configuration on the retained <prefix>/<id>/config, answers on config-state.
    def reload_pushed_rules() -> None:
        if rules is not None:
            loops.reload_rules(rules, pipeline.route, config.rules.path, "pushed")

    agent.remote_config = applier = build_config_applier(
        config,
        commands.trust,
        outbox,
        publish_state=lambda data: uplink.publish(topics.config_state, data, retain=True),
        connected=lambda: uplink.connected,
        request_restart=agent.restart_requested.set,
        reload_rules=reload_pushed_rules,
    )
    uplink.subscribe(topics.config, applier.mqtt_handler())
    uplink.add_connect_hook(applier.on_connect)
    uplink.subscribe(topics.update_chunks, updater.on_chunk, max_payload_bytes=MAX_CHUNK_BYTES)
    uplink.add_connect_hook(updater.report)

    # The registry pushed by the platform on the retained <prefix>/<id>/registry, its keys sealed to this
    # gateway's X25519 key (published on seal-key); answers on registry-state (docs/fleet.md).
    agent.registry_push = _wire_registry_push(
        config, database, keys, profiles, watcher, uplink, topics, commands.trust
    )
    return agent


def _wire_registry_push(
    config: Config, database: Database, keys: keystore.KeyStore, profiles: ProfileStore,
    watcher: registry.RegistryWatcher, uplink: MqttUplink, topics: Topics, trust: Trust,
) -> RegistryPushApplier:  # fmt: skip
    """The pushed registry's applier, subscribed; the stages adopt each applied version at once."""
    try:
        seal_key = gateway_setup.load_seal_key(config.data_path)
    except ProvisioningError as exc:
        log.error("%s: registry pushes will be refused", exc)
        seal_key = None
    if seal_key is None:
        log.warning("no seal key in %s: registry pushes will be refused (provision the gateway again)",
                    config.data_path)  # fmt: skip
    pusher = RegistryPushApplier(
        gateway_id=config.gateway.id,
        keys=lambda: trust.keys,
        groups=lambda: trust.groups,
        seal_key=seal_key,
        run_db=database.run,
        keystore=keys,
        profile_ids=profiles.ids,
        refresh_registry=lambda: watcher.refresh(force=True),
        publish_state=lambda data: uplink.publish(topics.registry_state, data, retain=True),
        publish_seal_key=lambda data: uplink.publish(topics.seal_key, data, retain=True),
        connected=lambda: uplink.connected,
        applied=database.run_sync(pushed_registry.state),
    )
    uplink.subscribe(
        topics.registry, pusher.mqtt_handler(), max_payload_bytes=registry_push.MAX_MESSAGE_BYTES
    )
    uplink.add_connect_hook(pusher.on_connect)
    return pusher


MAX_UNSENT_ANNOUNCEMENTS = 256
"""Join announcements kept while the broker is away (the newest; a device joins at most every 5 s)."""


def _wire_join_share(
    share: JoinShare, pipeline: UplinkPipeline, uplink: MqttUplink, topics: Topics, database: Database,
    sessions: SessionTable, encrypt: Callable[[str], str],
) -> None:  # fmt: skip
    """Join announcements (issue 21, ``gateway.lorawan.join_share``): each join made durable here is
    published on ``<prefix>/<id>/join`` (kept for the next connection while the broker is away); those
    of the other gateways are verified with the device's AppKey, then made durable as a join is
    (``store_join``: the session and its DevNonce) before the session is served."""
    unsent: deque[bytes] = deque(maxlen=MAX_UNSENT_ANNOUNCEMENTS)
    tasks: set[asyncio.Task[None]] = set()

    def spawn(job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(job)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def publish(data: bytes) -> None:
        try:
            await uplink.publish(topics.join, data)
        except GatewayError as exc:  # not connected, refused: sent at the next connection
            log.debug("join announcement not published yet: %s", exc)
            unsent.append(data)

    def joined(accepted: JoinAccepted) -> None:
        spawn(publish(announcement(accepted, time.time())))

    def reconnected() -> None:
        while unsent:
            spawn(publish(unsent.popleft()))

    async def install(accepted: JoinAccepted, sender: str) -> None:
        try:
            await database.run(store_join, accepted, encrypt)
        except FrameError as exc:  # its DevNonce stored meanwhile, or the device removed
            share.lost(accepted, exc.reason, str(exc))
            return
        except (StorageError, sqlite3.Error) as exc:
            share.lost(accepted, "not_stored", str(exc))
            return
        sessions.install(accepted.session)
        share.installed(accepted, sender)

    def heard(topic: str, payload: bytes) -> None:
        sender = topics.join_sender(topic)
        accepted = None if sender is None else share.receive(sender, payload, time.time())
        if accepted is not None and sender is not None:
            spawn(install(accepted, sender))

    pipeline.join_listeners.append(joined)
    uplink.add_connect_hook(reconnected)
    uplink.subscribe(topics.join_filter, heard, max_payload_bytes=MAX_ANNOUNCEMENT_BYTES)


def _wire_dev_status(peer: DevStatusPeer, inventory: Inventory, heard_store: InventoryStateStore) -> None:
    """DevStatusAns into the inventory (written with its state); the peer learns the restored answers,
    so a restart asks again only the devices whose answer is older than the period."""
    for dev_eui, answered_at_s in inventory.dev_status_answered().items():
        peer.known(DevEui.from_hex(dev_eui), answered_at_s)

    def heard(status: DevStatus) -> None:
        eui = str(status.dev_eui)
        inventory.dev_status(eui, status.battery, status.margin_db, status.at_s)
        heard_store.changed(eui)

    peer.on_status = heard


def profile_mac_version(profiles: ProfileStore, profile_id: str) -> str | None:
    """The profile's ``lorawan.mac_version`` (None: no such profile; the join server then refuses
    only reused DevNonces)."""
    return profiles.get(profile_id).lorawan.mac_version if profile_id in profiles else None


def _wire_downlink_outcomes(
    downlinks: DownlinkScheduler, pipeline: UplinkPipeline, commands: CommandOutcomes, uplink: MqttUplink
) -> None:
    """Each queued downlink's end state (issue 20): a platform command's on cmd-result (again at each
    reconnection for those the broker missed), a rule's counted, every one in ``tail``."""

    def on_outcome(ref: DownlinkRef | None, dev_eui: DevEui, state: str, detail: str) -> None:
        pipeline.downlink_outcome(ref, dev_eui, state, detail)
        commands(ref, dev_eui, state, detail)

    downlinks.on_outcome = on_outcome
    uplink.add_connect_hook(commands.on_connect)


def profile_outputs(profiles: ProfileStore, profile_id: str) -> list[dict[str, Any]]:
    """What `device show` needs of a profile to chart its main quantity (``Queries.device``)."""
    if profile_id not in profiles:
        return []
    profile = profiles.get(profile_id)
    outputs: list[dict[str, Any]] = [
        {"name": o.name, "quantity": o.quantity, "unit": o.unit} for o in profile.outputs
    ]
    if profile.main is not None:
        # First, marked: the main quantity may be an instance of a templated output (LAeq of L{..}).
        same = next((o for o in outputs if o["name"] == profile.main), {})
        outputs.insert(0, {**same, "name": profile.main, "main": True})
    return outputs


def _load_rules(config: Config) -> RuleEngine | None:
    if not config.rules.path:
        return None
    try:
        return RuleEngine(load_rules(config.rules.path))
    except ConfigError as exc:
        # A bad rules file must not take the gateway (and its uplink) down: run without rules,
        # with the refusal recorded for `edgegw rules`; a fixed file is picked up by the reloader.
        log.error("rules not loaded, running without rules: %s", exc)
        engine = RuleEngine()
        engine.reload(config.rules.path, time.time())
        return engine


def _republish_open_alerts(
    rules: RuleEngine, route: Callable[[list[Output]], None]
) -> Callable[[str, bool], None]:
    """On becoming a device's home, publish the raised edges of the episodes open for it: as a witness
    it evaluated the same readings and sent nothing, so an episode opened in the failover window was
    never published; one the old home did publish has the same id and is dropped as a duplicate
    (docs/mqtt.md, "One identity per event")."""

    def on_role(dev_eui: str, now_home: bool) -> None:
        if now_home:
            route(list(rules.open_alerts(dev_eui)))

    return on_role
