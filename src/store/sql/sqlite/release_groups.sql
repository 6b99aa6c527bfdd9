-- The claims of unsent deliveries (?1 log ids, JSON array) that have nothing left: every row of
-- their workflow, kind and sequence is among ?1 and pending. A reminder counts only while it is
-- the workflow's latest, and only when its rows remember the `last_reminded_at` before the claim
-- (rows claimed before migration 0003 do not). Each is undone with release_undo and
-- release_delete.
SELECT DISTINCT r.workflow_id, r.kind, r.sequence, r.previous_reminded_at
FROM signature_reminder_log r
JOIN signature_workflows w ON w.id = r.workflow_id
WHERE r.id IN (SELECT value
    FROM json_each(?1))
AND r.state = 'pending'
AND r.kind IN ('reminder', 'expiry_warning', 'escalation')
AND w.status = 'pending'
AND (r.kind <> 'reminder' OR (w.reminders_sent = r.sequence AND (r.sequence = 1 OR r.previous_reminded_at IS NOT NULL)))
AND NOT EXISTS (
    SELECT 1
    FROM signature_reminder_log o
    WHERE o.workflow_id = r.workflow_id
    AND o.kind = r.kind
    AND o.sequence = r.sequence
    AND NOT (o.id IN (SELECT value
            FROM json_each(?1)) AND o.state = 'pending'))
