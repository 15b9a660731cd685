-- Operator tooling: a transaction can be paused (recovery leaves it alone), a
-- stuck one can be resolved for good, and the admin list filters by participant
-- URL and step name through one GIN-indexed array of search terms.

ALTER TABLE transactions ADD COLUMN paused boolean NOT NULL DEFAULT false;

ALTER TABLE transactions DROP CONSTRAINT transactions_state_check;
ALTER TABLE transactions ADD CONSTRAINT transactions_state_check CHECK (state IN (
    'running', 'compensating', 'completed', 'compensated', 'stuck',
    'active', 'preparing', 'committing', 'committed', 'aborting', 'aborted',
    'resolved'));

-- 'http://h:1/a/b' -> {url:http://h:1, url:http://h:1/a, url:http://h:1/a/b}: a
-- participant filter by origin or by any path prefix is one exact array match.
CREATE FUNCTION settle_url_terms(url text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    u      text := rtrim(split_part(split_part(url, '?', 1), '#', 1), '/');
    origin text := substring(u from '^[A-Za-z][A-Za-z0-9+.-]*://[^/]*');
    terms  text[];
    acc    text;
    seg    text;
BEGIN
    IF url IS NULL THEN
        RETURN '{}';
    END IF;
    IF origin IS NULL THEN
        RETURN ARRAY['url:' || u];
    END IF;
    terms := ARRAY['url:' || origin];
    acc := origin;
    IF length(u) > length(origin) + 1 THEN
        FOREACH seg IN ARRAY string_to_array(substr(u, length(origin) + 2), '/') LOOP
            acc := acc || '/' || seg;
            terms := terms || ('url:' || acc);
        END LOOP;
    END IF;
    RETURN terms;
END $$;

-- Step names and participant URLs of a saga definition document.
CREATE FUNCTION settle_definition_terms(spec jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(array_agg(DISTINCT t), '{}') FROM (
        SELECT 'step:' || (s ->> 'name') AS t FROM jsonb_array_elements(spec -> 'steps') s
        UNION ALL
        SELECT unnest(settle_url_terms(s -> 'action' ->> 'url')) FROM jsonb_array_elements(spec -> 'steps') s
        UNION ALL
        SELECT unnest(settle_url_terms(s -> 'compensation' ->> 'url')) FROM jsonb_array_elements(spec -> 'steps') s
    ) x WHERE t IS NOT NULL
$$;

-- Branch names and participant URLs of a 2PC transaction's stored state.
CREATE FUNCTION settle_branch_terms(progress jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(array_agg(DISTINCT t), '{}') FROM (
        SELECT 'step:' || (b -> 'spec' ->> 'name') AS t FROM jsonb_array_elements(progress -> 'branches') b
        UNION ALL
        SELECT unnest(settle_url_terms(b -> 'spec' ->> 'prepare_url')) FROM jsonb_array_elements(progress -> 'branches') b
        UNION ALL
        SELECT unnest(settle_url_terms(b -> 'spec' ->> 'commit_url')) FROM jsonb_array_elements(progress -> 'branches') b
        UNION ALL
        SELECT unnest(settle_url_terms(b -> 'spec' ->> 'abort_url')) FROM jsonb_array_elements(progress -> 'branches') b
    ) x WHERE t IS NOT NULL
$$;

-- Computed once per definition version, copied into each saga at insert.
ALTER TABLE saga_definitions ADD COLUMN search_terms text[] NOT NULL DEFAULT '{}';
UPDATE saga_definitions SET search_terms = settle_definition_terms(spec);

CREATE FUNCTION settle_definition_search_terms() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.search_terms := settle_definition_terms(NEW.spec);
    RETURN NEW;
END $$;
CREATE TRIGGER saga_definitions_search_terms BEFORE INSERT ON saga_definitions
    FOR EACH ROW EXECUTE FUNCTION settle_definition_search_terms();

ALTER TABLE transactions ADD COLUMN search_terms text[] NOT NULL DEFAULT '{}';

CREATE FUNCTION settle_transaction_search_terms() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind = 'saga' THEN
        SELECT d.search_terms INTO NEW.search_terms
          FROM saga_definitions d WHERE d.name = NEW.definition AND d.version = NEW.version;
    ELSE
        NEW.search_terms := settle_branch_terms(NEW.progress);
    END IF;
    NEW.search_terms := coalesce(NEW.search_terms, '{}');
    RETURN NEW;
END $$;
CREATE TRIGGER transactions_search_terms_at_insert BEFORE INSERT ON transactions
    FOR EACH ROW EXECUTE FUNCTION settle_transaction_search_terms();
-- An interactive transaction learns its branches when it is closed.
CREATE TRIGGER transactions_search_terms_at_close BEFORE UPDATE ON transactions
    FOR EACH ROW WHEN (OLD.kind = 'twopc' AND OLD.state = 'active' AND NEW.state <> 'active')
    EXECUTE FUNCTION settle_transaction_search_terms();

UPDATE transactions t SET search_terms = d.search_terms
  FROM saga_definitions d WHERE t.kind = 'saga' AND d.name = t.definition AND d.version = t.version;
UPDATE transactions SET search_terms = settle_branch_terms(progress) WHERE kind = 'twopc';

CREATE INDEX transactions_search_terms ON transactions USING gin (search_terms);
