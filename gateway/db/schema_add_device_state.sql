-- edgegw database, compatible addition "device_state" (gateway.db.ADDITIONS).
-- Tables owned by: inventory_state (gateway.inventory_state).
-- A compatible addition keeps PRAGMA user_version: an agent rolled back to an earlier release
-- (docs/fleet.md, agent updates) still opens the file and ignores these tables.

-- What the agent heard from each device (gateway.inventory): last seen, signal, battery, counts,
-- the 24 h hour buckets. One row per device heard, rewritten when it changed, at most every few
-- seconds (gateway.inventory_state.WRITE_INTERVAL_S).
CREATE TABLE IF NOT EXISTS device_seen (
    dev_eui     TEXT PRIMARY KEY,                -- hex, lower case
    state       TEXT NOT NULL                    -- JSON (gateway.inventory.DeviceSeen.export)
) WITHOUT ROWID;

-- The last readings of each device (gateway.history), oldest first by id; each reading written
-- once, the oldest beyond the per-device bound deleted in the same transaction.
CREATE TABLE IF NOT EXISTS device_readings (
    id          INTEGER PRIMARY KEY,
    dev_eui     TEXT NOT NULL,
    reading     TEXT NOT NULL                    -- JSON (one entry of gateway.history)
);
CREATE INDEX IF NOT EXISTS device_readings_by_device ON device_readings (dev_eui, id);
