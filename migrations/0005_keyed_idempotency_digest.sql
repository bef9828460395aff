-- Bodies of idempotent creates are now stored as an HMAC under the idempotency key (a file
-- beside the secrets key), not as a bare SHA-256: a reader of the database alone could
-- confirm a guessed body, secrets included. The bare digests cannot be converted (the bodies
-- are gone), so they are erased; a replay of such a key answers its workspace.
UPDATE idempotency_keys SET body_hash = '' WHERE body_hash NOT LIKE 'hmac-sha256:%';
