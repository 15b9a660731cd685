-- The operators' list on a million finished transactions: run on a throwaway
-- database with the migrations applied (psql -f), then read the plans. Run from
-- the repository's root after a release build: the writer's two statements are
-- taken from the code as sent (`settle-bench --statement write|create`).
--   createdb settle_explain && for f in migrations/*.sql; do psql -d settle_explain -f $f; done
--   psql -d settle_explain -f bench/admin_million.sql
INSERT INTO saga_definitions (name, version, spec, digest) VALUES
 ('order-checkout', 1, '{"name":"order-checkout","steps":[{"name":"reserve-inventory","action":{"url":"http://inventory:7101/reservations"},"compensation":{"url":"http://inventory:7101/reservations/release"}},{"name":"charge-payment","action":{"url":"http://payments:7102/charges"},"compensation":{"url":"http://payments:7102/refunds"}},{"name":"notify-customer","action":{"url":"http://mail:7103/emails"}}]}', 'd1'),
 ('refund', 1, '{"name":"refund","steps":[{"name":"refund-payment","action":{"url":"http://payments:7102/refunds"}}]}', 'd2'),
 ('rare', 1, '{"name":"rare","steps":[{"name":"fax-customs","action":{"url":"http://customs:7200/faxes"}}]}', 'd3');
-- 1,000,000 finished sagas created over 30 days (5% compensated, 10% refunds),
-- 200 stuck and 500 running ones; ids are v7-like (creation time first).
INSERT INTO transactions (id, kind, definition, version, state, input, progress, request_digest, lease_until, fence, created_at, updated_at, next_attempt_at)
SELECT (lpad(to_hex((extract(epoch from ts) * 1000)::bigint), 12, '0') || '7' || substr(md5(g::text), 1, 19))::uuid,
       'saga', CASE WHEN g % 10 = 0 THEN 'refund' ELSE 'order-checkout' END, 1,
       CASE WHEN g <= 1000000 THEN (CASE WHEN g % 20 = 0 THEN 'compensated' ELSE 'completed' END)
            WHEN g <= 1000200 THEN 'stuck' ELSE 'running' END,
       '{}', '{}', 'x', now() - interval '1 day', g, ts, ts + interval '2 seconds',
       CASE WHEN g > 1000200 THEN now() + interval '1 minute' END
  FROM generate_series(1, 1000700) g,
       LATERAL (SELECT now() - ((hashint4(g) & 2147483647)::bigint % 2592000000) * interval '1 millisecond' AS ts) t;
-- 100 sagas of a participant nobody else uses.
INSERT INTO transactions (id, kind, definition, version, state, input, progress, request_digest, lease_until, fence, created_at, updated_at)
SELECT gen_random_uuid(), 'saga', 'rare', 1, 'completed', '{}', '{}', 'x', now(), 0,
       now() - g * interval '1 hour', now() - g * interval '1 hour'
  FROM generate_series(1, 100) g;
VACUUM ANALYZE transactions;

-- The list query exactly as coordinator/src/store/admin.rs sends it (LIST; the
-- rare-terms variant differs only in its ORDER BY); the values bind per request,
-- so each execution gets a custom plan.
PREPARE list(text, text, text, bigint, timestamptz, uuid, bigint, int, bigint, timestamptz, timestamptz, timestamptz, timestamptz, text[], uuid, uuid) AS
SELECT id, kind, definition, version, state, reason, owner, created_at, updated_at, next_attempt_at, paused
  FROM transactions
 WHERE ($1::text IS NULL OR kind = $1)
   AND ($2::text IS NULL OR state = $2)
   AND ($3::text IS NULL OR definition = $3)
   AND ($4::bigint IS NULL OR created_at < now() - ($4 * interval '1 millisecond'))
   AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6::uuid))
   AND ($8::int IS NULL OR version = $8)
   AND ($9::bigint IS NULL OR (state IN ('running', 'compensating', 'stuck', 'active', 'preparing', 'committing', 'aborting')
                               AND created_at < now() - ($9 * interval '1 millisecond')))
   AND ($10::timestamptz IS NULL OR created_at >= $10)
   AND ($11::timestamptz IS NULL OR created_at < $11)
   AND ($12::timestamptz IS NULL OR updated_at >= $12)
   AND ($13::timestamptz IS NULL OR updated_at < $13)
   AND (cardinality($14::text[]) = 0 OR search_terms @> $14)
   AND ($15::uuid IS NULL OR id BETWEEN $15 AND $16::uuid)
 ORDER BY created_at DESC, id DESC
 LIMIT $7;
\echo '=== 1. stuck list: state=stuck, limit 50 (+1) ==='
EXPLAIN (ANALYZE, BUFFERS) EXECUTE list(NULL, 'stuck', NULL, NULL, NULL, NULL, 51, NULL, NULL, NULL, NULL, NULL, NULL, '{}', NULL, NULL);
\echo '=== 2. filtered list: participant=http://payments:7102/refunds AND state=compensated AND created in the last 7 days, limit 50 (+1) ==='
EXPLAIN (ANALYZE, BUFFERS) EXECUTE list(NULL, 'compensated', NULL, NULL, NULL, NULL, 51, NULL, NULL, now() - interval '7 days', NULL, NULL, NULL, '{url:http://payments:7102/refunds}', NULL, NULL);
\echo '=== 2b. filtered list: step=refund-payment (10% of rows), no state, limit 50 (+1) ==='
EXPLAIN (ANALYZE, BUFFERS) EXECUTE list(NULL, NULL, NULL, NULL, NULL, NULL, 51, NULL, NULL, NULL, NULL, NULL, NULL, '{step:refund-payment}', NULL, NULL);
\echo '=== 2c. in_flight_longer_than=1h, limit 50 (+1) ==='
EXPLAIN (ANALYZE, BUFFERS) EXECUTE list(NULL, NULL, NULL, NULL, NULL, NULL, 51, NULL, 3600000, NULL, NULL, NULL, NULL, '{}', NULL, NULL);
\echo '=== 2d. second page of the unfiltered list (keyset cursor) ==='
EXPLAIN (ANALYZE, BUFFERS) EXECUTE list(NULL, NULL, NULL, NULL, now() - interval '15 days', 'ffffffff-ffff-ffff-ffff-ffffffffffff', 51, NULL, NULL, NULL, NULL, NULL, NULL, '{}', NULL, NULL);
\echo '=== 3. id prefix: 8 hex digits (the search box), limit 50 (+1) ==='
SELECT substr(replace(id::text, '-', ''), 1, 8) AS p FROM transactions WHERE state = 'stuck' LIMIT 1 \gset
EXPLAIN (ANALYZE, BUFFERS) EXECUTE list(NULL, NULL, NULL, NULL, NULL, NULL, 51, NULL, NULL, NULL, NULL, NULL, NULL, '{}', (rpad(:'p', 32, '0'))::uuid, (rpad(:'p', 32, 'f'))::uuid);
\echo '=== counts per state (every list page) ==='
EXPLAIN (ANALYZE, BUFFERS) SELECT state, count(*) FROM transactions GROUP BY state;
\echo '=== rare participant (100 matches), the rare-terms query shape ==='
EXPLAIN (ANALYZE, BUFFERS)
SELECT id, kind, definition, version, state, reason, owner, created_at, updated_at, next_attempt_at, paused
  FROM transactions WHERE search_terms @> '{url:http://customs:7200}'
 ORDER BY created_at + interval '0 seconds' DESC, id DESC LIMIT 51;
\echo '=== counts: in-flight states exact, finished ones from statistics ==='
EXPLAIN (ANALYZE, BUFFERS) SELECT state, count(*) FROM transactions WHERE state IN (
    'running', 'compensating', 'stuck', 'active', 'preparing', 'committing', 'aborting') GROUP BY state;

-- The hot paths beside the operators' list, as the coordinator sends them.
\echo '=== recovery claim (coordinator/src/store/transactions.rs claim_due), generic plan ==='
PREPARE claim(text, bigint, bigint) AS
UPDATE transactions
   SET owner = $1, fence = nextval('settle_fence'),
       lease_until = now() + ($2::bigint * interval '1 millisecond')
 WHERE id IN (
       SELECT id FROM transactions
        WHERE state IN ('running', 'compensating', 'active', 'preparing', 'committing', 'aborting', 'stuck')
          AND next_attempt_at <= now()
          AND lease_until < now()
          AND NOT paused
        ORDER BY next_attempt_at
        LIMIT $3
        FOR UPDATE SKIP LOCKED)
RETURNING id;
SET plan_cache_mode = force_generic_plan;
BEGIN;
EXPLAIN (ANALYZE, BUFFERS) EXECUTE claim('explain', 15000, 100);
ROLLBACK;
\echo '=== group-commit state write (coordinator/src/store/batch.rs), generic plan on the writer''s connections ==='
SET enable_seqscan = off;
SET enable_hashjoin = off;
SET enable_mergejoin = off;
SELECT json_agg(json_build_object('id', id, 'fence', fence, 'write_id', gen_random_uuid(), 'state', 'running',
                                  'progress', '{}'::jsonb, 'reason', NULL, 'next_ms', NULL, 'due_now', false,
                                  'lease_ms', 15000, 'finished', false, 'notify', false,
                                  'events', json_build_array(json_build_object('kind', 'step_started', 'step', 'a',
                                                                               'actor', 'explain')))) AS w,
       array_agg(id) AS ids
  FROM (SELECT id, fence FROM transactions WHERE state = 'running' LIMIT 8) r \gset
\set write_batch `target/release/settle-bench --statement write`
PREPARE write_batch(jsonb, uuid[]) AS :write_batch;
BEGIN;
EXPLAIN (ANALYZE, BUFFERS) EXECUTE write_batch(:'w', :'ids');
ROLLBACK;
\echo '=== group creation (coordinator/src/store/create.rs), generic plan on the writer''s connections: 8 starts, one of them under an old version ==='
SELECT json_agg(json_build_object('id', gen_random_uuid(), 'kind', 'saga', 'definition', 'order-checkout',
                                  'version', CASE WHEN g = 8 THEN 0 ELSE 1 END, 'state', 'running',
                                  'input', '{}'::jsonb, 'progress', '{}'::jsonb, 'idempotency_key', 'explain-' || g,
                                  'request_digest', 'x', 'deadline_ms', 4102444800000, 'next_ms', NULL,
                                  'lease_ms', 15000, 'actor', 'explain')) AS c
  FROM generate_series(1, 8) g \gset
\set create_batch `target/release/settle-bench --statement create`
PREPARE create_batch(jsonb, text) AS :create_batch;
BEGIN;
EXPLAIN (ANALYZE, BUFFERS) EXECUTE create_batch(:'c', 'explain');
ROLLBACK;
\echo '=== the follow-up for starts not created: their idempotency keys ==='
EXPLAIN (ANALYZE) SELECT idempotency_key, id, request_digest FROM transactions WHERE idempotency_key = ANY('{explain-8}');
