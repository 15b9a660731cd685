-- The write a row held before the last one. The group-commit write statement
-- (store/batch.rs) is one UPDATE: it sets `prev_write` to the `last_write` it
-- replaces and hands it back, so a write sent again after an unknown outcome
-- learns that it had landed (its id is the one replaced) without a locking read
-- of its own before the update. Nullable with no default: adding it rewrites nothing.
ALTER TABLE transactions ADD COLUMN prev_write uuid;
