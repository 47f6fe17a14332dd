-- Conversation controls: greetings, variants, edits and tombstones, and `rev`, the per-session counter that
-- every change raises (insert, edit, delete, new variant, selection, a reply's end) so that `sync {after_rev}`
-- returns exactly what changed.

ALTER TABLE chat_sessions ADD COLUMN last_rev bigint NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN rev bigint NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN kind text NOT NULL DEFAULT 'message' CHECK (kind IN ('message', 'greeting'));
ALTER TABLE messages ADD COLUMN edited_at timestamptz;
-- The selected variant's index; `content`, `status` and `usage` are always the selected variant's, so every
-- reader (history, prompts, exports) sees the one that counts. `variants` holds them all once there is more
-- than one: [{index, content, status, usage, created_at}].
ALTER TABLE messages ADD COLUMN variant integer NOT NULL DEFAULT 0 CHECK (variant >= 0);
ALTER TABLE messages ADD COLUMN variants jsonb NOT NULL DEFAULT '[]'::jsonb;
-- A deleted message stays as a tombstone: its seq kept (seqs stay gap-free), its content and variants gone.
ALTER TABLE messages DROP CONSTRAINT messages_status_check;
ALTER TABLE messages ADD CONSTRAINT messages_status_check
    CHECK (status IN ('complete', 'streaming', 'stopped', 'failed', 'deleted'));

-- Existing conversations: every message counts as inserted once, in seq order.
UPDATE messages SET rev = seq;
UPDATE chat_sessions SET last_rev = last_seq;
-- No index on (session_id, rev): every send would maintain it (the durable-chat bench lost about 10 %), while
-- `sync {after_rev}` runs on reconnects only and reads one session's rows through (session_id, seq).
