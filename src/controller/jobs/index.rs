//! [`Troubles`]: the worker runs in trouble, by policy, fed by the Job and pod watches. Only
//! troubled objects are kept, so the index is empty while runs are healthy. A watch's initial
//! list (at start and after a desync) updates entries as they arrive and, once complete,
//! removes the ones it did not list, so a trouble never waits for the end of a list.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::{Stream, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use kube::runtime::watcher;
use tokio::sync::watch;

use super::{Trouble, job_trouble, pod_trouble};
use crate::controller::build::managing_policy;

/// Which watch an entry comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// The Job watch.
    Job,
    /// The pod watch.
    Pod,
}

/// A kind whose troubles the index keeps.
pub trait Watched: Resource + Send + 'static {
    /// Its watch.
    const SOURCE: Source;
    /// Its trouble, if any.
    fn trouble(&self) -> Option<Trouble>;
}

impl Watched for Job {
    const SOURCE: Source = Source::Job;
    fn trouble(&self) -> Option<Trouble> {
        job_trouble(self)
    }
}

impl Watched for Pod {
    const SOURCE: Source = Source::Pod;
    fn trouble(&self) -> Option<Trouble> {
        pod_trouble(self)
    }
}

type Name = (Box<str>, Box<str>);

#[derive(Default)]
struct State {
    /// (namespace, policy) → the troubles of its Jobs and pods (a few: a Vec, sized exactly).
    by_policy: HashMap<Name, Vec<Trouble>>,
    /// Per source, the initial list under way: the troubled objects listed so far, and the
    /// announced Jobs among them.
    listing: [Option<(HashSet<Name>, HashSet<Name>)>; 2],
    /// Per source, whether a first list completed.
    listed: [bool; 2],
    /// (namespace, Job) whose failure was announced by an Event, until the Job is deleted.
    announced: HashSet<Name>,
}

/// The worker runs in trouble, by policy. Cheap to clone (shared).
#[derive(Clone)]
pub struct Troubles {
    state: Arc<Mutex<State>>,
    ready: Arc<watch::Sender<bool>>,
}

impl Default for Troubles {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            ready: Arc::new(watch::channel(false).0),
        }
    }
}

impl Troubles {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows one watch event; whether a trouble appeared or changed (worth a reconcile).
    pub fn follow<K: Watched>(&self, event: &watcher::Event<K>) -> bool {
        let source = K::SOURCE as usize;
        let mut state = self.state();
        match event {
            watcher::Event::Apply(object) => state.upsert(K::SOURCE, object, object.trouble()),
            watcher::Event::Delete(object) => {
                if K::SOURCE == Source::Job {
                    state.announced.remove(&name_of(object));
                }
                state.upsert(K::SOURCE, object, None)
            }
            watcher::Event::Init => {
                state.listing[source] = Some(Default::default());
                false
            }
            watcher::Event::InitApply(object) => {
                let trouble = object.trouble();
                let name = name_of(object);
                let announced = state.announced.contains(&name);
                if let Some((troubled, still_announced)) = state.listing[source].as_mut() {
                    if trouble.is_some() {
                        troubled.insert(name.clone());
                    }
                    if announced {
                        still_announced.insert(name);
                    }
                }
                state.upsert(K::SOURCE, object, trouble)
            }
            watcher::Event::InitDone => {
                let (troubled, still_announced) = state.listing[source].take().unwrap_or_default();
                state.by_policy.retain(|(namespace, _), entries| {
                    entries.retain(|t| {
                        let (s, name) = identity(t);
                        s != K::SOURCE || troubled.contains(&(namespace.clone(), name.into()))
                    });
                    !entries.is_empty()
                });
                if K::SOURCE == Source::Job {
                    state.announced.retain(|job| still_announced.contains(job));
                }
                state.listed[source] = true;
                if state.listed.iter().all(|l| *l) {
                    self.ready.send_replace(true);
                }
                false
            }
        }
    }

    /// The troubles of the policy `namespace/policy`.
    pub fn of_policy(&self, namespace: &str, policy: &str) -> Vec<Trouble> {
        let key: Name = (namespace.into(), policy.into());
        self.state()
            .by_policy
            .get(&key)
            .cloned()
            .unwrap_or_default()
    }

    /// How many troubled Jobs and pods are kept.
    pub fn len(&self) -> usize {
        self.state().by_policy.values().map(Vec::len).sum()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the failure of Job `namespace/job` was announced.
    pub fn announced(&self, namespace: &str, job: &str) -> bool {
        self.state()
            .announced
            .contains(&(namespace.into(), job.into()))
    }

    /// Notes that the failure of Job `namespace/job` was announced (until the Job is deleted).
    pub fn mark_announced(&self, namespace: &str, job: &str) {
        self.state()
            .announced
            .insert((namespace.into(), job.into()));
    }

    /// Resolves once both watches have listed everything once.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.subscribe();
        let _ = ready.wait_for(|ready| *ready).await;
    }
}

impl State {
    /// Files `trouble` as the entry of `object` (`None`: removes it); whether it is new or
    /// changed. An object is filed under the policy its labels name (a trouble's own policy).
    fn upsert<K: Resource>(
        &mut self,
        source: Source,
        object: &K,
        trouble: Option<Trouble>,
    ) -> bool {
        let meta = object.meta();
        let (Some(namespace), Some(name), Some(policy)) = (
            meta.namespace.as_deref(),
            meta.name.as_deref(),
            managing_policy(meta),
        ) else {
            return false;
        };
        let key: Name = (namespace.into(), policy.into());
        if trouble.is_none() && !self.by_policy.contains_key(&key) {
            return false;
        }
        let entries = self.by_policy.entry(key.clone()).or_default();
        let old = entries
            .iter()
            .position(|t| identity(t) == (source, name))
            .map(|at| entries.swap_remove(at));
        let changed = match trouble {
            Some(trouble) => {
                let changed = old.as_ref() != Some(&trouble);
                entries.reserve_exact(1);
                entries.push(trouble);
                changed
            }
            None => false,
        };
        if entries.is_empty() {
            self.by_policy.remove(&key);
        }
        changed
    }
}

/// Which object a trouble is the entry of: its pod, else its Job.
fn identity(trouble: &Trouble) -> (Source, &str) {
    match &trouble.pod {
        Some(pod) => (Source::Pod, pod),
        None => (Source::Job, &trouble.job),
    }
}

fn name_of<K: Resource>(object: &K) -> Name {
    let meta = object.meta();
    (
        meta.namespace.as_deref().unwrap_or_default().into(),
        meta.name.as_deref().unwrap_or_default().into(),
    )
}

/// A Job or pod watch as the Controller consumes it: every event goes into `troubles`, and an
/// object is passed on (to be mapped to its policy, [`super::policy_of`]) only when its trouble
/// appeared or changed, so healthy runs trigger no reconcile.
pub fn triggers<K: Watched>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    troubles: Troubles,
) -> futures::stream::BoxStream<'static, Result<K, watcher::Error>> {
    events
        .filter_map(move |event| {
            let passed = match event {
                Ok(event) => {
                    let changed = troubles.follow(&event);
                    match event {
                        watcher::Event::Apply(object) | watcher::Event::InitApply(object)
                            if changed =>
                        {
                            Some(Ok(object))
                        }
                        _ => None,
                    }
                }
                Err(error) => Some(Err(error)),
            };
            futures::future::ready(passed)
        })
        .boxed()
}
