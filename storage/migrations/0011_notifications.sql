-- Notifications stored per user (what GET /notifications lists and the `notification` event carries), each
-- user's per-kind delivery preferences, and the push devices the user registered.

CREATE TABLE notifications (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('reply_ready', 'job_done', 'subscription', 'credits', 'broadcast')),
    title       text NOT NULL,
    body        text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}'::jsonb,
    read_at     timestamptz,
    -- clock_timestamp(): notifications made in one transaction keep their order.
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- The user's list, newest first (keyset on created_at, id).
CREATE INDEX notifications_user_idx ON notifications (user_id, created_at DESC, id DESC);
-- The unread count and the unread-only list.
CREATE INDEX notifications_unread_idx ON notifications (user_id, created_at DESC, id DESC) WHERE read_at IS NULL;

-- A row only for a kind the user changed; a kind without one has the defaults (in_app and push on).
CREATE TABLE notification_preferences (
    user_id  uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind     text NOT NULL CHECK (kind IN ('reply_ready', 'job_done', 'subscription', 'credits', 'broadcast')),
    in_app   boolean NOT NULL DEFAULT true,
    push     boolean NOT NULL DEFAULT true,
    PRIMARY KEY (user_id, kind)
);

-- FCM registration tokens. A token belongs to one user at a time: the newest user to register it.
CREATE TABLE devices (
    token         text PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    platform      text NOT NULL CHECK (platform IN ('android', 'ios', 'web')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_user_idx ON devices (user_id);
