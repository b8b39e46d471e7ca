-- pacer schema, migration 5: jobs_due holds only jobs that wait for a time.
-- The index answers "when does the lane's next delayed or backed-off job
-- become ready" (the smallest run_at after now). A job submitted without a
-- delay has run_at = updated_at, is ready at once and never the answer, yet
-- every such job was inserted into the index and removed from it again when
-- claimed (~3% of the storage cost of a job's life, measured with callgrind
-- on pacer-bench-store). A job in a ready state with run_at > updated_at is
-- one that waits: a delay, a retry's backoff, a quota's reset. The broker's
-- clock never steps back within a process, so while it runs every ready job
-- with run_at > now is in the index; at start it reads the lanes' ready jobs
-- once instead (rows written before a clock step back, see broker/store.h).
DROP INDEX jobs_due;
CREATE INDEX jobs_due ON jobs (api, run_at)
  WHERE (state = 'queued' OR state = 'retrying' OR state = 'waiting_quota')
    AND run_at > updated_at;
