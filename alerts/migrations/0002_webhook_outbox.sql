-- Webhook deliveries, written in the same transaction as the change they
-- announce: the store and the outbox never disagree, even after a crash.
CREATE TABLE alert_outbox (
    subscriber TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- pending, delivered, dead
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_at BIGINT NOT NULL,
    last_error TEXT,
    done_at BIGINT,
    PRIMARY KEY (subscriber, alert_id, version)
);
CREATE INDEX alert_outbox_due ON alert_outbox (state, next_at);
