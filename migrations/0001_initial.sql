-- Settle's first schema: saga definitions, transactions with their fenced
-- ownership, and the append-only events timeline.

CREATE SEQUENCE settle_fence;

CREATE TABLE saga_definitions (
    name        text        NOT NULL,
    version     integer     NOT NULL CHECK (version > 0),
    spec        jsonb       NOT NULL,
    digest      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

CREATE TABLE transactions (
    id                uuid        PRIMARY KEY,
    kind              text        NOT NULL CHECK (kind IN ('saga')),
    definition        text        NOT NULL,
    version           integer     NOT NULL,
    state             text        NOT NULL
                      CHECK (state IN ('running', 'compensating', 'completed', 'compensated', 'stuck')),
    input             jsonb       NOT NULL,
    progress          jsonb       NOT NULL,
    reason            text,
    idempotency_key   text        UNIQUE,
    request_digest    text        NOT NULL,
    cancel_requested  boolean     NOT NULL DEFAULT false,
    deadline          timestamptz,
    next_attempt_at   timestamptz,
    owner             text,
    lease_until       timestamptz NOT NULL,
    fence             bigint      NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (definition, version) REFERENCES saga_definitions (name, version)
);

-- Recovery claims scan only active transactions: a partial index stays small
-- however many finished transactions the table holds.
CREATE INDEX transactions_due ON transactions (next_attempt_at)
    WHERE state IN ('running', 'compensating');
CREATE INDEX transactions_state_updated ON transactions (state, updated_at);

CREATE TABLE events (
    id              bigserial   PRIMARY KEY,
    transaction_id  uuid        NOT NULL REFERENCES transactions (id) ON DELETE CASCADE,
    at              timestamptz NOT NULL DEFAULT now(),
    kind            text        NOT NULL,
    step            text,
    phase           text,
    attempt         integer,
    status_code     integer,
    error           text,
    duration_ms     integer,
    actor           text        NOT NULL,
    detail          jsonb
);
CREATE INDEX events_by_transaction ON events (transaction_id, id);
