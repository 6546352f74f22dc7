-- edgegw database, compatible addition "registry_push" (gateway.db.ADDITIONS).
-- Tables owned by: the pushed registry (gateway.provisioning.pushed_registry).
-- A compatible addition keeps PRAGMA user_version: an agent rolled back to an earlier release
-- (docs/fleet.md, agent updates) still opens the file and ignores these tables (it serves the
-- pushed devices as if they were local ones, and applies no push). Its salvage copies the tables
-- both files have.

-- The registry version this gateway applied (one row): kept with the devices it wrote, in the
-- same transaction, so a restart neither applies it again nor forgets it.
CREATE TABLE IF NOT EXISTS registry_push_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    version     INTEGER NOT NULL,                -- the platform's registry version, only grows
    target      TEXT NOT NULL,                   -- the gateway id or group:<name> it was sent to
    applied_at  TEXT NOT NULL,
    refused     TEXT NOT NULL DEFAULT '[]'       -- JSON: the devices and groups of that version not applied, why
);

-- The devices and multicast groups the pushed registry owns (a push removes those it no longer
-- lists; a device registered locally and never pushed is not in here and no push removes it).
-- Deleting the device or group (a local `device remove`) drops its row: the next version puts it back.
CREATE TABLE IF NOT EXISTS pushed_devices (
    dev_eui     TEXT PRIMARY KEY REFERENCES devices (dev_eui) ON DELETE CASCADE,
    version     INTEGER NOT NULL                 -- the registry version that last wrote it
);
CREATE TABLE IF NOT EXISTS pushed_groups (
    name        TEXT PRIMARY KEY REFERENCES multicast_groups (name) ON DELETE CASCADE,
    version     INTEGER NOT NULL
);
