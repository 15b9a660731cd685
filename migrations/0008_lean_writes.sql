-- What Postgres did for every batch statement beyond the rows themselves, moved
-- or made cheap. At one saga per batch (a quiet coordinator) the four statements of
-- a 3-step saga cost the backend 4.18 M instructions; with this migration 3.34 M
-- (scripts/pg-instructions.sh; docs/PERFORMANCE.md, "Before and after").

-- 1. An event's transaction exists by construction. Every statement that adds
-- events adds them for the rows it has just inserted, updated or locked (their
-- `RETURNING` or a `FOR KEY SHARE` read), and those rows are never deleted while
-- the statement runs; retention deletes a transaction's events itself, in the
-- transaction that deletes the transaction (store/retention.rs). The foreign key
-- checked the same thing again with a query of its own per event row, eight per saga.
ALTER TABLE events DROP CONSTRAINT events_transaction_id_fkey;

-- 2. The shape of a transaction row, checked by one function instead of three
-- CHECK expressions. Postgres rebuilds a CHECK expression from its stored text on
-- every statement that writes the table; the three (the twelve states' array above
-- all) were an eighth of a write's work. A PL/pgSQL function is compiled once per
-- connection. A state added later changes this function (CREATE OR REPLACE).
CREATE FUNCTION settle_transaction_shape_ok(kind text, state text, definition text, version integer)
RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN kind IN ('saga', 'twopc')
       AND state IN ('running', 'compensating', 'completed', 'compensated', 'stuck',
                     'active', 'preparing', 'committing', 'committed', 'aborting', 'aborted',
                     'resolved')
       AND (kind <> 'saga' OR (definition IS NOT NULL AND version IS NOT NULL));
END $$;
ALTER TABLE transactions
    DROP CONSTRAINT transactions_kind_check,
    DROP CONSTRAINT transactions_state_check,
    DROP CONSTRAINT transactions_saga_has_definition,
    ADD CONSTRAINT transactions_shape CHECK (settle_transaction_shape_ok(kind, state, definition, version));

-- 3. A transaction's search terms are set by the two statements that decide them,
-- not by triggers: the creation copies its definition's (a saga) or derives them
-- from its branches (a one-shot 2PC), and closing an interactive 2PC derives them
-- from the branches it closed with. The update trigger's WHEN clause was rebuilt on
-- every statement that updates the table, the insert trigger ran a query per row.
DROP TRIGGER transactions_search_terms_at_insert ON transactions;
DROP TRIGGER transactions_search_terms_at_close ON transactions;
DROP FUNCTION settle_transaction_search_terms();
