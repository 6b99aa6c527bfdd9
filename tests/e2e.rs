//! Cluster tests: run with `make e2e` against the cluster of the current kubeconfig (kind, k3d),
//! with `signet controller` running against it (the Makefile starts one). They install the CRD,
//! apply a policy, and follow it through change, suspension and deletion, waiting on
//! conditions, never on fixed sleeps.

use std::time::Duration;

use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
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

    // A CronJob deleted by hand comes back.
    cron_jobs
        .delete(&format!("{name}-reminders"), &DeleteParams::default())
        .await
        .unwrap();
    wait_for_cron_job(&cron_jobs, &format!("{name}-reminders"), |cj| {
        cj.is_some_and(|c| c.metadata.deletion_timestamp.is_none())
    })
    .await;

    // Delete the policy: garbage collection removes what it owned.
    policies
        .delete(name, &DeleteParams::foreground())
        .await
        .unwrap();
    wait_for_cron_job(&cron_jobs, &format!("{name}-reminders"), |cj| cj.is_none()).await;
}

#[tokio::test]
#[ignore = "needs a cluster"]
async fn admission_refuses_what_validation_refuses() {
    let client = setup().await;
    let policies: Api<SignaturePolicy> = Api::namespaced(client, NAMESPACE);
    let bad = policy("refused", json!({"reminders": {"channels": ["nowhere"]}}));
    let object: SignaturePolicy = serde_json::from_value(bad).unwrap();
    let err = policies
        .create(&PostParams::default(), &object)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no channel named nowhere in spec.channels"),
        "{err}"
    );
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
