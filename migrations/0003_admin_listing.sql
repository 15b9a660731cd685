-- The operators' list pages by creation time, which never changes, so that keyset
-- pagination stays stable while transactions move; filtered by state it uses the
-- first index, unfiltered the second.
DROP INDEX transactions_state_updated;
CREATE INDEX transactions_state_created ON transactions (state, created_at DESC, id DESC);
CREATE INDEX transactions_created ON transactions (created_at DESC, id DESC);
