-- pgbench script: the durable write pattern of a 3-step saga, and nothing else.
-- Four statements, each its own commit (pgbench runs them in autocommit): the
-- insert that creates the saga, then one compare-and-set update per step outcome,
-- on a row shaped like Settle's `transactions` row with its indexes (the table is
-- created by scripts/bench.sh). One script transaction = one saga, so pgbench's
-- tps is the naive ceiling in sagas per second. Run with `-M prepared`: Settle
-- reuses prepared statements too, and `:saga_id` is then sent as a parameter.
INSERT INTO transactions (id, kind, state, input, progress, next_attempt_at, owner, lease_until, fence)
  VALUES (gen_random_uuid(), 'saga', 'running',
          '{"sku":"widget","quantity":1,"amount":10,"customer":"bench"}',
          '{"steps":{"a":{"state":"running","attempt":1}}}',
          now() + interval '30 seconds', 'bench', now() + interval '15 seconds', 1)
  RETURNING id AS saga_id \gset
UPDATE transactions
   SET progress = '{"steps":{"a":{"state":"succeeded","attempt":1,"output":{}},"b":{"state":"running","attempt":1}}}',
       next_attempt_at = now() + interval '30 seconds', lease_until = now() + interval '15 seconds', updated_at = now()
 WHERE id = :saga_id AND fence = 1;
UPDATE transactions
   SET progress = '{"steps":{"a":{"state":"succeeded","attempt":1,"output":{}},"b":{"state":"succeeded","attempt":1,"output":{}},"c":{"state":"running","attempt":1}}}',
       next_attempt_at = now() + interval '30 seconds', lease_until = now() + interval '15 seconds', updated_at = now()
 WHERE id = :saga_id AND fence = 1;
UPDATE transactions
   SET state = 'completed',
       progress = '{"steps":{"a":{"state":"succeeded","attempt":1,"output":{}},"b":{"state":"succeeded","attempt":1,"output":{}},"c":{"state":"succeeded","attempt":1,"output":{}}}}',
       next_attempt_at = NULL, updated_at = now()
 WHERE id = :saga_id AND fence = 1;
