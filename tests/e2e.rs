//! Cluster tests: run with `make e2e` against the cluster of the current kubeconfig (kind, k3d),
//! with `signet controller` running against it (the Makefile starts one). They install the CRD,
//! apply a policy, and follow it through change, suspension and deletion, waiting on
//! conditions, never on fixed sleeps.

use std::time::Duration;

use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};
use serde_json::json;
use signet::crd::{SignaturePolicy, definition};

const NAMESPACE: &str = "signet-e2e";
const TIMEOUT: Duration = Duration::from_secs(120);

async fn setup() -> Client {
    let client = Client::try_default()
        .await
        .expect("a kubeconfig for the test cluster");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("signet-e2e").force();
    crds.patch(
        "signaturepolicies.signet.dev",
        &params,
        &Patch::Apply(definition()),
    )
    .await
    .unwrap();
    tokio::time::timeout(
        TIMEOUT,
        await_condition(
            crds,
            "signaturepolicies.signet.dev",
            conditions::is_crd_established(),
        ),
    )
    .await
    .expect("CRD established in time")
    .unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
    namespaces
        .patch(NAMESPACE, &params, &Patch::Apply(namespace))
        .await
        .unwrap();
    client
}

fn policy(name: &str, extra_spec: serde_json::Value) -> serde_json::Value {
    let mut policy = json!({
        "apiVersion": "signet.dev/v1alpha1",
        "kind": "SignaturePolicy",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "database": {"urlSecretRef": {"name": "db", "key": "url"}},
            "reminders": {"channels": ["console"]},
            "timeout": {"after": "14d"},
            "channels": [{"name": "console", "log": {}}]
        }
    });
    for (key, value) in extra_spec.as_object().unwrap() {
        policy["spec"][key] = value.clone();
    }
    policy
}

async fn wait_for_condition(api: &Api<SignaturePolicy>, name: &str, type_: &str, status: &str) {
    let (type_, status) = (type_.to_owned(), status.to_owned());
    let condition = move |p: Option<&SignaturePolicy>| {
        p.and_then(|p| p.status.as_ref()).is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == type_ && c.status == status)
        })
    };
    tokio::time::timeout(TIMEOUT, await_condition(api.clone(), name, condition))
        .await
        .unwrap_or_else(|_| panic!("{name}: condition not reached in time"))
        .unwrap();
}

async fn wait_for_cron_job(
    api: &Api<CronJob>,
    name: &str,
    check: impl Fn(Option<&CronJob>) -> bool + Send + 'static,
) {
    tokio::time::timeout(TIMEOUT, await_condition(api.clone(), name, check))
        .await
        .unwrap_or_else(|_| panic!("{name}: CronJob state not reached in time"))
        .unwrap();
}

#[tokio::test]
#[ignore = "needs a cluster"]
async fn a_policy_lives_and_dies_with_its_cron_jobs() {
    let client = setup().await;
    let policies: Api<SignaturePolicy> = Api::namespaced(client.clone(), NAMESPACE);
    let cron_jobs: Api<CronJob> = Api::namespaced(client.clone(), NAMESPACE);
    let params = PatchParams::apply("signet-e2e").force();
    let name = "lifecycle";

    policies
        .patch(name, &params, &Patch::Apply(policy(name, json!({}))))
        .await
        .unwrap();
    wait_for_condition(&policies, name, "Ready", "True").await;
    for suffix in ["reminders", "timeouts"] {
        wait_for_cron_job(&cron_jobs, &format!("{name}-{suffix}"), |cj| cj.is_some()).await;
    }
    let cron_job = cron_jobs.get(&format!("{name}-reminders")).await.unwrap();
    assert_eq!(cron_job.owner_references()[0].name, name);

    // Change the schedule: the CronJob follows.
    let changed = policy(
        name,
        json!({"reminders": {"channels": ["console"], "schedule": "*/5 * * * *"}}),
    );
    policies
        .patch(name, &params, &Patch::Apply(changed))
        .await
        .unwrap();
    wait_for_cron_job(&cron_jobs, &format!("{name}-reminders"), |cj| {
        cj.and_then(|c| c.spec.as_ref())
            .is_some_and(|s| s.schedule == "*/5 * * * *")
    })
    .await;

    // Suspend: both CronJobs suspended, the condition says so.
    let suspended = policy(name, json!({"suspend": true}));
    policies
        .patch(name, &params, &Patch::Apply(suspended))
        .await
        .unwrap();
    wait_for_condition(&policies, name, "Suspended", "True").await;
    wait_for_cron_job(&cron_jobs, &format!("{name}-timeouts"), |cj| {
        cj.and_then(|c| c.spec.as_ref()).and_then(|s| s.suspend) == Some(true)
    })
    .await;

    // Drop the timeout section: its CronJob is pruned.
    let mut reminders_only = policy(name, json!({}));
    reminders_only["spec"]
        .as_object_mut()
        .unwrap()
        .remove("timeout");
    policies
        .patch(name, &params, &Patch::Apply(reminders_only))
        .await
        .unwrap();
    wait_for_cron_job(&cron_jobs, &format!("{name}-timeouts"), |cj| cj.is_none()).await;

    // A CronJob deleted by hand comes back: a new object, not the old one still terminating.
    let deleted_uid = cron_jobs
        .get(&format!("{name}-reminders"))
        .await
        .unwrap()
        .metadata
        .uid;
    assert!(deleted_uid.is_some());
    cron_jobs
        .delete(&format!("{name}-reminders"), &DeleteParams::default())
        .await
        .unwrap();
    wait_for_cron_job(&cron_jobs, &format!("{name}-reminders"), move |cj| {
        cj.is_some_and(|c| c.metadata.deletion_timestamp.is_none() && c.metadata.uid != deleted_uid)
    })
    .await;

    // Delete the policy: garbage collection removes what it owned.
    policies
        .delete(name, &DeleteParams::foreground())
        .await
        .unwrap();
    wait_for_cron_job(&cron_jobs, &format!("{name}-reminders"), |cj| cj.is_none()).await;
}

/// The files of `examples/invalid/` the API server itself refuses (`# Refused (schema)` or
/// `(cel)`; `(semantic)` ones are the controller's), with their `# expect:` lines.
fn refused_at_admission() -> Vec<(String, serde_json::Value, Vec<String>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let first = text.lines().next().unwrap_or_default();
            if !(first.starts_with("# Refused (schema)") || first.starts_with("# Refused (cel)")) {
                return None;
            }
            let expect = text
                .lines()
                .filter_map(|l| l.strip_prefix("# expect: "))
                // Signet's own note about skipped CEL rules; the API server words it otherwise.
                .filter(|e| !e.starts_with("CEL validation rules were not checked"))
                .map(String::from)
                .collect();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let mut object = signet::manifests::parse_documents(&text).unwrap().remove(0);
            object["metadata"]["namespace"] = json!(NAMESPACE);
            Some((name, object, expect))
        })
        .collect()
}

/// Whether the API server's refusal says what an `# expect:` line says: the same field, and the
/// same message, or for the schema patterns and types Signet explains in its own words, the
/// API server's kind of refusal.
fn refusal_matches(refusal: &str, expect: &str) -> bool {
    let (path, message) = expect.split_once(": ").unwrap_or(("", expect));
    let explained = [
        ("is not a valid duration", "should match"),
        ("is not a time of day", "should match"),
    ];
    let message_matches = match explained.iter().find(|(ours, _)| message.contains(ours)) {
        Some((_, theirs)) => refusal.contains(theirs) || refusal.contains(message),
        None => refusal.contains(message),
    };
    refusal.contains(path) && message_matches
}

/// The matcher the cluster test relies on, against the offline emulation of the same checks
/// (runs without a cluster): every expectation matches its own file's refusal, none another's.
#[test]
fn the_refusal_matcher_holds_offline() {
    let admission = signet::admission::Admission::new();
    let files = refused_at_admission();
    assert!(files.len() >= 15, "{} files", files.len());
    let refusals: Vec<String> = files
        .iter()
        .map(|(_, object, _)| {
            let verdict = admission.check(object.clone());
            assert!(!verdict.is_valid());
            verdict
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .collect();
    for (i, (name, _, expect)) in files.iter().enumerate() {
        assert!(!expect.is_empty(), "{name} has no # expect: line");
        for line in expect {
            assert!(
                refusal_matches(&refusals[i], line),
                "{name}: {line:?} in {:?}",
                refusals[i]
            );
            let others = refusals
                .iter()
                .enumerate()
                .filter(|(j, r)| *j != i && !r.contains(line.as_str()));
            for (j, other) in others {
                assert!(
                    !refusal_matches(other, line),
                    "{name}: {line:?} also matches {}",
                    files[j].0
                );
            }
        }
    }
}

#[tokio::test]
#[ignore = "needs a cluster"]
async fn admission_refuses_what_validation_refuses() {
    let client = setup().await;
    let resource = kube::api::ApiResource::erase::<SignaturePolicy>(&());
    let policies: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client, NAMESPACE, &resource);
    let files = refused_at_admission();
    assert!(files.len() >= 15, "{} files", files.len());
    let mut wrong = Vec::new();
    for (name, object, expect) in files {
        let object_name = object["metadata"]["name"].as_str().unwrap().to_owned();
        // Strict field validation, as `kubectl apply` asks for: unknown fields are refused. A
        // dry run: nothing is stored even where the API server wrongly accepts.
        let params = PatchParams::apply("signet-e2e")
            .validation(kube::api::ValidationDirective::Strict)
            .dry_run();
        let request = policies
            .patch(&object_name, &params, &Patch::Apply(&object))
            .await
            .map(|created| created.metadata.name);
        match request {
            Ok(created) => wrong.push(format!("{name}: accepted as {created:?}")),
            Err(err) => {
                let refusal = err.to_string();
                for line in expect.iter().filter(|e| !refusal_matches(&refusal, e)) {
                    wrong.push(format!(
                        "{name}: expected {line:?}, the API server said {refusal:?}"
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[tokio::test]
#[ignore = "needs a cluster"]
async fn an_invalid_spec_is_reported_not_applied() {
    let client = setup().await;
    let policies: Api<SignaturePolicy> = Api::namespaced(client, NAMESPACE);
    let params = PatchParams::apply("signet-e2e").force();
    // Valid for the API server, refused by Signet's semantic checks.
    let name = "bad-cron";
    let bad = policy(
        name,
        json!({"reminders": {"channels": ["console"], "schedule": "*/70 * * * *"}}),
    );
    policies
        .patch(name, &params, &Patch::Apply(bad))
        .await
        .unwrap();
    wait_for_condition(&policies, name, "Ready", "False").await;
    let status = policies.get_status(name).await.unwrap().status.unwrap();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason, "InvalidSpec");
    assert!(
        ready.message.contains("minute 70 is out of range"),
        "{}",
        ready.message
    );
    policies
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
}
