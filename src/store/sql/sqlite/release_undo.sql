-- Undoes one claim on its workflow, as if it had never been made: ?1 workflow id, ?2 kind,
-- ?3 sequence, ?4 the `last_reminded_at` from before a reminder's claim (its log rows keep it).
UPDATE signature_workflows
SET reminders_sent = CASE WHEN ?2 = 'reminder' THEN ?3 - 1 ELSE reminders_sent END, last_reminded_at = CASE WHEN ?2 = 'reminder' THEN ?4 ELSE last_reminded_at END, expiry_warned_at = CASE WHEN ?2 = 'expiry_warning' THEN NULL ELSE expiry_warned_at END, escalated_at = CASE WHEN ?2 = 'escalation' THEN NULL ELSE escalated_at END
WHERE id = ?1
