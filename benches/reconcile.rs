//! Reconcile benchmark: N policies against an in-process API that answers every request, as a
//! scripted API server would. Prints figures; asserts nothing about speed.
//!
//! `cargo bench --bench reconcile` runs 10,000 policies; under `cargo test` (no `--bench`
//! argument) it runs 50, so the benchmark itself stays tested.
//!
//! Measured: write requests per policy on the first reconcile and on a no-op resync, reconciles
//! per second, no-op reconcile latency (p50, p99), and the process's peak resident memory (the
//! controller's peak RSS at N policies: its stores hold what it remembers of every owned object
//! the watches deliver). Then every section's run fails as a Job: what the index of runs in
//! trouble holds (heap bytes, counted by this binary's allocator, before and after the Job watch
//! delivers them: resident memory moves too little and too noisily to tell) and the writes of
//! reflecting them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{Method, Request, Response};
use k8s_openapi::api::batch::v1::{CronJobStatus, Job};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};
use kube::Client;
use kube::client::Body;
use kube::runtime::events::Reporter;
use kube::runtime::watcher;
use serde_json::{Value, json};
use signet::admission::Admission;
use signet::controller::build::{self, WorkerSettings};
use signet::controller::cache::{self, OwnedKind};
use signet::controller::metrics::Metrics;
use signet::controller::reconcile::{Context, reconcile};
use signet::controller::staleness::Report;
use signet::controller::status::{self, Outcome};
use signet::crd::SignaturePolicy;
use signet::manifests::parse_documents;
use signet::policy::ValidPolicy;

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static ALLOCATED: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed on to `System` unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Default)]
struct Counts {
    reads: AtomicU64,
    writes: AtomicU64,
}

/// Builds the object an API server would return for a GET of `path`, from the policies (so the
/// fake server itself holds no copies and the memory measured is the controller's).
type Resolver = Arc<std::sync::OnceLock<Box<dyn Fn(&str) -> Option<Value> + Send + Sync>>>;

/// Answers every request like an API server that accepts everything; reads are answered by the
/// resolver, unknown objects are 404.
fn fake_api(counts: Arc<Counts>, resolver: Resolver) -> Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().clone();
            let counter = if method == Method::GET {
                &counts.reads
            } else {
                &counts.writes
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let path = request.uri().path().to_owned();
            let bytes = request
                .into_body()
                .collect_bytes()
                .await
                .unwrap_or_default();
            let (status, body) = if path.contains("/signaturepolicies/") {
                // Enough of a policy to decode; the benchmark does not read it back.
                let policy = json!({"apiVersion": "signet.dev/v1alpha1", "kind": "SignaturePolicy",
                    "metadata": {"name": "x", "namespace": "bench"}, "spec": {"database": {"urlSecretRef": {"name": "d", "key": "u"}}}});
                (200, serde_json::to_vec(&policy).unwrap())
            } else if method == Method::GET {
                match resolver.get().and_then(|resolve| resolve(&path)) {
                    Some(object) => (200, serde_json::to_vec(&object).unwrap()),
                    None => (404, serde_json::to_vec(&json!({"kind": "Status", "apiVersion": "v1", "code": 404, "reason": "NotFound", "message": "not found"})).unwrap()),
                }
            } else if bytes.first() == Some(&b'{') {
                (200, bytes.to_vec())
            } else {
                // Apply patches arrive as YAML; answer them as JSON.
                let value: Value = serde_saphyr::from_slice(&bytes).unwrap_or(json!({}));
                (200, serde_json::to_vec(&value).unwrap())
            };
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(body))
                    .unwrap(),
            );
        }
    });
    Client::new(service, "default")
}

/// The desired object at `path` (`.../<kind>/policy-NNNNN...`), as the API server would hold it.
fn resolve(policies: &[SignaturePolicy], settings: &WorkerSettings, path: &str) -> Option<Value> {
    let (kind_path, name) = path.rsplit_once('/')?;
    let index: usize = name.strip_prefix("policy-")?.get(..5)?.parse().ok()?;
    let desired = build::desired(&ValidPolicy::new(policies.get(index)?).ok()?, settings);
    let object = match kind_path.rsplit('/').next()? {
        "serviceaccounts" => serde_json::to_value(&desired.service_account),
        "roles" => serde_json::to_value(&desired.role),
        "rolebindings" => serde_json::to_value(&desired.role_binding),
        "cronjobs" => serde_json::to_value(
            &desired
                .cron_jobs
                .into_iter()
                .find(|(_, cj)| cj.metadata.name.as_deref() == Some(name))?
                .1,
        ),
        _ => return None,
    };
    object.ok()
}

/// `desired` as the API server holds it once the controller applied it: stamped, with a uid and
/// the controller's field manager entry (the watch delivers it; the store keeps what is read).
fn as_applied<K: OwnedKind>(desired: &K) -> K {
    let (mut object, _) = cache::stamped(desired);
    let meta = object.meta_mut();
    meta.uid = Some(format!("uid-{}", meta.name.clone().unwrap_or_default()));
    meta.managed_fields = Some(vec![ManagedFieldsEntry {
        manager: Some("signet-controller".into()),
        operation: Some("Apply".into()),
        time: Some(Time(jiff::Timestamp::now())),
        fields_v1: Some(FieldsV1(json!({"f:metadata": {}, "f:spec": {}}))),
        ..Default::default()
    }]);
    object
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// A Job of `cron_job` that Kubernetes failed, as the Job watch delivers it.
fn failed_job(cron_job: &Value) -> Job {
    let name = format!(
        "{}-29400000",
        cron_job["metadata"]["name"].as_str().unwrap()
    );
    let mut labels = cron_job["metadata"]["labels"].clone();
    labels["batch.kubernetes.io/job-name"] = json!(name);
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "bench", "labels": labels},
        "status": {"startTime": "2026-09-21T14:00:01Z", "failed": 3, "conditions": [
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
                "lastTransitionTime": "2026-09-21T14:05:02Z"}]},
    }))
    .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let count: usize = std::env::var("SIGNET_BENCH_POLICIES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if full { 10_000 } else { 50 });
    let example = std::env::var("SIGNET_BENCH_EXAMPLE").unwrap_or_else(|_| "full.yaml".into());
    let template =
        std::fs::read_to_string(format!("{}/examples/{example}", env!("CARGO_MANIFEST_DIR")))
            .unwrap();
    // The controller never builds the offline admission checks; drop them before measuring.
    let base = Admission::new()
        .check(parse_documents(&template).unwrap().remove(0))
        .policy
        .unwrap();
    let settings = WorkerSettings {
        image: "registry.example/signet:1".into(),
        image_pull_policy: None,
        pushgateway_url: None,
    };

    let policies: Vec<SignaturePolicy> = (0..count)
        .map(|i| {
            let mut p = base.clone();
            p.metadata.name = Some(format!("policy-{i:05}"));
            p.metadata.namespace = Some("bench".into());
            p.metadata.uid = Some(format!("uid-{i}"));
            p.metadata.generation = Some(1);
            p
        })
        .collect();

    let counts = Arc::new(Counts::default());
    let resolver: Resolver = Arc::default();
    let client = fake_api(counts.clone(), resolver.clone());
    let (stores, mut writers) = cache::stores();
    let reporter = Reporter {
        controller: "signet-controller".into(),
        instance: None,
    };
    let ctx = Arc::new(Context::new(
        client,
        reporter,
        settings.clone(),
        stores,
        Arc::new(Metrics::new()),
    ));

    // 1. First reconcile: nothing exists yet.
    let started = Instant::now();
    for policy in &policies {
        reconcile(Arc::new(policy.clone()), ctx.clone())
            .await
            .expect("reconcile");
    }
    let first = started.elapsed();
    let first_writes = counts.writes.swap(0, Ordering::Relaxed);

    // 2. What the watches would then hold: the applied objects and the written status.
    let now = Time(jiff::Timestamp::now());
    let observed: Arc<Vec<SignaturePolicy>> = Arc::new(
        policies
            .into_iter()
            .map(|mut policy| {
                let valid = ValidPolicy::new(&policy).unwrap();
                let desired = build::desired(&valid, &settings);
                // Runs are fresh: the policy was just reconciled for the first time.
                let stale = Report::evaluate(
                    &valid,
                    &desired,
                    &Default::default(),
                    status::active_since(&policy, &now).as_ref(),
                    &now,
                )
                .summary();
                // Delivered as the watches deliver them, remembered in the stores as they are.
                let w = &mut writers;
                let sa = as_applied(&desired.service_account);
                cache::follow(&mut w.service_accounts, watcher::Event::Apply(sa));
                let role = as_applied(&desired.role);
                cache::follow(&mut w.roles, watcher::Event::Apply(role));
                let binding = as_applied(&desired.role_binding);
                cache::follow(&mut w.role_bindings, watcher::Event::Apply(binding));
                let names = desired
                    .cron_jobs
                    .iter()
                    .map(|(s, cj)| (*s, cj.metadata.name.clone().unwrap()))
                    .collect();
                for (_, cron_job) in desired.cron_jobs {
                    let mut cron_job = as_applied(&cron_job);
                    cron_job.status = Some(CronJobStatus::default());
                    cache::follow(&mut w.cron_jobs, watcher::Event::Apply(cron_job));
                }
                let computed = status::compute(
                    &policy,
                    &Outcome::Reconciled(names),
                    &stale,
                    &Default::default(),
                    &now,
                );
                let patch = serde_json::to_value(computed.merge_patch()).unwrap();
                policy.status = Some(serde_json::from_value(patch["status"].clone()).unwrap());
                policy
            })
            .collect(),
    );
    let (for_resolver, resolver_settings) = (observed.clone(), settings.clone());
    let _ = resolver.set(Box::new(move |path| {
        resolve(&for_resolver, &resolver_settings, path)
    }));

    // 3. No-op resync, steady state: everything verified by the first pass.
    let mut latencies = Vec::with_capacity(count);
    let started = Instant::now();
    for policy in observed.iter() {
        let one = Instant::now();
        reconcile(Arc::new(policy.clone()), ctx.clone())
            .await
            .expect("reconcile");
        latencies.push(one.elapsed());
    }
    let resync = started.elapsed();
    let noop_writes = counts.writes.swap(0, Ordering::Relaxed);
    let noop_reads = counts.reads.swap(0, Ordering::Relaxed);
    latencies.sort();

    // 4. The same after a restart: a fresh Context over the stores the watches refilled.
    let restarted = Arc::new(Context::new(
        ctx.client.clone(),
        ctx.reporter.clone(),
        settings.clone(),
        ctx.stores.clone(),
        Arc::new(Metrics::new()),
    ));
    let started = Instant::now();
    for policy in observed.iter() {
        reconcile(Arc::new(policy.clone()), restarted.clone())
            .await
            .expect("reconcile");
    }
    let restart = started.elapsed();
    let restart_writes = counts.writes.swap(0, Ordering::Relaxed);
    let restart_reads = counts.reads.swap(0, Ordering::Relaxed);

    let peak = peak_rss_mib();
    // 5. Every section's last run failed as a Job: the Job watch delivers them, then each
    //    policy is reconciled once (a lastRun write, an Event per Job, the status, an Event).
    let failed_jobs: Vec<Job> = observed
        .iter()
        .flat_map(|policy| {
            let desired = build::desired(&ValidPolicy::new(policy).unwrap(), &settings);
            let cron_jobs = desired.cron_jobs.into_iter();
            cron_jobs.map(|(_, cron_job)| failed_job(&serde_json::to_value(cron_job).unwrap()))
        })
        .collect();
    // What the index keeps of them: the heap bytes still allocated once each Job is dropped.
    let sections = failed_jobs.len();
    let job_bytes: usize = failed_jobs
        .iter()
        .map(|j| serde_json::to_vec(j).unwrap().len())
        .sum();
    let before = ALLOCATED.load(Ordering::Relaxed);
    for job in &failed_jobs {
        // The watch's event: a copy, dropped once followed.
        writers.troubles.follow(&watcher::Event::Apply(job.clone()));
    }
    let troubled = writers.troubles.len();
    let index_bytes = ALLOCATED.load(Ordering::Relaxed) - before;
    drop(failed_jobs);
    for policy in observed.iter() {
        reconcile(Arc::new(policy.clone()), ctx.clone())
            .await
            .expect("reconcile");
    }
    let trouble_writes = counts.writes.swap(0, Ordering::Relaxed);
    let trouble_reads = counts.reads.swap(0, Ordering::Relaxed);
    println!("reconcile benchmark: {count} policies like examples/{example}");
    println!(
        "  first reconcile:   {:>9.0} reconciles/s, {:.2} write requests per policy",
        count as f64 / first.as_secs_f64(),
        first_writes as f64 / count as f64
    );
    println!(
        "  no-op resync:      {:>9.0} reconciles/s, {:.2} write and {:.2} read requests per policy",
        count as f64 / resync.as_secs_f64(),
        noop_writes as f64 / count as f64,
        noop_reads as f64 / count as f64
    );
    println!(
        "  after a restart:   {:>9.0} reconciles/s, {:.2} write and {:.2} read requests per policy",
        count as f64 / restart.as_secs_f64(),
        restart_writes as f64 / count as f64,
        restart_reads as f64 / count as f64
    );
    println!(
        "  no-op latency:     p50 {:?}, p99 {:?}, max {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );
    println!(
        "  peak RSS:          {:.1} MiB at {count} policies (whole process: the policies as the controller caches them, the owned-object stores)",
        peak
    );
    println!(
        "  failed Jobs:       {troubled} kept in {:.1} MiB of heap ({:.0} bytes each; {:.0} bytes of JSON each as delivered); reflecting them: {:.2} write and {:.2} read requests per policy",
        index_bytes as f64 / 1_048_576.0,
        index_bytes as f64 / troubled.max(1) as f64,
        job_bytes as f64 / troubled.max(1) as f64,
        trouble_writes as f64 / count as f64,
        trouble_reads as f64 / count as f64
    );
    assert_eq!(
        noop_writes + noop_reads,
        0,
        "a steady no-op resync sends nothing"
    );
    assert_eq!(
        restart_writes + restart_reads,
        0,
        "a resync after a restart sends nothing either"
    );
    assert_eq!(troubled, sections, "one failed Job per section");
}
