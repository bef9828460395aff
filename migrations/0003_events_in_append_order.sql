-- Events in the order they were written, so that appending one touches only the end of the
-- table, whichever workspace it belongs to.
--
-- With `PRIMARY KEY (workspace_id, seq)`, every commit wrote into the index at its own
-- workspace's place: with a thousand workspaces restarting, a thousand scattered index pages
-- were rewritten every second, in the log and again when it was copied back (docs/
-- PERFORMANCE.md, seventh pass). Now:
--
-- * `id` is the order of writing (assigned by the store's writer, increasing; within a
--   workspace it increases with `seq`), so a new event goes at the end;
-- * a workspace's events are found from a sparse index, one entry every 64 events
--   (`seq % 64 = 1`): the nearest entry at or before the wanted `seq`, then forward by `id`;
-- * `workspaces.last_event_seq` (written with the state, in the same commit as the events)
--   says where a workspace's events end, so no read scans past them.
--
-- `(workspace_id, seq)` stays unique by construction: seq is assigned by the workspace's one
-- actor, and every commit carrying events also carries a fenced state write, so a stale
-- writer's events are never written.

ALTER TABLE workspaces ADD COLUMN last_event_seq BIGINT NOT NULL DEFAULT 0;

UPDATE workspaces SET last_event_seq =
    COALESCE((SELECT MAX(seq) FROM events WHERE events.workspace_id = workspaces.id), 0);

CREATE TABLE event_log (
    id           BIGINT NOT NULL PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    generation   BIGINT NOT NULL,
    at           BIGINT NOT NULL,
    kind         TEXT NOT NULL,
    data         TEXT NOT NULL  -- JSON object
);

-- Existing events keep their per-workspace order, each workspace's together.
INSERT INTO event_log (id, workspace_id, seq, generation, at, kind, data)
SELECT ROW_NUMBER() OVER (ORDER BY workspace_id, seq), workspace_id, seq, generation, at, kind, data
FROM events;

DROP TABLE events;

ALTER TABLE event_log RENAME TO events;

CREATE INDEX events_every_64th ON events (workspace_id, seq) WHERE seq % 64 = 1;

-- A deleted workspace's events are removed in the background, a range of ids at a time, so
-- that deleting a long-lived workspace never holds the writer (its events are spread over
-- everything written since it was created). One row per deleted workspace until done.
CREATE TABLE event_purges (
    workspace_id TEXT NOT NULL PRIMARY KEY,
    next_id      BIGINT NOT NULL,  -- the first id not looked at yet
    end_id       BIGINT NOT NULL   -- no event of the workspace has a higher id
);
