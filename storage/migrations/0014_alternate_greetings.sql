-- A persona's other greetings (Character Cards' `alternate_greetings`, SPEC §13): the variants of a new
-- chat's greeting message. text[] like `tags`: every element is text by the column's type, asyncpg maps it
-- to list[str] without a codec, and an update replaces it whole (COALESCE($n::text[], ...)) as it does tags.
-- Their number and length are the API's limits (core/limits.py), checked there and clipped to on card
-- import, not here, so changing a limit needs no migration. A constant default: no table rewrite.
ALTER TABLE personas ADD COLUMN alternate_greetings text[] NOT NULL DEFAULT '{}';
