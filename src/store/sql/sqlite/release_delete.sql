-- The log rows of an undone claim: ?1 workflow id, ?2 kind, ?3 sequence.
DELETE FROM signature_reminder_log
WHERE workflow_id = ?1
AND kind = ?2
AND sequence = ?3
