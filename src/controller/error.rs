//! `controller::Error`: what can go wrong in a reconcile, one variant per pipeline step that can
//! fail, split into permanent (waits for a spec change) and transient (retried with backoff).
//! `reason()` names the step and is a stable label for metrics; `category()` says what kind of
//! answer the API server gave.

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
            Error::Apply { .. } => "ApplyFailed",
            Error::Prune { .. } => "PruneFailed",
            Error::RunNow { .. } => "RunNowFailed",
            Error::Status { .. } => "StatusWriteFailed",
        }
    }

    /// What the API server answered, as a stable label: `Conflict`, `TooManyRequests`,
    /// `ServerError`, ... or `ConnectionError` when no answer came.
    pub fn category(&self) -> &'static str {
        let Some(source) = self.client_error() else {
            return "InvalidObject";
        };
        match source {
            kube::Error::Api(status) => match status.code {
                409 => "Conflict",
                429 => "TooManyRequests",
                403 => "Forbidden",
                404 => "NotFound",
                422 => "Invalid",
                code if code >= 500 => "ServerError",
                _ => "ApiError",
            },
            _ => "ConnectionError",
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

    /// Whether retrying without a spec change could help.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Error::MissingMetadata(_))
    }
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
}
