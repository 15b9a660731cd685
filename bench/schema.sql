-- The scratch table bench/saga_writes.sql writes to: the columns of Settle's
-- `transactions` row that a saga's writes touch, its state CHECK, and the indexes
-- those writes have to maintain (migrations/ has the real one).
CREATE TABLE transactions (
    id               uuid        PRIMARY KEY,
    kind             text        NOT NULL,
    state            text        NOT NULL
                     CHECK (state IN ('running', 'compensating', 'completed', 'compensated', 'stuck')),
    input            jsonb       NOT NULL,
    progress         jsonb       NOT NULL,
    reason           text,
    next_attempt_at  timestamptz,
    owner            text,
    lease_until      timestamptz NOT NULL,
    fence            bigint      NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transactions_due ON transactions (next_attempt_at)
    WHERE state IN ('running', 'compensating');
CREATE INDEX transactions_state_created ON transactions (state, created_at DESC, id DESC);
CREATE INDEX transactions_created ON transactions (created_at DESC, id DESC);
