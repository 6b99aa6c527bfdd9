//! One workflow row as the workers read it: the application's columns and Signet's own state.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// One row of `signature_workflows`, as the workers read it.
#[derive(Clone, Debug, PartialEq)]
pub struct Workflow {
    /// The application's workflow id.
    pub id: Uuid,
    /// Matched by `spec.selector.workflowTypes`.
    pub workflow_type: String,
    /// Where email reminders go.
    pub signer_email: String,
    /// For templates.
    pub signer_name: Option<String>,
    /// For templates.
    pub document_title: Option<String>,
    /// For templates.
    pub signing_url: Option<String>,
    /// IANA zone of the signer, when the application knows it.
    pub signer_time_zone: Option<String>,
    /// `pending`, `signed`, `declined`, `cancelled` or `timed_out`.
    pub status: String,
    /// When the clock started.
    pub requested_at: DateTime<Utc>,
    /// This row's own deadline.
    pub deadline_at: Option<DateTime<Utc>>,
    /// Reminders claimed so far.
    pub reminders_sent: i32,
    /// When the last reminder was claimed.
    pub last_reminded_at: Option<DateTime<Utc>>,
    /// When the expiry warning was claimed.
    pub expiry_warned_at: Option<DateTime<Utc>>,
    /// When the escalation was claimed.
    pub escalated_at: Option<DateTime<Utc>>,
}
