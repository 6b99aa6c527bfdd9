//! The policy core: one parse of a [`SignaturePolicySpec`] into a [`Policy`] that the controller,
//! the workers and the commands consume (zone, schedules, due arithmetic, routes per notice kind,
//! the renderer, the store queries). It imports none of store, notify, controller, worker,
//! commands or admission; `tests/design.rs` keeps it that way.

pub mod bodies;
pub mod notice;
pub mod query;
pub mod routes;
pub mod templates;
pub mod time;
pub mod timing;
pub mod validate;
pub mod workflow;

use std::collections::{BTreeMap, BTreeSet};

use jiff::tz::TimeZone;

use crate::crd::{SignaturePolicy, SignaturePolicySpec};
use crate::schedule::Schedule;

pub use notice::{Audience, NoticeKind, Section};
pub use query::{DueQuery, TimeoutQuery};
pub use templates::Renderer;
pub use timing::Timing;
pub use validate::FieldError;
pub use workflow::Workflow;

/// A spec that parsed: everything a controller or worker needs from it, converted once.
#[derive(Clone, Debug)]
pub struct Policy {
    spec: SignaturePolicySpec,
    reminders_schedule: Option<Schedule>,
    timeout_schedule: Option<Schedule>,
    timing: Timing,
    routes: BTreeMap<NoticeKind, Vec<String>>,
    renderer: Renderer,
}

impl Policy {
    /// The only parse of a spec: the semantic checks the API server cannot make (zones, cron,
    /// windows, templates, addresses) and the routes every notice kind takes. A spec the API
    /// server admitted passes the CRD's schema and CEL, so the cross-field checks here only
    /// guard what a worker given a hand-written spec would otherwise do wrong.
    pub fn parse(spec: &SignaturePolicySpec) -> Result<Self, Vec<FieldError>> {
        match validate::validate(spec) {
            Ok(()) => Self::from_validated(spec),
            Err(mut errors) => {
                // Report the routes' problems too, so one pass names every problem.
                errors.extend(routes_of(spec).err().unwrap_or_default());
                Err(errors)
            }
        }
    }

    /// The rest of [`Policy::parse`], for a spec whose semantic checks ([`validate::validate`])
    /// already passed: `signet validate` and `signet render` report those checks themselves
    /// beside the schema's and CEL's, and then take the policy from here without a second pass.
    pub fn from_validated(spec: &SignaturePolicySpec) -> Result<Self, Vec<FieldError>> {
        let routes = routes_of(spec)?;
        fn at(path: &'static str) -> impl Fn(String) -> Vec<FieldError> {
            move |message| vec![FieldError::new(path, message)]
        }
        let schedule = |s: &str, path: &'static str| {
            s.parse::<Schedule>().map_err(|e| at(path)(e.to_string()))
        };
        Ok(Self {
            reminders_schedule: spec
                .reminders
                .as_ref()
                .map(|r| schedule(&r.schedule, "spec.reminders.schedule"))
                .transpose()?,
            timeout_schedule: spec
                .timeout
                .as_ref()
                .map(|t| schedule(&t.schedule, "spec.timeout.schedule"))
                .transpose()?,
            timing: Timing::from_spec(spec).map_err(at("spec"))?,
            renderer: Renderer::new(spec).map_err(at("spec"))?,
            routes,
            spec: spec.clone(),
        })
    }

    /// The spec as written (defaults applied).
    pub fn spec(&self) -> &SignaturePolicySpec {
        &self.spec
    }

    /// `spec.timeZone`.
    pub fn zone(&self) -> &TimeZone {
        &self.timing.zone
    }

    /// The schedule of `section`'s CronJob, when the section is enabled.
    pub fn schedule(&self, section: Section) -> Option<&Schedule> {
        match section {
            Section::Reminders => self.reminders_schedule.as_ref(),
            Section::Timeouts => self.timeout_schedule.as_ref(),
        }
    }

    /// Due-time arithmetic and send windows.
    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// The message templates over the built-in defaults.
    pub fn renderer(&self) -> &Renderer {
        &self.renderer
    }

    /// The channels of each configured notice kind.
    pub fn routes(&self) -> &BTreeMap<NoticeKind, Vec<String>> {
        &self.routes
    }

    /// The channels `kind` goes to (empty when its section is absent).
    pub fn channels(&self, kind: NoticeKind) -> &[String] {
        self.routes.get(&kind).map_or(&[], Vec::as_slice)
    }

    /// The channels `section`'s worker sends through (their secrets are all it gets).
    pub fn section_channels(&self, section: Section) -> BTreeSet<&str> {
        section
            .kinds()
            .flat_map(|kind| self.channels(kind))
            .map(String::as_str)
            .collect()
    }

    /// `spec.selector.workflowTypes`; empty means every type.
    pub fn workflow_types(&self) -> Vec<String> {
        self.spec.workflow_types()
    }

    /// What the reminders worker selects; `None` when the policy has no reminders.
    pub fn due_query(&self) -> Option<DueQuery> {
        let reminders = self.spec.reminders.as_ref()?;
        Some(DueQuery {
            workflow_types: self.workflow_types(),
            max_reminders: reminders.max_reminders,
            first_after: reminders.first_after.to_std(),
            every: reminders.every.to_std(),
            timeout_after: self.spec.timeout.as_ref().map(|t| t.after.to_std()),
            expiry_warning_before: self.spec.expiry_warning.as_ref().map(|w| w.before.to_std()),
            escalation_after: self.spec.escalation.as_ref().map(|e| e.after.to_std()),
        })
    }

    /// What the timeouts worker selects; `None` when the policy has no timeout.
    pub fn timeout_query(&self) -> Option<TimeoutQuery> {
        Some(TimeoutQuery {
            workflow_types: self.workflow_types(),
            timeout_after: self.spec.timeout.as_ref()?.after.to_std(),
        })
    }
}

/// The channels of every configured notice kind; every one must be defined, and the policy
/// must do something.
fn routes_of(
    spec: &SignaturePolicySpec,
) -> Result<BTreeMap<NoticeKind, Vec<String>>, Vec<FieldError>> {
    let mut errors = Vec::new();
    if spec.reminders.is_none() && spec.timeout.is_none() {
        errors.push(FieldError::new(
            "spec",
            "set spec.reminders, spec.timeout or both: a policy with neither does nothing",
        ));
    }
    let mut routes = BTreeMap::new();
    for kind in NoticeKind::ALL {
        let Some(channels) = routes::channels(spec, kind) else {
            continue;
        };
        let missing: Vec<&str> = channels
            .iter()
            .filter(|name| spec.channel(name).is_none())
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            errors.push(FieldError::new(
                format!("{}.channels", kind.spec_path()),
                format!("no channel named {} in spec.channels", missing.join(", ")),
            ));
        }
        routes.insert(kind, channels.to_vec());
    }
    if errors.is_empty() {
        Ok(routes)
    } else {
        Err(errors)
    }
}

/// A `SignaturePolicy` object whose spec parsed: the controller's view, with the identity it
/// names owned objects after.
#[derive(Clone, Debug)]
pub struct ValidPolicy {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// The object itself, for owner references.
    pub policy: SignaturePolicy,
    /// The parsed spec.
    pub core: Policy,
}

impl ValidPolicy {
    /// Parses `policy`; `Err` carries every problem.
    pub fn new(policy: &SignaturePolicy) -> Result<Self, Vec<FieldError>> {
        Self::with_core(policy, Policy::parse(&policy.spec)?)
    }

    /// `policy` with its spec parsed already into `core`; checks the identity it needs.
    pub fn with_core(policy: &SignaturePolicy, core: Policy) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let name = policy.metadata.name.clone().unwrap_or_default();
        let namespace = policy.metadata.namespace.clone().unwrap_or_default();
        if name.is_empty() {
            errors.push(FieldError::new("metadata.name", "Required value"));
        }
        if namespace.is_empty() {
            errors.push(FieldError::new(
                "metadata.namespace",
                "Required value: SignaturePolicy is namespaced",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            name,
            namespace,
            policy: policy.clone(),
            core,
        })
    }

    /// The spec.
    pub fn spec(&self) -> &SignaturePolicySpec {
        &self.policy.spec
    }

    /// The zone of `spec.timeZone`.
    pub fn time_zone(&self) -> &TimeZone {
        self.core.zone()
    }

    /// The schedule of `section`'s CronJob, when the section is enabled.
    pub fn schedule(&self, section: Section) -> Option<&Schedule> {
        self.core.schedule(section)
    }
}
