//! The controller under API faults. An in-memory API server (behind `kube::Client::new`, like the
//! scripted harness) keeps objects by path and answers what `reconcile` really sends; it fails a
//! seeded share of requests with 500, 503 and 429 (with and without `Retry-After`), and status
//! writes also with 409. A driver plays kube's `Controller` on a virtual clock: it reconciles the
//! policy due first, requeues it at the delay `reconcile` or `error_policy` returns, keeps the
//! owned-object caches in step with the API and re-triggers an owner when one of its objects
//! changes, as the watches would. Checked: no panic; requests bounded by the backoff schedule;
//! every policy converges once faults stop; a converged controller sends nothing; a policy
//! changed while the controller was down is reconciled on start.
//! `SIGNET_FAULT_SEED=<n>` replays the API's faults (the backoff jitter stays random).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::runtime::watcher;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use signet::admission::Admission;
use signet::admission::files::parse_documents;
use signet::controller::build::{self, WorkerSettings};
use signet::controller::cache::{OwnedIndex, OwnedKind};
use signet::controller::metrics::Metrics;
use signet::controller::reconcile::{
    BACKOFF_BASE, BACKOFF_CAP, Context, Stores, contains, error_policy, reconcile,
};
use signet::crd::SignaturePolicy;
use signet::validation::ValidPolicy;
use tower_test::mock;

const RUN_NOW: &str = "signet.dev/run-now";
/// The kinds the controller owns and watches, by API resource name.
const OWNED: [&str; 4] = ["serviceaccounts", "roles", "rolebindings", "cronjobs"];

// ---------------------------------------------------------------------------------------------
// The fake API server.

/// What the fake API injects.
#[derive(Clone, Copy, Debug)]
struct Faults {
    /// Share of requests failed with 500, 503, 429 or 429 + `Retry-After` (status writes: or 409).
    rate: f64,
    /// `Retry-After` seconds on the 429s that carry one.
    retry_after: u64,
}

/// A change the watches would deliver.
struct Change {
    resource: String,
    namespace: String,
    name: String,
    /// The object now, `None` when deleted.
    object: Option<Value>,
}

/// Per-policy request counts.
#[derive(Default, Clone, Copy)]
struct Counted {
    requests: u64,
    injected: u64,
}

#[derive(Default)]
struct State {
    /// `resource/namespace/name` → object.
    objects: BTreeMap<String, Value>,
    resource_version: u64,
    faults: Option<Faults>,
    rng: Option<StdRng>,
    /// The policy (`namespace/name`) being reconciled; its requests are counted against it.
    current: Option<String>,
    counted: HashMap<String, Counted>,
    requests: u64,
    by_verb: BTreeMap<String, u64>,
    injected: BTreeMap<u16, u64>,
    /// Writes performed whose answer was then replaced by a 5xx.
    lost_answers: u64,
    changes: Vec<Change>,
    unexpected: Vec<String>,
    /// The last fault injected: code and `Retry-After`.
    last_fault: Option<(u16, Option<u64>)>,
    /// One-shot faults for targeted tests: the next request with this method whose path ends so
    /// is refused with this code, before it takes effect.
    scripted: Vec<(Method, String, u16)>,
}

#[derive(Clone, Default)]
struct FakeApi(Arc<Mutex<State>>);

/// Where a request goes: `/api/v1/namespaces/{ns}/{resource}[/{name}[/{sub}]]` or the same under
/// `/apis/{group}/{version}`.
struct Route {
    resource: String,
    namespace: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn route(path: &str) -> Option<Route> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let rest = match parts.as_slice() {
        ["api", "v1", rest @ ..] => rest,
        ["apis", _, _, rest @ ..] => rest,
        _ => return None,
    };
    match rest {
        ["namespaces", ns, resource, tail @ ..] if tail.len() <= 2 => Some(Route {
            resource: (*resource).into(),
            namespace: (*ns).into(),
            name: tail.first().map(|s| (*s).into()),
            subresource: tail.get(1).map(|s| (*s).into()),
        }),
        _ => None,
    }
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let object = target.as_object_mut().unwrap();
    for (key, value) in fields {
        if value.is_null() {
            object.remove(key);
        } else {
            merge(object.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

fn reply(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn failure(code: u16, reason: &str, retry_after: Option<u64>) -> Response<Body> {
    let mut status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("injected {code}"), "reason": reason, "code": code});
    let mut builder = Response::builder().status(code);
    if let Some(seconds) = retry_after {
        // The API server says it twice: header and body.
        status["details"] = json!({"retryAfterSeconds": seconds});
        builder = builder.header("retry-after", seconds.to_string());
    }
    builder
        .body(Body::from(serde_json::to_vec(&status).unwrap()))
        .unwrap()
}

/// The trigger-relevant part of a policy: what the controller's predicate hashes (generation and
/// the run-now annotation; no worker writes status here).
fn trigger_of(policy: &Value) -> Value {
    json!([
        policy["metadata"]["generation"],
        policy["metadata"]["annotations"][RUN_NOW]
    ])
}

fn without_resource_version(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(meta) = object["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    object
}

impl FakeApi {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A client whose requests this API answers.
    fn client(&self) -> Client {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let api = self.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let response = api.answer(request).await;
                send.send_response(response);
            }
        });
        Client::new(service, "default")
    }

    fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        self.state()
            .objects
            .get(&format!("{resource}/{namespace}/{name}"))
            .cloned()
    }

    fn list(&self, resource: &str) -> Vec<Value> {
        let prefix = format!("{resource}/");
        self.state()
            .objects
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Stores an object as a client outside the controller would (a person, a previous run).
    fn put(&self, resource: &str, mut object: Value) {
        let mut state = self.state();
        state.resource_version += 1;
        let rv = state.resource_version;
        let namespace = object["metadata"]["namespace"].as_str().unwrap().to_owned();
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        let meta = &mut object["metadata"];
        meta["resourceVersion"] = json!(rv.to_string());
        if meta["uid"].is_null() {
            meta["uid"] = json!(format!("uid-{resource}-{namespace}-{name}"));
        }
        if meta["creationTimestamp"].is_null() {
            meta["creationTimestamp"] = json!(jiff::Timestamp::now().to_string());
        }
        if meta["generation"].is_null() && matches!(resource, "cronjobs" | "signaturepolicies") {
            meta["generation"] = json!(1);
        }
        state
            .objects
            .insert(format!("{resource}/{namespace}/{name}"), object);
    }

    async fn answer(&self, request: Request<Body>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let content_type = request
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .or_else(|_| serde_saphyr::from_slice(&bytes))
                .unwrap_or(Value::Null)
        };
        let mut state = self.state();
        state.requests += 1;
        *state.by_verb.entry(method.to_string()).or_default() += 1;
        let current = state.current.clone();
        if let Some(policy) = &current {
            state.counted.entry(policy.clone()).or_default().requests += 1;
        }
        let Some(route) = route(&path) else {
            state.unexpected.push(format!("{method} {path}"));
            return failure(404, "NotFound", None);
        };
        let status_write =
            route.resource == "signaturepolicies" && route.subresource.as_deref() == Some("status");
        if let Some(i) = state
            .scripted
            .iter()
            .position(|(m, suffix, _)| *m == method && path.ends_with(suffix.as_str()))
        {
            let (_, _, code) = state.scripted.remove(i);
            return failure(code, "Scripted", None);
        }

        // Faults: rate-limited and conflicting requests are refused before anything happens; half
        // of the failed writes happen all the same and only the answer is lost.
        let mut lost_answer = None;
        if let (Some(faults), Some(rng)) = (state.faults, state.rng.as_mut())
            && rng.random_bool(faults.rate)
        {
            let choices = if status_write { 5 } else { 4 };
            let (code, reason, retry_after) = match rng.random_range(0..choices) {
                0 => (500, "InternalError", None),
                1 => (503, "ServiceUnavailable", None),
                2 => (429, "TooManyRequests", None),
                3 => (429, "TooManyRequests", Some(faults.retry_after)),
                _ => (409, "Conflict", None),
            };
            let write = method != Method::GET;
            let lose = write && code >= 500 && rng.random_bool(0.5);
            *state.injected.entry(code).or_default() += 1;
            state.last_fault = Some((code, retry_after));
            if let Some(policy) = &current {
                state.counted.entry(policy.clone()).or_default().injected += 1;
            }
            if !lose {
                return failure(code, reason, retry_after);
            }
            state.lost_answers += 1;
            lost_answer = Some(failure(code, reason, retry_after));
        }

        let answer = state.serve(&method, &route, &query, &content_type, body);
        let answer = match answer {
            Ok(answer) => answer,
            Err(unexpected) => {
                state.unexpected.push(format!(
                    "{method} {path}?{query} [{content_type}]: {unexpected}"
                ));
                failure(405, "MethodNotAllowed", None)
            }
        };
        lost_answer.unwrap_or(answer)
    }
}

impl State {
    /// Answers one request; `Err` for a request the controller has no business sending.
    fn serve(
        &mut self,
        method: &Method,
        route: &Route,
        query: &str,
        content_type: &str,
        body: Value,
    ) -> Result<Response<Body>, String> {
        let resource = route.resource.as_str();
        let owned = OWNED.contains(&resource);
        let Some(name) = route.name.clone() else {
            return match (method, resource) {
                (&Method::POST, "events" | "jobs") => self.create(route, body),
                _ => Err("collection request".into()),
            };
        };
        let key = format!("{resource}/{}/{name}", route.namespace);
        match (method, resource, route.subresource.as_deref()) {
            (&Method::GET, _, None) if owned => Ok(match self.objects.get(&key) {
                Some(object) => reply(StatusCode::OK, object),
                None => failure(404, "NotFound", None),
            }),
            (&Method::PATCH, _, None) if owned => {
                if !content_type.starts_with("application/apply-patch+yaml") {
                    return Err("owned objects are written with server-side apply".into());
                }
                if !(query.contains("fieldManager=signet-controller")
                    && query.contains("force=true"))
                {
                    return Err("apply without the field manager or force".into());
                }
                if body["metadata"]["name"] != json!(name) {
                    return Err("apply body names another object".into());
                }
                Ok(self.apply(route, &key, body))
            }
            (&Method::DELETE, "cronjobs", None) => Ok(match self.objects.remove(&key) {
                Some(_) => {
                    self.changed(route, &name, None);
                    reply(
                        StatusCode::OK,
                        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 200}),
                    )
                }
                None => failure(404, "NotFound", None),
            }),
            (&Method::PATCH, "signaturepolicies", sub) => {
                if !content_type.starts_with("application/merge-patch+json") {
                    return Err("policies are written with merge patches".into());
                }
                let Some(mut policy) = self.objects.get(&key).cloned() else {
                    return Ok(failure(404, "NotFound", None));
                };
                let before = policy.clone();
                match sub {
                    // The status subresource takes the status only.
                    Some("status") => merge(&mut policy["status"], &body["status"]),
                    None => {
                        if body.get("status").is_some() || body.get("spec").is_some() {
                            return Err("the controller writes only metadata of a policy".into());
                        }
                        merge(&mut policy, &body);
                    }
                    Some(other) => return Err(format!("subresource {other}")),
                }
                if policy != before {
                    self.resource_version += 1;
                    policy["metadata"]["resourceVersion"] =
                        json!(self.resource_version.to_string());
                    self.objects.insert(key, policy.clone());
                    if trigger_of(&policy) != trigger_of(&before) {
                        self.changed(route, &name, Some(policy.clone()));
                    }
                }
                Ok(reply(StatusCode::OK, &policy))
            }
            _ => Err("not a request reconcile makes".into()),
        }
    }

    fn create(&mut self, route: &Route, mut body: Value) -> Result<Response<Body>, String> {
        let Some(name) = body["metadata"]["name"].as_str().map(str::to_owned) else {
            return Err("create without a name".into());
        };
        let key = format!("{}/{}/{name}", route.resource, route.namespace);
        if self.objects.contains_key(&key) {
            return Ok(failure(409, "AlreadyExists", None));
        }
        self.resource_version += 1;
        body["metadata"]["uid"] = json!(format!("uid-{key}"));
        body["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        body["metadata"]["creationTimestamp"] = json!(jiff::Timestamp::now().to_string());
        self.objects.insert(key, body.clone());
        Ok(reply(StatusCode::CREATED, &body))
    }

    /// Server-side apply, simplified: the applied body becomes the object, with the server's
    /// metadata, a default the server adds, and the status kept.
    fn apply(&mut self, route: &Route, key: &str, body: Value) -> Response<Body> {
        let existing = self.objects.get(key).cloned();
        let mut object = body;
        let meta = &mut object["metadata"];
        let old_meta = existing.as_ref().map(|e| e["metadata"].clone());
        let kept = |field: &str| old_meta.as_ref().map(|m| m[field].clone());
        meta["uid"] = kept("uid").unwrap_or_else(|| json!(format!("uid-{key}")));
        meta["creationTimestamp"] =
            kept("creationTimestamp").unwrap_or_else(|| json!(jiff::Timestamp::now().to_string()));
        meta["namespace"] = json!(route.namespace);
        if route.resource == "cronjobs" {
            let pod = &mut object["spec"]["jobTemplate"]["spec"]["template"]["spec"];
            if pod.get("dnsPolicy").is_none() {
                pod["dnsPolicy"] = json!("ClusterFirst");
            }
            let generation = kept("generation").and_then(|g| g.as_i64()).unwrap_or(0);
            let spec_moved = existing.as_ref().map(|e| &e["spec"]) != Some(&object["spec"]);
            object["metadata"]["generation"] = json!(if spec_moved {
                generation + 1
            } else {
                generation
            });
            if let Some(status) = existing.as_ref().and_then(|e| e.get("status")) {
                object["status"] = status.clone();
            }
        }
        let unchanged = existing
            .as_ref()
            .is_some_and(|e| without_resource_version(e) == object);
        if unchanged {
            return reply(StatusCode::OK, existing.as_ref().unwrap());
        }
        self.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        self.objects.insert(key.to_owned(), object.clone());
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        self.changed(route, &name, Some(object.clone()));
        reply(StatusCode::OK, &object)
    }

    fn changed(&mut self, route: &Route, name: &str, object: Option<Value>) {
        self.changes.push(Change {
            resource: route.resource.clone(),
            namespace: route.namespace.clone(),
            name: name.to_owned(),
            object,
        });
    }
}

// ---------------------------------------------------------------------------------------------
// The driver: kube's Controller on a virtual clock.

#[derive(Default, Clone, Copy)]
struct PolicyRun {
    reconciles: u64,
    failures: u64,
    successes: u64,
    /// Watch events that scheduled the policy.
    triggers: u64,
    /// Reconciles after the faults stopped.
    after_faults: u64,
    /// Consecutive failures now, and the most seen.
    streak: u64,
    longest_streak: u64,
}

struct Driver {
    api: FakeApi,
    ctx: Arc<Context>,
    stores: Stores,
    /// Virtual time since the start.
    now: Duration,
    /// Policy (`namespace/name`) → when it is due. One slot per policy; the earlier time wins,
    /// as in kube's scheduler.
    queue: HashMap<String, Duration>,
    runs: HashMap<String, PolicyRun>,
    retries: u64,
    panics: Vec<String>,
    /// Retries after a 429 carrying `Retry-After`: how many waited as asked, and which did not.
    retry_after_honoured: u64,
    retry_after_ignored: Vec<String>,
    /// When set, the watches lag: after each reconcile they deliver what is pending (in order)
    /// only half the time, so reconciles also run on stale caches.
    watch_lag: Option<StdRng>,
    pending: Vec<Change>,
}

fn settings() -> WorkerSettings {
    WorkerSettings {
        image: "registry.example/signet:1".into(),
        image_pull_policy: None,
        pushgateway_url: None,
    }
}

/// kube offers no getter for an `Action`'s requeue delay; its `Debug` form shows it.
fn requeue_after(action: &Action) -> Option<Duration> {
    let text = format!("{action:?}");
    let inner = text.split("Some(").nth(1)?.split(')').next()?;
    let (number, scale) = [("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)]
        .iter()
        .find_map(|(unit, scale)| inner.strip_suffix(unit).map(|n| (n, *scale)))?;
    Some(Duration::from_secs_f64(number.parse::<f64>().ok()? * scale))
}

fn index<K: OwnedKind + DeserializeOwned>(index: &OwnedIndex, object: Option<Value>, gone: K) {
    match object {
        Some(object) => index.apply_event(&watcher::Event::Apply(
            serde_json::from_value::<K>(object).unwrap(),
        )),
        None => index.apply_event(&watcher::Event::Delete(gone)),
    }
}

fn named<K: kube::Resource<DynamicType = ()> + Default>(namespace: &str, name: &str) -> K {
    let mut k = K::default();
    k.meta_mut().namespace = Some(namespace.into());
    k.meta_mut().name = Some(name.into());
    k
}

impl Driver {
    /// A controller starting now over `api`; its caches see what `api` holds once `synced`.
    fn start(api: &FakeApi, synced: bool) -> Self {
        let stores = Stores::default();
        let ctx = Arc::new(Context::new(
            api.client(),
            Reporter {
                controller: "signet-controller".into(),
                instance: None,
            },
            settings(),
            stores.clone(),
            Arc::new(Metrics::new()),
        ));
        let mut driver = Driver {
            api: api.clone(),
            ctx,
            stores,
            now: Duration::ZERO,
            queue: HashMap::new(),
            runs: HashMap::new(),
            retries: 0,
            panics: Vec::new(),
            retry_after_honoured: 0,
            retry_after_ignored: Vec::new(),
            watch_lag: None,
            pending: Vec::new(),
        };
        if synced {
            driver.sync_all();
        }
        // The policy watch's initial list schedules every policy.
        for policy in api.list("signaturepolicies") {
            driver.schedule(&policy_key(&policy), Duration::ZERO);
        }
        driver
    }

    /// The owned watches' initial list.
    fn sync_all(&mut self) {
        let api = self.api.clone();
        for resource in OWNED {
            for object in api.list(resource) {
                self.follow(resource, object, false);
            }
        }
        self.api.state().changes.clear();
    }

    fn follow(&mut self, resource: &str, object: Value, trigger: bool) {
        let managed = object["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "signet";
        if !managed {
            return;
        }
        let namespace = object["metadata"]["namespace"].as_str().unwrap().to_owned();
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        self.deliver(resource, &namespace, &name, Some(object.clone()));
        if trigger && let Some(owner) = object["metadata"]["ownerReferences"][0]["name"].as_str() {
            self.trigger(&format!("{namespace}/{owner}"));
        }
    }

    fn deliver(&self, resource: &str, namespace: &str, name: &str, object: Option<Value>) {
        let s = &self.stores;
        match resource {
            "serviceaccounts" => index(
                &s.service_accounts,
                object,
                named::<ServiceAccount>(namespace, name),
            ),
            "roles" => index(&s.roles, object, named::<Role>(namespace, name)),
            "rolebindings" => index(
                &s.role_bindings,
                object,
                named::<RoleBinding>(namespace, name),
            ),
            "cronjobs" => index(&s.cron_jobs, object, named::<CronJob>(namespace, name)),
            _ => {}
        }
    }

    fn schedule(&mut self, key: &str, at: Duration) {
        let slot = self.queue.entry(key.to_owned()).or_insert(at);
        *slot = (*slot).min(at);
    }

    fn trigger(&mut self, key: &str) {
        self.runs.entry(key.to_owned()).or_default().triggers += 1;
        self.schedule(key, self.now);
    }

    /// What the watches deliver after the API changed.
    fn watch(&mut self) {
        let fresh = std::mem::take(&mut self.api.state().changes);
        self.pending.extend(fresh);
        if let Some(rng) = self.watch_lag.as_mut()
            && rng.random_bool(0.5)
        {
            return;
        }
        self.flush();
    }

    /// Delivers every pending watch event.
    fn flush(&mut self) {
        for change in std::mem::take(&mut self.pending) {
            if change.resource == "signaturepolicies" {
                self.trigger(&format!("{}/{}", change.namespace, change.name));
                continue;
            }
            match change.object {
                Some(object) => self.follow(&change.resource, object, true),
                None => {
                    self.deliver(&change.resource, &change.namespace, &change.name, None);
                    // A deleted CronJob's owner is named by its label.
                    let owner = change.name.rsplit_once('-').map(|(p, _)| p.to_owned());
                    if let Some(owner) = owner {
                        self.trigger(&format!("{}/{owner}", change.namespace));
                    }
                }
            }
        }
    }

    /// Reconciles the policy due first; `false` when none is due before `until`.
    async fn step(&mut self, until: Duration, faults_until: Duration) -> bool {
        let Some((key, at)) = self
            .queue
            .iter()
            .min_by_key(|(k, at)| (**at, (*k).clone()))
            .map(|(k, at)| (k.clone(), *at))
        else {
            return false;
        };
        if at > until {
            return false;
        }
        self.queue.remove(&key);
        self.now = self.now.max(at);
        let (namespace, name) = key.split_once('/').unwrap();
        let Some(stored) = self.api.get("signaturepolicies", namespace, name) else {
            return true;
        };
        let policy: Arc<SignaturePolicy> = Arc::new(serde_json::from_value(stored).unwrap());
        let faulty = self.now < faults_until;
        {
            let mut state = self.api.state();
            if !faulty {
                state.faults = None;
            }
            state.current = Some(key.clone());
            state.last_fault = None;
        }
        let run = self.runs.entry(key.clone()).or_default();
        run.reconciles += 1;
        if !faulty {
            run.after_faults += 1;
        }
        let result = tokio::spawn(reconcile(policy.clone(), self.ctx.clone())).await;
        self.api.state().current = None;
        let next = match result {
            Ok(Ok(action)) => {
                let run = self.runs.get_mut(&key).unwrap();
                run.successes += 1;
                run.streak = 0;
                requeue_after(&action)
            }
            Ok(Err(error)) => {
                let run = self.runs.get_mut(&key).unwrap();
                run.failures += 1;
                run.streak += 1;
                run.longest_streak = run.longest_streak.max(run.streak);
                self.retries += 1;
                let action = error_policy(policy, &error, self.ctx.clone());
                let delay = requeue_after(&action);
                assert!(
                    delay.is_some(),
                    "a transient error is retried: {error} gave {action:?}"
                );
                // The request that failed the reconcile is the last fault injected in it.
                let asked = self.api.state().last_fault.and_then(|(_, after)| after);
                if let (Some(asked), Some(delay)) = (asked, delay) {
                    if delay >= Duration::from_secs(asked) {
                        self.retry_after_honoured += 1;
                    } else {
                        self.retry_after_ignored.push(format!(
                            "{key}: asked {asked}s, retried after {delay:?} ({error})"
                        ));
                    }
                }
                delay
            }
            Err(panic) => {
                self.panics.push(format!("{key}: {panic}"));
                Some(BACKOFF_CAP)
            }
        };
        if let Some(delay) = next {
            self.schedule(&key, self.now + delay);
        }
        self.watch();
        true
    }
}

fn policy_key(policy: &Value) -> String {
    format!(
        "{}/{}",
        policy["metadata"]["namespace"].as_str().unwrap(),
        policy["metadata"]["name"].as_str().unwrap()
    )
}

// ---------------------------------------------------------------------------------------------
// Policies and what converged means.

fn example(file: &str) -> SignaturePolicy {
    let text =
        std::fs::read_to_string(format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    Admission::new()
        .check(parse_documents(&text).unwrap().remove(0))
        .policy
        .expect("decodes")
}

/// Twenty policies in four namespaces, from three examples (and one invalid one); every fifth
/// asks for a manual run.
fn policies() -> Vec<SignaturePolicy> {
    let bases = [
        example("full.yaml"),
        example("minimal.yaml"),
        example("timeouts-only.yaml"),
    ];
    let mut policies: Vec<SignaturePolicy> = (0..19)
        .map(|i| {
            let mut p = bases[i % 3].clone();
            p.metadata.name = Some(format!("{}-{i}", p.metadata.name.clone().unwrap()));
            p.metadata.namespace = Some(format!("team-{}", i % 4));
            if i % 5 == 0 {
                let section = if i % 3 == 2 { "timeouts" } else { "reminders" };
                p.metadata.annotations = Some([(RUN_NOW.to_owned(), section.to_owned())].into());
            }
            p
        })
        .collect();
    let mut invalid = example("invalid/unknown-time-zone.yaml");
    invalid.metadata.namespace = Some("team-0".into());
    policies.push(invalid);
    policies
}

/// Why the policy `key` is not converged, if it is not.
fn not_converged(api: &FakeApi, key: &str) -> Option<String> {
    let (namespace, name) = key.split_once('/').unwrap();
    let stored = api.get("signaturepolicies", namespace, name)?;
    let policy: SignaturePolicy = serde_json::from_value(stored.clone()).unwrap();
    let status = &stored["status"];
    if status["observedGeneration"] != stored["metadata"]["generation"] {
        return Some(format!(
            "observedGeneration {}",
            status["observedGeneration"]
        ));
    }
    let ready = status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default();
    let Ok(valid) = ValidPolicy::new(&policy) else {
        return (ready["status"] != "False" || ready["reason"] != "InvalidSpec")
            .then(|| format!("invalid spec shown as {ready}"));
    };
    if ready["status"] != "True" {
        return Some(format!("Ready is {ready}"));
    }
    if !stored["metadata"]["annotations"][RUN_NOW].is_null() {
        return Some("run-now annotation not cleared".into());
    }
    let desired = build::desired(&valid, &settings());
    let wanted: Vec<(&str, String, Value)> = [
        ("serviceaccounts", json!(desired.service_account)),
        ("roles", json!(desired.role)),
        ("rolebindings", json!(desired.role_binding)),
    ]
    .into_iter()
    .chain(
        desired
            .cron_jobs
            .iter()
            .map(|(_, cj)| ("cronjobs", json!(cj))),
    )
    .map(|(r, v)| (r, v["metadata"]["name"].as_str().unwrap().to_owned(), v))
    .collect();
    for (resource, object_name, value) in &wanted {
        match api.get(resource, namespace, object_name) {
            Some(actual) if contains(&actual, value) => {}
            Some(_) => return Some(format!("{resource}/{object_name} differs")),
            None => return Some(format!("{resource}/{object_name} missing")),
        }
    }
    let cron_jobs = api
        .list("cronjobs")
        .into_iter()
        .filter(|cj| cj["metadata"]["labels"]["signet.dev/policy"] == name)
        .filter(|cj| cj["metadata"]["namespace"] == namespace)
        .count();
    (cron_jobs != desired.cron_jobs.len())
        .then(|| format!("{cron_jobs} CronJobs, {} desired", desired.cron_jobs.len()))
}

/// Attempts a policy failing at every try can make within `window`: retry k waits at least
/// 0.8 × min(2^(k-1) s, 5 min).
fn attempts_within(window: Duration) -> u64 {
    let mut elapsed = Duration::ZERO;
    let mut attempts = 1;
    loop {
        let wait = BACKOFF_BASE
            .saturating_mul(1 << (attempts - 1).min(16))
            .min(BACKOFF_CAP)
            .mul_f64(0.8);
        if elapsed + wait > window {
            return attempts;
        }
        elapsed += wait;
        attempts += 1;
    }
}

/// Most requests one reconcile sends: a read and an apply per owned object (service account,
/// role, role binding, two CronJobs), a CronJob delete, a Job, the annotation clear, the status
/// patch, and Events (Applied, Pruned, Stale or Recovered, manual run).
const MAX_REQUESTS_PER_RECONCILE: u64 = 2 * 5 + 1 + 1 + 1 + 1 + 4;

fn seed() -> u64 {
    std::env::var("SIGNET_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random())
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

/// How long the API misbehaves, in virtual time.
const FAULTY_FOR: Duration = Duration::from_secs(30 * 60);
/// When every policy's spec is edited during the faults (the last just before they stop, so
/// policies are mid-retry when the API recovers).
const EDITS_AT: [Duration; 3] = [
    Duration::from_secs(600),
    Duration::from_secs(1_200),
    Duration::from_secs(1_790),
];

#[tokio::test(flavor = "current_thread")]
async fn under_api_faults_the_controller_backs_off_then_converges_and_goes_quiet() {
    let seed = seed();
    println!("seed {seed} (replay the API's faults with SIGNET_FAULT_SEED={seed})");
    println!(
        "{} policies; faults for {}s of virtual time with every spec edited at {:?}, then none",
        policies().len(),
        FAULTY_FOR.as_secs(),
        EDITS_AT.map(|d| d.as_secs())
    );
    println!(
        "backoff {}s→{}s ±20%: one streak of failures fits at most {} attempts in {}s",
        BACKOFF_BASE.as_secs(),
        BACKOFF_CAP.as_secs(),
        attempts_within(FAULTY_FOR),
        FAULTY_FOR.as_secs()
    );
    // 100%: an outage, where the backoff alone decides how often the controller knocks.
    for (i, rate) in [0.1, 0.3, 0.5, 1.0].into_iter().enumerate() {
        scenario(seed.wrapping_add(i as u64), rate).await;
    }
}

/// Edit `n` of a policy: a new schedule for its first section, a new generation.
fn edit(api: &FakeApi, key: &str, n: usize) {
    let (namespace, name) = key.split_once('/').unwrap();
    let mut stored = api.get("signaturepolicies", namespace, name).unwrap();
    let section = if stored["spec"]["reminders"].is_object() {
        "reminders"
    } else {
        "timeout"
    };
    stored["spec"][section]["schedule"] = json!(format!("{} * * * *", 10 * (n + 1)));
    let generation = stored["metadata"]["generation"].as_i64().unwrap();
    stored["metadata"]["generation"] = json!(generation + 1);
    api.put("signaturepolicies", stored);
}

async fn scenario(seed: u64, rate: f64) {
    let api = FakeApi::default();
    for policy in policies() {
        api.put("signaturepolicies", serde_json::to_value(&policy).unwrap());
    }
    {
        let mut state = api.state();
        state.faults = Some(Faults {
            rate,
            retry_after: 2,
        });
        state.rng = Some(StdRng::seed_from_u64(seed));
    }
    let mut driver = Driver::start(&api, true);
    driver.watch_lag = Some(StdRng::seed_from_u64(!seed));
    let keys: Vec<String> = api
        .list("signaturepolicies")
        .iter()
        .map(policy_key)
        .collect();

    // The faulty period, with edits.
    for (n, at) in EDITS_AT.into_iter().enumerate() {
        while driver.step(at, FAULTY_FOR).await {}
        driver.now = driver.now.max(at);
        for key in &keys {
            edit(&api, key, n);
            driver.trigger(key);
        }
    }
    while driver.step(FAULTY_FOR, FAULTY_FOR).await {}
    driver.now = FAULTY_FOR;
    let during: HashMap<String, Counted> = api.state().counted.clone();
    let (requests_during, injected, lost, by_code, by_verb) = {
        let state = api.state();
        (
            state.requests,
            state.injected.values().sum::<u64>(),
            state.lost_answers,
            state.injected.clone(),
            state.by_verb.clone(),
        )
    };
    let runs_during = driver.runs.clone();
    let retries_during = driver.retries;
    let longest_streak = runs_during
        .values()
        .map(|r| r.longest_streak)
        .max()
        .unwrap_or(0);

    // Faults stop: every policy must converge at its next reconcile, at most one capped backoff
    // (with jitter) away.
    api.state().faults = None;
    let deadline = FAULTY_FOR + BACKOFF_CAP.mul_f64(1.2) + Duration::from_secs(1);
    let unconverged_at_stop = keys
        .iter()
        .filter(|k| not_converged(&api, k).is_some())
        .count();
    // Policy → (when it converged, reconciles after the faults it took).
    let mut converged_at: HashMap<&String, (Duration, u64)> = HashMap::new();
    loop {
        for key in &keys {
            if !converged_at.contains_key(key) && not_converged(&api, key).is_none() {
                let rounds = driver.runs.get(key).map_or(0, |r| r.after_faults);
                converged_at.insert(key, (driver.now, rounds));
            }
        }
        if converged_at.len() == keys.len() || !driver.step(deadline, FAULTY_FOR).await {
            break;
        }
    }
    let converged_by = converged_at.values().map(|c| c.0).max().unwrap_or_default();
    let late: Vec<String> = keys
        .iter()
        .filter_map(|k| not_converged(&api, k).map(|why| format!("{k}: {why}")))
        .collect();
    let rounds = converged_at.values().map(|c| c.1).max().unwrap_or(0);

    // A converged controller resyncing every policy, its watches caught up, sends nothing.
    driver.watch_lag = None;
    driver.flush();
    let before = api.state().requests;
    for key in &keys {
        driver.schedule(key, driver.now);
    }
    let now = driver.now;
    while driver.step(now, Duration::ZERO).await {}
    let quiet = api.state().requests - before;

    // Requests against the backoff bound, per policy.
    let total_reconciles: u64 = runs_during.values().map(|r| r.reconciles).sum();
    let mut busiest = (0, String::new(), 0, 0, 0);
    let mut over_bound = Vec::new();
    let mut bound_total = 0;
    for key in &keys {
        let run = runs_during.get(key).copied().unwrap_or_default();
        let counted = during.get(key).copied().unwrap_or_default();
        // Each streak of failures (one to start, one after each success) fits the backoff
        // schedule; each watch event (an edit, a write of its own) adds at most one reconcile.
        let reconciles = (1 + run.successes) * attempts_within(FAULTY_FOR) + run.triggers;
        let bound = reconciles * MAX_REQUESTS_PER_RECONCILE;
        bound_total += bound;
        if counted.requests > bound || run.reconciles > reconciles {
            over_bound.push(format!(
                "{key}: {} requests in {} reconciles, bound {bound} in {reconciles}",
                counted.requests, run.reconciles
            ));
        }
        if counted.requests > busiest.0 {
            busiest = (
                counted.requests,
                key.clone(),
                bound,
                run.reconciles,
                reconciles,
            );
        }
    }
    let label = if rate >= 1.0 {
        "outage (100%)".to_owned()
    } else {
        format!("fault rate {:.0}%", rate * 100.0)
    };
    println!("--- {label}, seed {seed}");
    println!(
        "  faulty {}s: {requests_during} requests {by_verb:?}; {injected} errors injected {by_code:?}, {lost} of them on writes that were done; {total_reconciles} reconciles, {retries_during} failed and retried, longest failure streak {longest_streak}",
        FAULTY_FOR.as_secs()
    );
    println!(
        "  requests vs backoff bound: total {requests_during} <= {bound_total}; busiest policy {} sent {} <= {} in {} reconciles <= {} (retrying every 1 s flat: {} reconciles per policy)",
        busiest.1,
        busiest.0,
        busiest.2,
        busiest.3,
        busiest.4,
        FAULTY_FOR.as_secs()
    );
    println!(
        "  retries after a 429 with Retry-After: {} waited at least as asked, {} sooner",
        driver.retry_after_honoured,
        driver.retry_after_ignored.len()
    );
    println!(
        "  faults stop with {unconverged_at_stop} of {} policies unconverged; all converged by virtual {}s ({}s after), at most {rounds} reconcile(s) per policy after the faults",
        keys.len(),
        converged_by.as_secs(),
        converged_by.saturating_sub(FAULTY_FOR).as_secs(),
    );
    println!("  no-op resync of every policy afterwards: {quiet} requests");

    let unexpected = api.state().unexpected.clone();
    assert!(
        unexpected.is_empty(),
        "unexpected requests: {unexpected:#?}"
    );
    assert!(driver.panics.is_empty(), "panicked: {:#?}", driver.panics);
    assert!(injected > 0, "faults were injected");
    assert!(
        over_bound.is_empty(),
        "over the backoff bound: {over_bound:#?}"
    );
    assert!(
        driver.retry_after_ignored.is_empty(),
        "retried sooner than Retry-After: {:#?}",
        driver.retry_after_ignored
    );
    assert!(late.is_empty(), "not converged by {deadline:?}: {late:#?}");
    assert!(rounds <= 1, "one clean reconcile converges a policy");
    assert_eq!(quiet, 0, "a converged controller sends nothing");
    // Each manual run request started exactly one Job, retries notwithstanding.
    let asked = policies()
        .iter()
        .filter(|p| p.metadata.annotations.is_some())
        .count();
    let jobs: Vec<Value> = api
        .list("jobs")
        .iter()
        .map(|j| j["metadata"]["name"].clone())
        .collect();
    assert_eq!(jobs.len(), asked, "one Job per run-now request: {jobs:?}");
}

/// Objects a controller reconciling generation 1 of `policy` left in the API, and that status.
async fn reconciled_generation_1(policy: &SignaturePolicy) -> FakeApi {
    let api = FakeApi::default();
    api.put("signaturepolicies", serde_json::to_value(policy).unwrap());
    let mut before = Driver::start(&api, true);
    while before.step(Duration::ZERO, Duration::ZERO).await {}
    let key = format!(
        "{}/{}",
        policy.metadata.namespace.as_deref().unwrap(),
        policy.metadata.name.as_deref().unwrap()
    );
    assert_eq!(not_converged(&api, &key), None);
    api
}

/// The spec edit made while the controller was down: a new reminder schedule, timeouts off.
fn edit_while_down(api: &FakeApi, namespace: &str, name: &str) -> Value {
    let mut stored = api.get("signaturepolicies", namespace, name).unwrap();
    stored["spec"]["reminders"]["schedule"] = json!("15 * * * *");
    stored["spec"].as_object_mut().unwrap().remove("timeout");
    stored["metadata"]["generation"] = json!(2);
    api.put("signaturepolicies", stored.clone());
    stored
}

#[tokio::test(flavor = "current_thread")]
async fn a_policy_changed_while_the_controller_was_down_is_reconciled_on_start() {
    let mut policy = example("full.yaml");
    policy.metadata.namespace = Some("enrollment".into());
    for synced in [true, false] {
        let api = reconciled_generation_1(&policy).await;
        let mut stored = api
            .get("signaturepolicies", "enrollment", "enrollment-agreements")
            .unwrap();
        assert_eq!(stored["status"]["observedGeneration"], 1);
        stored["spec"]["reminders"]["schedule"] = json!("15 * * * *");
        stored["metadata"]["generation"] = json!(2);
        api.put("signaturepolicies", stored);
        let old = api
            .get("cronjobs", "enrollment", "enrollment-agreements-reminders")
            .unwrap();
        assert_eq!(old["spec"]["schedule"], "*/30 * * * *");

        // Restart: a fresh Context, caches synced from the API or not yet.
        let mut driver = Driver::start(&api, synced);
        let requests = api.state().requests;
        assert!(driver.step(Duration::ZERO, Duration::ZERO).await);
        let sent = api.state().requests - requests;
        let cron_job = api
            .get("cronjobs", "enrollment", "enrollment-agreements-reminders")
            .unwrap();
        assert_eq!(cron_job["spec"]["schedule"], "15 * * * *");
        let stored = api
            .get("signaturepolicies", "enrollment", "enrollment-agreements")
            .unwrap();
        assert_eq!(stored["status"]["observedGeneration"], 2);
        assert_eq!(
            not_converged(&api, "enrollment/enrollment-agreements"),
            None
        );
        println!(
            "restart with caches {}: the first reconcile sent {sent} requests and brought generation 2 in",
            if synced { "synced" } else { "empty" }
        );
        assert!(api.state().unexpected.is_empty());
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_section_disabled_while_the_controller_was_down_is_pruned_on_start() {
    let mut policy = example("full.yaml");
    policy.metadata.namespace = Some("enrollment".into());
    for synced in [true, false] {
        let api = reconciled_generation_1(&policy).await;
        edit_while_down(&api, "enrollment", "enrollment-agreements");
        let mut driver = Driver::start(&api, synced);
        assert!(driver.step(Duration::ZERO, Duration::ZERO).await);
        if !synced {
            // The CronJob watch lists the old CronJob after the first reconcile; that triggers
            // the reconcile which prunes it.
            driver.sync_all_triggering();
            while driver.step(Duration::ZERO, Duration::ZERO).await {}
        }
        assert_eq!(
            api.get("cronjobs", "enrollment", "enrollment-agreements-timeouts"),
            None,
            "the disabled section's CronJob is deleted (caches {})",
            if synced { "synced" } else { "empty" }
        );
        let stored = api
            .get("signaturepolicies", "enrollment", "enrollment-agreements")
            .unwrap();
        assert_eq!(stored["status"]["observedGeneration"], 2);
        assert!(stored["status"]["timeouts"].is_null());
        assert_eq!(
            not_converged(&api, "enrollment/enrollment-agreements"),
            None
        );
        assert!(api.state().unexpected.is_empty());
    }
}

impl Driver {
    /// The owned watches' initial list arriving late, triggering the owners as it does.
    fn sync_all_triggering(&mut self) {
        let api = self.api.clone();
        for resource in OWNED {
            for object in api.list(resource) {
                self.follow(resource, object, true);
            }
        }
    }
}

/// Regression: `error_policy` retried a 429 after its own backoff (about 1 s at first) even when
/// the API server had asked for more with `Retry-After`.
#[tokio::test(flavor = "current_thread")]
async fn a_429_with_retry_after_is_not_retried_sooner() {
    let api = FakeApi::default();
    let mut policy = example("minimal.yaml");
    policy.metadata.namespace = Some("enrollment".into());
    api.put("signaturepolicies", serde_json::to_value(&policy).unwrap());
    let driver = Driver::start(&api, true);
    let stored: SignaturePolicy = serde_json::from_value(
        api.get("signaturepolicies", "enrollment", "enrollment-agreements")
            .unwrap(),
    )
    .unwrap();
    let policy = Arc::new(stored);
    for (retry_after, floor) in [(30, 30), (3_600, BACKOFF_CAP.as_secs())] {
        {
            let mut state = api.state();
            state.faults = Some(Faults {
                rate: 1.0,
                retry_after,
            });
            // Seeds until the first request's fault is a 429 with Retry-After.
            let seed = (0..)
                .find(|seed| {
                    let mut rng = StdRng::seed_from_u64(*seed);
                    rng.random_bool(1.0);
                    rng.random_range(0..4) == 3
                })
                .unwrap();
            state.rng = Some(StdRng::seed_from_u64(seed));
        }
        let error = reconcile(policy.clone(), driver.ctx.clone())
            .await
            .expect_err("the API refuses");
        assert_eq!(error.reason(), "TooManyRequests");
        let delay = requeue_after(&error_policy(policy.clone(), &error, driver.ctx.clone()));
        assert!(
            delay.is_some_and(|d| d >= Duration::from_secs(floor)),
            "Retry-After {retry_after}s: retried after {delay:?}"
        );
    }
}

/// Regression: a manual run's Job was named after the policy's resourceVersion when the
/// reconcile ran, so when clearing the annotation failed and anything else wrote the policy
/// before the retry (a worker's status report, a spec edit), the retry started a second Job.
#[tokio::test(flavor = "current_thread")]
async fn a_manual_run_starts_one_job_even_when_the_policy_changes_before_the_retry() {
    let api = FakeApi::default();
    let mut policy = example("minimal.yaml");
    policy.metadata.namespace = Some("enrollment".into());
    policy.metadata.annotations = Some([(RUN_NOW.to_owned(), "reminders".to_owned())].into());
    api.put("signaturepolicies", serde_json::to_value(&policy).unwrap());
    api.state().scripted.push((
        Method::PATCH,
        "/signaturepolicies/enrollment-agreements".into(),
        500,
    ));
    let mut driver = Driver::start(&api, true);
    assert!(driver.step(Duration::ZERO, Duration::ZERO).await);
    assert_eq!(driver.runs["enrollment/enrollment-agreements"].failures, 1);
    assert_eq!(api.list("jobs").len(), 1, "the Job started");
    // A worker reports a run meanwhile.
    let mut stored = api
        .get("signaturepolicies", "enrollment", "enrollment-agreements")
        .unwrap();
    stored["status"]["reminders"]["lastSuccessfulRunAt"] = json!("2026-01-01T00:00:00Z");
    api.put("signaturepolicies", stored);
    while driver.step(BACKOFF_CAP, Duration::ZERO).await {}
    let jobs: Vec<Value> = api
        .list("jobs")
        .iter()
        .map(|j| j["metadata"]["name"].clone())
        .collect();
    assert_eq!(jobs.len(), 1, "one Job for one request: {jobs:?}");
    assert_eq!(
        not_converged(&api, "enrollment/enrollment-agreements"),
        None
    );
}

#[test]
fn requeue_delays_are_read_from_actions() {
    assert_eq!(
        requeue_after(&Action::requeue(Duration::from_millis(1_500))),
        Some(Duration::from_millis(1_500))
    );
    assert_eq!(
        requeue_after(&Action::requeue(Duration::from_secs(300))),
        Some(Duration::from_secs(300))
    );
    assert_eq!(requeue_after(&Action::await_change()), None);
    assert_eq!(attempts_within(Duration::ZERO), 1);
    // 0.8 + 1.6 + 3.2 = 5.6 s
    assert_eq!(attempts_within(Duration::from_secs_f64(5.6)), 4);
}
