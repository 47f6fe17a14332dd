-- A persona's knowledge base: entries (a text, an uploaded file's text, or a character book entry from an
-- imported Character Card) split into chunks that full-text search ranks against a chat message.

CREATE TABLE knowledge_entries (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    persona_id    uuid NOT NULL REFERENCES personas (id) ON DELETE CASCADE,
    title         text NOT NULL,
    source        text NOT NULL CHECK (source IN ('text', 'file', 'character_book')),
    filename      text,           -- the uploaded file's name (source 'file' only)
    content_type  text,           -- what the file's content turned out to be (source 'file' only)
    content       text NOT NULL,  -- the whole text: what the chunks were cut from, and what export writes
    keys          text[] NOT NULL DEFAULT '{}',  -- a character book entry's trigger words
    chars         integer NOT NULL,
    chunks        integer NOT NULL,
    -- clock_timestamp(), not now(): entries added in one transaction (a card's book) keep their order.
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX knowledge_entries_persona_idx ON knowledge_entries (persona_id, created_at DESC, id DESC);

-- persona_id is copied from the entry so a search filters chunks without a join.
CREATE TABLE knowledge_chunks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entry_id    uuid NOT NULL REFERENCES knowledge_entries (id) ON DELETE CASCADE,
    persona_id  uuid NOT NULL REFERENCES personas (id) ON DELETE CASCADE,
    position    integer NOT NULL,
    content     text NOT NULL,
    search      tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
    UNIQUE (entry_id, position)
);
CREATE INDEX knowledge_chunks_persona_idx ON knowledge_chunks (persona_id);
CREATE INDEX knowledge_chunks_search_idx ON knowledge_chunks USING gin (search);

-- OR of many tsqueries (tsquery_or is the function behind `||`). Strict, so NULLs are skipped and no rows
-- give NULL, which matches nothing.
CREATE AGGREGATE parlor_tsquery_or(tsquery) (SFUNC = tsquery_or, STYPE = tsquery);
