-- One page of branch 5 of a walk through the due workflows (expiry warning, requested_at + timeout.after: by requested_at); see
-- src/store/postgres.rs. $8 the walk's instant, $9 and $10 the last row's key and id (NULL on the
-- first page), $11 the limit.
-- $1 workflow types (empty: all), $2 max reminders, $3 first after, $4 every, $5 timeout after,
-- $6 expiry warning before, $7 escalation after (seconds; NULL when the policy has no such
-- section).
SELECT w.id, w.workflow_type, w.signer_email, w.signer_name, w.document_title, w.signing_url, w.signer_time_zone, w.status, w.requested_at, w.deadline_at, w.reminders_sent, w.last_reminded_at, w.expiry_warned_at, w.escalated_at
FROM signature_workflows w
WHERE w.status = 'pending'
AND w.deadline_at IS NULL
AND w.requested_at > coalesce($8::timestamptz, now()) - $5::float8 * interval '1 second'
AND w.requested_at <= coalesce($8::timestamptz, now()) + ($6::float8 - $5::float8) * interval '1 second'
AND NOT ((w.reminders_sent = 0
        AND w.requested_at <= coalesce($8::timestamptz, now()) - $3::float8 * interval '1 second')
    OR (w.reminders_sent > 0
        AND coalesce( w.last_reminded_at <= coalesce($8::timestamptz, now()) - least($4::float8, $7::float8) * interval '1 second', w.requested_at <= coalesce($8::timestamptz, now()) - $4::float8 * interval '1 second')))
AND (w.last_reminded_at IS NULL
    OR w.last_reminded_at < coalesce($8::timestamptz, now()))
AND (w.requested_at, w.id) > (coalesce($9::timestamptz, '-infinity'), coalesce($10::uuid, '00000000-0000-0000-0000-000000000000'))
AND w.status = 'pending'
AND (cardinality($1::text[]) = 0
    OR w.workflow_type = ANY($1::text[]))
AND (coalesce(w.deadline_at, w.requested_at + $5::float8 * interval '1 second') IS NULL
    OR now() < coalesce(w.deadline_at, w.requested_at + $5::float8 * interval '1 second'))
AND ((w.reminders_sent < $2::int
        AND now() >= CASE WHEN w.reminders_sent = 0 THEN w.requested_at + $3::float8 * interval '1 second' ELSE coalesce(w.last_reminded_at, w.requested_at) + $4::float8 * interval '1 second' END)
    OR (w.expiry_warned_at IS NULL
        AND now() >= coalesce(w.deadline_at, w.requested_at + $5::float8 * interval '1 second') - $6::float8 * interval '1 second')
    OR (w.escalated_at IS NULL
        AND w.reminders_sent >= $2::int
        AND now() >= w.last_reminded_at + $7::float8 * interval '1 second'))
ORDER BY w.requested_at, w.id
LIMIT $11
