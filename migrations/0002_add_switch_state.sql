-- The provider switch in progress, if any: a restarted daemon finishes it (or its rollback)
-- instead of forgetting it. JSON object {from, to, from_ready, to_ready, stage, rollback};
-- NULL when no switch is in progress.
ALTER TABLE workspaces ADD COLUMN switch_state TEXT;
