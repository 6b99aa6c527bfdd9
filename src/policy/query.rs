//! What the workers ask the store for, as typed parameters: the policy's workflow types and
//! timing. The stores turn the durations into their SQL's units at the bind, nowhere else.

use std::time::Duration;

/// What the reminders worker selects: the policy's workflow types and timing.
#[derive(Clone, Debug, PartialEq)]
pub struct DueQuery {
    /// `spec.selector.workflowTypes`; empty: every type.
    pub workflow_types: Vec<String>,
    /// `reminders.maxReminders`.
    pub max_reminders: i32,
    /// `reminders.firstAfter`.
    pub first_after: Duration,
    /// `reminders.every`.
    pub every: Duration,
    /// `timeout.after`.
    pub timeout_after: Option<Duration>,
    /// `expiryWarning.before`.
    pub expiry_warning_before: Option<Duration>,
    /// `escalation.after`.
    pub escalation_after: Option<Duration>,
}

/// What the timeouts worker selects: pending workflows of the policy's types past their deadline.
#[derive(Clone, Debug, PartialEq)]
pub struct TimeoutQuery {
    /// `spec.selector.workflowTypes`; empty: every type.
    pub workflow_types: Vec<String>,
    /// `timeout.after`: the deadline of rows without `deadline_at`.
    pub timeout_after: Duration,
}
