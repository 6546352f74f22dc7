-- edgegw database, compatible addition "multicast" (gateway.db.ADDITIONS).
-- Tables owned by: the multicast group registry (gateway.provisioning.groups); the agent moves
-- multicast_groups.fcnt_down forward (gateway.lorawan.multicast).
-- A compatible addition keeps PRAGMA user_version: an agent rolled back to an earlier release
-- (docs/fleet.md, agent updates) still opens the file and ignores these tables (its devices have no
-- groups then). Its salvage copies the tables both files have.

-- One row per class C multicast group (LoRaWAN 1.0.4 §18, TS005 McGroupSetup's context).
-- Key columns hold plain hex, or "enc1:..." once the gateway key file exists, like the devices' keys.
CREATE TABLE IF NOT EXISTS multicast_groups (
    name        TEXT PRIMARY KEY,                -- what rules and commands address (a-z, 0-9, -, _)
    mc_addr     TEXT NOT NULL UNIQUE,            -- McAddr, 8 lowercase hex digits, MSB first
    nwk_s_key   TEXT NOT NULL,                   -- McNwkSKey
    app_s_key   TEXT NOT NULL,                   -- McAppSKey
    tag         TEXT NOT NULL,                   -- one-way tag of McAddr and McNwkSKey (the counter's guard)
    dr          INTEGER CHECK (dr BETWEEN 0 AND 6),     -- EU868 data rate; NULL: the gateway's RX2 DR
    freq_hz     INTEGER,                                -- NULL: the gateway's RX2 frequency
    fcnt_down   INTEGER NOT NULL DEFAULT 0,      -- the next McFCntDown (32 bits, never reused)
    setup       TEXT,                            -- reserved for TS005 remote setup / FUOTA (JSON); NULL: keys installed by hand
    created_at  TEXT NOT NULL
);

-- The devices of each group; a device may be in several groups (TS005: up to 4 per device).
CREATE TABLE IF NOT EXISTS multicast_members (
    group_name  TEXT NOT NULL REFERENCES multicast_groups (name) ON DELETE CASCADE,
    dev_eui     TEXT NOT NULL REFERENCES devices (dev_eui) ON DELETE CASCADE,
    PRIMARY KEY (group_name, dev_eui)
);
