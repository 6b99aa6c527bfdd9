//! The part of a policy's status the controller owns, computed purely: `observedGeneration`, the
//! `Ready`, `Suspended`, `Stale` and `Delivering` conditions, and each section's CronJob name and
//! last schedule time. Workers own `lastRun` and `lastSuccessfulRunAt` (the reflect step,
//! [`super::jobs::reflect`], writes `lastRun` for a run Kubernetes failed); this merge patch
//! ([`StatusPatch`]) leaves them be. `Ready` is about reconciliation only; whether runs succeed is
//! `Stale`'s and `Delivering`'s business.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde::{Serialize, Serializer};

use super::delivering;
use super::staleness::StaleSummary;
use crate::constants::{
    CONDITION_DELIVERING, CONDITION_READY, CONDITION_STALE, CONDITION_SUSPENDED, reason,
};
use crate::crd::{SignaturePolicy, SignaturePolicyStatus};
use crate::policy::Section;
use crate::policy::validate::FieldError;

/// Longest condition message the API server accepts.
const MAX_MESSAGE: usize = 32_768;

/// What the reconcile found.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The CronJobs (by section) are in place.
    Reconciled(Vec<(Section, String)>),
    /// Semantic validation failed; nothing was touched.
    Invalid(Vec<FieldError>),
    /// The API server refused a step: its reason (`ApplyFailed`, ...) and what it said.
    Refused {
        /// The step's reason, from [`crate::controller::Error::reason`].
        reason: &'static str,
        /// What was refused and the API server's message.
        message: String,
    },
}

/// The controller-owned status of a policy.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerStatus {
    /// `metadata.generation` reconciled.
    pub observed_generation: Option<i64>,
    /// The `Ready` condition.
    pub ready: Condition,
    /// The `Suspended` condition.
    pub suspended: Condition,
    /// The `Stale` condition.
    pub stale: Condition,
    /// The `Delivering` condition; `None` before any run (see [`delivering::summary`]).
    pub delivering: Option<Condition>,
    /// Per enabled section: CronJob name and its last schedule time; disabled sections are
    /// absent. `None` when not known (an invalid spec leaves the sections as they were).
    pub sections: Option<BTreeMap<Section, (String, Option<Time>)>>,
}

/// Computes the controller's status. `stale` is the staleness verdict (see
/// [`super::staleness`]); `last_schedule` comes from the observed CronJobs; `now` stamps
/// conditions whose status changes.
pub fn compute(
    policy: &SignaturePolicy,
    outcome: &Outcome,
    stale: &StaleSummary,
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
        Outcome::Refused { reason, message } => ("False", *reason, message.clone(), None),
    };
    let suspended = policy.spec.suspend;
    ControllerStatus {
        observed_generation: generation,
        ready: condition(
            current,
            CONDITION_READY,
            ready,
            reason,
            message,
            generation,
            now,
        ),
        suspended: condition(
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
        stale: condition(
            current,
            CONDITION_STALE,
            if stale.stale { "True" } else { "False" },
            stale.reason,
            stale.message.clone(),
            generation,
            now,
        ),
        delivering: delivering::summary(policy).map(|d| {
            let status = if d.delivering { "True" } else { "False" };
            condition(
                current,
                CONDITION_DELIVERING,
                status,
                &d.reason,
                d.message,
                generation,
                now,
            )
        }),
        sections,
    }
}

/// Since when the policy has been running on schedule: the `lastTransitionTime` [`compute`] gives
/// the `Suspended` condition when it is `False` (kept from the current status, else `now`).
/// `None` while suspended.
pub fn active_since(policy: &SignaturePolicy, now: &Time) -> Option<Time> {
    if policy.spec.suspend {
        return None;
    }
    let kept = policy.status.as_ref().and_then(|status| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_SUSPENDED && c.status == "False")
    });
    Some(kept.map_or_else(|| now.clone(), |c| c.last_transition_time.clone()))
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
    /// The conditions the controller owns, in the order they are written.
    pub fn conditions(&self) -> Vec<&Condition> {
        let mut conditions = vec![&self.ready, &self.suspended, &self.stale];
        conditions.extend(&self.delivering);
        conditions
    }

    /// Whether `current` already says all of this (then nothing is written).
    pub fn is_reflected_in(&self, current: Option<&SignaturePolicyStatus>) -> bool {
        let Some(current) = current else { return false };
        if current.observed_generation != self.observed_generation {
            return false;
        }
        let owned = [
            CONDITION_READY,
            CONDITION_SUSPENDED,
            CONDITION_STALE,
            CONDITION_DELIVERING,
        ];
        let mine: Vec<&Condition> = current
            .conditions
            .iter()
            .filter(|c| owned.contains(&c.type_.as_str()))
            .collect();
        let conditions = self.conditions();
        if mine.len() != conditions.len() || !conditions.iter().all(|c| mine.contains(c)) {
            return false;
        }
        let Some(sections) = &self.sections else {
            return true;
        };
        let reminders = current
            .reminders
            .as_ref()
            .map(|r| (r.cron_job.clone(), r.last_schedule_time.clone()));
        let timeouts = current
            .timeouts
            .as_ref()
            .map(|t| (t.cron_job.clone(), t.last_schedule_time.clone()));
        let expect = |section| {
            sections
                .get(&section)
                .map(|(name, time)| (Some(name.clone()), time.clone()))
        };
        reminders == expect(Section::Reminders) && timeouts == expect(Section::Timeouts)
    }

    /// The merge patch of the status subresource that writes this status.
    pub fn merge_patch(&self) -> StatusPatch {
        let section = |section| match &self.sections {
            None => SectionPatch::Untouched,
            Some(sections) => match sections.get(&section) {
                Some((name, time)) => SectionPatch::Set {
                    cron_job: name.clone(),
                    last_schedule_time: time.clone(),
                },
                None => SectionPatch::Removed,
            },
        };
        StatusPatch {
            status: StatusFields {
                observed_generation: self.observed_generation,
                conditions: self.conditions().into_iter().cloned().collect(),
                reminders: section(Section::Reminders),
                timeouts: section(Section::Timeouts),
            },
        }
    }
}

/// The controller's status write: a JSON merge patch of the status subresource, typed after
/// [`SignaturePolicyStatus`] (same field names; a test decodes it as one). Not the struct
/// itself, because a merge patch must also say what to remove (`null`: a disabled section, a
/// last schedule time no longer known) and must not mention the worker-owned fields (`lastRun`,
/// `lastSuccessfulRunAt`) so they stay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusPatch {
    /// The status subresource.
    pub status: StatusFields,
}

/// The controller-owned fields of [`SignaturePolicyStatus`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusFields {
    /// `metadata.generation` reconciled.
    pub observed_generation: Option<i64>,
    /// `Ready`, `Suspended`, `Stale`, then `Delivering` once there is a run, in that order.
    pub conditions: Vec<Condition>,
    /// `status.reminders`' controller-owned fields.
    #[serde(skip_serializing_if = "SectionPatch::is_untouched")]
    pub reminders: SectionPatch,
    /// `status.timeouts`' controller-owned fields.
    #[serde(skip_serializing_if = "SectionPatch::is_untouched")]
    pub timeouts: SectionPatch,
}

/// What the patch does to a section's status.
#[derive(Debug, Clone, PartialEq)]
pub enum SectionPatch {
    /// Not mentioned: left as it is.
    Untouched,
    /// `null`: the section is disabled, its status (worker fields included) goes.
    Removed,
    /// The section's CronJob and its last schedule time (`null` when not known).
    Set {
        /// `cronJob`.
        cron_job: String,
        /// `lastScheduleTime`.
        last_schedule_time: Option<Time>,
    },
}

impl SectionPatch {
    fn is_untouched(&self) -> bool {
        *self == SectionPatch::Untouched
    }
}

impl Serialize for SectionPatch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Fields<'a> {
            cron_job: &'a str,
            last_schedule_time: &'a Option<Time>,
        }
        match self {
            SectionPatch::Untouched | SectionPatch::Removed => serializer.serialize_none(),
            SectionPatch::Set {
                cron_job,
                last_schedule_time,
            } => Fields {
                cron_job,
                last_schedule_time,
            }
            .serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constants::CONDITION_STALE;
    use crate::crd::{ReminderRun, RunOutcome};
    use serde_json::json;

    fn at(second: i64) -> Time {
        Time(jiff::Timestamp::from_second(second).unwrap())
    }

    fn policy(suspend: bool) -> SignaturePolicy {
        let spec = serde_json::from_value(json!({
            "suspend": suspend,
            "database": {"urlSecretRef": {"name": "db", "key": "url"}},
            "reminders": {"channels": ["log"]},
            "channels": [{"name": "log", "log": {}}],
        }))
        .unwrap();
        let mut policy = SignaturePolicy::new("p", spec);
        policy.metadata.generation = Some(1);
        policy
    }

    fn stale(stale: bool, reason: &'static str, message: &str) -> StaleSummary {
        StaleSummary {
            stale,
            reason,
            message: message.into(),
        }
    }

    fn reconciled(
        policy: &SignaturePolicy,
        summary: &StaleSummary,
        now: &Time,
    ) -> ControllerStatus {
        let outcome = Outcome::Reconciled(vec![(Section::Reminders, "p-reminders".into())]);
        compute(policy, &outcome, summary, &BTreeMap::new(), now)
    }

    /// `policy` with `computed` written to its status.
    fn written(mut policy: SignaturePolicy, computed: &ControllerStatus) -> SignaturePolicy {
        let patch = serde_json::to_value(computed.merge_patch()).unwrap();
        policy.status = Some(serde_json::from_value(patch["status"].clone()).unwrap());
        policy
    }

    #[test]
    fn active_since_is_the_suspended_false_transition() {
        let now = at(1_800_000_000);
        assert_eq!(
            active_since(&policy(false), &now),
            Some(now.clone()),
            "first reconcile"
        );
        assert_eq!(active_since(&policy(true), &now), None);
        let fresh = stale(false, reason::RUNS_SUCCEEDING, "fine");
        let running = written(
            policy(false),
            &reconciled(&policy(false), &fresh, &at(1_700_000_000)),
        );
        assert_eq!(active_since(&running, &now), Some(at(1_700_000_000)));
        // Suspended, then resumed: the status still says Suspended=True until this reconcile.
        let suspended = written(
            policy(true),
            &reconciled(&policy(true), &fresh, &at(1_700_000_000)),
        );
        let mut resumed = suspended.clone();
        resumed.spec.suspend = false;
        assert_eq!(active_since(&resumed, &now), Some(now.clone()));
        let computed = reconciled(&resumed, &fresh, &now);
        assert_eq!(
            computed.suspended.last_transition_time, now,
            "the same instant"
        );
    }

    #[test]
    fn the_stale_condition_moves_its_transition_time_only_on_a_status_change() {
        let p = policy(false);
        let first = reconciled(&p, &stale(false, reason::RUNS_SUCCEEDING, "fine"), &at(100));
        assert_eq!(
            first
                .conditions()
                .iter()
                .map(|c| c.type_.as_str())
                .collect::<Vec<_>>(),
            [CONDITION_READY, CONDITION_SUSPENDED, CONDITION_STALE]
        );
        let p = written(p, &first);
        let turned = reconciled(
            &p,
            &stale(true, reason::NO_RECENT_SUCCESS, "reminders: a"),
            &at(200),
        );
        assert_eq!(turned.stale.last_transition_time, at(200));
        assert!(
            !turned.is_reflected_in(p.status.as_ref()),
            "the change is written"
        );
        let p = written(p, &turned);
        let reworded = reconciled(
            &p,
            &stale(true, reason::NO_RECENT_SUCCESS, "reminders: b"),
            &at(300),
        );
        assert_eq!(reworded.stale.last_transition_time, at(200));
        assert_eq!(reworded.stale.message, "reminders: b");
        assert!(!reworded.is_reflected_in(p.status.as_ref()));
        let p = written(p, &reworded);
        let same = reconciled(
            &p,
            &stale(true, reason::NO_RECENT_SUCCESS, "reminders: b"),
            &at(400),
        );
        assert!(same.is_reflected_in(p.status.as_ref()), "nothing to write");
        let cleared = reconciled(&p, &stale(false, reason::RUNS_SUCCEEDING, "fine"), &at(500));
        assert_eq!(cleared.stale.last_transition_time, at(500));
        assert_eq!(
            cleared.ready.last_transition_time,
            at(100),
            "Ready untouched"
        );
    }

    #[test]
    fn the_patch_is_a_status_and_removes_disabled_sections() {
        let p = policy(false);
        let fresh = stale(false, reason::RUNS_SUCCEEDING, "fine");
        let computed = reconciled(&p, &fresh, &at(100));
        let patch = serde_json::to_value(computed.merge_patch()).unwrap();
        let status: SignaturePolicyStatus =
            serde_json::from_value(patch["status"].clone()).unwrap();
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(status.conditions[0].type_, CONDITION_READY);
        assert_eq!(
            status.reminders.unwrap().cron_job.as_deref(),
            Some("p-reminders")
        );
        assert_eq!(
            patch["status"]["reminders"]["lastScheduleTime"],
            json!(null),
            "an unknown last schedule time is cleared"
        );
        assert_eq!(
            patch["status"]["timeouts"],
            json!(null),
            "the disabled section is removed"
        );
        let invalid = compute(
            &p,
            &Outcome::Invalid(Vec::new()),
            &fresh,
            &BTreeMap::new(),
            &at(100),
        );
        let patch = serde_json::to_value(invalid.merge_patch()).unwrap();
        assert_eq!(
            patch["status"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["conditions", "observedGeneration"],
            "an invalid spec leaves the sections as they are"
        );
    }

    /// `policy` after `computed` was written and a worker then reported `outcome`.
    fn then_run(
        mut policy: SignaturePolicy,
        computed: &ControllerStatus,
        outcome: RunOutcome,
        reason: Option<&str>,
    ) -> SignaturePolicy {
        let status = policy.status.get_or_insert_with(Default::default);
        status.observed_generation = computed.observed_generation;
        status.conditions = computed.conditions().into_iter().cloned().collect();
        let reminders = status.reminders.get_or_insert_with(Default::default);
        reminders.cron_job = Some("p-reminders".into());
        reminders.last_run = Some(ReminderRun {
            job: "p-reminders-1".into(),
            started_at: at(1),
            finished_at: at(2),
            outcome,
            reason: reason.map(Into::into),
            message: Some("m".into()),
            due: 0,
            sent: 0,
            held: 0,
            failed: 0,
            possible_duplicates: 0,
        });
        policy
    }

    #[test]
    fn the_delivering_condition_moves_its_transition_time_only_on_a_status_change() {
        let fresh = stale(false, reason::RUNS_SUCCEEDING, "fine");
        let first = reconciled(&policy(false), &fresh, &at(100));
        assert_eq!(first.delivering, None, "no run, no condition");
        assert_eq!(first.conditions().len(), 3);

        let p = then_run(
            policy(false),
            &first,
            RunOutcome::Failed,
            Some("ChannelRejected"),
        );
        let failing = reconciled(&p, &fresh, &at(200));
        let condition = failing.delivering.clone().unwrap();
        assert_eq!(
            (
                condition.type_.as_str(),
                condition.status.as_str(),
                condition.reason.as_str()
            ),
            ("Delivering", "False", "ChannelRejected")
        );
        assert_eq!(condition.last_transition_time, at(200));
        assert_eq!(failing.conditions().len(), 4);
        assert!(
            !failing.is_reflected_in(p.status.as_ref()),
            "the new condition is written"
        );

        // Failing again, for another reason: the message follows, not the transition time.
        let p = then_run(p, &failing, RunOutcome::JobFailed, Some("DeadlineExceeded"));
        assert!(failing.is_reflected_in(p.status.as_ref()));
        let again = reconciled(&p, &fresh, &at(300));
        let condition = again.delivering.clone().unwrap();
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("False", "JobFailed")
        );
        assert_eq!(condition.last_transition_time, at(200));

        // A run completes: True, from now, and from then on.
        let p = then_run(p, &again, RunOutcome::Succeeded, None);
        let recovered = reconciled(&p, &fresh, &at(400));
        let condition = recovered.delivering.clone().unwrap();
        assert_eq!(condition.status, "True");
        assert_eq!(condition.last_transition_time, at(400));
        let p = then_run(p, &recovered, RunOutcome::CompletedWithFailures, None);
        let still = reconciled(&p, &fresh, &at(500));
        assert!(
            still.is_reflected_in(p.status.as_ref()),
            "another completed run writes nothing"
        );
        assert_eq!(still.delivering.unwrap().last_transition_time, at(400));
        assert_eq!(still.ready.last_transition_time, at(100), "Ready untouched");
    }
}
