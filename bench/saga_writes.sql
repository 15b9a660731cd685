-- pgbench script: exactly the durable write pattern of a 3-step saga, four separate
-- commits (create, then one per step outcome), on a row shaped like Settle's.
-- pgbench's tps for this script is the naive ceiling in sagas per second.
\set n random(1, 2000000000)
INSERT INTO saga_rows (id, state, progress) VALUES (md5(:n::text || ':' || :client_id::text)::uuid, 'running', '{"steps":[1,0,0]}') ON CONFLICT DO NOTHING;
UPDATE saga_rows SET state = 'running', progress = '{"steps":[2,1,0]}', updated_at = now() WHERE id = md5(:n::text || ':' || :client_id::text)::uuid;
UPDATE saga_rows SET state = 'running', progress = '{"steps":[2,2,1]}', updated_at = now() WHERE id = md5(:n::text || ':' || :client_id::text)::uuid;
UPDATE saga_rows SET state = 'completed', progress = '{"steps":[2,2,2]}', updated_at = now() WHERE id = md5(:n::text || ':' || :client_id::text)::uuid;
