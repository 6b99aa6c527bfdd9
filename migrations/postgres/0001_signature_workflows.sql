-- Signet's database contract (see README "Database contract").
-- The application inserts rows into signature_workflows and later sets status; Signet maintains
-- the reminder columns and writes one signature_reminder_log row per notification delivery.

CREATE TABLE signature_workflows (
    id               uuid        PRIMARY KEY,
    workflow_type    text        NOT NULL,
    signer_email     text        NOT NULL,
    signer_name      text,
    document_title   text,
    signing_url      text,
    signer_time_zone text,
    status           text        NOT NULL DEFAULT 'pending'
        CONSTRAINT signature_workflows_status_check
        CHECK (status IN ('pending', 'signed', 'declined', 'cancelled', 'timed_out')),
    requested_at     timestamptz NOT NULL DEFAULT now(),
    deadline_at      timestamptz,
    -- Maintained by Signet.
    reminders_sent   integer     NOT NULL DEFAULT 0
        CONSTRAINT signature_workflows_reminders_sent_check CHECK (reminders_sent >= 0),
    last_reminded_at timestamptz,
    expiry_warned_at timestamptz,
    escalated_at     timestamptz,
    timed_out_at     timestamptz
);

-- The workers only ever look at pending rows; the scan walks them in id order (keyset paging).
CREATE INDEX signature_workflows_pending_idx
    ON signature_workflows (id)
    WHERE status = 'pending';

-- The timeout worker looks for pending rows by deadline.
CREATE INDEX signature_workflows_pending_deadline_idx
    ON signature_workflows (deadline_at, requested_at)
    WHERE status = 'pending';

CREATE TABLE signature_reminder_log (
    id                  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id         uuid        NOT NULL REFERENCES signature_workflows (id) ON DELETE CASCADE,
    kind                text        NOT NULL
        CONSTRAINT signature_reminder_log_kind_check
        CHECK (kind IN ('reminder', 'expiry_warning', 'escalation', 'timeout_alert')),
    sequence            integer     NOT NULL,
    channel             text        NOT NULL,
    state               text        NOT NULL DEFAULT 'pending'
        CONSTRAINT signature_reminder_log_state_check
        CHECK (state IN ('pending', 'sent', 'failed')),
    attempts            integer     NOT NULL DEFAULT 0,
    idempotency_key     text        NOT NULL,
    provider_message_id text,
    error               text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    -- While a worker holds a pending row; once it has passed, the next run retries the delivery.
    lease_until         timestamptz,
    CONSTRAINT signature_reminder_log_once UNIQUE (workflow_id, kind, sequence, channel)
);

-- Recovery finds pending deliveries whose lease has expired.
CREATE INDEX signature_reminder_log_pending_idx
    ON signature_reminder_log (lease_until)
    WHERE state = 'pending';
