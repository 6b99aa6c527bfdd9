-- A pending log row: ?1 workflow id, ?2 kind, ?3 sequence, ?4 channel, ?5 idempotency key,
-- ?6 the lease as a date modifier ('+900.000 seconds'), ?7 for a reminder the workflow's
-- `last_reminded_at` before the claim. No row back: it is logged already.
INSERT INTO signature_reminder_log (workflow_id, kind, sequence, channel, state, attempts, idempotency_key, lease_until, previous_reminded_at)
VALUES (?1, ?2, ?3, ?4, 'pending', 1, ?5, strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?6), ?7)
ON CONFLICT (workflow_id, kind, sequence, channel) DO NOTHING
RETURNING id, attempts
