-- edgegw database, compatible addition "rules_state" (gateway.db.ADDITIONS).
-- Table owned by: rules_state (gateway.rules_state).
-- A compatible addition keeps PRAGMA user_version: an agent rolled back to an earlier release
-- (docs/fleet.md, agent updates) still opens the file and ignores the table. Agents before the
-- additions existed created this table themselves when their rules started, so a file may hold
-- it already, with rows: IF NOT EXISTS keeps them.

-- The rule engine's state: one row per device that has some (key: DevEUI hex), and the row ''
-- for the state of no device. Written by the group commit in the transaction of the records
-- the state produced.
CREATE TABLE IF NOT EXISTS rules_state (
    key         TEXT PRIMARY KEY,
    state       TEXT NOT NULL                    -- JSON (gateway.rules.engine)
) WITHOUT ROWID;
