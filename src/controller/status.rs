//! The part of a policy's status the controller owns, computed purely: `observedGeneration`, the
//! `Ready` and `Suspended` conditions, and each section's CronJob name and last schedule time.
//! Workers own `lastRun` and `lastSuccessfulRunAt`; the controller's merge patch leaves them be.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::{Value, json};

use super::names::Section;
use crate::constants::{CONDITION_READY, CONDITION_SUSPENDED, reason};
use crate::crd::{SignaturePolicy, SignaturePolicyStatus};
use crate::validation::FieldError;

/// Longest condition message the API server accepts.
const MAX_MESSAGE: usize = 32_768;

/// What the reconcile found.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The CronJobs (by section) are in place.
    Reconciled(Vec<(Section, String)>),
    /// Semantic validation failed; nothing was touched.
    Invalid(Vec<FieldError>),
}

/// The controller-owned status of a policy.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerStatus {
    /// `metadata.generation` reconciled.
    pub observed_generation: Option<i64>,
    /// `Ready` then `Suspended`.
    pub conditions: Vec<Condition>,
    /// Per enabled section: CronJob name and its last schedule time. Disabled sections are absent.
    pub sections: BTreeMap<Section, (String, Option<Time>)>,
    /// Whether the section data is known (not for invalid specs, which leave it as it was).
    pub sections_known: bool,
}

/// Computes the controller's status. `last_schedule` comes from the observed CronJobs; `now`
/// stamps conditions whose status changes.
pub fn compute(
    policy: &SignaturePolicy,
    outcome: &Outcome,
    last_schedule: &BTreeMap<Section, Time>,
    now: &Time,
) -> ControllerStatus {
    let generation = policy.metadata.generation;
    let current = policy
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let (ready, reason, message, sections) = match outcome {
        Outcome::Reconciled(cron_jobs) => {
            let names: Vec<&str> = cron_jobs.iter().map(|(_, n)| n.as_str()).collect();
            let message = format!(
                "CronJob{} {} up to date",
                if names.len() == 1 { " is" } else { "s are" },
                names.join(", ")
            );
            let sections = cron_jobs
                .iter()
                .map(|(section, name)| {
                    (
                        *section,
                        (name.clone(), last_schedule.get(section).cloned()),
                    )
                })
                .collect();
            ("True", reason::RECONCILED, message, Some(sections))
        }
        Outcome::Invalid(problems) => {
            let listed: Vec<String> = problems.iter().map(ToString::to_string).collect();
            let message = format!(
                "the spec is invalid, no CronJob was changed: {}",
                listed.join("; ")
            );
            ("False", reason::INVALID_SPEC, message, None)
        }
    };
    let suspended = policy.spec.suspend;
    let conditions = vec![
        condition(
            current,
            CONDITION_READY,
            ready,
            reason,
            message,
            generation,
            now,
        ),
        condition(
            current,
            CONDITION_SUSPENDED,
            if suspended { "True" } else { "False" },
            if suspended {
                reason::SUSPENDED
            } else {
                reason::ACTIVE
            },
            if suspended {
                "spec.suspend is true: no new runs start".into()
            } else {
                "the CronJobs run on schedule".into()
            },
            generation,
            now,
        ),
    ];
    ControllerStatus {
        observed_generation: generation,
        conditions,
        sections_known: sections.is_some(),
        sections: sections.unwrap_or_default(),
    }
}

fn condition(
    current: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let mut message = message;
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE - 3;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("...");
    }
    // The transition time moves only when the status does.
    let last_transition_time = current
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

impl ControllerStatus {
    /// Whether `current` already says all of this (then nothing is written).
    pub fn is_reflected_in(&self, current: Option<&SignaturePolicyStatus>) -> bool {
        let Some(current) = current else { return false };
        if current.observed_generation != self.observed_generation {
            return false;
        }
        let mine: Vec<&Condition> = current
            .conditions
            .iter()
            .filter(|c| c.type_ == CONDITION_READY || c.type_ == CONDITION_SUSPENDED)
            .collect();
        if mine.len() != self.conditions.len() || !self.conditions.iter().all(|c| mine.contains(&c))
        {
            return false;
        }
        if !self.sections_known {
            return true;
        }
        let reminders = current
            .reminders
            .as_ref()
            .map(|r| (r.cron_job.clone(), r.last_schedule_time.clone()));
        let timeouts = current
            .timeouts
            .as_ref()
            .map(|t| (t.cron_job.clone(), t.last_schedule_time.clone()));
        let expect = |section| {
            self.sections
                .get(&section)
                .map(|(name, time)| (Some(name.clone()), time.clone()))
        };
        reminders == expect(Section::Reminders) && timeouts == expect(Section::Timeouts)
    }

    /// The JSON merge patch of the status subresource that writes this status. Worker-owned
    /// fields (`lastRun`, `lastSuccessfulRunAt`) are not mentioned, so they stay; a disabled
    /// section is removed.
    pub fn merge_patch(&self) -> Value {
        let mut status = json!({
            "observedGeneration": self.observed_generation,
            "conditions": self.conditions,
        });
        if self.sections_known {
            for (section, field) in [
                (Section::Reminders, "reminders"),
                (Section::Timeouts, "timeouts"),
            ] {
                status[field] = match self.sections.get(&section) {
                    Some((name, time)) => json!({ "cronJob": name, "lastScheduleTime": time }),
                    None => Value::Null,
                };
            }
        }
        json!({ "status": status })
    }

    /// The `Ready` condition.
    pub fn ready(&self) -> &Condition {
        &self.conditions[0]
    }
}
