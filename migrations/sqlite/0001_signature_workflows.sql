-- Signet's database contract for SQLite (local runs, `signet demo`, tests): the same tables and
-- columns as on PostgreSQL. Timestamps are ISO 8601 text in UTC; ids are UUID text.

CREATE TABLE signature_workflows (
    id               TEXT    PRIMARY KEY NOT NULL,
    workflow_type    TEXT    NOT NULL,
    signer_email     TEXT    NOT NULL,
    signer_name      TEXT,
    document_title   TEXT,
    signing_url      TEXT,
    signer_time_zone TEXT,
    status           TEXT    NOT NULL DEFAULT 'pending'
        CONSTRAINT signature_workflows_status_check
        CHECK (status IN ('pending', 'signed', 'declined', 'cancelled', 'timed_out')),
    requested_at     TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    deadline_at      TEXT,
    reminders_sent   INTEGER NOT NULL DEFAULT 0
        CONSTRAINT signature_workflows_reminders_sent_check CHECK (reminders_sent >= 0),
    last_reminded_at TEXT,
    expiry_warned_at TEXT,
    escalated_at     TEXT,
    timed_out_at     TEXT
);

CREATE INDEX signature_workflows_pending_idx
    ON signature_workflows (id)
    WHERE status = 'pending';

CREATE INDEX signature_workflows_pending_deadline_idx
    ON signature_workflows (deadline_at, requested_at)
    WHERE status = 'pending';

CREATE TABLE signature_reminder_log (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id         TEXT    NOT NULL REFERENCES signature_workflows (id) ON DELETE CASCADE,
    kind                TEXT    NOT NULL
        CONSTRAINT signature_reminder_log_kind_check
        CHECK (kind IN ('reminder', 'expiry_warning', 'escalation', 'timeout_alert')),
    sequence            INTEGER NOT NULL,
    channel             TEXT    NOT NULL,
    state               TEXT    NOT NULL DEFAULT 'pending'
        CONSTRAINT signature_reminder_log_state_check
        CHECK (state IN ('pending', 'sent', 'failed')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    idempotency_key     TEXT    NOT NULL,
    provider_message_id TEXT,
    error               TEXT,
    created_at          TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at          TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    lease_until         TEXT,
    CONSTRAINT signature_reminder_log_once UNIQUE (workflow_id, kind, sequence, channel)
);

CREATE INDEX signature_reminder_log_pending_idx
    ON signature_reminder_log (lease_until)
    WHERE state = 'pending';
