-- SQLite's form of the sixth migration (PostgreSQL's is in ../postgres/; the two differ only
-- in their JSON functions and in how columns are dropped).
--
-- A workspace's configuration, lifecycle state and agent channel become one JSON column each
-- (`spec`, `state`, `agent`), so that a new field of the state changes no SQL; `generation`
-- stays a column of its own, since writes are fenced on it. Events go back to a plain table
-- keyed by `(workspace_id, seq)`: a workspace's events are found by its key, and removed with
-- it.

ALTER TABLE workspaces ADD COLUMN spec TEXT NOT NULL DEFAULT '';
ALTER TABLE workspaces ADD COLUMN state TEXT NOT NULL DEFAULT '';
ALTER TABLE workspaces ADD COLUMN agent TEXT NOT NULL DEFAULT '';

-- Causes were stored comma-separated ('' for none); they become JSON arrays of names. A
-- failure's reason was JSON (`{"reason": …, "consecutive": n}`) or, before reasons were typed,
-- bare text, which is kept as a JSON string (the store still reads it). `json()` around a
-- nested value marks it as JSON, so that it is nested as an object, not quoted as text.
UPDATE workspaces SET
    spec = json_object(
        'name', name,
        'provider', provider,
        'image', image,
        'command', json(command),
        'env', json(env),
        'model', model),
    state = json_object(
        'phase', phase,
        'desired', desired,
        'ready_when', ready_when,
        'observed_generation', observed_generation,
        'pending', json(CASE WHEN pending = '' THEN '[]'
                        ELSE '["' || replace(pending, ',', '","') || '"]' END),
        'failure', json(CASE
            WHEN failure_reason IS NULL THEN NULL
            WHEN failure_reason LIKE '{"reason":%'
                THEN json_set(failure_reason, '$.generation', failure_generation)
            ELSE json_object('reason', failure_reason, 'consecutive', 1,
                             'generation', failure_generation) END),
        'backoff_attempt', backoff_attempt,
        'recent_failures', json(recent_failures),
        'last_cycle_started_at', last_cycle_started_at,
        'last_cycle_ended_at', last_cycle_ended_at,
        'healthy_since', healthy_since,
        'retry', json(CASE WHEN retry_at IS NULL THEN NULL ELSE json_object(
            'at', retry_at,
            'causes', json(CASE WHEN retry_causes = '' THEN '[]'
                           ELSE '["' || replace(retry_causes, ',', '","') || '"]' END)) END),
        'cycle', json(CASE WHEN cycle_generation IS NULL THEN NULL ELSE json_object(
            'generation', cycle_generation,
            'causes', json(CASE WHEN cycle_causes = '' THEN '[]'
                           ELSE '["' || replace(cycle_causes, ',', '","') || '"]' END),
            'started_at', cycle_started_at) END),
        'switch', json(switch_state)),
    agent = json_object(
        'generation', agent_generation,
        'token_hash', agent_token_hash,
        'url', agent_url,
        'last_heartbeat_at', agent_last_heartbeat_at);

ALTER TABLE workspaces DROP COLUMN name;
ALTER TABLE workspaces DROP COLUMN provider;
ALTER TABLE workspaces DROP COLUMN image;
ALTER TABLE workspaces DROP COLUMN command;
ALTER TABLE workspaces DROP COLUMN env;
ALTER TABLE workspaces DROP COLUMN model;
ALTER TABLE workspaces DROP COLUMN ready_when;
ALTER TABLE workspaces DROP COLUMN phase;
ALTER TABLE workspaces DROP COLUMN desired;
ALTER TABLE workspaces DROP COLUMN observed_generation;
ALTER TABLE workspaces DROP COLUMN pending;
ALTER TABLE workspaces DROP COLUMN failure_reason;
ALTER TABLE workspaces DROP COLUMN failure_generation;
ALTER TABLE workspaces DROP COLUMN backoff_attempt;
ALTER TABLE workspaces DROP COLUMN recent_failures;
ALTER TABLE workspaces DROP COLUMN last_cycle_started_at;
ALTER TABLE workspaces DROP COLUMN last_cycle_ended_at;
ALTER TABLE workspaces DROP COLUMN healthy_since;
ALTER TABLE workspaces DROP COLUMN retry_at;
ALTER TABLE workspaces DROP COLUMN retry_causes;
ALTER TABLE workspaces DROP COLUMN cycle_generation;
ALTER TABLE workspaces DROP COLUMN cycle_causes;
ALTER TABLE workspaces DROP COLUMN cycle_started_at;
ALTER TABLE workspaces DROP COLUMN switch_state;
ALTER TABLE workspaces DROP COLUMN agent_generation;
ALTER TABLE workspaces DROP COLUMN agent_token_hash;
ALTER TABLE workspaces DROP COLUMN agent_url;
ALTER TABLE workspaces DROP COLUMN agent_last_heartbeat_at;
ALTER TABLE workspaces DROP COLUMN last_event_seq;
ALTER TABLE workspaces DROP COLUMN last_event_id;

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
