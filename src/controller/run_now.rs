//! Manual runs: the `signet.dev/run-now` annotation makes the controller start a Job from the
//! named section's CronJob template (once per request, named by the policy's resourceVersion),
//! then clear the annotation. A value naming no enabled section is refused with an Event.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use serde_json::json;

use super::build::Desired;
use super::cache;
use super::context::Context;
use super::error::Error;
use super::events::publish;
use super::names;
use crate::constants::{ANNOTATION_INSTANTIATE, ANNOTATION_RUN_NOW, event};
use crate::crd::SignaturePolicy;
use crate::policy::Section;

/// The run-now step: when the policy carries a request, starts the Job it asks for, then clears
/// the annotation.
pub(super) async fn run_now(
    policy: &SignaturePolicy,
    desired: &Desired,
    ctx: &Context,
) -> Result<(), Error> {
    match policy.annotations().get(ANNOTATION_RUN_NOW) {
        Some(request) => start(policy, desired, request, ctx).await,
        None => {
            // Cleared by an earlier attempt whose answer was lost, or by a person.
            ctx.forget_run_now(policy);
            Ok(())
        }
    }
}

/// Starts the Job `request` asks for, then clears the annotation.
async fn start(
    policy: &SignaturePolicy,
    desired: &Desired,
    request: &str,
    ctx: &Context,
) -> Result<(), Error> {
    let namespace = policy.namespace().unwrap_or_default();
    let target = Section::parse(request)
        .and_then(|s| desired.cron_jobs.iter().find(|(section, _)| *section == s));
    match target {
        Some((section, cron_job)) => {
            let cron_name = cron_job.name_any();
            // The policy's resourceVersion when the request was first seen names it, so a
            // retried reconcile does not start a second Job, even after other writes.
            let stamp = ctx.run_now_stamp(policy);
            let job_name = names::manual_job(&cron_name, &stamp);
            // Owned by the CronJob, as Kubernetes' own Jobs are, so it goes when the CronJob does.
            let owner = cache::get(&ctx.stores.cron_jobs, &namespace, &cron_name)
                .and_then(|stored| stored.uid.as_deref().map(String::from))
                .map(|uid| OwnerReference {
                    api_version: "batch/v1".into(),
                    kind: "CronJob".into(),
                    name: cron_name.clone(),
                    uid,
                    controller: Some(false),
                    block_owner_deletion: Some(true),
                });
            let template = cron_job
                .spec
                .as_ref()
                .map(|s| s.job_template.clone())
                .unwrap_or_default();
            let mut labels = template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            labels.insert(
                crate::constants::LABEL_COMPONENT.into(),
                section.as_str().into(),
            );
            let job = Job {
                metadata: ObjectMeta {
                    name: Some(job_name.clone()),
                    namespace: Some(namespace.clone()),
                    labels: Some(labels),
                    annotations: Some(
                        [(ANNOTATION_INSTANTIATE.to_owned(), "manual".to_owned())].into(),
                    ),
                    owner_references: owner.map(|o| vec![o]),
                    ..Default::default()
                },
                spec: template.spec,
                status: None,
            };
            let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
            match jobs.create(&PostParams::default(), &job).await {
                Ok(_) => {
                    let note = format!("started Job {job_name} from CronJob {cron_name}");
                    publish(
                        ctx,
                        policy,
                        EventType::Normal,
                        event::MANUAL_RUN,
                        "RunNow",
                        note,
                    )
                    .await;
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(source) => {
                    return Err(Error::RunNow {
                        action: format!("create Job {namespace}/{job_name}"),
                        source,
                    });
                }
            }
        }
        None => {
            let enabled: Vec<&str> = desired.cron_jobs.iter().map(|(s, _)| s.as_str()).collect();
            let note = format!(
                "{ANNOTATION_RUN_NOW}={request:?} names no enabled section; use one of: {}",
                enabled.join(", ")
            );
            publish(
                ctx,
                policy,
                EventType::Warning,
                event::MANUAL_RUN_REFUSED,
                "RunNow",
                note,
            )
            .await;
        }
    }
    let clear = json!({ "metadata": { "annotations": { ANNOTATION_RUN_NOW: null } } });
    let policies: Api<SignaturePolicy> = Api::namespaced(ctx.client.clone(), &namespace);
    policies
        .patch(
            &policy.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&clear),
        )
        .await
        .map_err(|source| Error::RunNow {
            action: format!(
                "clear {ANNOTATION_RUN_NOW} on {namespace}/{}",
                policy.name_any()
            ),
            source,
        })?;
    ctx.forget_run_now(policy);
    Ok(())
}
