-- edgegw database, schema version 1.
-- Tables are owned by: devices (gateway.provisioning.registry), sessions
-- (gateway.lorawan.sessions), outbox (gateway.outbox).

-- One row per registered device. Keys are hex; the file is mode 0600.
CREATE TABLE devices (
    dev_eui     TEXT PRIMARY KEY,                -- 16 lowercase hex digits
    profile     TEXT NOT NULL,                   -- vendor/model
    activation  TEXT NOT NULL CHECK (activation IN ('abp', 'otaa')),
    join_eui    TEXT,                            -- OTAA only
    app_key     TEXT,                            -- OTAA only
    site        TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL
);

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

-- Accepted records waiting for the broker's PUBACK. A row is deleted only after it.
CREATE TABLE outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id    TEXT NOT NULL UNIQUE,           -- stable id (ARCHITECTURE.md §3.4)
    kind         TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    created_mono REAL NOT NULL,                  -- monotonic-corrected age base, seconds
    body         TEXT NOT NULL                   -- the record as JSON (ARCHITECTURE.md §3.2)
);
CREATE INDEX outbox_by_priority ON outbox (priority DESC, seq);
