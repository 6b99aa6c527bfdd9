-- A reminder's log rows remember the workflow's `last_reminded_at` from before the claim, so a
-- claim that sends nothing (its channel rejected the run, the worker was stopped) can be undone
-- exactly: the reminder is due again on its own schedule, as if it had never been claimed.
-- NULL for other kinds, and for rows claimed before this migration (those are never undone).

ALTER TABLE signature_reminder_log ADD COLUMN previous_reminded_at TEXT;
