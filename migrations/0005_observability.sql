-- Observability: the W3C trace context a transaction was started under (so that
-- whoever drives it, after any recovery, calls participants in the same trace),
-- and the outbox of webhook notifications (a transaction became stuck), written in
-- the same fenced statement as the state it announces and delivered at least once.

ALTER TABLE transactions ADD COLUMN traceparent text, ADD COLUMN tracestate text;

CREATE TABLE webhook_outbox (
    id               bigserial   PRIMARY KEY,
    transaction_id   uuid        NOT NULL,
    event            text        NOT NULL,
    payload          jsonb       NOT NULL,
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
-- Deliverers claim due rows in order; delivered rows are deleted, so the table
-- (and this index) holds only what is still to be sent.
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at);
