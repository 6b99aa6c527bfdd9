-- The `last_reminded_at` of ?1 (workflow ids, JSON array) before a reminder claim changes it.
SELECT id, last_reminded_at
FROM signature_workflows
WHERE id IN (SELECT value
    FROM json_each(?1))
