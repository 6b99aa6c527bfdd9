//! Start-up checks and leader election against a scripted API.

use std::time::Duration;

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use signet::controller::leader::LeaderElector;
use signet::controller::runtime::{RunError, check_crd};
use tower_test::mock;

/// Serves `answers` (method, path, status, body) in order and returns the request bodies.
fn scripted(
    answers: Vec<(Method, &'static str, u16, Value)>,
) -> (Client, tokio::task::JoinHandle<Vec<Value>>) {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let task = tokio::spawn(async move {
        let mut bodies = Vec::new();
        for (method, path, status, body) in answers {
            let (request, send) =
                tokio::time::timeout(Duration::from_secs(5), handle.next_request())
                    .await
                    .expect("a request came")
                    .expect("client alive");
            assert_eq!((request.method(), request.uri().path()), (&method, path));
            let bytes = request.into_body().collect_bytes().await.unwrap();
            bodies.push(if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            });
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
            );
        }
        let extra = tokio::time::timeout(Duration::from_millis(50), handle.next_request()).await;
        assert!(!matches!(extra, Ok(Some(_))), "no further request");
        bodies
    });
    (Client::new(service, "default"), task)
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "the server could not find the requested resource"})
}

#[tokio::test]
async fn a_missing_crd_is_one_clear_error() {
    let (client, api) = scripted(vec![(
        Method::GET,
        "/apis/signet.dev/v1alpha1/signaturepolicies",
        404,
        not_found(),
    )]);
    let err = check_crd(&client, &[]).await.unwrap_err();
    assert!(matches!(err, RunError::CrdMissing));
    assert_eq!(
        err.to_string(),
        "the SignaturePolicy CRD (signaturepolicies.signet.dev) is not installed; install it with `signet crd | kubectl apply --server-side -f -` or the Helm chart"
    );
    api.await.unwrap();
    let list = json!({"apiVersion": "signet.dev/v1alpha1", "kind": "SignaturePolicyList", "metadata": {}, "items": []});
    let (client, api) = scripted(vec![(
        Method::GET,
        "/apis/signet.dev/v1alpha1/namespaces/team-a/signaturepolicies",
        200,
        list,
    )]);
    check_crd(&client, &["team-a".into()]).await.unwrap();
    api.await.unwrap();
}

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/signet/leases/signet-controller";

#[tokio::test]
async fn the_first_replica_creates_the_lease_and_leads() {
    let created = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "signet-controller", "resourceVersion": "1"}});
    let (client, api) = scripted(vec![
        (Method::GET, LEASE, 404, not_found()),
        (
            Method::POST,
            "/apis/coordination.k8s.io/v1/namespaces/signet/leases",
            201,
            created,
        ),
    ]);
    let elector = LeaderElector::new(client, "signet", "signet-controller", "pod-a");
    assert!(elector.try_lead().await.unwrap());
    let bodies = api.await.unwrap();
    assert_eq!(bodies[1]["spec"]["holderIdentity"], "pod-a");
    assert_eq!(bodies[1]["spec"]["leaseDurationSeconds"], 15);
}

#[tokio::test]
async fn a_live_lease_of_another_replica_is_respected_and_a_race_is_lost_gracefully() {
    let now = jiff::Timestamp::now().to_string();
    let held = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "signet-controller", "resourceVersion": "7"},
        "spec": {"holderIdentity": "pod-b", "leaseDurationSeconds": 15, "renewTime": now}});
    let (client, api) = scripted(vec![(Method::GET, LEASE, 200, held)]);
    let elector = LeaderElector::new(client, "signet", "signet-controller", "pod-a");
    assert!(!elector.try_lead().await.unwrap(), "waits, writes nothing");
    api.await.unwrap();

    let expired = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "signet-controller", "resourceVersion": "8"},
        "spec": {"holderIdentity": "pod-b", "leaseDurationSeconds": 15, "renewTime": "2026-01-01T00:00:00Z", "leaseTransitions": 3}});
    let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "the object has been modified"});
    let (client, api) = scripted(vec![
        (Method::GET, LEASE, 200, expired),
        (Method::PUT, LEASE, 409, conflict),
    ]);
    let elector = LeaderElector::new(client, "signet", "signet-controller", "pod-a");
    assert!(
        !elector.try_lead().await.unwrap(),
        "another replica wrote first"
    );
    let bodies = api.await.unwrap();
    assert_eq!(
        bodies[1]["metadata"]["resourceVersion"], "8",
        "optimistic concurrency"
    );
    assert_eq!(bodies[1]["spec"]["holderIdentity"], "pod-a");
    assert_eq!(bodies[1]["spec"]["leaseTransitions"], 4);
}

#[tokio::test]
async fn release_hands_the_lease_over() {
    let mine = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "signet-controller", "resourceVersion": "9"},
        "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15}});
    let (client, api) = scripted(vec![
        (Method::GET, LEASE, 200, mine.clone()),
        (Method::PUT, LEASE, 200, mine),
    ]);
    LeaderElector::new(client, "signet", "signet-controller", "pod-a")
        .release()
        .await
        .unwrap();
    let bodies = api.await.unwrap();
    assert_eq!(bodies[1]["spec"].get("holderIdentity"), None);
    assert_eq!(bodies[1]["spec"]["leaseDurationSeconds"], 1);
}
