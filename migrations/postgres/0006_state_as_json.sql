-- PostgreSQL's form of the sixth migration (SQLite's is in ../sqlite/; the two differ only
-- in their JSON functions and in how columns are dropped).
--
-- A workspace's configuration, lifecycle state and agent channel become one JSON column each
-- (`spec`, `state`, `agent`, JSON as TEXT like every JSON value of the schema), so that a new
-- field of the state changes no SQL; `generation` stays a column of its own, since writes are
-- fenced on it. Events go back to a plain table keyed by `(workspace_id, seq)`: a workspace's
-- events are found by its key, and removed with it.

ALTER TABLE workspaces
    ADD COLUMN spec TEXT NOT NULL DEFAULT '',
    ADD COLUMN state TEXT NOT NULL DEFAULT '',
    ADD COLUMN agent TEXT NOT NULL DEFAULT '';

-- Causes were stored comma-separated ('' for none); they become JSON arrays of names. A
-- failure's reason was JSON (`{"reason": …, "consecutive": n}`) or, before reasons were typed,
-- bare text, which is kept as a JSON string (the store still reads it).
UPDATE workspaces SET
    spec = jsonb_build_object(
        'name', name,
        'provider', provider,
        'image', image,
        'command', command::jsonb,
        'env', env::jsonb,
        'model', model)::text,
    state = jsonb_build_object(
        'phase', phase,
        'desired', desired,
        'ready_when', ready_when,
        'observed_generation', observed_generation,
        'pending', CASE WHEN pending = '' THEN '[]'::jsonb
                   ELSE ('["' || replace(pending, ',', '","') || '"]')::jsonb END,
        'failure', CASE
            WHEN failure_reason IS NULL THEN NULL
            WHEN failure_reason LIKE '{"reason":%'
                THEN failure_reason::jsonb || jsonb_build_object('generation', failure_generation)
            ELSE jsonb_build_object('reason', failure_reason, 'consecutive', 1,
                                    'generation', failure_generation) END,
        'backoff_attempt', backoff_attempt,
        'recent_failures', recent_failures::jsonb,
        'last_cycle_started_at', last_cycle_started_at,
        'last_cycle_ended_at', last_cycle_ended_at,
        'healthy_since', healthy_since,
        'retry', CASE WHEN retry_at IS NULL THEN NULL ELSE jsonb_build_object(
            'at', retry_at,
            'causes', CASE WHEN retry_causes = '' THEN '[]'::jsonb
                      ELSE ('["' || replace(retry_causes, ',', '","') || '"]')::jsonb END) END,
        'cycle', CASE WHEN cycle_generation IS NULL THEN NULL ELSE jsonb_build_object(
            'generation', cycle_generation,
            'causes', CASE WHEN cycle_causes = '' THEN '[]'::jsonb
                      ELSE ('["' || replace(cycle_causes, ',', '","') || '"]')::jsonb END,
            'started_at', cycle_started_at) END,
        'switch', switch_state::jsonb)::text,
    agent = jsonb_build_object(
        'generation', agent_generation,
        'token_hash', agent_token_hash,
        'url', agent_url,
        'last_heartbeat_at', agent_last_heartbeat_at)::text;

ALTER TABLE workspaces
    ALTER COLUMN spec DROP DEFAULT,
    ALTER COLUMN state DROP DEFAULT,
    ALTER COLUMN agent DROP DEFAULT,
    DROP COLUMN name,
    DROP COLUMN provider,
    DROP COLUMN image,
    DROP COLUMN command,
    DROP COLUMN env,
    DROP COLUMN model,
    DROP COLUMN ready_when,
    DROP COLUMN phase,
    DROP COLUMN desired,
    DROP COLUMN observed_generation,
    DROP COLUMN pending,
    DROP COLUMN failure_reason,
    DROP COLUMN failure_generation,
    DROP COLUMN backoff_attempt,
    DROP COLUMN recent_failures,
    DROP COLUMN last_cycle_started_at,
    DROP COLUMN last_cycle_ended_at,
    DROP COLUMN healthy_since,
    DROP COLUMN retry_at,
    DROP COLUMN retry_causes,
    DROP COLUMN cycle_generation,
    DROP COLUMN cycle_causes,
    DROP COLUMN cycle_started_at,
    DROP COLUMN switch_state,
    DROP COLUMN agent_generation,
    DROP COLUMN agent_token_hash,
    DROP COLUMN agent_url,
    DROP COLUMN agent_last_heartbeat_at,
    DROP COLUMN last_event_seq,
    DROP COLUMN last_event_id;

-- Events keyed by workspace. The events of workspaces deleted while their purge was still
-- going on are not carried over.
CREATE TABLE events_by_workspace (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    seq          BIGINT NOT NULL,
    generation   BIGINT NOT NULL,
    at           BIGINT NOT NULL,
    kind         TEXT NOT NULL,
    data         TEXT NOT NULL,  -- JSON object
    PRIMARY KEY (workspace_id, seq)
);

INSERT INTO events_by_workspace (workspace_id, seq, generation, at, kind, data)
SELECT workspace_id, seq, generation, at, kind, data FROM events
WHERE workspace_id IN (SELECT id FROM workspaces)
ORDER BY workspace_id, seq
ON CONFLICT (workspace_id, seq) DO NOTHING;

DROP TABLE events;
DROP TABLE event_purges;
ALTER TABLE events_by_workspace RENAME TO events;
