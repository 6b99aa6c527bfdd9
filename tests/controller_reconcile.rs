//! Reconciles against a scripted Kubernetes API (tower-test): each test lists the requests the
//! controller must make, in order, with the parts of their bodies that matter, and the answers
//! the "API server" gives. Anything else the controller sends fails the test.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::batch::v1::CronJobStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::runtime::watcher;
use serde_json::{Value, json};
use signet::admission::Admission;
use signet::controller::build::{self, WorkerSettings};
use signet::controller::cache::OwnedIndex;
use signet::controller::metrics::Metrics;
use signet::controller::reconcile::{Context, Stores, error_policy, reconcile};
use signet::controller::staleness::{Report, StaleSummary};
use signet::controller::status::{self, Outcome};
use signet::crd::{
    ReminderRun, RemindersStatus, RunOutcome, SignaturePolicy, SignaturePolicyStatus,
    TimeoutsStatus,
};
use signet::manifests::parse_documents;
use signet::policy::ValidPolicy;
use tower_test::mock::{self, Handle};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// Checks a request body; the second argument is the path, query and content type.
type BodyCheck = Box<dyn Fn(&Value, &str) + Send>;

/// One request the controller must make, and the answer it gets.
struct Step {
    method: Method,
    path: &'static str,
    status: StatusCode,
    /// Checks on the request body (parsed as JSON, or YAML for apply patches).
    check: BodyCheck,
    /// The answer's body, when not the default (the object sent, or the policy).
    reply: Option<Value>,
}

fn step(method: Method, path: &'static str, check: impl Fn(&Value, &str) + Send + 'static) -> Step {
    Step {
        method,
        path,
        status: StatusCode::OK,
        check: Box::new(check),
        reply: None,
    }
}

fn failing(method: Method, path: &'static str, status: StatusCode) -> Step {
    Step {
        method,
        path,
        status,
        check: Box::new(|_, _| {}),
        reply: None,
    }
}

struct Harness {
    ctx: Arc<Context>,
    handle: Option<ApiHandle>,
    cron_jobs: OwnedIndex,
    service_accounts: OwnedIndex,
    roles: OwnedIndex,
    role_bindings: OwnedIndex,
    metrics: Arc<Metrics>,
}

fn settings() -> WorkerSettings {
    WorkerSettings {
        image: "registry.example/signet:1".into(),
        image_pull_policy: None,
        pushgateway_url: None,
    }
}

fn harness() -> Harness {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let stores = Stores::default();
    let (cron_jobs, service_accounts, roles, role_bindings) = (
        stores.cron_jobs.clone(),
        stores.service_accounts.clone(),
        stores.roles.clone(),
        stores.role_bindings.clone(),
    );
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
        cron_jobs,
        service_accounts,
        roles,
        role_bindings,
        metrics,
    }
}

impl Harness {
    /// Fills the caches with what the API server would hold after the policy was applied.
    /// Fills the caches with what the API server would hold after the policy was applied, and
    /// returns the reads a controller that has not verified them yet makes (in its order), each
    /// answered with the stored object.
    fn observe(&mut self, policy: &SignaturePolicy) -> Vec<Step> {
        let desired = build::desired(&ValidPolicy::new(policy).unwrap(), &settings());
        let account = desired.service_account.metadata.name.clone().unwrap();
        let mut reads = vec![
            read(
                const_format(NS, &format!("/serviceaccounts/{account}")),
                &desired.service_account,
            ),
            read(
                const_format(RBAC, &format!("/roles/{account}")),
                &desired.role,
            ),
            read(
                const_format(RBAC, &format!("/rolebindings/{account}")),
                &desired.role_binding,
            ),
        ];
        self.service_accounts
            .apply_event(&watcher::Event::Apply(desired.service_account));
        self.roles.apply_event(&watcher::Event::Apply(desired.role));
        self.role_bindings
            .apply_event(&watcher::Event::Apply(desired.role_binding));
        for (_, mut cron_job) in desired.cron_jobs {
            cron_job.metadata.uid =
                Some(format!("uid-{}", cron_job.metadata.name.clone().unwrap()));
            // The API server adds defaults and status; the controller must not mind.
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
            let name = cron_job.metadata.name.clone().unwrap();
            reads.push(read(
                const_format(BATCH, &format!("/cronjobs/{name}")),
                &cron_job,
            ));
            self.cron_jobs.apply_event(&watcher::Event::Apply(cron_job));
        }
        reads
    }

    /// Runs one reconcile while the scripted API answers `steps`; fails on any other request.
    async fn reconcile(
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
                    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "injected", "reason": "Injected", "code": step.status.as_u16()});
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

fn policy(yaml_file: &str) -> SignaturePolicy {
    let text = std::fs::read_to_string(format!(
        "{}/examples/{yaml_file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    policy_from(&text)
}

fn policy_from(yaml: &str) -> SignaturePolicy {
    let verdict = Admission::new().check(parse_documents(yaml).unwrap().remove(0));
    let mut policy = verdict.policy.expect("decodes");
    policy.metadata.uid = Some("policy-uid".into());
    policy.metadata.generation = Some(1);
    policy.metadata.resource_version = Some("100".into());
    policy
}

/// The policy with the status a reconcile a moment ago wrote: every section is fresh.
fn with_reconciled_status(policy: SignaturePolicy) -> SignaturePolicy {
    reconciled_at(policy, ago(0))
}

/// The policy with the status a reconcile at `at` wrote, merged into its current status the way
/// the API server merges the patch (worker-owned fields stay).
fn reconciled_at(mut policy: SignaturePolicy, at: Time) -> SignaturePolicy {
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
    merge(&mut current, &computed.merge_patch()["status"]);
    policy.status = Some(serde_json::from_value(current).unwrap());
    policy
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

/// Now less `seconds`, in whole seconds as the API server keeps times.
fn ago(seconds: i64) -> Time {
    Time(jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() - seconds).unwrap())
}

const MINUTE: i64 = 60;
const DAY: i64 = 86_400;

const NS: &str = "/api/v1/namespaces/enrollment";
const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/enrollment";
const BATCH: &str = "/apis/batch/v1/namespaces/enrollment";
const POLICIES: &str = "/apis/signet.dev/v1alpha1/namespaces/enrollment/signaturepolicies";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/enrollment/events";

fn is_apply(query: &str) {
    assert!(
        query.contains("fieldManager=signet-controller") && query.contains("force=true"),
        "{query}"
    );
    assert!(query.contains("application/apply-patch+yaml"), "{query}");
}

#[tokio::test]
async fn first_reconcile_applies_rbac_and_cron_jobs_then_writes_status_and_an_event() {
    let mut h = harness();
    let policy = policy("full.yaml");
    let steps = vec![
        step(
            Method::PATCH,
            const_format(NS, "/serviceaccounts/enrollment-agreements-signet-worker"),
            |b, q| {
                is_apply(q);
                assert_eq!(b["kind"], "ServiceAccount");
                assert_eq!(b["metadata"]["ownerReferences"][0]["uid"], "policy-uid");
            },
        ),
        step(
            Method::PATCH,
            const_format(RBAC, "/roles/enrollment-agreements-signet-worker"),
            |b, q| {
                is_apply(q);
                assert_eq!(b["rules"][0]["verbs"], json!(["patch"]));
            },
        ),
        step(
            Method::PATCH,
            const_format(RBAC, "/rolebindings/enrollment-agreements-signet-worker"),
            |_, q| is_apply(q),
        ),
        step(
            Method::PATCH,
            const_format(BATCH, "/cronjobs/enrollment-agreements-reminders"),
            |b, q| {
                is_apply(q);
                assert_eq!(b["spec"]["schedule"], "*/30 * * * *");
                assert_eq!(
                    b["metadata"]["labels"]["signet.dev/policy"],
                    "enrollment-agreements"
                );
            },
        ),
        step(
            Method::PATCH,
            const_format(BATCH, "/cronjobs/enrollment-agreements-timeouts"),
            |b, _| {
                assert_eq!(b["spec"]["schedule"], "0 */2 * * *");
            },
        ),
        step(
            Method::PATCH,
            const_format(POLICIES, "/enrollment-agreements/status"),
            |b, q| {
                assert!(q.contains("application/merge-patch+json"), "{q}");
                let status = &b["status"];
                assert_eq!(status["observedGeneration"], 1);
                assert_eq!(status["conditions"][0]["type"], "Ready");
                assert_eq!(status["conditions"][0]["status"], "True");
                assert_eq!(status["conditions"][0]["reason"], "Reconciled");
                assert_eq!(status["conditions"][1]["type"], "Suspended");
                assert_eq!(status["conditions"][1]["status"], "False");
                // A new policy has had no chance to run yet.
                assert_eq!(status["conditions"][2]["type"], "Stale");
                assert_eq!(status["conditions"][2]["status"], "False");
                assert_eq!(status["conditions"][2]["reason"], "RunsSucceeding");
                assert_eq!(
                    status["reminders"]["cronJob"],
                    "enrollment-agreements-reminders"
                );
                assert_eq!(
                    status["timeouts"]["cronJob"],
                    "enrollment-agreements-timeouts"
                );
                assert!(
                    status["reminders"].get("lastRun").is_none(),
                    "worker-owned fields are left alone"
                );
            },
        ),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(b["reason"], "Applied");
            assert_eq!(b["type"], "Normal");
            assert!(
                b["note"]
                    .as_str()
                    .unwrap()
                    .contains("CronJob enrollment-agreements-reminders")
            );
            assert_eq!(b["regarding"]["name"], "enrollment-agreements");
        }),
    ];
    let action = h.reconcile(&policy, steps).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(3600)));
    assert!(
        h.metrics
            .encode()
            .contains("signet_policies{ready=\"true\"} 1")
    );
}

#[tokio::test]
async fn a_reconcile_that_finds_everything_in_place_writes_nothing() {
    let mut h = harness();
    let policy = with_reconciled_status(policy("full.yaml"));
    // Just started: the caches hold metadata only, so each object is read once and compared.
    let reads = h.observe(&policy);
    assert_eq!(reads.len(), 5);
    h.reconcile(&policy, reads).await.unwrap();
    // From then on: not a single request.
    h.reconcile(&policy, vec![]).await.unwrap();
    h.reconcile(&policy, vec![]).await.unwrap();
}

#[tokio::test]
async fn a_cron_job_edited_by_hand_is_restored() {
    let mut h = harness();
    let policy = with_reconciled_status(policy("minimal.yaml"));
    let reads = h.observe(&policy);
    h.reconcile(&policy, reads).await.unwrap();
    // Someone edits the schedule: the watch delivers a new generation.
    let mut edited = build::desired(&ValidPolicy::new(&policy).unwrap(), &settings())
        .cron_jobs
        .remove(0)
        .1;
    edited.metadata.generation = Some(2);
    edited.spec.as_mut().unwrap().schedule = "0 3 * * *".into();
    h.cron_jobs
        .apply_event(&watcher::Event::Apply(edited.clone()));
    let path = const_format(BATCH, "/cronjobs/enrollment-agreements-reminders");
    let steps = vec![
        read(path, &edited),
        step(Method::PATCH, path, |b, q| {
            is_apply(q);
            assert_eq!(b["spec"]["schedule"], "*/30 * * * *");
        }),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(b["note"], "applied CronJob enrollment-agreements-reminders");
        }),
    ];
    h.reconcile(&policy, steps).await.unwrap();
}

#[tokio::test]
async fn a_spec_change_rewrites_the_cron_jobs_but_not_the_rbac() {
    let mut h = harness();
    let old = with_reconciled_status(policy("full.yaml"));
    let mut reads = h.observe(&old).into_iter();
    let mut changed = old.clone();
    changed.spec.reminders.as_mut().unwrap().schedule = "*/15 * * * *".into();
    changed.metadata.generation = Some(2);
    let steps = vec![
        // The RBAC is read once (nothing verified yet) and found in place: not written.
        reads.next().unwrap(),
        reads.next().unwrap(),
        reads.next().unwrap(),
        reads.next().unwrap(),
        step(
            Method::PATCH,
            const_format(BATCH, "/cronjobs/enrollment-agreements-reminders"),
            |b, _| {
                assert_eq!(b["spec"]["schedule"], "*/15 * * * *");
                assert_eq!(
                    b["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"], 1500,
                    "override kept"
                );
            },
        ),
        // Every worker carries the spec and its generation, so the timeouts CronJob follows.
        reads.next().unwrap(),
        step(
            Method::PATCH,
            const_format(BATCH, "/cronjobs/enrollment-agreements-timeouts"),
            |b, _| {
                assert_eq!(b["spec"]["schedule"], "0 */2 * * *");
            },
        ),
        step(
            Method::PATCH,
            const_format(POLICIES, "/enrollment-agreements/status"),
            |b, _| {
                assert_eq!(b["status"]["observedGeneration"], 2);
            },
        ),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(
                b["note"],
                "applied CronJob enrollment-agreements-reminders, CronJob enrollment-agreements-timeouts"
            );
        }),
    ];
    h.reconcile(&changed, steps).await.unwrap();
}

#[tokio::test]
async fn a_disabled_section_has_its_cron_job_deleted() {
    let mut h = harness();
    let old = with_reconciled_status(policy("full.yaml"));
    let mut reads = h.observe(&old).into_iter();
    let mut changed = old.clone();
    changed.spec.timeout = None;
    changed
        .spec
        .escalation
        .as_mut()
        .unwrap()
        .channels
        .retain(|c| c != "ops-email");
    changed.metadata.generation = Some(2);
    let steps = vec![
        reads.next().unwrap(),
        reads.next().unwrap(),
        reads.next().unwrap(),
        reads.next().unwrap(),
        // The reminders worker's environment changed (SIGNET_POLICY), so its CronJob is re-applied.
        step(
            Method::PATCH,
            const_format(BATCH, "/cronjobs/enrollment-agreements-reminders"),
            |_, _| {},
        ),
        step(
            Method::DELETE,
            const_format(BATCH, "/cronjobs/enrollment-agreements-timeouts"),
            |b, _| {
                assert_eq!(b["propagationPolicy"], "Background");
            },
        ),
        step(
            Method::PATCH,
            const_format(POLICIES, "/enrollment-agreements/status"),
            |b, _| {
                assert_eq!(
                    b["status"]["timeouts"],
                    Value::Null,
                    "the disabled section leaves the status"
                );
            },
        ),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(b["reason"], "Applied")
        }),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(b["reason"], "Pruned");
            assert_eq!(
                b["note"],
                "deleted CronJob enrollment-agreements-timeouts (section disabled)"
            );
        }),
    ];
    h.reconcile(&changed, steps).await.unwrap();
}

#[tokio::test]
async fn an_invalid_spec_sets_ready_false_and_touches_no_cron_job() {
    let mut h = harness();
    let valid = with_reconciled_status(policy("minimal.yaml"));
    let _reads = h.observe(&valid); // an invalid spec is never applied, so nothing is read
    // Admission would refuse this; an older CRD in the cluster might not.
    let mut invalid = valid.clone();
    invalid.spec.reminders.as_mut().unwrap().schedule = "*/70 * * * *".into();
    invalid.metadata.generation = Some(2);
    let steps = vec![
        step(
            Method::PATCH,
            const_format(POLICIES, "/enrollment-agreements/status"),
            |b, _| {
                let ready = &b["status"]["conditions"][0];
                assert_eq!(
                    (ready["status"].as_str(), ready["reason"].as_str()),
                    (Some("False"), Some("InvalidSpec"))
                );
                assert!(ready["message"].as_str().unwrap().contains("spec.reminders.schedule: \"*/70 * * * *\" is not a valid cron schedule: minute 70 is out of range (0-59)"));
                let stale = &b["status"]["conditions"][2];
                assert_eq!(
                    (stale["status"].as_str(), stale["reason"].as_str()),
                    (Some("False"), Some("NotApplicable")),
                    "no schedule to measure against"
                );
                assert!(
                    b["status"].get("reminders").is_none(),
                    "section status untouched"
                );
            },
        ),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(
                (b["type"].as_str(), b["reason"].as_str()),
                (Some("Warning"), Some("InvalidSpec"))
            );
        }),
    ];
    let action = h.reconcile(&invalid, steps).await.unwrap();
    assert_eq!(
        action,
        Action::await_change(),
        "no retry until the spec changes"
    );

    // The status now says so: the next reconcile writes nothing and emits no second Event.
    let mut reported = invalid.clone();
    let computed = status::compute(
        &invalid,
        &Outcome::Invalid(ValidPolicy::new(&invalid).unwrap_err()),
        &StaleSummary::invalid_spec(),
        &Default::default(),
        &Time(jiff::Timestamp::now()),
    );
    let status = reported.status.as_mut().unwrap();
    status.observed_generation = Some(2);
    status.conditions = computed.conditions;
    h.reconcile(&reported, vec![]).await.unwrap();
}

#[tokio::test]
async fn api_errors_back_off_per_object_without_a_hot_loop() {
    let mut h = harness();
    let policy = policy("minimal.yaml");
    let path = const_format(NS, "/serviceaccounts/enrollment-agreements-signet-worker");
    let mut delays = Vec::new();
    for _ in 0..4 {
        let err = h
            .reconcile(
                &policy,
                vec![failing(
                    Method::PATCH,
                    path,
                    StatusCode::INTERNAL_SERVER_ERROR,
                )],
            )
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "ServerError");
        assert!(err.is_transient());
        let action = error_policy(Arc::new(policy.clone()), &err, h.ctx.clone());
        delays.push(format!("{action:?}"));
    }
    let secs: Vec<f64> = delays
        .iter()
        .map(|d| {
            let inner = d.split("Some(").nth(1).unwrap().split(')').next().unwrap();
            humantime_like(inner)
        })
        .collect();
    for (i, expected) in [1.0, 2.0, 4.0, 8.0].iter().enumerate() {
        assert!(
            (secs[i] / expected - 1.0).abs() <= 0.21,
            "retry {i}: {} s, expected about {expected} s",
            secs[i]
        );
    }
    assert!(
        h.metrics
            .encode()
            .contains("signet_reconcile_errors_total{reason=\"ServerError\"} 4")
    );
}

#[tokio::test]
async fn a_conflict_on_the_status_write_is_retried() {
    let mut h = harness();
    let policy = policy("minimal.yaml");
    let mut steps = h.observe(&policy);
    steps.push(failing(
        Method::PATCH,
        const_format(POLICIES, "/enrollment-agreements/status"),
        StatusCode::CONFLICT,
    ));
    let err = h.reconcile(&policy, steps).await.unwrap_err();
    assert_eq!(err.reason(), "Conflict");
    assert!(
        matches!(error_policy(Arc::new(policy), &err, h.ctx.clone()), a if a != Action::await_change())
    );
}

#[tokio::test]
async fn run_now_starts_a_job_from_the_cron_job_and_clears_the_annotation() {
    let mut h = harness();
    let mut policy = with_reconciled_status(policy("full.yaml"));
    let reads = h.observe(&policy);
    policy.metadata.annotations =
        Some([("signet.dev/run-now".to_owned(), "timeouts".to_owned())].into());
    let mut steps = reads;
    steps.extend(vec![
        step(Method::POST, BATCH_JOBS, |b, _| {
            assert_eq!(
                b["metadata"]["name"],
                "enrollment-agreements-timeouts-manual-100"
            );
            assert_eq!(
                b["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
                "manual"
            );
            assert_eq!(b["metadata"]["ownerReferences"][0]["kind"], "CronJob");
            assert_eq!(
                b["metadata"]["ownerReferences"][0]["name"],
                "enrollment-agreements-timeouts"
            );
            assert_eq!(
                b["spec"]["template"]["spec"]["containers"][0]["args"],
                json!(["check-timeouts"])
            );
        }),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(b["reason"], "ManualRunStarted");
            assert_eq!(
                b["note"],
                "started Job enrollment-agreements-timeouts-manual-100 from CronJob enrollment-agreements-timeouts"
            );
        }),
        step(
            Method::PATCH,
            const_format(POLICIES, "/enrollment-agreements"),
            |b, q| {
                assert!(q.contains("merge-patch"), "{q}");
                assert_eq!(
                    b,
                    &json!({"metadata": {"annotations": {"signet.dev/run-now": null}}})
                );
            },
        ),
    ]);
    h.reconcile(&policy, steps).await.unwrap();

    policy.metadata.annotations =
        Some([("signet.dev/run-now".to_owned(), "everything".to_owned())].into());
    let steps = vec![
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(
                (b["type"].as_str(), b["reason"].as_str()),
                (Some("Warning"), Some("ManualRunRefused"))
            );
        }),
        step(
            Method::PATCH,
            const_format(POLICIES, "/enrollment-agreements"),
            |_, _| {},
        ),
    ];
    h.reconcile(&policy, steps).await.unwrap();
}

#[tokio::test]
async fn last_schedule_times_are_mirrored_from_the_cron_jobs() {
    let mut h = harness();
    let policy = with_reconciled_status(policy("minimal.yaml"));
    let reads = h.observe(&policy);
    let mut cron_job = build::desired(&ValidPolicy::new(&policy).unwrap(), &settings())
        .cron_jobs
        .remove(0)
        .1;
    cron_job.status = Some(CronJobStatus {
        last_schedule_time: Some(Time(jiff::Timestamp::from_second(1_790_000_100).unwrap())),
        ..Default::default()
    });
    h.cron_jobs.apply_event(&watcher::Event::Apply(cron_job));
    let mut steps = reads;
    steps.extend(vec![step(
        Method::PATCH,
        const_format(POLICIES, "/enrollment-agreements/status"),
        |b, _| {
            assert_eq!(
                b["status"]["reminders"]["lastScheduleTime"],
                "2026-09-21T14:15:00Z"
            );
            assert_eq!(
                b["status"]["reminders"]["cronJob"],
                "enrollment-agreements-reminders"
            );
        },
    )]);
    h.reconcile(&policy, steps).await.unwrap();
}

/// A reminders run as a worker reports it.
fn reminder_run(finished: &Time, outcome: RunOutcome, job: &str) -> ReminderRun {
    ReminderRun {
        job: job.into(),
        started_at: finished.clone(),
        finished_at: finished.clone(),
        outcome,
        due: 5,
        sent: 0,
        held: 0,
        failed: 0,
        possible_duplicates: 0,
    }
}

/// `full.yaml`, created and first reconciled 30 days ago. Reminders (`*/30 * * * *`) last
/// succeeded 10 days ago and their last run failed an hour ago; timeouts succeeded 10 minutes ago.
fn failing_reminders() -> SignaturePolicy {
    let mut policy = policy("full.yaml");
    policy.metadata.creation_timestamp = Some(ago(30 * DAY));
    policy.status = Some(SignaturePolicyStatus {
        reminders: Some(RemindersStatus {
            last_run: Some(reminder_run(
                &ago(60 * MINUTE),
                RunOutcome::Failed,
                "enrollment-agreements-reminders-29400000",
            )),
            last_successful_run_at: Some(ago(10 * DAY)),
            ..Default::default()
        }),
        timeouts: Some(TimeoutsStatus {
            last_successful_run_at: Some(ago(10 * MINUTE)),
            ..Default::default()
        }),
        ..Default::default()
    });
    reconciled_at(policy, ago(30 * DAY))
}

fn reminders_status(policy: &mut SignaturePolicy) -> &mut RemindersStatus {
    policy.status.as_mut().unwrap().reminders.as_mut().unwrap()
}

fn stale_condition(
    policy: &SignaturePolicy,
) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    let status = policy.status.as_ref().unwrap();
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Stale")
        .unwrap()
}

fn section_gauge(h: &Harness, name: &str, section: &str) -> String {
    let prefix = format!(
        "signet_{name}{{namespace=\"enrollment\",policy=\"enrollment-agreements\",section=\"{section}\"}} "
    );
    let text = h.metrics.encode();
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_else(|| panic!("no {prefix}in\n{text}"))
}

#[tokio::test]
async fn a_section_without_a_recent_success_turns_stale_once_and_recovers_with_a_success() {
    let mut h = harness();
    let policy = failing_reminders();
    assert_eq!(
        stale_condition(&policy).status,
        "False",
        "fresh 30 days ago"
    );
    let mut steps = h.observe(&policy);
    steps.extend(vec![
        step(
            Method::PATCH,
            const_format(POLICIES, "/enrollment-agreements/status"),
            |b, q| {
                assert!(q.contains("application/merge-patch+json"), "{q}");
                let conditions = &b["status"]["conditions"];
                assert_eq!(conditions[0]["type"], "Ready");
                assert_eq!(conditions[0]["status"], "True", "Ready is about reconciling");
                let stale = &conditions[2];
                assert_eq!(stale["type"], "Stale");
                assert_eq!(stale["status"], "True");
                assert_eq!(stale["reason"], "NoRecentSuccess");
                let message = stale["message"].as_str().unwrap();
                for part in [
                    "reminders: no successful run since the last one at ",
                    "at least 3 scheduled runs (*/30 * * * * in Europe/Berlin) have passed",
                    "last run: Failed at ",
                    "(Job enrollment-agreements-reminders-29400000)",
                    "see `kubectl get jobs -n enrollment -l signet.dev/policy=enrollment-agreements` and the worker logs",
                ] {
                    assert!(message.contains(part), "{part:?} not in {message:?}");
                }
                assert!(!message.contains("timeouts"), "timeouts are fine: {message}");
                assert!(
                    b["status"]["reminders"].get("lastSuccessfulRunAt").is_none(),
                    "worker-owned fields are left alone"
                );
            },
        ),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(
                (b["type"].as_str(), b["reason"].as_str()),
                (Some("Warning"), Some("Stale"))
            );
            assert!(
                b["note"]
                    .as_str()
                    .unwrap()
                    .starts_with("reminders: no successful run since")
            );
        }),
    ]);
    let action = h.reconcile(&policy, steps).await.unwrap();
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(3600)),
        "nothing turns stale within the hour: timeouts run every 2 hours"
    );
    assert_eq!(section_gauge(&h, "policy_stale", "reminders"), "1");
    assert_eq!(section_gauge(&h, "policy_stale", "timeouts"), "0");
    assert_eq!(
        section_gauge(&h, "policy_last_run_failed", "reminders"),
        "1"
    );
    assert_eq!(section_gauge(&h, "policy_last_run_failed", "timeouts"), "0");

    // The status now says Stale (written an hour ago): a reconcile sends nothing new.
    let stale = reconciled_at(policy.clone(), ago(60 * MINUTE));
    let since = stale_condition(&stale).last_transition_time.clone();
    assert_eq!(stale_condition(&stale).status, "True");
    h.reconcile(&stale, vec![]).await.unwrap();

    // Another failed run: the message follows, the transition time and the Events do not.
    let mut failed_again = stale.clone();
    reminders_status(&mut failed_again).last_run = Some(reminder_run(
        &ago(5 * MINUTE),
        RunOutcome::ConfigError,
        "enrollment-agreements-reminders-29400030",
    ));
    let steps = vec![step(
        Method::PATCH,
        const_format(POLICIES, "/enrollment-agreements/status"),
        move |b, _| {
            let stale = &b["status"]["conditions"][2];
            assert_eq!(stale["status"], "True");
            assert_eq!(stale["lastTransitionTime"], json!(since));
            assert!(
                stale["message"]
                    .as_str()
                    .unwrap()
                    .contains("last run: ConfigError at ")
            );
        },
    )];
    h.reconcile(&failed_again, steps).await.unwrap();
    let failed_again = reconciled_at(failed_again, ago(4 * MINUTE));

    // A run succeeds: Stale clears, with a Normal Event.
    let mut recovered = failed_again.clone();
    let reminders = reminders_status(&mut recovered);
    reminders.last_run = Some(reminder_run(
        &ago(MINUTE),
        RunOutcome::CompletedWithFailures,
        "enrollment-agreements-reminders-29400060",
    ));
    reminders.last_successful_run_at = Some(ago(MINUTE));
    let was_stale_since = stale_condition(&failed_again).last_transition_time.clone();
    let steps = vec![
        step(
            Method::PATCH,
            const_format(POLICIES, "/enrollment-agreements/status"),
            move |b, _| {
                let stale = &b["status"]["conditions"][2];
                assert_eq!(
                    (stale["status"].as_str(), stale["reason"].as_str()),
                    (Some("False"), Some("RunsSucceeding"))
                );
                assert_ne!(stale["lastTransitionTime"], json!(was_stale_since));
            },
        ),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(
                (b["type"].as_str(), b["reason"].as_str()),
                (Some("Normal"), Some("Recovered"))
            );
            assert!(
                b["note"]
                    .as_str()
                    .unwrap()
                    .contains("last successful runs: reminders at ")
            );
        }),
    ];
    let action = h.reconcile(&recovered, steps).await.unwrap();
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(3600)),
        "three half-hourly runs and their deadline are more than an hour away"
    );
    assert_eq!(section_gauge(&h, "policy_stale", "reminders"), "0");
    assert_eq!(
        section_gauge(&h, "policy_last_run_failed", "reminders"),
        "0"
    );

    // Recovered, as written: nothing more.
    let recovered = reconciled_at(recovered, ago(0));
    h.reconcile(&recovered, vec![]).await.unwrap();
}

#[tokio::test]
async fn a_fresh_section_is_looked_at_again_when_it_would_turn_stale() {
    let mut h = harness();
    let mut policy = failing_reminders();
    // 75 minutes ago: the third run after it is due within 15 minutes, and may take 25 (the
    // policy's activeDeadlineSeconds) plus 2 of slack.
    reminders_status(&mut policy).last_successful_run_at = Some(ago(75 * MINUTE));
    let policy = reconciled_at(policy, ago(0));
    assert_eq!(stale_condition(&policy).status, "False");
    let reads = h.observe(&policy);
    let action = h.reconcile(&policy, reads).await.unwrap();
    let wait = humantime_like(
        format!("{action:?}")
            .split("Some(")
            .nth(1)
            .unwrap()
            .split(')')
            .next()
            .unwrap(),
    );
    assert!(
        (12.0 * 60.0..=42.0 * 60.0 + 2.0).contains(&wait),
        "requeued in {wait} s"
    );
}

const BATCH_JOBS: &str = "/apis/batch/v1/namespaces/enrollment/jobs";

/// A GET of `path` answered with `object`.
fn read(path: &'static str, object: &impl serde::Serialize) -> Step {
    Step {
        method: Method::GET,
        path,
        status: StatusCode::OK,
        check: Box::new(|_, _| {}),
        reply: Some(serde_json::to_value(object).unwrap()),
    }
}

/// Concatenation for the paths above, leaked: tests are short-lived.
fn const_format(prefix: &'static str, rest: &str) -> &'static str {
    Box::leak(format!("{prefix}{rest}").into_boxed_str())
}

/// Seconds from a `Duration` debug string such as `1.2s` or `812.5ms`.
fn humantime_like(text: &str) -> f64 {
    if let Some(ms) = text.strip_suffix("ms") {
        ms.parse::<f64>().unwrap() / 1000.0
    } else if let Some(s) = text.strip_suffix('s') {
        s.parse().unwrap()
    } else {
        panic!("unexpected duration {text}")
    }
}
