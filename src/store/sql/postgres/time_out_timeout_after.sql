-- Times out the next pending rows without deadline_at whose requested_at + $5 (timeout.after
-- seconds) passed, in requested_at order after ($6, $7) (the previous chunk's last key and id;
-- NULL at first), and logs a pending alert per channel. $1 workflow types, $2 channel names,
-- $3 lease seconds, $4 limit.
WITH expired AS (
    UPDATE signature_workflows w
    SET status = 'timed_out', timed_out_at = now()
    WHERE w.id IN (
        SELECT w.id
        FROM signature_workflows w
        WHERE w.status = 'pending'
        AND w.deadline_at IS NULL
        AND w.requested_at <= now() - $5::float8 * interval '1 second'
        AND (w.requested_at, w.id) > (coalesce($6::timestamptz, '-infinity'), coalesce($7::uuid, '00000000-0000-0000-0000-000000000000'))
        AND (cardinality($1::text[]) = 0 OR w.workflow_type = ANY($1::text[]))
        ORDER BY w.requested_at, w.id
        LIMIT $4 FOR UPDATE SKIP LOCKED)
    RETURNING w.id, w.workflow_type, w.signer_email, w.signer_name, w.document_title, w.signing_url, w.signer_time_zone, w.status, w.requested_at, w.deadline_at, w.reminders_sent, w.last_reminded_at, w.expiry_warned_at, w.escalated_at),
logged AS (
    INSERT INTO signature_reminder_log (workflow_id, kind, sequence, channel, state, attempts, idempotency_key, lease_until)
    SELECT e.id, 'timeout_alert', 1, ch.name, 'pending', 1, concat('signet:', e.id, ':timeout_alert:1:', ch.name), now() + $3::float8 * interval '1 second'
    FROM expired e
    CROSS JOIN unnest($2::text[]) AS ch(name)
    ON CONFLICT (workflow_id, kind, sequence, channel) DO NOTHING
    RETURNING id AS log_id, workflow_id, channel, idempotency_key, attempts)
SELECT l.log_id, 'timeout_alert' AS kind, 1 AS sequence, l.channel, l.idempotency_key, l.attempts, false AS recovered, false AS possible_duplicate, w.id, w.workflow_type, w.signer_email, w.signer_name, w.document_title, w.signing_url, w.signer_time_zone, w.status, w.requested_at, w.deadline_at, w.reminders_sent, w.last_reminded_at, w.expiry_warned_at, w.escalated_at
FROM expired w
LEFT JOIN logged l ON l.workflow_id = w.id
ORDER BY w.id, l.channel
