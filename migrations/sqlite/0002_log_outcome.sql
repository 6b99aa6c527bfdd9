-- A delivery's outcome as data rather than a text prefix: `reason` is the stable reason code of
-- why it was not sent (notify::Error::reason(), or the worker's own when no provider was asked),
-- `unconfirmed` whether its last try got no answer, so the provider may have accepted it anyway
-- (recovery counts such a row as a possible duplicate). `error` stays the text for a person.
-- SQLite has no ADD COLUMN IF NOT EXISTS: the migrator applies this once; the conversion only
-- touches rows without a reason.

ALTER TABLE signature_reminder_log ADD COLUMN reason TEXT;
ALTER TABLE signature_reminder_log ADD COLUMN unconfirmed INTEGER NOT NULL DEFAULT 0
    CONSTRAINT signature_reminder_log_unconfirmed_check CHECK (unconfirmed IN (0, 1));

-- Rows written before this migration carry the reason as the prefix of `error`.
UPDATE signature_reminder_log
SET reason = CASE
        WHEN error LIKE 'Provider%: %' OR error LIKE 'ChannelMisconfigured: %'
            THEN substr(error, 1, instr(error, ':') - 1)
        WHEN error LIKE 'not sent: the workflow is %' THEN 'WorkflowMovedOn'
        WHEN error LIKE 'not sent: the run''s lease %' THEN 'LeaseRunningOut'
        WHEN error LIKE 'channel % is no longer configured' THEN 'ChannelNotConfigured'
        ELSE 'TemplateFailed'
    END,
    unconfirmed = (error LIKE 'ProviderTimeout: %' OR error LIKE 'ProviderNoAnswer: %')
WHERE error IS NOT NULL AND reason IS NULL;
