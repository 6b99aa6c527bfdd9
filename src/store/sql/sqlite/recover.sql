-- Takes over expired pending deliveries: ?1 kinds, ?2 workflow types (JSON arrays), ?3 the lease
-- as a date modifier, ?4 limit. A row whose last try got no answer (unconfirmed), or left without
-- an outcome (no reason: the worker died mid-send), may already have gone out.
UPDATE signature_reminder_log AS l
SET attempts = l.attempts + 1, lease_until = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?3), updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE l.id IN (
    SELECT r.id
    FROM signature_reminder_log r
    JOIN signature_workflows w ON w.id = r.workflow_id
    WHERE r.state = 'pending'
    AND unixepoch(r.lease_until, 'subsec') < unixepoch('now', 'subsec')
    AND r.kind IN (SELECT value
        FROM json_each(?1))
    AND (json_array_length(?2) = 0
        OR w.workflow_type IN (SELECT value FROM json_each(?2)))
    ORDER BY r.id
    LIMIT ?4)
RETURNING id AS log_id, workflow_id, kind, sequence, channel, idempotency_key, attempts, (unconfirmed
    OR reason IS NULL) AS possible_duplicate
