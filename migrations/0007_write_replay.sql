-- The last state write applied to each transaction, by the id its writer gave it.
-- A write whose outcome the coordinator did not learn (its connection closed, or
-- went unanswered, during the commit) is sent again as it was. When the first
-- attempt had landed, this column says so, and the retry adds no second copy of
-- its timeline events nor of its webhook notification. Nullable with no default:
-- adding it rewrites nothing.
ALTER TABLE transactions ADD COLUMN last_write uuid;
