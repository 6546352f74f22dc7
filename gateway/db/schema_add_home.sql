-- edgegw database, compatible addition "home" (gateway.db.ADDITIONS).
-- Columns and table owned by: the device roles (gateway.roles) and the device registry
-- (gateway.provisioning.registry writes devices.home_gateway).
-- A compatible addition keeps PRAGMA user_version: an agent rolled back to an earlier release
-- (docs/fleet.md, agent updates) still opens the file, names its columns in every INSERT and
-- SELECT, and so ignores these; it then answers every device it has, as every gateway did before
-- (home of all its devices). Its salvage copies the columns and tables both files have.

-- The gateway that answers a device (sends its downlinks, runs its rules' actions) when several
-- hear it: a gateway id (config gateway.id). NULL: no home named, this gateway answers it (a
-- single-gateway city needs nothing new).
ALTER TABLE devices ADD COLUMN home_gateway TEXT;

-- The same for a class C multicast group: only its home gateway sends the group's frames.
ALTER TABLE multicast_groups ADD COLUMN home_gateway TEXT;

-- The home assigned to a device by the platform's coordinator (edgegw fleet coordinator), which
-- overrides the registry's home_gateway. epoch: the assignment's order (a lower or equal one is
-- ignored); fcnt_floor: the new home's FCntDown starts above it. No foreign key: an assignment may
-- arrive before the device is registered here (a registry push after it).
CREATE TABLE IF NOT EXISTS device_homes (
    dev_eui     TEXT PRIMARY KEY,               -- 16 lowercase hex digits
    home        TEXT NOT NULL,                  -- gateway id
    epoch       INTEGER NOT NULL,
    fcnt_floor  INTEGER NOT NULL DEFAULT 0,
    assigned_at TEXT NOT NULL
);
