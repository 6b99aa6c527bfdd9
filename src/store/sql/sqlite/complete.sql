-- Records one outcome: ?1 log id, ?2 state, ?3 provider message id, ?4 error, ?5 the retry delay
-- as a date modifier, ?6 reason code, ?7 unconfirmed. Only a row still pending changes.
UPDATE signature_reminder_log
SET state = ?2, provider_message_id = ?3, error = ?4, reason = ?6, unconfirmed = ?7, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), lease_until = CASE WHEN ?2 = 'pending' THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?5) END
WHERE id = ?1
AND state = 'pending'
