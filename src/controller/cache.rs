//! What the controller remembers of the objects it owns: per object a few strings (uid, the
//! change marker, the owning policy, the creation time, a CronJob's last schedule time), kept
//! current by a watch.
//! kube's typed reflector would keep every object whole (a CronJob carries the policy spec in
//! its environment); this keeps memory at a few hundred bytes per owned object.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Resource;
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::constants::{LABEL_MANAGED_BY, LABEL_POLICY, MANAGED_BY};

/// The remembered part of one owned object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owned {
    /// `metadata.uid`.
    pub uid: Option<String>,
    /// What moves when someone changes the object: `generation` where the kind has one (status
    /// updates leave it alone), else `resourceVersion`.
    pub marker: String,
    /// The policy named by `signet.dev/policy`, when the object is managed by Signet.
    pub policy: Option<String>,
    /// `metadata.creationTimestamp` (a CronJob's marks when its section's schedule began).
    pub created: Option<Time>,
    /// A CronJob's `status.lastScheduleTime`.
    pub last_schedule_time: Option<Time>,
}

/// A kind whose objects the controller owns.
pub trait OwnedKind: Resource<DynamicType = ()> {
    /// The part to remember.
    fn remember(&self) -> Owned {
        Owned {
            uid: self.meta().uid.clone(),
            marker: change_marker(self.meta()),
            policy: managing_policy(self.meta()),
            created: self.meta().creation_timestamp.clone(),
            last_schedule_time: None,
        }
    }
}

impl OwnedKind for ServiceAccount {}
impl OwnedKind for Role {}
impl OwnedKind for RoleBinding {}
impl OwnedKind for CronJob {
    fn remember(&self) -> Owned {
        Owned {
            uid: self.metadata.uid.clone(),
            marker: change_marker(&self.metadata),
            policy: managing_policy(&self.metadata),
            created: self.metadata.creation_timestamp.clone(),
            last_schedule_time: self
                .status
                .as_ref()
                .and_then(|s| s.last_schedule_time.clone()),
        }
    }
}

/// `generation` where the kind has one, else `resourceVersion`.
pub fn change_marker(meta: &ObjectMeta) -> String {
    match meta.generation {
        Some(generation) => format!("g{generation}"),
        None => format!("rv{}", meta.resource_version.as_deref().unwrap_or_default()),
    }
}

fn managing_policy(meta: &ObjectMeta) -> Option<String> {
    let labels = meta.labels.as_ref()?;
    (labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY))
        .then(|| labels.get(LABEL_POLICY).cloned())?
}

type Key = (String, String);

/// The remembered objects of one kind, by namespace and name. Cheap to clone (shared).
#[derive(Clone)]
pub struct OwnedIndex {
    objects: Arc<RwLock<HashMap<Key, Owned>>>,
    /// Objects of a relist in progress (between `Init` and `InitDone`).
    relisting: Arc<RwLock<Option<HashMap<Key, Owned>>>>,
    ready: watch::Sender<bool>,
}

impl Default for OwnedIndex {
    fn default() -> Self {
        Self {
            objects: Arc::default(),
            relisting: Arc::default(),
            ready: watch::Sender::new(false),
        }
    }
}

impl OwnedIndex {
    /// The object `namespace/name`, if known.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Owned> {
        let objects = self.objects.read().unwrap_or_else(|e| e.into_inner());
        objects
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Number of objects remembered.
    pub fn len(&self) -> usize {
        self.objects.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Follows one watch event; a relist replaces the whole index when it completes.
    pub fn apply_event<K: OwnedKind>(&self, event: &watcher::Event<K>) {
        let key = |object: &K| {
            (
                object.meta().namespace.clone().unwrap_or_default(),
                object.meta().name.clone().unwrap_or_default(),
            )
        };
        match event {
            watcher::Event::Apply(object) => {
                self.objects
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key(object), object.remember());
            }
            watcher::Event::Delete(object) => {
                self.objects
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key(object));
            }
            watcher::Event::Init => {
                *self.relisting.write().unwrap_or_else(|e| e.into_inner()) = Some(HashMap::new());
            }
            watcher::Event::InitApply(object) => {
                if let Some(relist) = self
                    .relisting
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_mut()
                {
                    relist.insert(key(object), object.remember());
                }
            }
            watcher::Event::InitDone => {
                if let Some(relist) = self
                    .relisting
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                {
                    *self.objects.write().unwrap_or_else(|e| e.into_inner()) = relist;
                }
                self.ready.send_replace(true);
            }
        }
    }

    /// Resolves once the first list has completed.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.subscribe();
        let _ = ready.wait_for(|ready| *ready).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::CronJobStatus;

    fn cron_job(name: &str, generation: i64, policy: Option<&str>) -> CronJob {
        let mut labels = std::collections::BTreeMap::new();
        if let Some(policy) = policy {
            labels.insert(LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned());
            labels.insert(LABEL_POLICY.to_owned(), policy.to_owned());
        }
        CronJob {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                generation: Some(generation),
                creation_timestamp: Some(Time(
                    jiff::Timestamp::from_second(1_790_000_000).unwrap(),
                )),
                labels: Some(labels),
                ..Default::default()
            },
            spec: None,
            status: Some(CronJobStatus {
                last_schedule_time: Some(Time(
                    jiff::Timestamp::from_second(1_800_000_000).unwrap(),
                )),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn follows_applies_deletes_and_relists() {
        let index = OwnedIndex::default();
        index.apply_event(&watcher::Event::Apply(cron_job("a", 1, Some("p"))));
        let a = index.get("ns", "a").unwrap();
        assert_eq!(a.marker, "g1");
        assert_eq!(a.policy.as_deref(), Some("p"));
        assert_eq!(a.uid.as_deref(), Some("uid-a"));
        assert!(a.last_schedule_time.is_some());
        assert_eq!(
            a.created.map(|t| t.0.as_second()),
            Some(1_790_000_000),
            "the creation time is remembered"
        );
        index.apply_event(&watcher::Event::Apply(cron_job("a", 2, Some("p"))));
        assert_eq!(index.get("ns", "a").unwrap().marker, "g2");
        index.apply_event(&watcher::Event::Apply(cron_job("b", 1, None)));
        assert_eq!(
            index.get("ns", "b").unwrap().policy,
            None,
            "not managed by Signet"
        );
        index.apply_event(&watcher::Event::Delete(cron_job("a", 2, Some("p"))));
        assert_eq!(index.get("ns", "a"), None);
        // A relist replaces everything once complete.
        index.apply_event(&watcher::Event::<CronJob>::Init);
        index.apply_event(&watcher::Event::InitApply(cron_job("c", 1, Some("p"))));
        assert!(
            index.get("ns", "b").is_some(),
            "old view kept until the relist completes"
        );
        index.apply_event(&watcher::Event::<CronJob>::InitDone);
        assert_eq!(index.get("ns", "b"), None);
        assert!(index.get("ns", "c").is_some());
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn markers_prefer_generation() {
        let mut meta = ObjectMeta {
            resource_version: Some("42".into()),
            ..Default::default()
        };
        assert_eq!(change_marker(&meta), "rv42");
        meta.generation = Some(3);
        assert_eq!(change_marker(&meta), "g3");
    }

    #[tokio::test]
    async fn ready_after_the_first_list() {
        let index = OwnedIndex::default();
        index.apply_event(&watcher::Event::<Role>::Init);
        index.apply_event(&watcher::Event::<Role>::InitDone);
        tokio::time::timeout(std::time::Duration::from_secs(1), index.wait_until_ready())
            .await
            .unwrap();
    }
}
