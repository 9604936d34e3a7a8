-- The device registry: one row per device ever registered (retired ones
-- stay), in registration order, its description as JSON (a DeviceSpec).
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    ordinal BIGINT NOT NULL,
    spec TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL
);
CREATE INDEX devices_ordinal ON devices (ordinal);
-- Every change of the registry: who, when, what, before and after.
CREATE TABLE device_changes (
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    device TEXT NOT NULL,
    action TEXT NOT NULL,
    before_spec TEXT,
    after_spec TEXT
);
CREATE INDEX device_changes_device ON device_changes (device, at);
CREATE INDEX device_changes_at ON device_changes (at);
