//! `controller::Error`: what can go wrong in a reconcile, one variant per pipeline step that can
//! fail, in three kinds: transient (no answer, 408, 409, 429, 5xx: retried with backoff), refused
//! (any other 4xx, or an admission webhook's denial: the API server will say the same until the
//! policy or the cluster changes) and permanent (waits for a spec change). `reason()` names the
//! step and is a stable label for metrics and conditions; `category()` says what kind of answer
//! the API server gave.

use crate::constants::reason;

/// A reconcile failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// validate: the object has no namespace or name (never true of a real SignaturePolicy).
    #[error("the object has no {0}")]
    MissingMetadata(&'static str),
    /// apply: server-side apply of an owned object failed.
    #[error("apply {object} failed: {source}")]
    Apply {
        /// `Kind namespace/name`.
        object: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// prune: deleting a CronJob of a disabled section failed.
    #[error("delete {object} failed: {source}")]
    Prune {
        /// `Kind namespace/name`.
        object: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// run-now: starting the manual Job, or clearing the request, failed.
    #[error("{action} failed: {source}")]
    RunNow {
        /// What was being done, e.g. `create Job enrollment/x-reminders-manual-7`.
        action: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// status: writing the policy's status failed.
    #[error("patch status of {policy} failed: {source}")]
    Status {
        /// `namespace/name`.
        policy: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// The step that failed, as a stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::MissingMetadata(_) => "MissingMetadata",
            Error::Apply { .. } => reason::APPLY_FAILED,
            Error::Prune { .. } => reason::PRUNE_FAILED,
            Error::RunNow { .. } => reason::RUN_NOW_FAILED,
            Error::Status { .. } => "StatusWriteFailed",
        }
    }

    /// What the API server answered, as a stable label: `Conflict`, `TooManyRequests`,
    /// `ServerError`, `Forbidden`, `Invalid`, `AdmissionDenied` (an admission webhook or a
    /// ValidatingAdmissionPolicy said no, whatever the code), ... or `ConnectionError` when no
    /// answer came.
    pub fn category(&self) -> &'static str {
        let Some(source) = self.client_error() else {
            return "InvalidObject";
        };
        match source {
            kube::Error::Api(status) if is_admission_denial(&status.message) => "AdmissionDenied",
            kube::Error::Api(status) => match status.code {
                400 => "BadRequest",
                403 => "Forbidden",
                404 => "NotFound",
                408 => "Timeout",
                409 => "Conflict",
                422 => "Invalid",
                429 => "TooManyRequests",
                code if code >= 500 => "ServerError",
                _ => "ApiError",
            },
            _ => "ConnectionError",
        }
    }

    /// Whether the API server refused the request for a reason retrying cannot change: a 4xx
    /// other than 408, 409 and 429 (RBAC, an invalid field, a namespace being deleted), or an
    /// admission denial. It stands until the policy or the cluster changes (RBAC fixed, a
    /// webhook's policy relaxed), which no watch of Signet's sees.
    pub fn is_refusal(&self) -> bool {
        match self.client_error() {
            Some(kube::Error::Api(status)) => {
                is_admission_denial(&status.message)
                    || ((400..500).contains(&status.code)
                        && !matches!(status.code, 408 | 409 | 429))
            }
            _ => false,
        }
    }

    /// For a refusal: what was refused and the API server's own words (which name the field,
    /// the webhook or the missing permission), for the `Ready` condition and the Event.
    pub fn refusal_message(&self) -> Option<String> {
        if !self.is_refusal() {
            return None;
        }
        let (what, Some(kube::Error::Api(status))) = (self.action(), self.client_error()) else {
            return None;
        };
        Some(format!(
            "{what} was refused ({} {}): {}",
            status.code,
            self.category(),
            status.message
        ))
    }

    /// What the failed step was doing, e.g. `apply CronJob enrollment/x-reminders`.
    fn action(&self) -> String {
        match self {
            Error::MissingMetadata(field) => format!("read metadata.{field}"),
            Error::Apply { object, .. } => format!("apply {object}"),
            Error::Prune { object, .. } => format!("delete {object}"),
            Error::RunNow { action, .. } => action.clone(),
            Error::Status { policy, .. } => format!("patch status of {policy}"),
        }
    }

    /// The client error, for the steps that talk to the API.
    fn client_error(&self) -> Option<&kube::Error> {
        match self {
            Error::MissingMetadata(_) => None,
            Error::Apply { source, .. }
            | Error::Prune { source, .. }
            | Error::RunNow { source, .. }
            | Error::Status { source, .. } => Some(source),
        }
    }

    /// How long the API server asked to wait before a retry (`Retry-After`, which it also puts
    /// in the Status body as `details.retryAfterSeconds`, on 429 and some 5xx), if it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self.client_error()? {
            kube::Error::Api(status) => status
                .details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|&seconds| seconds > 0)
                .map(|seconds| std::time::Duration::from_secs(seconds.into())),
            _ => None,
        }
    }

    /// Whether retrying soon could help: no answer came, or the API server asked to come back
    /// (408, 409, 429, 5xx).
    pub fn is_transient(&self) -> bool {
        self.client_error().is_some() && !self.is_refusal()
    }
}

/// Whether an API server message is an admission denial: a webhook's (`admission webhook "name"
/// denied the request: ...`, as Kyverno and Gatekeeper answer) or a ValidatingAdmissionPolicy's
/// (`... ValidatingAdmissionPolicy 'name' with binding 'b' denied request: ...`). A webhook that
/// could not be called (`failed calling webhook`) is not a denial.
fn is_admission_denial(message: &str) -> bool {
    (message.contains("admission webhook \"") && message.contains("denied the request"))
        || (message.contains("ValidatingAdmissionPolicy '") && message.contains("denied request"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn apply_error(status: serde_json::Value) -> Error {
        Error::Apply {
            object: "CronJob ns/x".into(),
            source: kube::Error::Api(serde_json::from_value(status).unwrap()),
        }
    }

    #[test]
    fn retry_after_comes_from_the_status_details() {
        let limited = apply_error(serde_json::json!({
            "code": 429, "reason": "TooManyRequests", "message": "slow down",
            "details": {"retryAfterSeconds": 7}
        }));
        assert_eq!(limited.reason(), "ApplyFailed");
        assert_eq!(limited.category(), "TooManyRequests");
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(7)));
        let bare = apply_error(serde_json::json!({"code": 503, "reason": "", "message": ""}));
        assert_eq!(bare.category(), "ServerError");
        assert_eq!(bare.retry_after(), None);
        let zero = apply_error(serde_json::json!({
            "code": 429, "reason": "", "message": "", "details": {"retryAfterSeconds": 0}
        }));
        assert_eq!(zero.retry_after(), None);
        assert_eq!(Error::MissingMetadata("name").retry_after(), None);
        assert!(!Error::MissingMetadata("name").is_transient());
    }

    fn answered(code: u16, message: &str) -> Error {
        apply_error(serde_json::json!({"code": code, "reason": "", "message": message}))
    }

    #[test]
    fn four_hundreds_are_refusals_except_timeouts_conflicts_and_rate_limits() {
        let webhook = "admission webhook \"validate.kyverno.svc-fail\" denied the request: \
                       policy CronJob/enrollment/x for resource violation: require-team-label";
        let vap = "cronjobs.batch \"x\" is forbidden: ValidatingAdmissionPolicy 'no-root' with \
                   binding 'no-root-binding' denied request: runAsUser must be set";
        // (code, message, category, refusal)
        let cases = [
            (400, "bad", "BadRequest", true),
            (401, "", "ApiError", true),
            (403, "forbidden", "Forbidden", true),
            (404, "namespace gone", "NotFound", true),
            (422, "spec.x: Invalid value", "Invalid", true),
            (400, webhook, "AdmissionDenied", true),
            (403, webhook, "AdmissionDenied", true),
            (500, webhook, "AdmissionDenied", true),
            (422, vap, "AdmissionDenied", true),
            (408, "", "Timeout", false),
            (409, "", "Conflict", false),
            (429, "", "TooManyRequests", false),
            (
                500,
                "failed calling webhook \"x\": connection refused",
                "ServerError",
                false,
            ),
            (503, "", "ServerError", false),
        ];
        for (code, message, category, refusal) in cases {
            let error = answered(code, message);
            assert_eq!(error.category(), category, "{code} {message}");
            assert_eq!(error.is_refusal(), refusal, "{code} {message}");
            assert_eq!(error.is_transient(), !refusal, "{code} {message}");
            assert_eq!(
                error.refusal_message().is_some(),
                refusal,
                "{code} {message}"
            );
        }
        let timeout = Error::Apply {
            object: "CronJob ns/x".into(),
            source: kube::Error::Service("timed out".into()),
        };
        assert_eq!(timeout.category(), "ConnectionError");
        assert!(timeout.is_transient() && !timeout.is_refusal());
        let missing = Error::MissingMetadata("namespace");
        assert!(!missing.is_transient() && !missing.is_refusal());
    }

    #[test]
    fn a_refusal_message_names_the_object_and_carries_the_api_servers_words() {
        let error = answered(
            422,
            "CronJob.batch \"x\" is invalid: spec.timeZone: Invalid value",
        );
        assert_eq!(
            error.refusal_message().unwrap(),
            "apply CronJob ns/x was refused (422 Invalid): CronJob.batch \"x\" is invalid: \
             spec.timeZone: Invalid value"
        );
    }
}
