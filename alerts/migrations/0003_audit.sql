-- Every write through the API (operators' actions, reloads), allowed or
-- refused: who, what, when, from where, and the answer.
CREATE TABLE audit_log (
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    source TEXT NOT NULL,
    status BIGINT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
