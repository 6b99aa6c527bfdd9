-- The update half of a timeout chunk, rows whose own deadline_at passed: ?1 workflow types (JSON
-- array), ?2 timeout.after seconds (unused here), ?3 limit.
UPDATE signature_workflows
SET status = 'timed_out', timed_out_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE id IN (
    SELECT w.id
    FROM signature_workflows w
    WHERE w.status = 'pending'
    AND w.deadline_at IS NOT NULL
    AND unixepoch(w.deadline_at, 'subsec') <= unixepoch('now', 'subsec')
    AND (json_array_length(?1) = 0
        OR w.workflow_type IN (SELECT value FROM json_each(?1)))
    ORDER BY w.id
    LIMIT ?3)
RETURNING id, workflow_type, signer_email, signer_name, document_title, signing_url, signer_time_zone, status, requested_at, deadline_at, reminders_sent, last_reminded_at, expiry_warned_at, escalated_at
