-- pacer schema, migration 1: jobs, attempts, lane state.
-- Times are milliseconds since the Unix epoch. Applied by the broker at start
-- in one transaction; PRAGMA user_version records the applied migration.

CREATE TABLE jobs (
  id              INTEGER PRIMARY KEY,
  api             TEXT    NOT NULL,
  state           TEXT    NOT NULL DEFAULT 'queued'
                  CHECK (state IN ('queued', 'running', 'succeeded', 'retrying',
                                   'waiting_quota', 'dead', 'canceled')),
  method          TEXT    NOT NULL,
  path            TEXT    NOT NULL,
  headers         TEXT,             -- JSON object, never credentials
  body            BLOB,             -- serialized request body
  priority        INTEGER NOT NULL DEFAULT 0,
  run_at          INTEGER NOT NULL, -- eligible for dispatch from this time
  cost            INTEGER NOT NULL DEFAULT 1 CHECK (cost >= 1),
  batch_key       TEXT,
  idempotency_key TEXT UNIQUE,
  group_id        TEXT,
  max_attempts    INTEGER NOT NULL,
  timeout_ms      INTEGER NOT NULL,
  attempts        INTEGER NOT NULL DEFAULT 0, -- attempts used (429s do not count)
  dispatches      INTEGER NOT NULL DEFAULT 0, -- fencing token: the current attempt row
  lease_until     INTEGER,          -- running: requeue after this time
  created_at      INTEGER NOT NULL,
  updated_at      INTEGER NOT NULL,
  finished_at     INTEGER,
  quota_deadline  INTEGER,          -- waiting_quota: dead after this time
  last_outcome    TEXT,
  last_error      TEXT,
  result_status   INTEGER,
  result_headers  TEXT,             -- JSON object
  result_body     BLOB
);

-- The dispatch order: per lane, highest priority first, then oldest.
CREATE INDEX jobs_ready ON jobs (api, priority DESC, run_at, id)
  WHERE state IN ('queued', 'retrying', 'waiting_quota');
-- Lease expiry of running jobs.
CREATE INDEX jobs_running ON jobs (lease_until) WHERE state = 'running';
-- Retention purge and listing of finished jobs.
CREATE INDEX jobs_finished ON jobs (finished_at)
  WHERE state IN ('succeeded', 'dead', 'canceled');
CREATE INDEX jobs_group ON jobs (group_id) WHERE group_id IS NOT NULL;

-- One row per dispatch. `n` is the job's dispatch number (the fencing token).
CREATE TABLE attempts (
  job_id      INTEGER NOT NULL,
  n           INTEGER NOT NULL,
  api         TEXT    NOT NULL,
  cost        INTEGER NOT NULL,
  worker      TEXT,
  started_at  INTEGER NOT NULL,
  finished_at INTEGER,
  outcome     TEXT,
  status      INTEGER,
  error       TEXT,
  duration_ms REAL,
  observation TEXT,                 -- JSON: the quota observation of the response
  PRIMARY KEY (job_id, n)
) WITHOUT ROWID;

-- Rebuilding each lane's limiter after a restart reads the recent starts.
CREATE INDEX attempts_started ON attempts (api, started_at);

-- Per-lane state that must survive a restart (pauses, learned limits).
CREATE TABLE lanes (
  api          TEXT PRIMARY KEY,
  paused_until INTEGER,
  pause_reason TEXT,
  state        TEXT,                -- JSON: learned limits and similar
  updated_at   INTEGER NOT NULL
);

-- When the next delayed or backed-off job of a lane becomes ready.
CREATE INDEX jobs_due ON jobs (api, run_at)
  WHERE state IN ('queued', 'retrying', 'waiting_quota');
