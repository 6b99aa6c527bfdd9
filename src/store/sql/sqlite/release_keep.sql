-- Leaves a delivery a run did not send due for the next run without counting the attempt:
-- ?1 log id, ?2 reason code, ?3 error. Only a row still pending changes.
UPDATE signature_reminder_log
SET lease_until = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), attempts = max(attempts - 1, 0), reason = ?2, error = ?3, unconfirmed = 0, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE id = ?1
AND state = 'pending'
