-- Records outcomes, element by element: $1 log ids, $2 states, $3 provider message ids,
-- $4 errors, $5 seconds until a retry, $6 reason codes, $7 unconfirmed flags. Only rows still
-- pending change.
UPDATE signature_reminder_log l
SET state = o.state, provider_message_id = o.provider_message_id, error = o.error, reason = o.reason, unconfirmed = o.unconfirmed, updated_at = now(), lease_until = CASE WHEN o.state = 'pending' THEN now() + o.retry_after * interval '1 second' END
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::text[], $7::bool[]) AS o(id, state, provider_message_id, error, retry_after, reason, unconfirmed)
WHERE l.id = o.id
AND l.state = 'pending'
