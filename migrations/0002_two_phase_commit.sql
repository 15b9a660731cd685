-- Two-phase commit and TCC transactions share the transactions table with sagas:
-- a kind, their own states, no saga definition; TCC branches register in their own
-- table while the transaction is active.

ALTER TABLE transactions DROP CONSTRAINT transactions_kind_check;
ALTER TABLE transactions ADD CONSTRAINT transactions_kind_check CHECK (kind IN ('saga', 'twopc'));

ALTER TABLE transactions DROP CONSTRAINT transactions_state_check;
ALTER TABLE transactions ADD CONSTRAINT transactions_state_check CHECK (state IN (
    'running', 'compensating', 'completed', 'compensated', 'stuck',
    'active', 'preparing', 'committing', 'committed', 'aborting', 'aborted'));

ALTER TABLE transactions ALTER COLUMN definition DROP NOT NULL;
ALTER TABLE transactions ALTER COLUMN version DROP NOT NULL;
ALTER TABLE transactions ADD CONSTRAINT transactions_saga_has_definition
    CHECK (kind <> 'saga' OR (definition IS NOT NULL AND version IS NOT NULL));

-- Stuck sagas have no next_attempt_at (they wait for an operator); stuck 2PC
-- transactions keep retrying phase two, so 'stuck' belongs in the claimable set.
DROP INDEX transactions_due;
CREATE INDEX transactions_due ON transactions (next_attempt_at)
    WHERE state IN ('running', 'compensating', 'active', 'preparing', 'committing', 'aborting', 'stuck');

CREATE TABLE branches (
    transaction_id  uuid        NOT NULL REFERENCES transactions (id) ON DELETE CASCADE,
    name            text        NOT NULL,
    prepare_url     text,
    commit_url      text        NOT NULL,
    abort_url       text        NOT NULL,
    payload         jsonb       NOT NULL DEFAULT 'null',
    position        bigserial,
    registered_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (transaction_id, name)
);
