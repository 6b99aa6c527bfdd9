//! The two pipeline steps that write owned objects: apply (server-side apply of each desired
//! object not already in place) and prune (delete the CronJobs of disabled sections). Whether an
//! object is in place is read from the stores ([`cache::in_place`]), so a reconcile that finds
//! everything in place sends no request.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::Store;

use super::build::Desired;
use super::cache::{self, Owned, OwnedKind};
use super::context::Context;
use super::error::Error;
use super::names;
use crate::constants::FIELD_MANAGER;
use crate::policy::Section;
use crate::policy::ValidPolicy;

/// What [`apply`] wrote and learnt.
pub struct Applied {
    /// `Kind name` of each object written.
    pub changed: Vec<String>,
    /// Creation times of the CronJobs, where known: staleness counts a section's runs from them.
    pub cron_jobs_created: BTreeMap<Section, Time>,
}

/// Applies every desired object not already in place.
pub async fn apply(desired: &Desired, namespace: &str, ctx: &Context) -> Result<Applied, Error> {
    let stores = &ctx.stores;
    let mut changed = Vec::new();
    let rbac = [
        apply_one(
            ctx,
            &stores.service_accounts,
            namespace,
            &desired.service_account,
        )
        .await?,
        apply_one(ctx, &stores.roles, namespace, &desired.role).await?,
        apply_one(ctx, &stores.role_bindings, namespace, &desired.role_binding).await?,
    ];
    changed.extend(rbac.into_iter().filter_map(|(wrote, _)| wrote));
    let mut cron_jobs_created = BTreeMap::new();
    for (section, cron_job) in &desired.cron_jobs {
        let (wrote, created) = apply_one(ctx, &stores.cron_jobs, namespace, cron_job).await?;
        changed.extend(wrote);
        if let Some(created) = created {
            cron_jobs_created.insert(*section, created);
        }
    }
    Ok(Applied {
        changed,
        cron_jobs_created,
    })
}

/// Server-side applies `desired`, stamped with its hash, unless the stored object is already
/// it. Returns `Kind name` when it wrote, and the object's creation time when known (from the
/// store, or the API server's answer).
async fn apply_one<K: OwnedKind>(
    ctx: &Context,
    store: &Store<Owned<K>>,
    namespace: &str,
    desired: &K,
) -> Result<(Option<String>, Option<Time>), Error> {
    let name = desired.name_any();
    let (object, hash) = cache::stamped(desired);
    if let Some(stored) = cache::get(store, namespace, &name)
        && cache::in_place(stored.as_ref(), &hash)
    {
        return Ok((None, stored.created.clone()));
    }
    let kind = K::kind(&());
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .map_err(|source| Error::Apply {
            object: format!("{kind} {namespace}/{name}"),
            source,
        })?;
    Ok((
        Some(format!("{kind} {name}")),
        applied.meta().creation_timestamp.clone(),
    ))
}

/// Deletes the policy's CronJobs that are no longer desired (a section was disabled); returns
/// `CronJob name` of each. Only the names this policy's CronJobs can have are looked up, so the
/// cost does not grow with the number of policies; a CronJob must also carry the policy's
/// labels to be deleted.
pub async fn prune(
    policy: &ValidPolicy,
    desired: &Desired,
    ctx: &Context,
) -> Result<Vec<String>, Error> {
    let keep: Vec<String> = desired
        .cron_jobs
        .iter()
        .map(|(_, cj)| cj.name_any())
        .collect();
    let stale: Vec<String> = Section::ALL
        .into_iter()
        .map(|section| names::cronjob(&policy.name, section))
        .filter(|name| !keep.contains(name))
        .filter(|name| {
            cache::get(&ctx.stores.cron_jobs, &policy.namespace, name)
                .is_some_and(|cj| cj.policy.as_deref() == Some(policy.name.as_str()))
        })
        .collect();
    let api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &policy.namespace);
    for name in &stale {
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(Error::Prune {
                    object: format!("CronJob {}/{name}", policy.namespace),
                    source,
                });
            }
        }
    }
    Ok(stale.iter().map(|n| format!("CronJob {n}")).collect())
}
