-- A message can be charged more than once: its send (turn 0), and each regeneration or continuation of a
-- reply (turn = the reply's rev when that work started, unique per message). Each is refunded on its own.
ALTER TABLE message_charges ADD COLUMN turn bigint NOT NULL DEFAULT 0;
ALTER TABLE message_charges DROP CONSTRAINT message_charges_pkey;
ALTER TABLE message_charges ADD PRIMARY KEY (message_id, turn);
