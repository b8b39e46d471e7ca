-- pacer schema, migration 4: the jobs table and its indexes again, with the
-- tests of a job's state written as OR chains instead of IN lists.
-- SQLite evaluates a constant IN list of more than two values through a
-- temporary b-tree it builds each time a statement runs, and the CHECK
-- constraint and the partial indexes' predicates run on every write of a
-- job: claiming, ending and inserting a job each built several of them
-- (about a sixth of the broker's time in bench/e2e_throughput.sh). The
-- columns, constraints and indexes are otherwise those of migrations 1-2.
-- SQLite cannot alter a CHECK constraint in place: the table is copied.

CREATE TABLE jobs_v4 (
  id              INTEGER PRIMARY KEY,
  api             TEXT    NOT NULL,
  state           TEXT    NOT NULL DEFAULT 'queued'
                  CHECK (state = 'queued' OR state = 'running' OR
                         state = 'succeeded' OR state = 'retrying' OR
                         state = 'waiting_quota' OR state = 'dead' OR
                         state = 'canceled'),
  method          TEXT    NOT NULL,
  path            TEXT    NOT NULL,
  headers         TEXT,
  body            BLOB,
  priority        INTEGER NOT NULL DEFAULT 0,
  run_at          INTEGER NOT NULL,
  cost            INTEGER NOT NULL DEFAULT 1 CHECK (cost >= 1),
  batch_key       TEXT,
  idempotency_key TEXT UNIQUE,
  group_id        TEXT,
  max_attempts    INTEGER NOT NULL,
  timeout_ms      INTEGER NOT NULL,
  attempts        INTEGER NOT NULL DEFAULT 0,
  dispatches      INTEGER NOT NULL DEFAULT 0,
  lease_until     INTEGER,
  created_at      INTEGER NOT NULL,
  updated_at      INTEGER NOT NULL,
  finished_at     INTEGER,
  quota_deadline  INTEGER,
  last_outcome    TEXT,
  last_error      TEXT,
  result_status   INTEGER,
  result_headers  TEXT,
  result_body     BLOB
);
INSERT INTO jobs_v4 SELECT * FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_v4 RENAME TO jobs;

-- The same indexes as before. A query uses a partial index only when its
-- WHERE clause holds the index's predicate as written: broker/store.cc
-- writes them the same way (kReadyStates, kFinishedStates).
CREATE INDEX jobs_ready ON jobs (api, priority DESC, run_at, id)
  WHERE (state = 'queued' OR state = 'retrying' OR state = 'waiting_quota');
CREATE INDEX jobs_due ON jobs (api, run_at)
  WHERE (state = 'queued' OR state = 'retrying' OR state = 'waiting_quota');
CREATE INDEX jobs_running ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX jobs_finished ON jobs (finished_at)
  WHERE (state = 'succeeded' OR state = 'dead' OR state = 'canceled');
CREATE INDEX jobs_group ON jobs (group_id) WHERE group_id IS NOT NULL;
CREATE INDEX jobs_dead ON jobs (id, api, last_outcome, finished_at)
  WHERE state = 'dead';
