//! The status write-back: one JSON merge patch of the policy's status subresource carrying this
//! section's `lastRun` (and `lastSuccessfulRunAt` when the run succeeded), with brief retries of
//! transient failures. Needs only `patch` on `signaturepolicies/status`.

use std::time::Duration;

use kube::Resource;
use kube::api::{Patch, PatchParams};
use serde::Serialize;

use super::{ReportError, SectionRun};
use crate::crd::{SignaturePolicy, SignaturePolicyStatus};
use crate::notify::RetryPolicy;

/// The longest one status patch may take, so a hung API server cannot hold the pod.
const STATUS_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Retries of the status patch: 4 tries, waiting up to 0.5s, 1s and 2s (full jitter) between
/// them; a `Retry-After` from the API server is honoured up to 2s.
pub const STATUS_RETRY: RetryPolicy = RetryPolicy {
    attempts: 4,
    base: Duration::from_millis(500),
    cap: Duration::from_secs(2),
    max_retry_after: Duration::from_secs(2),
};

/// The body of the status merge patch: `{"status": ...}`.
#[derive(Serialize)]
struct StatusPatch {
    status: SignaturePolicyStatus,
}

/// The merge patch of `run`: its section's `lastRun` whole, with `reason` and `message` set
/// to null when the run has none, so that a success clears an earlier failure's (a merge patch
/// leaves fields it omits as they were).
pub fn patch_body(run: &SectionRun) -> serde_json::Value {
    let mut body = serde_json::to_value(StatusPatch {
        status: run.status(),
    })
    .expect("a status serializes");
    if let Some(last_run) = body["status"][run.section()]["lastRun"].as_object_mut() {
        for field in ["reason", "message"] {
            last_run.entry(field).or_insert(serde_json::Value::Null);
        }
    }
    body
}

/// Merge-patches the run into the status of policy `namespace/name`, retrying transient
/// failures (429, 5xx, connection) as `retry` says. 403, 404, 422 and the like are returned at
/// once; a 404 means the policy was deleted meanwhile ([`ReportError::is_not_found`]).
pub async fn write_status(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    run: &SectionRun,
    retry: &RetryPolicy,
) -> Result<(), ReportError> {
    let body = patch_body(run);
    let patch = Patch::Merge(&body);
    let url = SignaturePolicy::url_path(&(), Some(namespace));
    let mut attempt = 1;
    loop {
        let request = kube::core::Request::new(url.as_str())
            .patch_subresource("status", name, &PatchParams::default(), &patch)
            .map_err(|e| ReportError::Client(e.to_string()))?;
        let result = match tokio::time::timeout(
            STATUS_ATTEMPT_TIMEOUT,
            client.request_text(request),
        )
        .await
        {
            Ok(answer) => answer.map(drop).map_err(ReportError::from),
            Err(_) => Err(ReportError::Unreachable(format!(
                "no answer within {}s",
                STATUS_ATTEMPT_TIMEOUT.as_secs()
            ))),
        };
        match result {
            Ok(()) => return Ok(()),
            Err(err) if !err.is_transient() || attempt >= retry.attempts => return Err(err),
            Err(err) => {
                let asked = match &err {
                    ReportError::Api {
                        retry_after: Some(s),
                        ..
                    } => Some(Duration::from_secs(u64::from(*s)).min(retry.max_retry_after)),
                    _ => None,
                };
                let wait = retry.backoff(attempt, asked);
                tracing::debug!(attempt, wait_ms = wait.as_millis() as u64, reason = err.reason(), error = %err, "retrying the status patch");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
}

/// A client from the pod's service account, with timeouts short enough for a worker's exit.
pub(super) fn in_cluster_client() -> Result<kube::Client, ReportError> {
    let mut config = kube::Config::incluster().map_err(|e| ReportError::Client(e.to_string()))?;
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(STATUS_ATTEMPT_TIMEOUT);
    kube::Client::try_from(config).map_err(ReportError::from)
}
