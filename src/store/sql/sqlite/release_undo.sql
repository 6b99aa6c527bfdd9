-- Undoes one claim on its workflow, as if it had never been made: ?1 workflow id, ?2 kind,
-- ?3 sequence. A reminder's `last_reminded_at` goes back to when the previous reminder was
-- claimed (its log rows were written in the same transaction as the counter).
UPDATE signature_workflows
SET reminders_sent = CASE WHEN ?2 = 'reminder' THEN ?3 - 1 ELSE reminders_sent END, last_reminded_at = CASE WHEN ?2 = 'reminder' THEN (
        SELECT min(p.created_at)
        FROM signature_reminder_log p
        WHERE p.workflow_id = ?1
        AND p.kind = 'reminder'
        AND p.sequence = ?3 - 1) ELSE last_reminded_at END, expiry_warned_at = CASE WHEN ?2 = 'expiry_warning' THEN NULL ELSE expiry_warned_at END, escalated_at = CASE WHEN ?2 = 'escalation' THEN NULL ELSE escalated_at END
WHERE id = ?1
