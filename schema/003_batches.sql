-- pacer schema, migration 3: batched dispatch.
-- One row per batch sent: jobs of one API with the same batch_key that went
-- out as one HTTP call. `requests` and `units` are what the batch was charged
-- against the lane's request and unit limits; after a restart the limiter
-- is rebuilt from them (a batch's members do not count one request each).
CREATE TABLE batches (
  id          INTEGER PRIMARY KEY,
  api         TEXT    NOT NULL,
  batch_key   TEXT    NOT NULL,
  items       INTEGER NOT NULL DEFAULT 0,
  requests    INTEGER NOT NULL DEFAULT 1,
  units       INTEGER NOT NULL DEFAULT 0,
  worker      TEXT,
  started_at  INTEGER NOT NULL
);
CREATE INDEX batches_started ON batches (api, started_at);

-- The batch an attempt went in; null for a job sent on its own.
ALTER TABLE attempts ADD COLUMN batch_id INTEGER;
