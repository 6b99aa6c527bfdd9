-- Candidate selection follows the time columns the due conditions compare, so a run's work is
-- proportional to what is (nearly) due rather than to the number of pending rows. Each index
-- serves one branch of the due query (see src/store/postgres.rs), ordered by its time column
-- with id after it for keyset paging.

-- First reminder: reminders_sent = 0, by requested_at.
CREATE INDEX signature_workflows_first_reminder_idx
    ON signature_workflows (requested_at, id)
    WHERE status = 'pending' AND reminders_sent = 0;

-- Later reminders and escalation: reminders_sent > 0, by last_reminded_at.
CREATE INDEX signature_workflows_next_reminder_idx
    ON signature_workflows (last_reminded_at, id)
    WHERE status = 'pending' AND reminders_sent > 0;

-- Expiry warning for rows carrying their own deadline, by deadline_at.
CREATE INDEX signature_workflows_deadline_idx
    ON signature_workflows (deadline_at, id)
    WHERE status = 'pending' AND deadline_at IS NOT NULL;

-- Expiry warning for rows whose deadline is requested_at + timeout.after, by requested_at.
CREATE INDEX signature_workflows_no_deadline_idx
    ON signature_workflows (requested_at, id)
    WHERE status = 'pending' AND deadline_at IS NULL;

-- The id-ordered walk over every pending row is gone, and nothing else used this index.
DROP INDEX signature_workflows_pending_idx;
