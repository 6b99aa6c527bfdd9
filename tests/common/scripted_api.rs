//! The scripted Kubernetes API of `tests/controller_reconcile/` (tower-test behind
//! `kube::Client::new`): each test lists the requests the controller must make, in order, with
//! checks on their bodies and the answers the "API server" gives; anything else fails the test.
//! Also the fixtures those tests share: policies from `examples/`, their reconciled status, and
//! the owned objects as the watches would deliver them after the controller applied them.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::runtime::watcher;
use serde_json::{Value, json};
use signet::admission::Admission;
use signet::controller::build::{self, WorkerSettings};
use signet::controller::cache::{self, OwnedKind, Writer, Writers};
use signet::controller::metrics::Metrics;
use signet::controller::reconcile::{Context, reconcile};
use signet::controller::staleness::Report;
use signet::controller::status::{self, Outcome};
use signet::crd::SignaturePolicy;
use signet::manifests::parse_documents;
use signet::policy::ValidPolicy;
use tower_test::mock::{self, Handle};

pub type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// Checks a request body; the second argument is the path, query and content type.
pub type BodyCheck = Box<dyn Fn(&Value, &str) + Send>;

/// One request the controller must make, and the answer it gets.
pub struct Step {
    pub method: Method,
    pub path: &'static str,
    pub status: StatusCode,
    /// Checks on the request body (parsed as JSON, or YAML for apply patches).
    pub check: BodyCheck,
    /// The answer's body, when not the default (the object sent or the policy; for a failure,
    /// a Status saying "injected").
    pub reply: Option<Value>,
}

pub fn step(
    method: Method,
    path: &'static str,
    check: impl Fn(&Value, &str) + Send + 'static,
) -> Step {
    Step {
        method,
        path,
        status: StatusCode::OK,
        check: Box::new(check),
        reply: None,
    }
}

pub fn failing(method: Method, path: &'static str, status: StatusCode) -> Step {
    Step {
        method,
        path,
        status,
        check: Box::new(|_, _| {}),
        reply: None,
    }
}

/// A request the API server refuses with `status` and a Status carrying `message`, as it words
/// a refusal (RBAC, validation, an admission webhook).
pub fn refusing(method: Method, path: &'static str, status: StatusCode, message: &str) -> Step {
    let reason = status
        .canonical_reason()
        .unwrap_or_default()
        .replace(' ', "");
    Step {
        reply: Some(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": status.as_u16()}),
        ),
        ..failing(method, path, status)
    }
}

pub struct Harness {
    pub ctx: Arc<Context>,
    handle: Option<ApiHandle>,
    /// The watches' ends of the controller's stores.
    pub writers: Writers,
    pub metrics: Arc<Metrics>,
}

pub fn settings() -> WorkerSettings {
    WorkerSettings {
        image: "registry.example/signet:1".into(),
        image_pull_policy: None,
        pushgateway_url: None,
    }
}

pub fn harness() -> Harness {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (stores, writers) = cache::stores();
    let metrics = Arc::new(Metrics::new());
    let reporter = Reporter {
        controller: "signet-controller".into(),
        instance: None,
    };
    let ctx = Arc::new(Context::new(
        client,
        reporter,
        settings(),
        stores,
        metrics.clone(),
    ));
    Harness {
        ctx,
        handle: Some(handle),
        writers,
        metrics,
    }
}

/// When the controller applied the objects [`Harness::observe`] delivers.
pub const APPLIED_AT: i64 = 1_790_000_000;

/// A field manager's entry as the API server records it.
pub fn managed_by(manager: &str, second: i64, fields: Value) -> ManagedFieldsEntry {
    ManagedFieldsEntry {
        manager: Some(manager.into()),
        operation: Some(
            if manager == "signet-controller" {
                "Apply"
            } else {
                "Update"
            }
            .into(),
        ),
        time: Some(Time(jiff::Timestamp::from_second(second).unwrap())),
        fields_v1: Some(FieldsV1(fields)),
        ..Default::default()
    }
}

/// `desired` as the API server holds it once the controller applied it at [`APPLIED_AT`]: with
/// the hash stamp, a uid, the controller's field manager entry and, for a CronJob, a default
/// the server adds and a status.
pub fn as_applied<K: OwnedKind>(desired: &K) -> K {
    let (mut object, _) = cache::stamped(desired);
    let meta = object.meta_mut();
    meta.uid = Some(format!("uid-{}", meta.name.clone().unwrap()));
    meta.generation = Some(1);
    meta.managed_fields = Some(vec![managed_by(
        "signet-controller",
        APPLIED_AT,
        json!({"f:metadata": {}, "f:spec": {}}),
    )]);
    object
}

/// A CronJob `as_applied`, with what the API server adds; the controller must not mind.
pub fn cron_job_as_applied(desired: &CronJob) -> CronJob {
    let mut cron_job = as_applied(desired);
    cron_job
        .spec
        .as_mut()
        .unwrap()
        .job_template
        .spec
        .as_mut()
        .unwrap()
        .completions = Some(1);
    cron_job.status = Some(CronJobStatus::default());
    cron_job
}

impl Harness {
    /// Fills the stores with what the API server would hold after the controller applied the
    /// policy, as the watches deliver it.
    pub fn observe(&mut self, policy: &SignaturePolicy) {
        let desired = build::desired(&ValidPolicy::new(policy).unwrap(), &settings());
        let w = &mut self.writers;
        follow(
            &mut w.service_accounts,
            as_applied(&desired.service_account),
        );
        follow(&mut w.roles, as_applied(&desired.role));
        follow(&mut w.role_bindings, as_applied(&desired.role_binding));
        for (_, cron_job) in desired.cron_jobs {
            follow(&mut w.cron_jobs, cron_job_as_applied(&cron_job));
        }
    }

    /// The watch delivers `cron_job` (as the API server holds it).
    pub fn observe_cron_job(&mut self, cron_job: CronJob) {
        follow(&mut self.writers.cron_jobs, cron_job);
    }

    /// Runs one reconcile while the scripted API answers `steps`; fails on any other request.
    pub async fn reconcile(
        &mut self,
        policy: &SignaturePolicy,
        steps: Vec<Step>,
    ) -> Result<Action, signet::controller::Error> {
        let mut handle = self.handle.take().expect("one reconcile at a time");
        let stored_policy = serde_json::to_value(policy).unwrap();
        let api = tokio::spawn(async move {
            for (i, step) in steps.into_iter().enumerate() {
                let (request, send) =
                    tokio::time::timeout(Duration::from_secs(5), handle.next_request())
                        .await
                        .unwrap_or_else(|_| {
                            panic!(
                                "step {i}: expected {} {}, but no request came",
                                step.method, step.path
                            )
                        })
                        .expect("client alive");
                let uri = request.uri().clone();
                assert_eq!(
                    (request.method(), uri.path()),
                    (&step.method, step.path),
                    "step {i}"
                );
                let content_type = request
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                let bytes = request.into_body().collect_bytes().await.unwrap();
                let body: Value = if bytes.is_empty() {
                    Value::Null
                } else if content_type.contains("apply-patch") {
                    serde_saphyr::from_slice(&bytes).unwrap()
                } else {
                    serde_json::from_slice(&bytes).unwrap()
                };
                assert!(
                    step.method != Method::PATCH || content_type.contains("patch"),
                    "step {i}: PATCH with content type {content_type:?}"
                );
                (step.check)(
                    &body,
                    &format!(
                        "{}?{} [{content_type}]",
                        uri.path(),
                        uri.query().unwrap_or_default()
                    ),
                );
                let response = if step.status.is_success() {
                    // The API server returns the object it stored: the policy for policy writes,
                    // else the object sent.
                    let mut object = if let Some(reply) = &step.reply {
                        reply.clone()
                    } else if uri.path().starts_with(POLICIES) {
                        stored_policy.clone()
                    } else if body.is_object() {
                        body.clone()
                    } else {
                        json!({})
                    };
                    if step.reply.is_none() {
                        object["metadata"]["uid"] = json!("uid-from-server");
                    }
                    Response::builder()
                        .status(step.status)
                        .body(Body::from(serde_json::to_vec(&object).unwrap()))
                        .unwrap()
                } else {
                    let status = step.reply.clone().unwrap_or_else(|| json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "injected", "reason": "Injected", "code": step.status.as_u16()}));
                    Response::builder()
                        .status(step.status)
                        .body(Body::from(serde_json::to_vec(&status).unwrap()))
                        .unwrap()
                };
                send.send_response(response);
            }
            handle
        });
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            reconcile(Arc::new(policy.clone()), self.ctx.clone()),
        )
        .await
        .expect("reconcile finished (a request nobody scripted would hang it)");
        let mut handle = api.await.expect("every scripted step happened as expected");
        // Nothing more may be sent.
        let extra = tokio::time::timeout(Duration::from_millis(50), handle.next_request()).await;
        assert!(
            !matches!(extra, Ok(Some(_))),
            "an unscripted request was sent"
        );
        self.handle = Some(handle);
        result
    }
}

pub fn policy(yaml_file: &str) -> SignaturePolicy {
    let text = std::fs::read_to_string(format!(
        "{}/examples/{yaml_file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    policy_from(&text)
}

pub fn policy_from(yaml: &str) -> SignaturePolicy {
    let verdict = Admission::new().check(parse_documents(yaml).unwrap().remove(0));
    let mut policy = verdict.policy.expect("decodes");
    policy.metadata.uid = Some("policy-uid".into());
    policy.metadata.generation = Some(1);
    policy.metadata.resource_version = Some("100".into());
    policy
}

/// The policy with the status a reconcile a moment ago wrote: every section is fresh.
pub fn with_reconciled_status(policy: SignaturePolicy) -> SignaturePolicy {
    reconciled_at(policy, ago(0))
}

/// The policy with the status a reconcile at `at` wrote, merged into its current status the way
/// the API server merges the patch (worker-owned fields stay).
pub fn reconciled_at(mut policy: SignaturePolicy, at: Time) -> SignaturePolicy {
    let valid = ValidPolicy::new(&policy).unwrap();
    let desired = build::desired(&valid, &settings());
    let cron_jobs = desired
        .cron_jobs
        .iter()
        .map(|(s, cj)| (*s, cj.metadata.name.clone().unwrap()))
        .collect();
    let resumed = status::active_since(&policy, &at);
    let stale = Report::evaluate(&valid, &desired, &Default::default(), resumed.as_ref(), &at);
    let computed = status::compute(
        &policy,
        &Outcome::Reconciled(cron_jobs),
        &stale.summary(),
        &Default::default(),
        &at,
    );
    let mut current = serde_json::to_value(policy.status.take().unwrap_or_default()).unwrap();
    merge(
        &mut current,
        &serde_json::to_value(computed.merge_patch()).unwrap()["status"],
    );
    policy.status = Some(serde_json::from_value(current).unwrap());
    policy
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

/// Now less `seconds`, in whole seconds as the API server keeps times.
pub fn ago(seconds: i64) -> Time {
    Time(jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() - seconds).unwrap())
}

pub const MINUTE: i64 = 60;
pub const DAY: i64 = 86_400;

pub const NS: &str = "/api/v1/namespaces/enrollment";
pub const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/enrollment";
pub const BATCH: &str = "/apis/batch/v1/namespaces/enrollment";
pub const POLICIES: &str = "/apis/signet.dev/v1alpha1/namespaces/enrollment/signaturepolicies";
pub const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/enrollment/events";

pub fn is_apply(query: &str) {
    assert!(
        query.contains("fieldManager=signet-controller") && query.contains("force=true"),
        "{query}"
    );
    assert!(query.contains("application/apply-patch+yaml"), "{query}");
}

/// A GET of `path` answered with `object`.
pub fn read(path: &'static str, object: &impl serde::Serialize) -> Step {
    Step {
        method: Method::GET,
        path,
        status: StatusCode::OK,
        check: Box::new(|_, _| {}),
        reply: Some(serde_json::to_value(object).unwrap()),
    }
}

/// Concatenation for the paths above, leaked: tests are short-lived.
pub fn const_format(prefix: &'static str, rest: &str) -> &'static str {
    Box::leak(format!("{prefix}{rest}").into_boxed_str())
}

/// What a watch does with an object it sees: remembers it in the store.
pub fn follow<K: OwnedKind>(writer: &mut Writer<K>, object: K) {
    cache::follow(writer, watcher::Event::Apply(object));
}
