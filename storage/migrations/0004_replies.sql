-- At most one AI reply streams per chat session at a time: the streaming assistant row is the claim.
CREATE UNIQUE INDEX messages_one_streaming_idx ON messages (session_id) WHERE status = 'streaming';
