-- Leaves deliveries a run did not send due for the next run without counting the attempt: $1 log
-- ids, $2 reason codes, $3 errors. Only rows still pending change.
UPDATE signature_reminder_log l
SET lease_until = now(), attempts = greatest(l.attempts - 1, 0), reason = o.reason, error = o.error, unconfirmed = false, updated_at = now()
FROM unnest($1::bigint[], $2::text[], $3::text[]) AS o(id, reason, error)
WHERE l.id = o.id
AND l.state = 'pending'
