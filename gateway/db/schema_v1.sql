-- edgegw database, schema version 1.
-- Tables are owned by: devices (gateway.provisioning.registry), sessions
-- (gateway.lorawan.sessions), outbox (gateway.outbox), lorawan_joins (gateway.lorawan.join).

-- One row per registered device. Keys are hex; the file is mode 0600.
CREATE TABLE devices (
    dev_eui     TEXT PRIMARY KEY,                -- 16 lowercase hex digits
    profile     TEXT NOT NULL,                   -- vendor/model
    activation  TEXT NOT NULL CHECK (activation IN ('abp', 'otaa')),
    join_eui    TEXT,                            -- OTAA only
    app_key     TEXT,                            -- OTAA only
    site        TEXT NOT NULL DEFAULT '',
    lat         REAL,                            -- installation position, WGS84 degrees (optional)
    lon         REAL,
    params      TEXT NOT NULL DEFAULT '{}',      -- installation parameters, JSON object (name → number|text)
    created_at  TEXT NOT NULL
);
-- Key columns (devices.app_key, sessions.nwk_s_key/app_s_key) hold plain hex, or "enc1:..." once
-- the gateway key file exists (gateway.provisioning.keystore: AES-GCM).

-- The current LoRaWAN session of a device (ABP: from registration; OTAA: from its last join).
CREATE TABLE sessions (
    dev_eui     TEXT PRIMARY KEY REFERENCES devices (dev_eui) ON DELETE CASCADE,
    dev_addr    TEXT NOT NULL,                   -- 8 lowercase hex digits, MSB first
    nwk_s_key   TEXT NOT NULL,
    app_s_key   TEXT NOT NULL,
    session_tag TEXT NOT NULL,                   -- differs between sessions; part of record ids
    fcnt_up     INTEGER,                         -- last accepted 32-bit uplink FCnt; NULL: none yet
    fcnt_down   INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL
);
CREATE INDEX sessions_by_dev_addr ON sessions (dev_addr);

-- Accepted records waiting for the broker's PUBACK. A row is deleted only after it, or by the
-- eviction policy of docs/outbox.md. No index on record_id: a random-key index would rewrite
-- a random page per insert (SD-card wear); duplicates are caught in memory (gateway.outbox).
CREATE TABLE outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: leasing walks it forward
    record_id    TEXT NOT NULL,                  -- stable id (ARCHITECTURE.md §3.4)
    kind         TEXT NOT NULL,
    priority     INTEGER NOT NULL,               -- gateway.messages.Priority: higher leaves first, evicted last
    created_s    REAL NOT NULL,                  -- outbox clock (gateway.outbox.clock), never wall time
    size         INTEGER NOT NULL,               -- bytes counted against outbox.max_bytes
    body         TEXT NOT NULL                   -- the record as JSON (ARCHITECTURE.md §3.2)
);
CREATE INDEX outbox_by_priority ON outbox (priority, seq);

-- The outbox's own durable facts: its clock (clock_s, wall_s), eviction totals (evicted.<class>).
CREATE TABLE outbox_meta (
    key          TEXT PRIMARY KEY,
    value        REAL NOT NULL
);

-- OTAA joins accepted at the edge (gateway.lorawan.join): one row per DevNonce a device has used,
-- so a replayed join-request is refused even after a restart (LoRaWAN 1.0.4 §6.2.5), and the
-- JoinNonce sent back, a per-device counter that never repeats (§6.2.6).
CREATE TABLE lorawan_joins (
    dev_eui     TEXT NOT NULL REFERENCES devices (dev_eui) ON DELETE CASCADE,
    dev_nonce   INTEGER NOT NULL,                -- 0..65535
    join_nonce  INTEGER NOT NULL,                -- 0..16777215
    dev_addr    TEXT NOT NULL,
    joined_at   TEXT NOT NULL,
    PRIMARY KEY (dev_eui, dev_nonce)
);
