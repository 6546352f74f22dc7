-- edgegw database, compatible addition "multicast_retired" (gateway.db.ADDITIONS).
-- Table owned by: the multicast group registry (gateway.provisioning.groups); the agent moves
-- fcnt_down forward for a group removed while one of its frames was being committed
-- (gateway.lorawan.multicast).
-- A compatible addition keeps PRAGMA user_version: an agent rolled back to an earlier release
-- (docs/fleet.md, agent updates) still opens the file and ignores the table. Its salvage copies the
-- tables both files have.

-- The McFCntDown a removed multicast group had reached, by its tag (McAddr and McNwkSKey): a group
-- created again with the same McAddr and McNwkSKey (to change its data rate or frequency, the lamps
-- keeping their keys) goes on from there. A counter value is never used twice under the same keys
-- (the keystream would repeat), and every lamp refuses a McFCntDown at or below the last it took.
CREATE TABLE IF NOT EXISTS multicast_retired (
    tag         TEXT PRIMARY KEY,                -- multicast_groups.tag of the removed group
    fcnt_down   INTEGER NOT NULL                 -- the next McFCntDown it would have used
) WITHOUT ROWID;
