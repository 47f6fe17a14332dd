-- A public persona's definition (personality, knowledge) stays its owner's unless the owner makes it
-- remixable: only then may others read it, export it and clone it. Anyone may still chat with it.
ALTER TABLE personas ADD COLUMN remixable boolean NOT NULL DEFAULT false;

-- What other users' searches match: `search` without the personality unless the persona is remixable, so a
-- search cannot be used to probe a definition word by word. The owner's searches use `search`.
ALTER TABLE personas ADD COLUMN shared_search tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('english', name), 'A')
    || setweight(to_tsvector('english', parlor_join_tags(tags)), 'B')
    || setweight(to_tsvector('english', description), 'B')
    || setweight(to_tsvector('english', CASE WHEN remixable THEN personality ELSE '' END), 'C')
) STORED;
CREATE INDEX personas_shared_search_idx ON personas USING gin (shared_search) WHERE visibility = 'public';
