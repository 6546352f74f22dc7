-- edgegw database, compatible addition "device_class" (gateway.db.ADDITIONS).
-- Column owned by: the device registry (gateway.provisioning.registry).
-- A compatible addition keeps PRAGMA user_version: an agent rolled back to an earlier release
-- (docs/fleet.md, agent updates) still opens the file, names its columns in every INSERT and
-- SELECT, and so ignores this one; a device it registers gets NULL, read as class A (what that
-- agent gave it). Its salvage copies the columns both files have.

-- The LoRaWAN class of each device: 'A' (downlinks only after an uplink) or 'C' (listening on
-- RX2 whenever it is not transmitting: downlinks go at once). NULL: registered before this column.
ALTER TABLE devices ADD COLUMN lorawan_class TEXT CHECK (lorawan_class IN ('A', 'C'));
