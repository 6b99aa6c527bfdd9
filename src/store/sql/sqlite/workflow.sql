-- One workflow by id (?1).
SELECT w.id, w.workflow_type, w.signer_email, w.signer_name, w.document_title, w.signing_url, w.signer_time_zone, w.status, w.requested_at, w.deadline_at, w.reminders_sent, w.last_reminded_at, w.expiry_warned_at, w.escalated_at
FROM signature_workflows w
WHERE w.id = ?1
