//! Running the controller: connect, check the CRD is installed, serve health and metrics, win
//! the leader Lease, then watch policies (and what they own, by label, and the Jobs and pending
//! pods their CronJobs start) in every namespace or in the ones given, until SIGTERM or the
//! Lease is lost. The Lease is released on the way out.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::events::Reporter;
use kube::runtime::reflector;
use kube::runtime::{Controller, WatchStreamExt, predicates::generation, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::watch;

use super::build::WorkerSettings;
use super::cache::{self, OwnedKind};
use super::context::Context;
use super::jobs;
use super::leader::{LEASE_DURATION, LeaderElector, RENEW_INTERVAL};
use super::metrics::Metrics;
use super::reconcile::{error_policy, reconcile};
use super::server::{self, Health};
use crate::constants::{ANNOTATION_RUN_NOW, EVENT_REPORTER, LABEL_MANAGED_BY, MANAGED_BY};
use crate::crd::SignaturePolicy;

/// How `signet controller` runs.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Namespaces to watch; empty: all.
    pub namespaces: Vec<String>,
    /// How worker containers run.
    pub settings: WorkerSettings,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub metrics_address: SocketAddr,
    /// Leader election; `None` for a single replica.
    pub leader_election: Option<LeaderElection>,
}

/// Where the leader Lease lives and who this replica is.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    /// Namespace of the Lease (the controller's own).
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
}

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No kubeconfig or in-cluster configuration.
    #[error("cannot configure a Kubernetes client: {0}")]
    Config(#[source] kube::Error),
    /// The CRD is not installed.
    #[error(
        "the SignaturePolicy CRD (signaturepolicies.signet.dev) is not installed; install it with `signet crd | kubectl apply --server-side -f -` or the Helm chart"
    )]
    CrdMissing,
    /// The API refused the initial check.
    #[error("cannot list SignaturePolicies: {0}")]
    Api(#[source] kube::Error),
    /// The health and metrics port could not be opened.
    #[error("cannot serve health and metrics on {0}: {1}")]
    Serve(SocketAddr, #[source] std::io::Error),
    /// Another replica took the Lease, or it could not be renewed in time.
    #[error("lost the leader Lease; exiting so a fresh start can campaign again")]
    LeaseLost,
}

/// Runs the controller until SIGTERM/SIGINT (`Ok`) or a fatal error.
pub async fn run(config: ControllerConfig) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Config)?;
    check_crd(&client, &config.namespaces).await?;

    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(stop_on_signal(stop_tx.clone()));

    let listener = tokio::net::TcpListener::bind(config.metrics_address)
        .await
        .map_err(|e| RunError::Serve(config.metrics_address, e))?;
    let health = Health {
        ready: ready.clone(),
        metrics: metrics.clone(),
    };
    let server_stop = stopped(stop_rx.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, server::router(health))
            .with_graceful_shutdown(server_stop)
            .await
    });
    tracing::info!(address = %config.metrics_address, "serving /healthz, /readyz and /metrics");

    let elector = config
        .leader_election
        .as_ref()
        .map(|le| LeaderElector::new(client.clone(), &le.namespace, &le.lease_name, &le.identity));
    let lease_lost = Arc::new(AtomicBool::new(false));
    if let Some(elector) = &elector {
        // A standby replica is healthy in its role: ready, so rollouts and `helm --wait` do
        // not stall on it. Once it leads it is ready again only when its watches have synced.
        ready.store(true, Ordering::Relaxed);
        if !campaign(elector, stop_rx.clone()).await {
            return Ok(()); // stopped before winning
        }
        ready.store(false, Ordering::Relaxed);
        metrics.set_leader(true);
        tokio::spawn(keep_leading(
            elector.clone(),
            stop_tx.clone(),
            lease_lost.clone(),
        ));
    }

    let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let mut controllers = Vec::new();
    let mut synced = Vec::new();
    for scope in scopes {
        let (controller, ready_stores) = controller_for(
            client.clone(),
            scope,
            &config.settings,
            metrics.clone(),
            stop_rx.clone(),
        );
        controllers.push(controller);
        synced.push(ready_stores);
    }
    let ready_flag = ready.clone();
    tokio::spawn(async move {
        futures::future::join_all(synced).await;
        ready_flag.store(true, Ordering::Relaxed);
        tracing::info!("watches synced; ready");
    });
    futures::future::join_all(controllers).await;

    if let Some(elector) = &elector {
        metrics.set_leader(false);
        if !lease_lost.load(Ordering::Relaxed)
            && let Err(error) = elector.release().await
        {
            tracing::warn!(%error, "could not release the leader Lease; the next leader waits for it to expire");
        }
    }
    let _ = stop_tx.send(true);
    let _ = server.await;
    if lease_lost.load(Ordering::Relaxed) {
        Err(RunError::LeaseLost)
    } else {
        Ok(())
    }
}

/// Fails with a clear instruction when the CRD is not installed.
pub async fn check_crd(client: &Client, namespaces: &[String]) -> Result<(), RunError> {
    let api: Api<SignaturePolicy> = match namespaces.first() {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(RunError::CrdMissing),
        Err(e) => Err(RunError::Api(e)),
    }
}

/// What makes a policy worth reconciling again: a spec change, a run-now request, or a worker
/// reporting a run (`lastRun`, `lastSuccessfulRunAt` of either section), which may clear `Stale`
/// or change the last-run metrics. The controller's own status fields (conditions,
/// `observedGeneration`, `cronJob`, `lastScheduleTime`) are left out, so its status writes never
/// trigger it again. (Disabling a section removes that section's status, worker fields included:
/// one extra reconcile, which finds nothing to do.)
fn trigger_hash(policy: &SignaturePolicy) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    generation(policy).hash(&mut hasher);
    policy
        .annotations()
        .get(ANNOTATION_RUN_NOW)
        .hash(&mut hasher);
    let status = policy.status.as_ref();
    let reminders = status.and_then(|s| s.reminders.as_ref());
    let timeouts = status.and_then(|s| s.timeouts.as_ref());
    // The run types have no Hash; their JSON is as good a fingerprint.
    let worker_fields = serde_json::json!([
        reminders.map(|r| (&r.last_run, &r.last_successful_run_at)),
        timeouts.map(|t| (&t.last_run, &t.last_successful_run_at)),
    ]);
    worker_fields.to_string().hash(&mut hasher);
    Some(hasher.finish())
}

type Running = futures::future::BoxFuture<'static, ()>;

/// The policy watch as the Controller consumes it: each policy stored in `store` (without what
/// reconciles do not read, see [`unread_dropped`]), a deleted one forgotten by `ctx` (see
/// [`Context::forget`]), and only the changes worth a reconcile ([`trigger_hash`]) passed on.
pub fn policy_triggers(
    events: impl Stream<Item = Result<watcher::Event<SignaturePolicy>, watcher::Error>> + Send,
    store: reflector::store::Writer<SignaturePolicy>,
    ctx: Arc<Context>,
) -> impl Stream<Item = Result<SignaturePolicy, watcher::Error>> + Send {
    events
        .modify(unread_dropped)
        .reflect(store)
        .inspect_ok(move |event| {
            if let watcher::Event::Delete(policy) = event {
                ctx.forget(policy);
            }
        })
        .applied_objects()
        .predicate_filter(trigger_hash, Default::default())
}

/// Drops from a watched policy what reconciles never read: its managed fields and every
/// annotation but the run-now request (`kubectl apply` keeps a second copy of the whole spec in
/// `kubectl.kubernetes.io/last-applied-configuration`).
fn unread_dropped(policy: &mut SignaturePolicy) {
    policy.managed_fields_mut().clear();
    policy
        .annotations_mut()
        .retain(|key, _| key == ANNOTATION_RUN_NOW);
}

/// One controller over one scope (a namespace, or all), and a future that resolves once its
/// caches have synced.
fn controller_for(
    client: Client,
    namespace: Option<String>,
    settings: &WorkerSettings,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) -> (Running, Running) {
    let owned = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
    let scope = namespace.as_deref();
    let (stores, writers) = cache::stores();
    // A CronJob's status is read (its last schedule time), so its watch delivers whole objects;
    // of the others only metadata is read, and only metadata is asked for.
    let cron_job_events = owned_watch(
        watcher(scoped(&client, scope), owned.clone()),
        CronJob::remember,
        writers.cron_jobs,
    );
    let sa_events = owned_metadata_watch(&client, scope, &owned, writers.service_accounts);
    let role_events = owned_metadata_watch(&client, scope, &owned, writers.roles);
    let rb_events = owned_metadata_watch(&client, scope, &owned, writers.role_bindings);
    // Jobs and pods are read for their failures only, and kept only while in trouble. A pending
    // pod can be stuck, a finished one can carry a failed status write-back in its termination
    // message; running pods are left out (the API server sends one that starts running as
    // deleted, so a stuck pod that starts is forgotten).
    let job_events = jobs::triggers(
        watcher(scoped::<Job>(&client, scope), owned.clone()).default_backoff(),
        writers.troubles.clone(),
    );
    let pending = owned.clone().fields("status.phase!=Running");
    let pod_events = jobs::triggers(
        watcher(scoped::<Pod>(&client, scope), pending).default_backoff(),
        writers.troubles,
    );

    let reporter = Reporter {
        controller: EVENT_REPORTER.into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let context = Arc::new(Context::new(
        client.clone(),
        reporter,
        settings.clone(),
        stores.clone(),
        metrics,
    ));

    let (policies, writer) = reflector::store::<SignaturePolicy>();
    let policy_events = policy_triggers(
        watcher(scoped(&client, scope), watcher::Config::default()).default_backoff(),
        writer,
        context.clone(),
    );

    let policies_ready = policies.clone();
    let synced: Running = Box::pin(async move {
        let _ = tokio::join!(
            policies_ready.wait_until_ready(),
            stores.cron_jobs.wait_until_ready(),
            stores.service_accounts.wait_until_ready(),
            stores.roles.wait_until_ready(),
            stores.role_bindings.wait_until_ready(),
            stores.troubles.wait_until_ready(),
        );
    });
    let running: Running = Box::pin(
        Controller::for_stream(policy_events, policies)
            .owns_stream(cron_job_events)
            .owns_stream(sa_events)
            .owns_stream(role_events)
            .owns_stream(rb_events)
            .watches_stream(job_events, jobs::policy_of)
            .watches_stream(pod_events, jobs::policy_of)
            .graceful_shutdown_on(stopped(stop))
            .run(reconcile, error_policy, context)
            .for_each(|result| async move {
                match result {
                    Ok((policy, _)) => tracing::debug!(policy = %policy, "reconciled"),
                    Err(error) => tracing::debug!(%error, "reconcile not done"),
                }
            }),
    );
    (running, synced)
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

type OwnedEvents<W> = futures::stream::BoxStream<'static, Result<W, watcher::Error>>;

/// A watch of objects Signet manages: what is remembered of each ([`cache::Owned`]) goes into
/// `store`; the objects themselves go on to the Controller (which maps them to their owners)
/// and are dropped.
fn owned_watch<W, K>(
    events: impl Stream<Item = Result<watcher::Event<W>, watcher::Error>> + Send + 'static,
    remember: fn(&W) -> cache::Owned<K>,
    mut store: cache::Writer<K>,
) -> OwnedEvents<W>
where
    W: Resource + Send + 'static,
    K: OwnedKind,
{
    events
        .default_backoff()
        .inspect_ok(move |event| store.apply_watcher_event(&cache::remembered(event, remember)))
        .touched_objects()
        .boxed()
}

/// [`owned_watch`] of a kind whose metadata is all reconciles read: a metadata-only watch.
fn owned_metadata_watch<K: OwnedKind>(
    client: &Client,
    namespace: Option<&str>,
    config: &watcher::Config,
    store: cache::Writer<K>,
) -> OwnedEvents<PartialObjectMeta<K>> {
    owned_watch(
        watcher(
            scoped::<PartialObjectMeta<K>>(client, namespace),
            config.clone(),
        ),
        |object| cache::Owned::from_meta(&object.metadata),
        store,
    )
}

/// Resolves once the stop flag is set.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

async fn stop_on_signal(stop: watch::Sender<bool>) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
    let _ = stop.send(true);
}

/// Waits until this replica leads; `false` if asked to stop first.
async fn campaign(elector: &LeaderElector, mut stop: watch::Receiver<bool>) -> bool {
    let mut announced = false;
    loop {
        match elector.try_lead().await {
            Ok(true) => {
                tracing::info!("acquired the leader Lease");
                return true;
            }
            Ok(false) if !announced => {
                tracing::info!("another replica leads; waiting for the Lease");
                announced = true;
            }
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "could not read or write the leader Lease"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RENEW_INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => return false,
        }
    }
}

/// Renews the Lease; stops the controller when it cannot for a whole lease duration.
async fn keep_leading(elector: LeaderElector, stop: watch::Sender<bool>, lost: Arc<AtomicBool>) {
    let mut last_renewed = tokio::time::Instant::now();
    let mut stopping = stop.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RENEW_INTERVAL) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        match elector.try_lead().await {
            Ok(true) => last_renewed = tokio::time::Instant::now(),
            Ok(false) => {
                tracing::error!("another replica took the leader Lease");
                break;
            }
            Err(error) if last_renewed.elapsed() < LEASE_DURATION => {
                tracing::warn!(%error, "could not renew the leader Lease; retrying");
            }
            Err(error) => {
                tracing::error!(%error, "could not renew the leader Lease in time");
                break;
            }
        }
    }
    lost.store(true, Ordering::Relaxed);
    let _ = stop.send(true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{
        ReminderRun, RemindersStatus, RunOutcome, SignaturePolicyStatus, TimeoutsStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn at(second: i64) -> Time {
        Time(jiff::Timestamp::from_second(second).unwrap())
    }

    fn policy() -> SignaturePolicy {
        let spec = serde_json::from_value(serde_json::json!({
            "database": {"urlSecretRef": {"name": "db", "key": "url"}},
            "reminders": {"channels": ["log"]},
            "timeout": {"after": "14d", "channels": ["log"]},
            "channels": [{"name": "log", "log": {}}],
        }))
        .unwrap();
        let mut policy = SignaturePolicy::new("p", spec);
        policy.metadata.generation = Some(1);
        policy.status = Some(SignaturePolicyStatus {
            observed_generation: Some(1),
            reminders: Some(RemindersStatus {
                cron_job: Some("p-reminders".into()),
                ..Default::default()
            }),
            timeouts: Some(TimeoutsStatus {
                cron_job: Some("p-timeouts".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        policy
    }

    fn changed(before: &SignaturePolicy, edit: impl FnOnce(&mut SignaturePolicy)) -> bool {
        let mut after = before.clone();
        edit(&mut after);
        trigger_hash(before) != trigger_hash(&after)
    }

    fn status(policy: &mut SignaturePolicy) -> &mut SignaturePolicyStatus {
        policy.status.as_mut().unwrap()
    }

    #[test]
    fn spec_changes_run_now_and_worker_reports_trigger_a_reconcile() {
        let policy = policy();
        assert!(changed(&policy, |p| p.metadata.generation = Some(2)));
        assert!(changed(&policy, |p| {
            p.metadata.annotations = Some([(ANNOTATION_RUN_NOW.into(), "reminders".into())].into());
        }));
        let run = ReminderRun {
            job: "p-reminders-1".into(),
            started_at: at(1_800_000_000),
            finished_at: at(1_800_000_060),
            outcome: RunOutcome::Failed,
            reason: None,
            message: None,
            due: 3,
            sent: 0,
            held: 0,
            failed: 0,
            possible_duplicates: 0,
        };
        let failed_run = run.clone();
        assert!(changed(&policy, |p| {
            status(p).reminders.as_mut().unwrap().last_run = Some(failed_run);
        }));
        let mut reported = policy.clone();
        status(&mut reported).reminders.as_mut().unwrap().last_run = Some(run.clone());
        assert!(
            changed(&reported, |p| {
                let reminders = status(p).reminders.as_mut().unwrap();
                reminders.last_run.as_mut().unwrap().outcome = RunOutcome::Succeeded;
                reminders.last_successful_run_at = Some(at(1_800_000_060));
            }),
            "a success clears Stale promptly"
        );
        assert!(changed(&policy, |p| {
            status(p).timeouts.as_mut().unwrap().last_successful_run_at = Some(at(1_800_000_000));
        }));
    }

    #[test]
    fn a_stored_policy_keeps_what_reconciles_read() {
        let mut policy = policy();
        policy.metadata.annotations = Some(
            [
                (ANNOTATION_RUN_NOW.into(), "reminders".into()),
                (
                    "kubectl.kubernetes.io/last-applied-configuration".into(),
                    "{...}".into(),
                ),
            ]
            .into(),
        );
        policy.metadata.managed_fields = Some(vec![Default::default()]);
        let mut stored = policy.clone();
        unread_dropped(&mut stored);
        assert_eq!(
            stored.annotations().keys().collect::<Vec<_>>(),
            [ANNOTATION_RUN_NOW]
        );
        assert!(stored.managed_fields().is_empty());
        assert_eq!(trigger_hash(&stored), trigger_hash(&policy));
        assert_eq!(
            (&stored.spec, &stored.status),
            (&policy.spec, &policy.status)
        );
    }

    #[test]
    fn the_controllers_own_status_writes_do_not() {
        let policy = policy();
        assert!(!changed(&policy, |p| {
            let status = status(p);
            status.observed_generation = Some(7);
            status.conditions.push(Condition {
                type_: "Stale".into(),
                status: "True".into(),
                reason: "NoRecentSuccess".into(),
                message: "reminders: ...".into(),
                observed_generation: Some(1),
                last_transition_time: at(1_800_000_000),
            });
            let reminders = status.reminders.as_mut().unwrap();
            reminders.cron_job = Some("other".into());
            reminders.last_schedule_time = Some(at(1_800_000_000));
            status.timeouts.as_mut().unwrap().last_schedule_time = Some(at(1_800_000_100));
        }));
        assert!(!changed(&policy, |p| {
            p.metadata.resource_version = Some("2".into());
            p.metadata.annotations = Some([("other".into(), "x".into())].into());
        }));
    }
}
