-- `usage_hist_merge` as a merge of two sorted pair lists in PL/pgSQL, same results.
--
-- The SQL version (0020) is a query: Postgres plans it again in every statement that calls
-- it, and each call runs a grouping over `generate_series`. The usage projector calls it
-- twice for each rollup row a batch adds to, in three upserts per batch, so under load
-- the planning alone cost ~0.15 ms a statement (pg_stat_statements: the two global
-- rollup upserts took 0.6–0.8 ms for one row). PL/pgSQL keeps its plan for the session,
-- and the merge is one pass over both lists (docs/benchmarks.md, "Fewer plans in the
-- projector").
--
-- Both inputs are `{bucket, count, ...}` with buckets ascending and each once, as every
-- writer stores them (`hub_projections::rollups::to_sparse`); NULL is an empty histogram.

CREATE OR REPLACE FUNCTION usage_hist_merge(a bigint[], b bigint[]) RETURNS bigint[]
    LANGUAGE plpgsql
    IMMUTABLE
    PARALLEL SAFE AS
$$
DECLARE
    i  int := 1;
    j  int := 1;
    na int := coalesce(cardinality(a), 0);
    nb int := coalesce(cardinality(b), 0);
    r  bigint[] := '{}';
BEGIN
    WHILE i <= na OR j <= nb LOOP
        IF j > nb OR (i <= na AND a[i] < b[j]) THEN
            r := r || a[i:i + 1];
            i := i + 2;
        ELSIF i > na OR b[j] < a[i] THEN
            r := r || b[j:j + 1];
            j := j + 2;
        ELSE
            r := r || ARRAY[a[i], a[i + 1] + b[j + 1]];
            i := i + 2;
            j := j + 2;
        END IF;
    END LOOP;
    RETURN r;
END
$$;
