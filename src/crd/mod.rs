//! The `SignaturePolicy` custom resource (`signet.dev/v1alpha1`): spec and status types, from which
//! the CustomResourceDefinition is generated. What a schema can check lives here as schema
//! attributes; cross-field rules are CEL (see [`rules`]); the rest is [`crate::policy::validate`].

// Printer columns repeat `type_ = "string"` and friends, which this lint mistakes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

mod channel;
mod job_template;
pub mod rules;
mod status;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use channel::{
    Channel, ChannelKind, LogChannel, SecretKeyRef, SendGridChannel, SlackChannel, SmtpChannel,
    SmtpCredentialsRef, SmtpSecurity, WebhookChannel,
};
pub use job_template::{ConcurrencyPolicy, WorkerJobTemplate};
pub use status::{
    ReminderRun, RemindersStatus, RunOutcome, SignaturePolicyStatus, TimeoutRun, TimeoutsStatus,
};

use crate::duration::Duration;

/// Desired behaviour for one family of signature workflows: when to remind signers, when to give
/// up, and whom to tell.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "signet.dev",
    version = "v1alpha1",
    kind = "SignaturePolicy",
    plural = "signaturepolicies",
    singular = "signaturepolicy",
    shortname = "sigpol",
    category = "signet",
    namespaced,
    status = "SignaturePolicyStatus",
    doc = "A SignaturePolicy tells Signet when to remind signers of pending signature workflows, when to time them out, and whom to alert.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Delivering",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Delivering\")].status"
    ),
    printcolumn(
        name = "Reminders",
        type_ = "string",
        json_path = ".spec.reminders.schedule"
    ),
    printcolumn(name = "Timeout", type_ = "string", json_path = ".spec.timeout.after"),
    printcolumn(
        name = "Last Reminder Run",
        type_ = "date",
        json_path = ".status.reminders.lastRun.finishedAt"
    ),
    printcolumn(
        name = "Last Timeout Run",
        type_ = "date",
        json_path = ".status.timeouts.lastRun.finishedAt"
    ),
    printcolumn(
        name = "Suspended",
        type_ = "boolean",
        json_path = ".spec.suspend",
        priority = 1
    ),
    printcolumn(
        name = "Stale",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Stale\")].status",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = rules::spec_rules)]
pub struct SignaturePolicySpec {
    /// Pauses both CronJobs (mirrored as the `Suspended` condition). Running Jobs finish.
    #[serde(default)]
    pub suspend: bool,

    /// IANA time zone for the CronJob schedules and for send windows of signers without a zone of their own.
    #[serde(default = "default_time_zone")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: String,

    /// The application's database holding `signature_workflows`.
    pub database: DatabaseSpec,

    /// Which workflows this policy governs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkflowSelector>,

    /// Reminders to signers whose signature is pending. Absent: no reminder CronJob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminders: Option<RemindersSpec>,

    /// One last nudge shortly before a workflow's deadline (sent by the reminders worker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_warning: Option<ExpiryWarningSpec>,

    /// An alert when reminders are exhausted and the workflow is still unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<EscalationSpec>,

    /// Closing workflows whose deadline passed. Absent: no timeout CronJob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<TimeoutSpec>,

    /// Named notification channels, referred to by name from the sections above.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub channels: Vec<Channel>,

    /// Overrides for the worker Jobs' pods and CronJob settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_template: Option<WorkerJobTemplate>,
}

fn default_time_zone() -> String {
    "UTC".to_owned()
}

/// Where the workflows live.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// Secret key holding the database URL (`postgres://...`, or `sqlite://...` for local runs).
    pub url_secret_ref: SecretKeyRef,

    /// PostgreSQL schema holding the tables (default: the connection's search path, usually `public`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z_][a-z0-9_]{0,62}$"))]
    pub schema: Option<String>,
}

/// Selects the workflows a policy governs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowSelector {
    /// `workflow_type` values to match; empty or absent: every workflow type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 128)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub workflow_types: Vec<String>,
}

/// Reminders to pending signers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemindersSpec {
    /// When the reminder worker runs (five-field cron, or `@hourly` and friends), in `spec.timeZone`.
    #[serde(default = "default_reminders_schedule")]
    #[schemars(length(min = 1, max = 128))]
    pub schedule: String,

    /// The first reminder goes out this long after `requested_at`.
    #[serde(default = "default_first_after")]
    pub first_after: Duration,

    /// Each further reminder goes out this long after the previous one.
    #[serde(default = "default_every")]
    pub every: Duration,

    /// At most this many reminders per workflow.
    #[serde(default = "default_max_reminders")]
    #[schemars(range(min = 1, max = 20))]
    pub max_reminders: i32,

    /// Hours and days reminders may be sent; outside it they are held, never dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_window: Option<SendWindow>,

    /// Names of channels (from `spec.channels`) that deliver reminders.
    #[schemars(length(min = 1, max = 8), inner(length(min = 1, max = 63)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub channels: Vec<String>,

    /// The reminder message; built-in defaults are used for what is left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<MessageTemplate>,
}

fn default_reminders_schedule() -> String {
    "*/30 * * * *".to_owned()
}
fn default_first_after() -> Duration {
    Duration::from_secs(24 * 3600).expect("non-zero")
}
fn default_every() -> Duration {
    Duration::from_secs(48 * 3600).expect("non-zero")
}
const fn default_max_reminders() -> i32 {
    3
}

/// Schema pattern of an `HH:MM` time of day.
pub const CLOCK_PATTERN: &str = r"^([01][0-9]|2[0-3]):[0-5][0-9]$";

/// A daily window of local time, on some days of the week.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.start != self.end",
    "message": "start and end must differ (a window from 22:00 to 06:00 spans midnight)",
}]))]
pub struct SendWindow {
    /// Start of the window, `HH:MM` (24-hour clock), inclusive.
    #[schemars(regex(pattern = CLOCK_PATTERN))]
    pub start: String,

    /// End of the window, `HH:MM`, exclusive; earlier than `start` means the window spans midnight.
    #[schemars(regex(pattern = CLOCK_PATTERN))]
    pub end: String,

    /// Days of the week the window is open (in the signer's zone); default every day.
    #[serde(default = "Weekday::all")]
    #[schemars(length(min = 1, max = 7))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub days: Vec<Weekday>,
}

/// A day of the week.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[allow(missing_docs)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    /// The day of a jiff weekday.
    pub fn from_jiff(day: jiff::civil::Weekday) -> Self {
        use Weekday::*;
        match day {
            jiff::civil::Weekday::Monday => Mon,
            jiff::civil::Weekday::Tuesday => Tue,
            jiff::civil::Weekday::Wednesday => Wed,
            jiff::civil::Weekday::Thursday => Thu,
            jiff::civil::Weekday::Friday => Fri,
            jiff::civil::Weekday::Saturday => Sat,
            jiff::civil::Weekday::Sunday => Sun,
        }
    }

    /// Every day, Monday first.
    pub fn all() -> Vec<Weekday> {
        use Weekday::*;
        vec![Mon, Tue, Wed, Thu, Fri, Sat, Sun]
    }
}

/// A message written as minijinja templates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageTemplate {
    /// Subject line (email) or title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub subject: Option<String>,

    /// Plain-text body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32768))]
    pub text: Option<String>,

    /// HTML body; values from the database are escaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    pub html: Option<String>,
}

/// A single warning, `before` ahead of the deadline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExpiryWarningSpec {
    /// How long before the deadline the warning goes out.
    pub before: Duration,

    /// Names of channels that deliver the warning.
    #[schemars(length(min = 1, max = 8), inner(length(min = 1, max = 63)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub channels: Vec<String>,

    /// The warning message; built-in defaults are used for what is left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<MessageTemplate>,
}

/// An alert once reminders are exhausted and the signer still has not signed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EscalationSpec {
    /// How long after the last reminder to escalate.
    pub after: Duration,

    /// Names of channels that receive the alert (email channels need `to`).
    #[schemars(length(min = 1, max = 8), inner(length(min = 1, max = 63)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub channels: Vec<String>,
}

/// Closing workflows whose deadline has passed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimeoutSpec {
    /// The deadline is `requested_at + after`, unless the row carries `deadline_at`.
    pub after: Duration,

    /// When the timeout worker runs, in `spec.timeZone`.
    #[serde(default = "default_timeout_schedule")]
    #[schemars(length(min = 1, max = 128))]
    pub schedule: String,

    /// Names of channels alerted about timed-out workflows (email channels need `to`); may be empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(min = 1, max = 63)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub channels: Vec<String>,
}

fn default_timeout_schedule() -> String {
    "0 * * * *".to_owned()
}

impl SignaturePolicySpec {
    /// The `workflow_type` values the policy selects; empty means every type.
    pub fn workflow_types(&self) -> Vec<String> {
        self.selector
            .as_ref()
            .map(|s| s.workflow_types.clone())
            .unwrap_or_default()
    }

    /// The channel called `name`, if the policy defines one.
    pub fn channel(&self, name: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.name == name)
    }

    /// Every secret the policy refers to, with the field path that names it.
    pub fn secret_refs(&self) -> Vec<(String, SecretKeyRef)> {
        let mut refs = vec![(
            "spec.database.urlSecretRef".to_owned(),
            self.database.url_secret_ref.clone(),
        )];
        for (i, channel) in self.channels.iter().enumerate() {
            for (field, secret) in channel.secret_refs() {
                refs.push((format!("spec.channels[{i}].{field}"), secret));
            }
        }
        refs
    }
}

/// `Err` naming what `object` is when it is not a SignaturePolicy of this API version (checked by
/// its `apiVersion` and `kind`, before anything else is read).
pub fn expect_policy(object: &serde_json::Value) -> Result<(), String> {
    use crate::constants::{API_GROUP_VERSION, POLICY_KIND};
    let field = |name: &str| {
        object
            .get(name)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
    };
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    if api_version == API_GROUP_VERSION && kind == POLICY_KIND {
        return Ok(());
    }
    let found = if object.is_object() {
        format!("apiVersion {api_version:?}, kind {kind:?}")
    } else {
        "not a mapping".to_owned()
    };
    Err(format!(
        "not a SignaturePolicy: expected apiVersion {API_GROUP_VERSION:?} and kind {POLICY_KIND:?}, found {found}"
    ))
}

/// The CustomResourceDefinition installed in clusters (what `signet crd` prints).
///
/// Adds the rules kube-derive cannot express on the root: the policy name becomes a label value,
/// so it is limited to 63 characters.
pub fn definition() -> CustomResourceDefinition {
    let mut crd = SignaturePolicy::crd();
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            rules::add_root_rules(schema);
        }
    }
    crd
}

/// The CRD as YAML, exactly as checked in under `crds/`.
pub fn definition_yaml() -> String {
    let yaml = serde_saphyr::to_string(&definition()).expect("the CRD serializes to YAML");
    format!("# Generated by `signet crd`; do not edit. Regenerate with `make crds`.\n---\n{yaml}")
}
