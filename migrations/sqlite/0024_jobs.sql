-- The one jobs table: every piece of background work, enqueued in the transaction that caused
-- it. A claim leases a row by pushing `run_at` past now under a fresh `lease_token`; when the
-- lease runs out the row is due again. Done rows are deleted; `dead` ones are the engine's
-- dead-letter queue.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    tenant_id TEXT,
    reference TEXT,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    run_at TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT,
    lease_owner TEXT,
    lease_token TEXT,
    last_error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX jobs_due ON jobs (kind, run_at) WHERE status <> 'dead';
CREATE INDEX jobs_reference ON jobs (reference, kind);

-- Deliveries and messages not yet settled move onto it; their own rows keep what they record.
INSERT INTO jobs (id, kind, tenant_id, reference, payload, status, run_at, attempts, max_attempts, created_at, updated_at)
SELECT 'job_' || id, 'webhook.deliver', tenant_id, id, '{}', 'queued', COALESCE(next_attempt_at, created_at),
       attempt, max_attempts, created_at, updated_at
FROM webhook_deliveries WHERE status IN ('pending', 'retrying');

INSERT INTO jobs (id, kind, tenant_id, reference, payload, status, run_at, attempts, max_attempts, created_at, updated_at)
SELECT 'job_' || id, 'message.send', tenant_id, id, '{}', 'queued', next_attempt_at, attempts, NULL, created_at, created_at
FROM outbound_messages WHERE status = 'pending';
