-- A delivery's outcome as data rather than a text prefix: `reason` is the stable reason code of
-- why it was not sent (notify::Error::reason(), or the worker's own when no provider was asked),
-- `unconfirmed` whether its last try got no answer, so the provider may have accepted it anyway
-- (recovery counts such a row as a possible duplicate). `error` stays the text for a person.
-- Idempotent: columns are added only when missing, and only rows without a reason are converted.

ALTER TABLE signature_reminder_log ADD COLUMN IF NOT EXISTS reason text;
ALTER TABLE signature_reminder_log
    ADD COLUMN IF NOT EXISTS unconfirmed boolean NOT NULL DEFAULT false;

-- Rows written before this migration carry the reason as the prefix of `error`.
UPDATE signature_reminder_log
SET reason = CASE
        WHEN error LIKE 'Provider%: %' OR error LIKE 'ChannelMisconfigured: %'
            THEN substr(error, 1, strpos(error, ':') - 1)
        WHEN error LIKE 'not sent: the workflow is %' THEN 'WorkflowMovedOn'
        WHEN error LIKE 'not sent: the run''s lease %' THEN 'LeaseRunningOut'
        WHEN error LIKE 'channel % is no longer configured' THEN 'ChannelNotConfigured'
        ELSE 'TemplateFailed'
    END,
    unconfirmed = (error LIKE 'ProviderTimeout: %' OR error LIKE 'ProviderNoAnswer: %')
WHERE error IS NOT NULL AND reason IS NULL;
