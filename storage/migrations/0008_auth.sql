-- Sessions revoked recently (logout, refresh-token reuse) are loaded at start so that their access
-- tokens stay refused after a restart: find them without scanning every rotated token.
CREATE INDEX refresh_tokens_revoked_idx ON refresh_tokens (revoked_at)
    WHERE revoked_at IS NOT NULL AND replaced_by IS NULL;
