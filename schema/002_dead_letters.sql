-- pacer schema, migration 2: dead letters.
-- DEAD_LIST and DEAD_REPLAY walk the dead jobs in id order. The columns they
-- filter on (api; last_outcome, which gives the failure class; finished_at,
-- for "dead since") are in the index, so jobs that do not match are skipped
-- without reading their rows, and succeeded jobs are never visited at all.
CREATE INDEX jobs_dead ON jobs (id, api, last_outcome, finished_at)
  WHERE state = 'dead';
