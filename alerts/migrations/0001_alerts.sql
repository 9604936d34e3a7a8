-- Alerts as they are now: the columns filters use, and the whole alert as JSON.
CREATE TABLE alerts (
    id TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    subject TEXT NOT NULL,
    status TEXT NOT NULL,
    -- 0 minor, 1 moderate, 2 severe, 3 extreme
    severity INTEGER NOT NULL,
    -- ' area-id area-id ... ': every administrative area containing it
    areas TEXT NOT NULL,
    opened_at BIGINT NOT NULL,
    version BIGINT NOT NULL,
    notified_at BIGINT NOT NULL,
    body TEXT NOT NULL
);
-- At most one active alert per rule and subject: a new episode of the rule
-- (after a restart, say) continues the active one instead of doubling it.
CREATE UNIQUE INDEX alerts_one_active ON alerts (rule, subject) WHERE status <> 'resolved';
CREATE INDEX alerts_by_opened ON alerts (opened_at, id);
CREATE INDEX alerts_by_status ON alerts (status, notified_at);

-- Every change: who, when, what.
CREATE TABLE alert_history (
    alert_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    at BIGINT NOT NULL,
    by_whom TEXT NOT NULL,
    action TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (alert_id, version)
);

-- Which stored alert each of the rule's episode ids went to, and the
-- rule's last version applied: a replayed or retried change is recognised.
CREATE TABLE alert_sources (
    engine_id TEXT PRIMARY KEY,
    alert_id TEXT NOT NULL,
    engine_version BIGINT NOT NULL
);
