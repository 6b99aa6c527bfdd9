-- Gives back the claims of deliveries a run did not send ($1 log ids): a claim none of whose
-- deliveries remains (every row of its workflow, kind and sequence is among $1 and pending) is
-- undone on the workflow, as if it had never been made, and its log rows are deleted, so the
-- notice is due again. A reminder is undone only while it is the workflow's latest, and only
-- when its rows remember the `last_reminded_at` before the claim (rows claimed before migration
-- 0004 do not), which it gets back. Returns the log rows deleted.
WITH released AS (
    SELECT l.id, l.workflow_id, l.kind, l.sequence, l.previous_reminded_at
    FROM signature_reminder_log l
    WHERE l.id = ANY($1::bigint[])
    AND l.state = 'pending'
    AND l.kind IN ('reminder', 'expiry_warning', 'escalation')
    FOR UPDATE),
whole AS (
    SELECT DISTINCT r.workflow_id, r.kind, r.sequence, r.previous_reminded_at
    FROM released r
    JOIN signature_workflows w ON w.id = r.workflow_id
    WHERE w.status = 'pending'
    AND (r.kind <> 'reminder' OR (w.reminders_sent = r.sequence AND (r.sequence = 1 OR r.previous_reminded_at IS NOT NULL)))
    AND NOT EXISTS (
        SELECT 1
        FROM signature_reminder_log o
        WHERE o.workflow_id = r.workflow_id
        AND o.kind = r.kind
        AND o.sequence = r.sequence
        AND NOT (o.id = ANY($1::bigint[]) AND o.state = 'pending'))),
per_workflow AS (
    SELECT workflow_id, max(sequence) FILTER (WHERE kind = 'reminder') AS reminder, max(previous_reminded_at) FILTER (WHERE kind = 'reminder') AS previous_reminded_at, bool_or(kind = 'expiry_warning') AS expiry_warning, bool_or(kind = 'escalation') AS escalation
    FROM whole
    GROUP BY workflow_id),
undone AS (
    UPDATE signature_workflows w
    SET reminders_sent = coalesce(u.reminder - 1, w.reminders_sent), last_reminded_at = CASE WHEN u.reminder IS NULL THEN w.last_reminded_at ELSE u.previous_reminded_at END, expiry_warned_at = CASE WHEN u.expiry_warning THEN NULL ELSE w.expiry_warned_at END, escalated_at = CASE WHEN u.escalation THEN NULL ELSE w.escalated_at END
    FROM per_workflow u
    WHERE w.id = u.workflow_id
    RETURNING w.id)
DELETE FROM signature_reminder_log l
USING whole u
WHERE l.workflow_id = u.workflow_id
AND l.kind = u.kind
AND l.sequence = u.sequence
AND l.workflow_id IN (SELECT id FROM undone)
RETURNING l.id
