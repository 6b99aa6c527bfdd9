//! The objects the controller owns, as kube-runtime reflector stores fed by label-selected
//! watches. A store keeps, per object, only what reconciles read ([`Owned`]): its name, uid,
//! creation time, owning policy, the desired-object hash the controller stamped, whether another
//! field manager wrote it since, and a CronJob's last schedule time. Neither bodies nor metadata
//! maps are kept (a CronJob carries the policy spec in its environment; even an empty typed
//! CronJob is ~2.9 KB), so an object costs a few hundred bytes.
//! [`in_place`] decides from such an entry alone whether an apply is needed.

use std::borrow::Cow;
use std::fmt::Debug;
use std::marker::PhantomData;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta, Time};
use kube::Resource;
use kube::runtime::reflector::{self, Lookup, ObjectRef, Store};
use kube::runtime::watcher;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::build::managing_policy;
use super::jobs::Troubles;
use crate::constants::{ANNOTATION_DESIRED_HASH, FIELD_MANAGER};

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
    /// What the controller remembers of `self`; by default, of its metadata alone.
    fn remember(&self) -> Owned<Self> {
        Owned::from_meta(self.meta())
    }
}

impl OwnedKind for ServiceAccount {}

impl OwnedKind for Role {}

impl OwnedKind for RoleBinding {}

impl OwnedKind for CronJob {
    fn remember(&self) -> Owned<Self> {
        Owned {
            last_schedule_time: self
                .status
                .as_ref()
                .and_then(|s| s.last_schedule_time.clone()),
            ..Owned::from_meta(&self.metadata)
        }
    }
}

/// What the controller remembers of one owned object of kind `K`: the entry of a reflector
/// store ([`Lookup`] names it as a `K`).
#[derive(Clone, Debug, PartialEq)]
pub struct Owned<K> {
    /// `metadata.name`.
    pub name: Box<str>,
    /// `metadata.namespace`.
    pub namespace: Option<Box<str>>,
    /// `metadata.uid`.
    pub uid: Option<Box<str>>,
    /// `metadata.creationTimestamp` (a CronJob's marks when its section's schedule began).
    pub created: Option<Time>,
    /// The policy named by `signet.dev/policy`, when the object is managed by Signet.
    pub policy: Option<Box<str>>,
    /// The [`ANNOTATION_DESIRED_HASH`] stamp, when it is one [`stamped`] writes.
    pub desired_hash: Option<[u8; HASH_BYTES]>,
    /// Whether another field manager wrote a field Signet writes after Signet's last apply
    /// (read from `metadata.managedFields`, see [`in_place`]).
    pub edited_since_applied: bool,
    /// A CronJob's `status.lastScheduleTime`.
    pub last_schedule_time: Option<Time>,
    kind: PhantomData<fn() -> K>,
}

/// Length of the desired-object hash (hex-encoded in the annotation).
const HASH_BYTES: usize = 16;

impl<K> Owned<K> {
    /// What is remembered of an object with metadata `meta` (all of it, for kinds whose body
    /// reconciles do not read). A watch of such a kind need only deliver metadata.
    pub fn from_meta(meta: &ObjectMeta) -> Self {
        let desired_hash = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_DESIRED_HASH))
            .and_then(|hex_hash| {
                let mut hash = [0; HASH_BYTES];
                hex::decode_to_slice(hex_hash, &mut hash).ok()?;
                // Only the lowercase form `stamped` writes is a stamp.
                (hex::encode(hash) == *hex_hash).then_some(hash)
            });
        Self {
            name: meta.name.as_deref().unwrap_or_default().into(),
            namespace: meta.namespace.as_deref().map(Into::into),
            uid: meta.uid.as_deref().map(Into::into),
            created: meta.creation_timestamp.clone(),
            policy: managing_policy(meta).map(Into::into),
            desired_hash,
            edited_since_applied: edited_since_applied(meta),
            last_schedule_time: None,
            kind: PhantomData,
        }
    }
}

impl<K: Resource<DynamicType = ()>> Lookup for Owned<K> {
    type DynamicType = ();

    fn kind(dyntype: &()) -> Cow<'_, str> {
        K::kind(dyntype)
    }

    fn group(dyntype: &()) -> Cow<'_, str> {
        K::group(dyntype)
    }

    fn version(dyntype: &()) -> Cow<'_, str> {
        K::version(dyntype)
    }

    fn plural(dyntype: &()) -> Cow<'_, str> {
        K::plural(dyntype)
    }

    fn name(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(&self.name))
    }

    fn namespace(&self) -> Option<Cow<'_, str>> {
        self.namespace.as_deref().map(Cow::Borrowed)
    }

    /// Not kept: the watch resumes from its own resourceVersion, and reconciles do not read it.
    fn resource_version(&self) -> Option<Cow<'_, str>> {
        None
    }

    fn uid(&self) -> Option<Cow<'_, str>> {
        self.uid.as_deref().map(Cow::Borrowed)
    }
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

/// `object` with [`ANNOTATION_DESIRED_HASH`] set to the hash of `object` as given, and the hash.
/// The hash is SHA-256 of the object's JSON (k8s-openapi serialises fields in a fixed order and
/// maps sorted), so it is stable across restarts and versions of the controller.
pub fn stamped<K: OwnedKind>(object: &K) -> (K, String) {
    let json = serde_json::to_vec(object).unwrap_or_default();
    let hash = hex::encode(&Sha256::digest(&json)[..HASH_BYTES]);
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
/// field Signet writes since (a person's `kubectl edit` of the schedule, say).
pub fn in_place<K>(stored: &Owned<K>, hash: &str) -> bool {
    let stamped = stored.desired_hash.is_some_and(|h| hex::encode(h) == hash);
    stamped && !stored.edited_since_applied
}

/// Field managers record when they last wrote; the API server keeps whole seconds, so an edit
/// in the same second as the controller's apply is taken as older. Status writes do not count.
fn edited_since_applied(meta: &ObjectMeta) -> bool {
    let entries = meta.managed_fields.iter().flatten();
    let when = |e: &ManagedFieldsEntry| e.time.as_ref().map(|t| t.0);
    let ours = entries
        .clone()
        .filter(|e| is_ours(e))
        .filter_map(when)
        .max();
    let theirs = entries
        .filter(|e| !is_ours(e) && e.subresource.is_none() && touches_what_signet_writes(e))
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
    store: &Store<Owned<K>>,
    namespace: &str,
    name: &str,
) -> Option<std::sync::Arc<Owned<K>>> {
    store.get(&ObjectRef::new(name).within(namespace))
}

/// What the controller knows of the objects it owns, kept current by watches; reconciles read
/// these instead of the API. Cheap to clone (shared).
#[derive(Clone)]
pub struct Stores {
    /// Worker CronJobs.
    pub cron_jobs: Store<Owned<CronJob>>,
    /// Worker ServiceAccounts.
    pub service_accounts: Store<Owned<ServiceAccount>>,
    /// Worker Roles.
    pub roles: Store<Owned<Role>>,
    /// Worker RoleBindings.
    pub role_bindings: Store<Owned<RoleBinding>>,
    /// Worker Jobs and pods in trouble (see [`super::jobs`]).
    pub troubles: Troubles,
}

/// The writing end of a store of `K`s.
pub type Writer<K> = reflector::store::Writer<Owned<K>>;

/// The writing ends of [`Stores`]: the watches, or a test playing the watches.
pub struct Writers {
    /// Worker CronJobs.
    pub cron_jobs: Writer<CronJob>,
    /// Worker ServiceAccounts.
    pub service_accounts: Writer<ServiceAccount>,
    /// Worker Roles.
    pub roles: Writer<Role>,
    /// Worker RoleBindings.
    pub role_bindings: Writer<RoleBinding>,
    /// Worker Jobs and pods in trouble: the same index as [`Stores::troubles`].
    pub troubles: Troubles,
}

/// Empty stores and their writers.
pub fn stores() -> (Stores, Writers) {
    let (cron_jobs, cron_job_writer) = reflector::store();
    let (service_accounts, sa_writer) = reflector::store();
    let (roles, role_writer) = reflector::store();
    let (role_bindings, rb_writer) = reflector::store();
    let troubles = Troubles::default();
    (
        Stores {
            cron_jobs,
            service_accounts,
            roles,
            role_bindings,
            troubles: troubles.clone(),
        },
        Writers {
            cron_jobs: cron_job_writer,
            service_accounts: sa_writer,
            roles: role_writer,
            role_bindings: rb_writer,
            troubles,
        },
    )
}

/// `event` with each object replaced by what is remembered of it.
pub fn remembered<W, K>(
    event: &watcher::Event<W>,
    remember: impl Fn(&W) -> Owned<K>,
) -> watcher::Event<Owned<K>> {
    match event {
        watcher::Event::Apply(object) => watcher::Event::Apply(remember(object)),
        watcher::Event::Delete(object) => watcher::Event::Delete(remember(object)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(object) => watcher::Event::InitApply(remember(object)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// Follows one watch event of whole objects as the watches do: remembered, then stored.
pub fn follow<K: OwnedKind>(writer: &mut Writer<K>, event: watcher::Event<K>) {
    writer.apply_watcher_event(&remembered(&event, K::remember));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constants::{LABEL_MANAGED_BY, LABEL_POLICY, MANAGED_BY};
    use k8s_openapi::api::batch::v1::CronJobStatus;
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

    fn applied(desired: &CronJob, managers: Vec<ManagedFieldsEntry>) -> (Owned<CronJob>, String) {
        let (mut live, hash) = stamped(desired);
        live.metadata.uid = Some("uid-1".into());
        live.metadata.creation_timestamp = Some(at(1_700_000_000));
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
        (live.remember(), hash)
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

    /// The controller waits for every store before its first reconcile: a store must not be
    /// ready while the first list is still arriving, and must be, with what was listed, once
    /// it is complete.
    #[tokio::test(start_paused = true)]
    async fn ready_after_the_first_list() {
        let (stores, mut writers) = stores();
        let role = Role {
            metadata: ObjectMeta {
                name: Some("p-signet-worker".into()),
                namespace: Some("ns".into()),
                labels: Some([(LABEL_POLICY.to_owned(), "p".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Role::default()
        };
        follow(&mut writers.roles, watcher::Event::Init);
        follow(&mut writers.roles, watcher::Event::InitApply(role));
        let early = tokio::time::timeout(
            std::time::Duration::from_secs(3600),
            stores.roles.wait_until_ready(),
        );
        assert!(early.await.is_err(), "ready before the list was complete");
        assert!(
            stores.roles.state().is_empty(),
            "a partial list is not served"
        );
        follow(&mut writers.roles, watcher::Event::InitDone);
        let done = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            stores.roles.wait_until_ready(),
        );
        assert!(done.await.is_ok(), "not ready after InitDone");
        assert_eq!(stores.roles.state().len(), 1);
    }

    #[test]
    fn remembering_keeps_what_reconciles_read() {
        let ours = entry(FIELD_MANAGER, 100, json!({"f:spec": {}}));
        let (live, hash) = applied(&desired(), vec![ours]);
        assert_eq!(&*live.name, "p-reminders");
        assert_eq!(live.namespace.as_deref(), Some("ns"));
        assert_eq!(live.uid.as_deref(), Some("uid-1"));
        assert_eq!(live.created, Some(at(1_700_000_000)));
        assert_eq!(live.policy.as_deref(), Some("p"));
        assert_eq!(live.desired_hash.map(hex::encode), Some(hash.clone()));
        assert!(!live.edited_since_applied);
        assert_eq!(live.last_schedule_time, Some(at(1_800_000_000)));
        // The store finds it under its name, as a CronJob.
        let (store, mut writer) = reflector::store::<Owned<CronJob>>();
        writer.apply_watcher_event(&watcher::Event::Apply(live.clone()));
        assert_eq!(get(&store, "ns", "p-reminders").as_deref(), Some(&live));
        assert_eq!(
            ObjectRef::from_obj(&live).to_string(),
            "CronJob.v1.batch/p-reminders.ns"
        );
        // Not a Signet object, or a stamp `stamped` does not write: neither is remembered.
        let mut foreign = desired();
        foreign.metadata.labels = None;
        let stamp = [(ANNOTATION_DESIRED_HASH.to_owned(), hash.to_uppercase())];
        foreign.metadata.annotations = Some(stamp.into());
        let foreign = foreign.remember();
        assert_eq!((foreign.policy, foreign.desired_hash), (None, None));
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
        assert!(!in_place(&desired.remember(), &hash));
    }
}
