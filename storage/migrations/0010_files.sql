-- Uploaded files. Their bytes live in the blob store (a local folder or S3) under blob_key, and an image's
-- thumbnail under thumb_key; the row is what the API shows and what the storage quota counts.

CREATE TABLE files (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    category      text NOT NULL CHECK (category IN ('avatar', 'persona_image', 'chat_attachment', 'knowledge_base')),
    content_type  text NOT NULL,
    size          bigint NOT NULL CHECK (size >= 0),           -- the stored file's bytes (a processed image's)
    stored_bytes  bigint NOT NULL CHECK (stored_bytes >= size), -- what the quota counts: the file and its thumbnail
    width         integer CHECK (width > 0),
    height        integer CHECK (height > 0),
    filename      text NOT NULL,
    blob_key      text NOT NULL UNIQUE,
    thumb_key     text UNIQUE,
    etag          text NOT NULL,                                -- sha256 of the stored bytes, hex
    attached_at   timestamptz,                                  -- first sent with a message
    -- clock_timestamp(): files made in one transaction keep their order.
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX files_user_idx ON files (user_id, created_at DESC, id DESC);
-- Chat attachments never sent: the scheduler removes them after a day.
CREATE INDEX files_unsent_idx ON files (created_at) WHERE category = 'chat_attachment' AND attached_at IS NULL;

-- Bytes counted against the plan's storage limit, changed in the same transaction as the files rows
-- (a conditional UPDATE of this one row: concurrent uploads queue on it and can never pass the limit).
ALTER TABLE users ADD COLUMN storage_used bigint NOT NULL DEFAULT 0 CHECK (storage_used >= 0);
ALTER TABLE users ADD COLUMN avatar_file_id uuid REFERENCES files (id) ON DELETE SET NULL;
ALTER TABLE personas
    ADD CONSTRAINT personas_avatar_file_fk FOREIGN KEY (avatar_file_id) REFERENCES files (id) ON DELETE SET NULL;

-- Blobs to delete from the blob store once `due_at` passes. An upload registers its keys here before it
-- writes them (due in an hour) and takes them off in the transaction that stores the file row, so a crash
-- or a refused upload leaves a key to sweep, never an unreferenced blob; a deleted file row (also one
-- deleted by cascade with its user) puts its keys here, due at once.
CREATE TABLE blob_sweep (
    key     text PRIMARY KEY,
    due_at  timestamptz NOT NULL
);
CREATE INDEX blob_sweep_due_idx ON blob_sweep (due_at);

CREATE FUNCTION files_sweep_blobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO blob_sweep (key, due_at) VALUES (OLD.blob_key, now())
    ON CONFLICT (key) DO UPDATE SET due_at = EXCLUDED.due_at;
    IF OLD.thumb_key IS NOT NULL THEN
        INSERT INTO blob_sweep (key, due_at) VALUES (OLD.thumb_key, now())
        ON CONFLICT (key) DO UPDATE SET due_at = EXCLUDED.due_at;
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER files_sweep_blobs AFTER DELETE ON files FOR EACH ROW EXECUTE FUNCTION files_sweep_blobs();
