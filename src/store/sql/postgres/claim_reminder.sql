-- Claims the next reminder of those of $8 (workflow ids) still due, locking them with SKIP LOCKED,
-- and logs a pending row per channel of $9, leased for $10 seconds, in one statement; the rows
-- keep the workflow's `last_reminded_at` from before the claim (for undoing it, release_undo).
-- $1 workflow types (empty: all), $2 max reminders, $3 first after, $4 every, $5 timeout after,
-- $6 expiry warning before, $7 escalation after (seconds; NULL when the policy has no such
-- section).
WITH claimed AS (
    UPDATE signature_workflows w
    SET reminders_sent = w.reminders_sent + 1, last_reminded_at = now()
    FROM signature_workflows before
    WHERE before.id = w.id
    AND w.id IN (
        SELECT w.id
        FROM signature_workflows w
        WHERE w.id = ANY($8::uuid[])
        AND w.status = 'pending'
        AND (cardinality($1::text[]) = 0 OR w.workflow_type = ANY($1::text[]))
        AND (coalesce(w.deadline_at, w.requested_at + $5::float8 * interval '1 second') IS NULL OR now() < coalesce(w.deadline_at, w.requested_at + $5::float8 * interval '1 second'))
        AND (w.reminders_sent < $2::int AND now() >= CASE WHEN w.reminders_sent = 0 THEN w.requested_at + $3::float8 * interval '1 second' ELSE coalesce(w.last_reminded_at, w.requested_at) + $4::float8 * interval '1 second' END)
        ORDER BY w.id FOR UPDATE SKIP LOCKED)
    RETURNING w.id, w.workflow_type, w.signer_email, w.signer_name, w.document_title, w.signing_url, w.signer_time_zone, w.status, w.requested_at, w.deadline_at, w.reminders_sent, w.last_reminded_at, w.expiry_warned_at, w.escalated_at, before.last_reminded_at AS previous_reminded_at),
logged AS (
    INSERT INTO signature_reminder_log (workflow_id, kind, sequence, channel, state, attempts, idempotency_key, lease_until, previous_reminded_at)
    SELECT c.id, 'reminder', c.reminders_sent, ch.name, 'pending', 1, concat('signet:', c.id, ':reminder:', c.reminders_sent, ':', ch.name), now() + $10::float8 * interval '1 second', c.previous_reminded_at
    FROM claimed c
    CROSS JOIN unnest($9::text[]) AS ch(name)
    ON CONFLICT (workflow_id, kind, sequence, channel) DO NOTHING
    RETURNING id AS log_id, workflow_id, kind, sequence, channel, idempotency_key, attempts)
SELECT l.log_id, l.kind, l.sequence, l.channel, l.idempotency_key, l.attempts, false AS recovered, false AS possible_duplicate, w.id, w.workflow_type, w.signer_email, w.signer_name, w.document_title, w.signing_url, w.signer_time_zone, w.status, w.requested_at, w.deadline_at, w.reminders_sent, w.last_reminded_at, w.expiry_warned_at, w.escalated_at
FROM logged l
JOIN claimed w ON w.id = l.workflow_id
ORDER BY w.id, l.channel
