-- Each subscriber's worker asks for its own due deliveries several times a
-- second; delivered and dead rows stay in the outbox as its history, so
-- the pending ones get an index of their own, by subscriber.
CREATE INDEX alert_outbox_pending ON alert_outbox (subscriber, next_at) WHERE state = 'pending';
