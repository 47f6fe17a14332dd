-- A streaming reply is owned by the process running it for as long as its lease lasts: the owner renews
-- `lease_until` while it streams; any process that finds the lease expired (its owner died) ends the reply.
ALTER TABLE messages ADD COLUMN lease_until timestamptz;
UPDATE messages SET lease_until = now() WHERE status = 'streaming';
CREATE INDEX messages_streaming_lease_idx ON messages (lease_until) WHERE status = 'streaming';
