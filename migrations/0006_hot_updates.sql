-- Room on every page of `transactions` for the new versions of its rows.
-- A saga's writes between its start and its end change only unindexed columns
-- (progress, lease, timestamps; the state writer keeps `next_attempt_at` when it
-- was already due), so Postgres can write them as heap-only tuples: no new entry
-- in any of the table's six indexes, provided the row's page has room. Pages filled
-- to 100 % have none, so every step's write used to touch every index.
ALTER TABLE transactions SET (fillfactor = 80);
