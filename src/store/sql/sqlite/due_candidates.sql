-- Pending workflows for which some notice is due by time, in id order after ?8, at most ?9.
-- ?1 workflow types (JSON array; empty: all), ?2 max reminders, ?3 first after, ?4 every,
-- ?5 timeout after, ?6 expiry warning before, ?7 escalation after (seconds; NULL when the policy
-- has no such section).
SELECT w.id, w.workflow_type, w.signer_email, w.signer_name, w.document_title, w.signing_url, w.signer_time_zone, w.status, w.requested_at, w.deadline_at, w.reminders_sent, w.last_reminded_at, w.expiry_warned_at, w.escalated_at
FROM signature_workflows w
WHERE w.status = 'pending'
AND (json_array_length(?1) = 0
    OR w.workflow_type IN (SELECT value
        FROM json_each(?1)))
AND (coalesce(unixepoch(w.deadline_at, 'subsec'), unixepoch(w.requested_at, 'subsec') + ?5) IS NULL
    OR unixepoch('now', 'subsec') < coalesce(unixepoch(w.deadline_at, 'subsec'), unixepoch(w.requested_at, 'subsec') + ?5))
AND (?8 IS NULL
    OR w.id > ?8)
AND ((w.reminders_sent < ?2
        AND unixepoch('now', 'subsec') >= CASE WHEN w.reminders_sent = 0 THEN unixepoch(w.requested_at, 'subsec') + ?3 ELSE unixepoch(coalesce(w.last_reminded_at, w.requested_at), 'subsec') + ?4 END)
    OR (w.expiry_warned_at IS NULL
        AND unixepoch('now', 'subsec') >= coalesce(unixepoch(w.deadline_at, 'subsec'), unixepoch(w.requested_at, 'subsec') + ?5) - ?6)
    OR (w.escalated_at IS NULL
        AND w.reminders_sent >= ?2
        AND unixepoch('now', 'subsec') >= unixepoch(w.last_reminded_at, 'subsec') + ?7))
ORDER BY w.id
LIMIT ?9
