-- Background jobs as their owners see them (GET /jobs). The queue itself is procrastinate's tables
-- (procrastinate_jobs, applied beside these migrations by storage/job_queue.py); `queue_job_id` links a job
-- to its queue entry. This row is the truth the API shows: status, progress, attempts, result.

CREATE TABLE jobs (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id           uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind              text NOT NULL,
    status            text NOT NULL DEFAULT 'queued'
                      CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    progress          double precision NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 1),
    step              text,
    attempts          integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts      integer NOT NULL CHECK (max_attempts >= 1),
    priority          integer NOT NULL DEFAULT 0,
    params            jsonb NOT NULL DEFAULT '{}'::jsonb,
    result            jsonb,
    error             text,
    -- One entry per attempt: {attempt, started_at, finished_at, error, retry_at}; the backoff between
    -- attempts is visible in these times.
    runs              jsonb NOT NULL DEFAULT '[]'::jsonb,
    queue_job_id      bigint,
    -- A file the job made (an export); deleted with the job's result when it expires.
    result_file_id    uuid REFERENCES files (id) ON DELETE SET NULL,
    result_expires_at timestamptz,
    -- Set by a cancel while the job runs; the run stops at its next check (within a second).
    cancel_requested  boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at       timestamptz
);
-- The owner's list, newest first (keyset on created_at, id).
CREATE INDEX jobs_user_idx ON jobs (user_id, created_at DESC, id DESC);
-- The per-user limit on jobs in flight.
CREATE INDEX jobs_in_flight_idx ON jobs (user_id) WHERE status IN ('queued', 'running');
-- The scheduler's expiry of job results.
CREATE INDEX jobs_result_expiry_idx ON jobs (result_expires_at) WHERE result_expires_at IS NOT NULL;

-- Files a job made for its owner (exports): listed with the user's files, never uploaded by a client.
ALTER TABLE files DROP CONSTRAINT files_category_check;
ALTER TABLE files ADD CONSTRAINT files_category_check
    CHECK (category IN ('avatar', 'persona_image', 'chat_attachment', 'knowledge_base', 'export'));
