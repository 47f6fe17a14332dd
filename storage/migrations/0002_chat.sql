-- Personas, chat sessions and their messages, and per-day persona activity for trending.

-- array_to_string is only STABLE (it could format any element type); for text[] it is immutable,
-- which a generated column needs.
CREATE FUNCTION parlor_join_tags(tags text[]) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN array_to_string(tags, ' ');

CREATE TABLE personas (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name            text NOT NULL,
    description     text NOT NULL DEFAULT '',
    personality     text NOT NULL DEFAULT '',
    greeting        text NOT NULL DEFAULT '',
    tags            text[] NOT NULL DEFAULT '{}',
    visibility      text NOT NULL DEFAULT 'private' CHECK (visibility IN ('private', 'public')),
    avatar_file_id  uuid,
    cloned_from     uuid REFERENCES personas (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    search          tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', name), 'A')
        || setweight(to_tsvector('english', parlor_join_tags(tags)), 'B')
        || setweight(to_tsvector('english', description), 'B')
        || setweight(to_tsvector('english', personality), 'C')
    ) STORED
);
CREATE INDEX personas_owner_idx ON personas (owner_id, created_at DESC);
CREATE INDEX personas_search_idx ON personas USING gin (search);
CREATE INDEX personas_public_idx ON personas (created_at DESC) WHERE visibility = 'public';

-- One row per persona per day: trending reads a handful of rows instead of scanning messages.
CREATE TABLE persona_activity (
    persona_id  uuid NOT NULL REFERENCES personas (id) ON DELETE CASCADE,
    day         date NOT NULL,
    chats       integer NOT NULL DEFAULT 0,
    messages    integer NOT NULL DEFAULT 0,
    PRIMARY KEY (persona_id, day)
);
CREATE INDEX persona_activity_day_idx ON persona_activity (day);

CREATE TABLE chat_sessions (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    persona_id  uuid REFERENCES personas (id) ON DELETE SET NULL,
    title       text NOT NULL,
    pinned      boolean NOT NULL DEFAULT false,
    -- The session row is the sequence: UPDATE ... SET last_seq = last_seq + 1 inside the insert's
    -- transaction locks the row, so seqs are gap-free and ordered even under concurrent sends.
    last_seq    bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chat_sessions_list_idx ON chat_sessions (user_id, pinned DESC, updated_at DESC, id DESC);

CREATE TABLE messages (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id   uuid NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    seq          bigint NOT NULL,
    role         text NOT NULL CHECK (role IN ('user', 'assistant')),
    content      text NOT NULL,
    status       text NOT NULL DEFAULT 'complete' CHECK (status IN ('complete', 'streaming', 'stopped', 'failed')),
    client_id    uuid,
    reply_to     uuid REFERENCES messages (id) ON DELETE SET NULL,
    usage        jsonb,
    attachments  jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (session_id, seq),
    UNIQUE (session_id, client_id)
);
CREATE INDEX messages_created_idx ON messages (created_at);
