-- Takes over expired pending deliveries: $1 kinds, $2 workflow types, $3 lease seconds, $4 limit.
-- A row whose last try got no answer (unconfirmed), or left without an outcome (no reason: the
-- worker died mid-send), may already have gone out: a possible duplicate.
WITH recovered AS (
    UPDATE signature_reminder_log l
    SET attempts = l.attempts + 1, lease_until = now() + $3::float8 * interval '1 second', updated_at = now()
    WHERE l.id IN (
        SELECT r.id
        FROM signature_reminder_log r
        JOIN signature_workflows w ON w.id = r.workflow_id
        WHERE r.state = 'pending'
        AND r.lease_until < now()
        AND r.kind = ANY($1::text[])
        AND (cardinality($2::text[]) = 0 OR w.workflow_type = ANY($2::text[]))
        ORDER BY r.id
        LIMIT $4 FOR UPDATE OF r SKIP LOCKED)
    RETURNING l.id AS log_id, l.workflow_id, l.kind, l.sequence, l.channel, l.idempotency_key, l.attempts, (l.unconfirmed
        OR l.reason IS NULL) AS possible_duplicate)
SELECT r.log_id, r.kind, r.sequence, r.channel, r.idempotency_key, r.attempts, true AS recovered, r.possible_duplicate, w.id, w.workflow_type, w.signer_email, w.signer_name, w.document_title, w.signing_url, w.signer_time_zone, w.status, w.requested_at, w.deadline_at, w.reminders_sent, w.last_reminded_at, w.expiry_warned_at, w.escalated_at
FROM recovered r
JOIN signature_workflows w ON w.id = r.workflow_id
ORDER BY r.log_id
