-- Where each workspace's events end, by id: a read of its events stops there, whatever else
-- was written after (a read could otherwise scan on to the end of the table when its count
-- of events to read is off, as after a gap in `seq` left by a commit that failed while the
-- next one was already queued). NULL: no events.
ALTER TABLE workspaces ADD COLUMN last_event_id BIGINT;

CREATE INDEX events_while_migrating ON events (workspace_id, seq);

UPDATE workspaces SET last_event_id =
    (SELECT MAX(id) FROM events WHERE events.workspace_id = workspaces.id);

DROP INDEX events_while_migrating;
