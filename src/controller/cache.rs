//! The objects the controller owns, as kube-runtime reflector stores fed by label-selected
//! watches. [`slim`] (the watches' `.modify()`) keeps only what reconciles read: names, uid,
//! labels, owner references, the creation time, the desired-object hash the controller stamped,
//! when each field manager last wrote, and a CronJob's last schedule time; the bodies (a CronJob
//! carries the policy spec in its environment) are dropped, so memory stays small.
//! [`in_place`] decides from such a stored object alone whether an apply is needed.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding, RoleRef};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta, Time};
use kube::Resource;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::constants::{
    ANNOTATION_DESIRED_HASH, FIELD_MANAGER, LABEL_MANAGED_BY, LABEL_POLICY, MANAGED_BY,
};

/// A kind whose objects the controller owns and watches.
pub trait OwnedKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Drops the kind's body, keeping what reconciles read of it.
    fn drop_body(&mut self);
}

impl OwnedKind for ServiceAccount {
    fn drop_body(&mut self) {
        self.automount_service_account_token = None;
        self.image_pull_secrets = None;
        self.secrets = None;
    }
}

impl OwnedKind for Role {
    fn drop_body(&mut self) {
        self.rules = None;
    }
}

impl OwnedKind for RoleBinding {
    fn drop_body(&mut self) {
        self.role_ref = RoleRef::default();
        self.subjects = None;
    }
}

impl OwnedKind for CronJob {
    fn drop_body(&mut self) {
        self.spec = None;
        let last_schedule_time = self.status.take().and_then(|s| s.last_schedule_time);
        self.status = last_schedule_time.map(|time| CronJobStatus {
            last_schedule_time: Some(time),
            ..Default::default()
        });
    }
}

/// Reduces a watched object to what the controller reads (see the module documentation).
pub fn slim<K: OwnedKind>(object: &mut K) {
    slim_meta(object.meta_mut());
    object.drop_body();
}

fn slim_meta(meta: &mut ObjectMeta) {
    *meta = ObjectMeta {
        name: meta.name.take(),
        namespace: meta.namespace.take(),
        uid: meta.uid.take(),
        resource_version: meta.resource_version.take(),
        generation: meta.generation,
        creation_timestamp: meta.creation_timestamp.take(),
        deletion_timestamp: meta.deletion_timestamp.take(),
        labels: meta.labels.take(),
        owner_references: meta.owner_references.take(),
        annotations: meta.annotations.take().and_then(|mut all| {
            let hash = all.remove(ANNOTATION_DESIRED_HASH)?;
            Some([(ANNOTATION_DESIRED_HASH.to_owned(), hash)].into())
        }),
        managed_fields: meta.managed_fields.take().map(|entries| {
            entries
                .into_iter()
                .filter(|e| {
                    is_ours(e) || (e.subresource.is_none() && touches_what_signet_writes(e))
                })
                .map(|e| ManagedFieldsEntry {
                    manager: e.manager,
                    time: e.time,
                    ..Default::default()
                })
                .collect()
        }),
        ..Default::default()
    };
}

fn is_ours(entry: &ManagedFieldsEntry) -> bool {
    entry.manager.as_deref() == Some(FIELD_MANAGER)
}

/// Whether a field manager's set includes anything Signet writes: the body (spec, rules,
/// subjects, ...), owner references, or Signet's labels and annotations. Other managers'
/// labels and annotations (a person's `kubectl annotate`) do not count.
fn touches_what_signet_writes(entry: &ManagedFieldsEntry) -> bool {
    let Some(fields) = entry.fields_v1.as_ref().and_then(|f| f.0.as_object()) else {
        return false;
    };
    fields.iter().any(|(key, value)| {
        if key != "f:metadata" {
            return true;
        }
        let ours = |map: Option<&serde_json::Value>| {
            map.and_then(|m| m.as_object()).is_some_and(|m| {
                m.keys().any(|k| {
                    k.starts_with("f:signet.dev/") || k.starts_with("f:app.kubernetes.io/")
                })
            })
        };
        value.get("f:ownerReferences").is_some()
            || ours(value.get("f:labels"))
            || ours(value.get("f:annotations"))
    })
}

/// The policy named by `signet.dev/policy`, when the object is managed by Signet.
pub fn managing_policy(meta: &ObjectMeta) -> Option<&str> {
    let labels = meta.labels.as_ref()?;
    (labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY))
        .then(|| labels.get(LABEL_POLICY).map(String::as_str))?
}

/// `object` with [`ANNOTATION_DESIRED_HASH`] set to the hash of `object` as given, and the hash.
/// The hash is SHA-256 of the object's JSON (k8s-openapi serialises fields in a fixed order and
/// maps sorted), so it is stable across restarts and versions of the controller.
pub fn stamped<K: OwnedKind>(object: &K) -> (K, String) {
    let json = serde_json::to_vec(object).unwrap_or_default();
    let hash = hex::encode(&Sha256::digest(&json)[..16]);
    let mut stamped = object.clone();
    stamped
        .meta_mut()
        .annotations
        .get_or_insert_default()
        .insert(ANNOTATION_DESIRED_HASH.to_owned(), hash.clone());
    (stamped, hash)
}

/// Whether the stored (watched) object is the desired object whose hash is `hash`: it carries
/// that hash, so the controller applied exactly that object, and no other field manager wrote a
/// field Signet writes since (a person's `kubectl edit` of the schedule, say). Field managers
/// record when they last wrote; the API server keeps whole seconds, so an edit in the same
/// second as the controller's apply is taken as older.
pub fn in_place<K: OwnedKind>(stored: &K, hash: &str) -> bool {
    let meta = stored.meta();
    let stamped = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_DESIRED_HASH))
        .is_some_and(|h| h == hash);
    stamped && !edited_since_applied(meta)
}

fn edited_since_applied(meta: &ObjectMeta) -> bool {
    let entries = meta.managed_fields.iter().flatten();
    let when = |e: &ManagedFieldsEntry| e.time.as_ref().map(|t| t.0);
    let ours = entries
        .clone()
        .filter(|e| is_ours(e))
        .filter_map(when)
        .max();
    let theirs = entries
        .filter(|e| !is_ours(e))
        .map(|e| when(e).unwrap_or_default())
        .max();
    match (ours, theirs) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(ours), Some(theirs)) => theirs > ours,
    }
}

/// The stored object `namespace/name`, if watched.
pub fn get<K: OwnedKind>(
    store: &Store<K>,
    namespace: &str,
    name: &str,
) -> Option<std::sync::Arc<K>> {
    store.get(&ObjectRef::new(name).within(namespace))
}

/// A CronJob's creation time (when its section's schedule began) and last schedule time.
pub fn cron_job_times(cron_job: &CronJob) -> (Option<&Time>, Option<&Time>) {
    (
        cron_job.metadata.creation_timestamp.as_ref(),
        cron_job
            .status
            .as_ref()
            .and_then(|s| s.last_schedule_time.as_ref()),
    )
}

/// What the controller knows of the objects it owns, kept current by watches; reconciles read
/// these instead of the API. Cheap to clone (shared).
#[derive(Clone)]
pub struct Stores {
    /// Worker CronJobs.
    pub cron_jobs: Store<CronJob>,
    /// Worker ServiceAccounts.
    pub service_accounts: Store<ServiceAccount>,
    /// Worker Roles.
    pub roles: Store<Role>,
    /// Worker RoleBindings.
    pub role_bindings: Store<RoleBinding>,
}

/// The writing ends of [`Stores`]: the watches' `.reflect()`, or a test playing the watches.
pub struct Writers {
    /// Worker CronJobs.
    pub cron_jobs: reflector::store::Writer<CronJob>,
    /// Worker ServiceAccounts.
    pub service_accounts: reflector::store::Writer<ServiceAccount>,
    /// Worker Roles.
    pub roles: reflector::store::Writer<Role>,
    /// Worker RoleBindings.
    pub role_bindings: reflector::store::Writer<RoleBinding>,
}

/// Empty stores and their writers.
pub fn stores() -> (Stores, Writers) {
    let (cron_jobs, cron_job_writer) = reflector::store();
    let (service_accounts, sa_writer) = reflector::store();
    let (roles, role_writer) = reflector::store();
    let (role_bindings, rb_writer) = reflector::store();
    (
        Stores {
            cron_jobs,
            service_accounts,
            roles,
            role_bindings,
        },
        Writers {
            cron_jobs: cron_job_writer,
            service_accounts: sa_writer,
            roles: role_writer,
            role_bindings: rb_writer,
        },
    )
}

/// Follows one watch event as the watches do: slimmed, then stored.
pub fn follow<K: OwnedKind>(writer: &mut reflector::store::Writer<K>, event: watcher::Event<K>) {
    writer.apply_watcher_event(&event.modify(slim));
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
    use serde_json::json;

    fn at(second: i64) -> Time {
        Time(jiff::Timestamp::from_second(second).unwrap())
    }

    fn entry(manager: &str, second: i64, fields: serde_json::Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Update".into()),
            time: Some(at(second)),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    fn applied(desired: &CronJob, managers: Vec<ManagedFieldsEntry>) -> (CronJob, String) {
        let (mut live, hash) = stamped(desired);
        live.metadata.managed_fields = Some(managers);
        live.metadata.annotations.as_mut().unwrap().insert(
            "kubectl.kubernetes.io/last-applied-configuration".into(),
            "x".repeat(10_000),
        );
        live.status = Some(CronJobStatus {
            last_schedule_time: Some(at(1_800_000_000)),
            active: Some(vec![Default::default()]),
            ..Default::default()
        });
        slim(&mut live);
        (live, hash)
    }

    fn desired() -> CronJob {
        serde_json::from_value(json!({
            "metadata": {"name": "p-reminders", "namespace": "ns",
                "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_POLICY: "p"}},
            "spec": {"schedule": "*/30 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "containers": [{"name": "worker", "env": [{"name": "SIGNET_POLICY", "value": "{...}"}]}]
            }}}}}
        }))
        .unwrap()
    }

    #[test]
    fn slimming_keeps_what_reconciles_read() {
        let ours = entry(FIELD_MANAGER, 100, json!({"f:spec": {}}));
        let (live, _) = applied(&desired(), vec![ours]);
        assert_eq!(
            live.spec, None,
            "the body (and the policy in its env) is dropped"
        );
        assert_eq!(managing_policy(&live.metadata), Some("p"));
        assert_eq!(
            live.metadata.annotations.as_ref().unwrap().len(),
            1,
            "only the desired hash is kept"
        );
        assert_eq!(
            live.status.as_ref().unwrap(),
            &CronJobStatus {
                last_schedule_time: Some(at(1_800_000_000)),
                ..Default::default()
            }
        );
        let kept = &live.metadata.managed_fields.as_ref().unwrap()[0];
        assert_eq!(kept.fields_v1, None, "field sets are dropped");
        assert_eq!(kept.time, Some(at(100)));
    }

    #[test]
    fn an_object_is_in_place_while_it_carries_the_hash_and_nobody_else_wrote_it_since() {
        let desired = desired();
        let ours = || entry(FIELD_MANAGER, 100, json!({"f:spec": {}}));
        let (live, hash) = applied(&desired, vec![ours()]);
        assert!(in_place(&live, &hash));
        let (other_hash, _) = {
            let mut changed = desired.clone();
            changed.spec.as_mut().unwrap().schedule = "0 * * * *".into();
            let (_, h) = stamped(&changed);
            (h, ())
        };
        assert_ne!(other_hash, hash);
        assert!(!in_place(&live, &other_hash), "another desired object");

        // A person edits the schedule after the apply: not in place.
        let edit = entry("kubectl-edit", 200, json!({"f:spec": {"f:schedule": {}}}));
        let (edited, _) = applied(&desired, vec![ours(), edit.clone()]);
        assert!(!in_place(&edited, &hash));
        // ... restored by the next apply: in place again.
        let restored = entry(FIELD_MANAGER, 300, json!({"f:spec": {}}));
        let (restored, _) = applied(&desired, vec![restored, edit]);
        assert!(in_place(&restored, &hash));
        // Status writes and other people's own labels do not count.
        let status = ManagedFieldsEntry {
            subresource: Some("status".into()),
            ..entry("kube-controller-manager", 400, json!({"f:status": {}}))
        };
        let label = entry(
            "kubectl-label",
            400,
            json!({"f:metadata": {"f:labels": {"f:team": {}}}}),
        );
        let (annotated, _) = applied(&desired, vec![ours(), status, label]);
        assert!(in_place(&annotated, &hash));
        // But someone changing Signet's own label does.
        let relabel = entry(
            "kubectl-label",
            400,
            json!({"f:metadata": {"f:labels": {"f:signet.dev/policy": {}}}}),
        );
        let (relabelled, _) = applied(&desired, vec![ours(), relabel]);
        assert!(!in_place(&relabelled, &hash));
        // Objects applied before the hash existed are applied once more.
        let mut unstamped = desired.clone();
        slim(&mut unstamped);
        assert!(!in_place(&unstamped, &hash));
    }
}
