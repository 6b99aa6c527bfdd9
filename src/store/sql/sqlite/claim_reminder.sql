-- The update half of a reminder claim: those of ?8 (workflow ids, JSON array) still due.
-- ?1 workflow types (JSON array; empty: all), ?2 max reminders, ?3 first after, ?4 every,
-- ?5 timeout after, ?6 expiry warning before, ?7 escalation after (seconds; NULL when the policy
-- has no such section).
UPDATE signature_workflows AS w
SET reminders_sent = reminders_sent + 1, last_reminded_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE w.id IN (SELECT value
    FROM json_each(?8))
AND w.status = 'pending'
AND (json_array_length(?1) = 0
    OR w.workflow_type IN (SELECT value
        FROM json_each(?1)))
AND (coalesce(unixepoch(w.deadline_at, 'subsec'), unixepoch(w.requested_at, 'subsec') + ?5) IS NULL
    OR unixepoch('now', 'subsec') < coalesce(unixepoch(w.deadline_at, 'subsec'), unixepoch(w.requested_at, 'subsec') + ?5))
AND (w.reminders_sent < ?2
    AND unixepoch('now', 'subsec') >= CASE WHEN w.reminders_sent = 0 THEN unixepoch(w.requested_at, 'subsec') + ?3 ELSE unixepoch(coalesce(w.last_reminded_at, w.requested_at), 'subsec') + ?4 END)
RETURNING id, workflow_type, signer_email, signer_name, document_title, signing_url, signer_time_zone, status, requested_at, deadline_at, reminders_sent, last_reminded_at, expiry_warned_at, escalated_at
