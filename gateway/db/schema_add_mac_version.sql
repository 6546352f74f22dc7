-- edgegw database, compatible addition "mac_version" (gateway.db.ADDITIONS).
-- Column owned by: the device registry (gateway.provisioning.registry).
-- A compatible addition keeps PRAGMA user_version: an agent rolled back to an earlier release
-- (docs/fleet.md, agent updates) still opens the file, names its columns in every INSERT and
-- SELECT, and so ignores this one; a device it registers gets NULL, read as the profile's version
-- (that agent refused reused DevNonces only). Its salvage copies the columns both files have.

-- The LoRaWAN MAC version of a device when it is not its profile's (lorawan.mac_version): a
-- 1.0.4 device counts its DevNonces up and the join server refuses one not above its last
-- (gateway.lorawan.join); 1.0.2/1.0.3 devices pick them at random. NULL: the profile's.
ALTER TABLE devices ADD COLUMN mac_version TEXT
    CHECK (mac_version IN ('1.0.0', '1.0.1', '1.0.2', '1.0.3', '1.0.4'));
