//! The events step: Kubernetes Events on transitions only (objects applied or pruned, the spec
//! turning invalid, the API server refusing a step, a section turning stale or recovering,
//! `Delivering` turning False or True again), never one per reconcile. Publishing is best effort: a failure is logged, never fails the reconcile.

use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};

use super::context::Context;
use super::staleness::Report;
use super::status::ControllerStatus;
use crate::constants::{CONDITION_DELIVERING, CONDITION_STALE, event, reason};
use crate::crd::SignaturePolicy;

/// A Warning when the spec turned invalid (or its problems changed); nothing when the status
/// already said so.
pub async fn announce_invalid(
    ctx: &Context,
    policy: &SignaturePolicy,
    computed: &ControllerStatus,
) {
    let ready = &computed.ready;
    if !ready_already_says(policy, computed) {
        let note = ready.message.clone();
        publish(
            ctx,
            policy,
            EventType::Warning,
            event::INVALID_SPEC,
            "Validate",
            note,
        )
        .await;
    }
}

/// A Warning, reason the step's (`ApplyFailed`, ...), when the API server's refusal is new (or
/// it says something else now); nothing on a retry that meets the same refusal. Transitions of
/// `Stale` are announced as in any reconcile of a valid spec.
pub async fn announce_refused(
    ctx: &Context,
    policy: &SignaturePolicy,
    computed: &ControllerStatus,
    report: &Report,
) {
    announce_staleness(ctx, policy, computed, report).await;
    if !ready_already_says(policy, computed) {
        let ready = &computed.ready;
        let action = match ready.reason.as_str() {
            reason::PRUNE_FAILED => "Prune",
            reason::RUN_NOW_FAILED => "RunNow",
            _ => "Apply",
        };
        publish(
            ctx,
            policy,
            EventType::Warning,
            &ready.reason,
            action,
            ready.message.clone(),
        )
        .await;
    }
}

/// Whether the policy's status already shows the computed `Ready` condition's status, reason and
/// message: then it was announced when it was written.
fn ready_already_says(policy: &SignaturePolicy, computed: &ControllerStatus) -> bool {
    let ready = &computed.ready;
    policy
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == ready.type_))
        .is_some_and(|c| {
            c.status == ready.status && c.reason == ready.reason && c.message == ready.message
        })
}

/// The Events of a reconcile of a valid spec: what was applied and pruned, and transitions of
/// the `Stale` condition.
pub async fn announce(
    ctx: &Context,
    policy: &SignaturePolicy,
    computed: &ControllerStatus,
    report: &Report,
    applied: &[String],
    pruned: &[String],
) {
    announce_staleness(ctx, policy, computed, report).await;
    if !applied.is_empty() {
        let note = format!("applied {}", applied.join(", "));
        publish(
            ctx,
            policy,
            EventType::Normal,
            event::APPLIED,
            "Apply",
            note,
        )
        .await;
    }
    if !pruned.is_empty() {
        let note = format!("deleted {} (section disabled)", pruned.join(", "));
        publish(ctx, policy, EventType::Normal, event::PRUNED, "Prune", note).await;
    }
}

/// Transitions of the `Stale` condition only: a Warning when it turns True, a Normal Event when
/// it clears because runs succeed again. Clearing by suspension or an invalid spec follows the
/// person's own edit and says so in the condition, so it is not announced.
async fn announce_staleness(
    ctx: &Context,
    policy: &SignaturePolicy,
    computed: &ControllerStatus,
    report: &Report,
) {
    let was_stale = policy
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION_STALE))
        .is_some_and(|c| c.status == "True");
    let stale = &computed.stale;
    if stale.status == "True" && !was_stale {
        let note = stale.message.clone();
        publish(
            ctx,
            policy,
            EventType::Warning,
            event::STALE,
            "Assess",
            note,
        )
        .await;
    } else if stale.status == "False" && was_stale && stale.reason == reason::RUNS_SUCCEEDING {
        let note = report.recovery_note();
        publish(
            ctx,
            policy,
            EventType::Normal,
            event::RECOVERED,
            "Assess",
            note,
        )
        .await;
    }
}

/// Transitions of the `Delivering` condition: a Warning when it turns False (from True or from
/// absent), a Normal Event when it turns True again after being False.
pub async fn announce_delivering(
    ctx: &Context,
    policy: &SignaturePolicy,
    computed: &ControllerStatus,
) {
    let Some(delivering) = &computed.delivering else {
        return;
    };
    let was = policy
        .status
        .as_ref()
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == CONDITION_DELIVERING)
        })
        .map(|c| c.status.as_str());
    let (type_, reason) = match (was, delivering.status.as_str()) {
        (Some("False"), "False") | (Some("True") | None, "True") => return,
        (_, "False") => (EventType::Warning, event::DELIVERY_FAILING),
        (_, _) => (EventType::Normal, event::DELIVERY_RECOVERED),
    };
    let note = delivering.message.clone();
    publish(ctx, policy, type_, reason, "Assess", note).await;
}

/// Publishes an Event; a failure to do so is logged, never fatal.
pub async fn publish(
    ctx: &Context,
    policy: &SignaturePolicy,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    if let Err(error) = recorder.publish(&event, &policy.object_ref(&())).await {
        tracing::warn!(policy = %policy.name_any(), %error, "could not publish an Event");
    }
}
