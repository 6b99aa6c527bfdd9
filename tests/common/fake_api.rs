//! An in-memory Kubernetes API server for controller tests, served behind `kube::Client::new`
//! (a tower-test mock service answered by a task). It keeps objects by resource, namespace and
//! name and answers exactly what `reconcile` sends: reads and server-side applies of the owned
//! kinds, merge patches of a policy and its status, creates of Events and Jobs, deletes of
//! CronJobs. Anything else is recorded as unexpected. Faults are injected at a seeded rate, or
//! scripted one at a time. Included by `tests/faults_controller/main.rs`.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use tower_test::mock;

/// The annotation asking for a manual run.
pub const RUN_NOW: &str = "signet.dev/run-now";
/// The kinds the controller owns and watches, by API resource name.
pub const OWNED: [&str; 4] = ["serviceaccounts", "roles", "rolebindings", "cronjobs"];

/// What the fake API injects.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    /// Share of requests failed with 500, 503, 429 or 429 + `Retry-After` (status writes: or 409).
    pub rate: f64,
    /// `Retry-After` seconds on the 429s that carry one.
    pub retry_after: u64,
}

/// A change the watches would deliver.
pub struct Change {
    pub resource: String,
    pub namespace: String,
    pub name: String,
    /// The object now, `None` when deleted.
    pub object: Option<Value>,
}

/// Per-policy request counts.
#[derive(Default, Clone, Copy)]
pub struct Counted {
    pub requests: u64,
    pub injected: u64,
}

#[derive(Default)]
pub struct State {
    /// `resource/namespace/name` → object.
    pub objects: BTreeMap<String, Value>,
    pub resource_version: u64,
    pub faults: Option<Faults>,
    pub rng: Option<StdRng>,
    /// The policy (`namespace/name`) being reconciled; its requests are counted against it.
    pub current: Option<String>,
    pub counted: HashMap<String, Counted>,
    pub requests: u64,
    pub by_verb: BTreeMap<String, u64>,
    pub injected: BTreeMap<u16, u64>,
    /// Writes performed whose answer was then replaced by a 5xx.
    pub lost_answers: u64,
    pub changes: Vec<Change>,
    pub unexpected: Vec<String>,
    /// Injected 429s that carried `Retry-After`.
    pub retry_after_sent: u64,
    /// The last fault injected: code and `Retry-After`.
    pub last_fault: Option<(u16, Option<u64>)>,
    /// One-shot faults for targeted tests: the next request with this method whose path ends so
    /// is refused with this code, before it takes effect.
    pub scripted: Vec<(Method, String, u16)>,
}

#[derive(Clone, Default)]
pub struct FakeApi(Arc<Mutex<State>>);

/// Where a request goes: `/api/v1/namespaces/{ns}/{resource}[/{name}[/{sub}]]` or the same under
/// `/apis/{group}/{version}`.
pub struct Route {
    pub resource: String,
    pub namespace: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

pub fn route(path: &str) -> Option<Route> {
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

/// Whether `actual` holds every field of `wanted` with the same value. Fields the API server adds
/// (defaults, status, managed fields) are ignored; lists must match item by item.
pub fn contains(actual: &Value, wanted: &Value) -> bool {
    match (actual, wanted) {
        (Value::Object(actual), Value::Object(wanted)) => wanted
            .iter()
            .all(|(key, value)| actual.get(key).is_some_and(|a| contains(a, value))),
        (Value::Array(actual), Value::Array(wanted)) => {
            actual.len() == wanted.len() && actual.iter().zip(wanted).all(|(a, w)| contains(a, w))
        }
        _ => actual == wanted,
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
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

pub fn reply(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

pub fn failure(code: u16, reason: &str, retry_after: Option<u64>) -> Response<Body> {
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
pub fn trigger_of(policy: &Value) -> Value {
    json!([
        policy["metadata"]["generation"],
        policy["metadata"]["annotations"][RUN_NOW]
    ])
}

pub fn without_resource_version(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(meta) = object["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    object
}

impl FakeApi {
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A client whose requests this API answers.
    pub fn client(&self) -> Client {
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

    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        self.state()
            .objects
            .get(&format!("{resource}/{namespace}/{name}"))
            .cloned()
    }

    pub fn list(&self, resource: &str) -> Vec<Value> {
        let prefix = format!("{resource}/");
        self.state()
            .objects
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Stores an object as a client outside the controller would (a person, a previous run).
    pub fn put(&self, resource: &str, mut object: Value) {
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

    pub async fn answer(&self, request: Request<Body>) -> Response<Body> {
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
            if retry_after.is_some() {
                state.retry_after_sent += 1;
            }
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
    pub fn serve(
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

    pub fn create(&mut self, route: &Route, mut body: Value) -> Result<Response<Body>, String> {
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
    pub fn apply(&mut self, route: &Route, key: &str, body: Value) -> Response<Body> {
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

    pub fn changed(&mut self, route: &Route, name: &str, object: Option<Value>) {
        self.changes.push(Change {
            resource: route.resource.clone(),
            namespace: route.namespace.clone(),
            name: name.to_owned(),
            object,
        });
    }
}
