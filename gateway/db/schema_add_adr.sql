-- edgegw database, compatible addition "adr" (gateway.db.ADDITIONS).
-- Column devices.adr owned by: the device registry (gateway.provisioning.registry).
-- Table adr_state owned by: network-side ADR (gateway.lorawan.adr).
-- A compatible addition keeps PRAGMA user_version: an agent rolled back to an earlier release
-- (docs/fleet.md, agent updates) still opens the file, names its columns in every INSERT and
-- SELECT, and so ignores the column (a device it registers gets NULL, read as ADR on) and the
-- table. Its salvage copies the columns both files have.

-- Per-device opt-out of network-side ADR: 1 on, 0 off (the agent never sends that device a
-- LinkADRReq). NULL: registered before this column, or without a choice: on.
ALTER TABLE devices ADD COLUMN adr INTEGER CHECK (adr IN (0, 1));

-- What ADR knows of each device's current session: the settings the device acknowledged
-- (LinkADRAns with every ACK bit set) and its last uplinks. Written by the group commit: at once
-- when the settings change, the history every few uplinks (losing some of it only delays the
-- next decision). A row of an older session (another session_tag) is ignored and replaced.
CREATE TABLE IF NOT EXISTS adr_state (
    dev_eui     TEXT PRIMARY KEY REFERENCES devices (dev_eui) ON DELETE CASCADE,
    session_tag TEXT NOT NULL,                   -- the session these settings belong to
    dr          INTEGER NOT NULL,                -- EU868 data rate of its last uplink, 0..5
    tx_power    INTEGER NOT NULL,                -- RP002 EU868 TXPower index acknowledged, 0..7
    nb_trans    INTEGER NOT NULL,                -- NbTrans acknowledged, 1..15
    history     TEXT NOT NULL                    -- JSON [[fcnt, best snr_db, dr], ...], oldest first
) WITHOUT ROWID;
